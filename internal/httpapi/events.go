package httpapi

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gearwork/gearwork/internal/broker"
)

// longRequest lifts the server's read and write timeouts for a request that
// legitimately lasts (an event stream, a long poll, a waiting submit): d is
// how long it may still write, or 0 for no limit. The body has been read by
// then; the read deadline would otherwise end the request's context.
//
// Such requests hold their connection for long, so at most
// Config.MaxLongRequests of them run at once: ok is false when that many
// are open, and the request must then answer without lasting. release
// gives the place back; call it when ok.
func (s *Server) longRequest(w http.ResponseWriter, d time.Duration) (release func(), ok bool) {
	if s.long != nil {
		select {
		case s.long <- struct{}{}:
		default:
			return nil, false
		}
	}
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Time{})
	if d > 0 {
		_ = rc.SetWriteDeadline(time.Now().Add(d + 30*time.Second))
	} else {
		_ = rc.SetWriteDeadline(time.Time{})
	}
	if s.long == nil {
		return func() {}, true
	}
	return func() { <-s.long }, true
}

// startEventStream answers 200 with a text/event-stream that may stay open
// without a write deadline, tells EventSource to reconnect after
// retryMillis, and returns the controller that flushes the stream and the
// release of its place among the long requests. While MaxLongRequests
// requests are open it answers nothing and returns a 503 too-many-streams
// error instead.
func (s *Server) startEventStream(w http.ResponseWriter, retryMillis int) (*http.ResponseController, func(), error) {
	release, ok := s.longRequest(w, 0)
	if !ok {
		w.Header().Set("Retry-After", "5")
		return nil, nil, errorf(http.StatusServiceUnavailable, "too-many-streams",
			"the server has %d event streams and waiting requests open, its limit; try again later", cap(s.long))
	}
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	fmt.Fprintf(w, "retry: %d\n\n", retryMillis)
	return http.NewResponseController(w), release, nil
}

// eventData is the JSON in an SSE event's data field.
type eventData struct {
	Handle string `json:"handle"`
	// Numerator and Denominator are set for status events.
	Numerator   *uint32 `json:"numerator,omitempty"`
	Denominator *uint32 `json:"denominator,omitempty"`
	// Data is the payload of data, warning, complete and exception events,
	// base64; Text repeats it when it is valid UTF-8.
	Data []byte  `json:"data,omitempty"`
	Text *string `json:"text,omitempty"`
	// Truncated is set on a final event answered from a job's record
	// (recordEvents) whose Data is the record's result, cut to its first
	// broker.HistoryResultCap bytes, because no whole result is retained.
	Truncated bool `json:"truncated,omitempty"`
	// Job is the job's state when the stream began watching it (state
	// events), the job when a run ended and it will run again (retry
	// events: why the run ended, when it runs again), or the job's record
	// (the final fail and exception events, while the record is kept).
	Job *jobJSON `json:"job,omitempty"`
}

func (s *Server) eventJSON(ctx context.Context, seq uint64, e feedEvent) eventData {
	d := eventData{Handle: s.b.Handle(seq)}
	switch e.kind {
	case "state":
		j := s.snapshotJSON(e.snap)
		if e.snap.Retries == 0 && e.snap.Submitted.IsZero() {
			// A snapshot made at submit: only the basics are known.
			j.Retries, j.Waiting = nil, nil
		}
		d.Job = &j
	case "status":
		n, dn := e.ev.Numerator, e.ev.Denominator
		d.Numerator, d.Denominator = &n, &dn
	case "fail":
	case "retry":
		if e.hasSnap {
			j := s.snapshotJSON(e.snap)
			d.Job = &j
		}
		if len(e.ev.Data) > 0 {
			// The exception data of the run, if it threw one.
			d.Data, d.Text = e.ev.Data, textOf(e.ev.Data)
		}
	default:
		d.Data = e.ev.Data
		if d.Data == nil {
			d.Data = []byte{}
		}
		d.Text = textOf(d.Data)
	}
	if e.final && e.kind != "complete" {
		// The outcome as the job's record has it (dead, cancelled, the
		// attempts), read from the record, not kept with the event. (A
		// completion says all in its data: the common stream is spared
		// the lookup.)
		if snap, ok := s.b.Job(ctx, seq); ok && snap.Final {
			j := s.snapshotJSON(snap)
			d.Job = &j
		}
	}
	return d
}

// handleJobEvents serves GET /v1/jobs/{handle}/events as Server-Sent
// Events. The stream begins with a "state" event, then relays data,
// warning and status events, and ends after the final complete, fail or
// exception event. Each event has an id; a client that reconnects with
// Last-Event-ID gets every later event still in the job's log.
func (s *Server) handleJobEvents(w http.ResponseWriter, r *http.Request) error {
	seq, handle, err := s.handleParam(r)
	if err != nil {
		return err
	}
	var after uint64
	if v := cmpOr(r.Header.Get("Last-Event-ID"), r.URL.Query().Get("last-event-id")); v != "" {
		after, err = strconv.ParseUint(strings.TrimSpace(v), 10, 64)
		if err != nil {
			return errorf(http.StatusBadRequest, "invalid-event-id", "Last-Event-ID %q is not an event id of this stream", v)
		}
	}
	if s.b.Live(seq) {
		// A dead letter queued again lives anew: so does its stream.
		s.hub.restart(seq)
	}
	f, ok := s.hub.feedFor(seq)
	if !ok {
		return s.recordEvents(w, r, seq, handle, after)
	}
	evs, done, changed := s.hub.read(f, after)
	if done && len(evs) == 0 {
		// The client saw the final event: 204 tells EventSource to stop
		// reconnecting.
		return noContent(w)
	}
	s.hub.addReader(f, 1)
	defer s.hub.addReader(f, -1)
	rc, release, err := s.startEventStream(w, 1000)
	if err != nil {
		return err
	}
	defer release()
	keep := time.NewTicker(s.cfg.KeepAlive)
	defer keep.Stop()
	for {
		// Events let go before this stream read them (the log's limits,
		// hub.trimLocked) are missing, at resume and while live.
		if len(evs) > 0 && evs[0].id > after+1 {
			fmt.Fprintf(w, ": %d earlier events are no longer kept\n\n", evs[0].id-after-1)
		}
		for _, e := range evs {
			data, _ := json.Marshal(s.eventJSON(r.Context(), seq, e))
			fmt.Fprintf(w, "id: %d\nevent: %s\ndata: %s\n\n", e.id, e.kind, data)
			after = e.id
		}
		if err := rc.Flush(); err != nil {
			return nil
		}
		if done {
			return nil
		}
		select {
		case <-changed:
		case <-keep.C:
			fmt.Fprintf(w, ": keep-alive\n\n")
		case <-r.Context().Done():
			return nil
		case <-s.stop:
			return nil
		}
		evs, done, changed = s.hub.read(f, after)
	}
}

// recordEvents answers the event stream of a job without an event log
// (it ended before any stream watched it, or it ended more than
// Config.ResultRetention ago) from its record, as a stream that watched it
// ends: event 1, state, and event 2, the final complete, exception or fail
// carrying the record. A client that saw event 2 gets 204. A complete
// event carries the job's whole result while it is retained (the result
// retention), else the record's, which may be cut (Truncated).
func (s *Server) recordEvents(w http.ResponseWriter, r *http.Request, seq uint64, handle string, after uint64) error {
	snap, ok := s.b.Job(r.Context(), seq)
	stored := false // snap is of a job in the shared store (StoredJob)
	if !ok {
		var err error
		if snap, ok, err = s.b.StoredJob(r.Context(), seq); err != nil {
			return err
		}
		stored = ok
	}
	switch {
	case !ok:
		return errorf(http.StatusNotFound, "job-not-found",
			"no job %s: it never existed, or its record is no longer kept (see the policy keys history and history_max)", handle)
	case !snap.Final && stored:
		// In shared mode: a job that this server does not hold.
		return errorf(http.StatusNotFound, "job-not-found",
			"job %s is %s in the shared store and this server does not hold it: its events are followed on the server "+
				"that holds it (GET /v1/jobs/{handle} answers its state here)", handle, snap.State)
	case !snap.Final:
		// A live job of this server's (a server alone has no other) that
		// the hub no longer watches: the hub has closed, the server is
		// shutting down.
		return errorf(http.StatusServiceUnavailable, "shutting-down",
			"the server is shutting down and follows the events of no job; job %s is %s (GET /v1/jobs/{handle} answers its state)",
			handle, snap.State)
	case after >= 2:
		return noContent(w)
	}
	rec := s.snapshotJSON(snap)
	final := eventData{Handle: handle, Job: &rec}
	kind := "fail"
	last := ""
	if n := len(snap.History); n > 0 {
		last = snap.History[n-1].Outcome
	}
	switch {
	case snap.State == broker.FinalComplete:
		kind, final.Data, final.Truncated = "complete", nonNil(snap.Result), snap.ResultTruncated
		if snap.ResultTruncated && s.life.Results != nil {
			res, ok, err := s.life.Results.Result(r.Context(), handle)
			if err != nil {
				return err
			}
			if ok && res.State == broker.FinalComplete {
				final.Data, final.Truncated = nonNil(res.Data), false
			}
		}
	case snap.State == broker.FinalException:
		kind, final.Data, final.Truncated = "exception", nonNil(snap.Result), snap.ResultTruncated
	case snap.State == broker.FinalDead && last == "exception":
		kind, final.Data = "exception", []byte(snap.LastError)
	}
	if final.Data != nil {
		final.Text = textOf(final.Data)
	}
	rc, release, err := s.startEventStream(w, 1000)
	if err != nil {
		return err
	}
	defer release()
	if after < 1 {
		data, _ := json.Marshal(eventData{Handle: handle, Job: &rec})
		fmt.Fprintf(w, "id: 1\nevent: state\ndata: %s\n\n", data)
	}
	data, _ := json.Marshal(final)
	fmt.Fprintf(w, "id: 2\nevent: %s\ndata: %s\n\n", kind, data)
	_ = rc.Flush()
	return nil
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// overview is what the dashboard stream sends every OverviewInterval.
type overview struct {
	Time      time.Time      `json:"time"`
	Functions []functionJSON `json:"functions"`
	// FunctionsOmitted counts the functions left out of Functions
	// (Config.OverviewMaxFunctions).
	FunctionsOmitted int          `json:"functions_omitted"`
	Workers          []workerJSON `json:"workers"`
	Sessions         int          `json:"sessions"`
	Running          int          `json:"running"`
	// Capabilities says which optional routes work (dead letters,
	// pause/resume).
	Capabilities map[string]bool `json:"capabilities"`
}

func (s *Server) buildOverview(ctx context.Context) overview {
	st, counts := s.b.Stats(ctx), s.b.CountJobs(ctx)
	keep, omitted := selectFunctions(st.Functions, counts, s.cfg.OverviewMaxFunctions, nil)
	o := overview{Time: time.Now().UTC(), Functions: functionsJSON(st, counts, keep), FunctionsOmitted: omitted,
		Sessions: st.Sessions, Running: st.Running,
		Capabilities: map[string]bool{"dead_letters": s.cfg.Lifecycle.DeadLetters != nil, "pause": s.cfg.Lifecycle.Pauser != nil}}
	ws := s.b.Workers()
	for _, w := range ws {
		if len(w.Functions) == 0 {
			continue
		}
		o.Workers = append(o.Workers, workerJSON{ID: w.ID, Addr: w.Addr, ClientID: w.ClientID, Functions: w.Functions})
		if len(o.Workers) == 200 {
			break
		}
	}
	if o.Workers == nil {
		o.Workers = []workerJSON{}
	}
	return o
}

// overviewCache holds the last overview event's data.
type overviewCache struct {
	mu   sync.Mutex
	at   time.Time
	data []byte
}

// overviewEvent returns an overview's JSON, shared by every stream that
// asks within half an OverviewInterval of its making: an overview reads
// every function's counters, and its cost is then one per interval (at
// most two) however many dashboards are open. Streams asking while it is
// made wait for it.
func (s *Server) overviewEvent(ctx context.Context) []byte {
	c := &s.lastOverview
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.data != nil && time.Since(c.at) < s.cfg.OverviewInterval/2 {
		return c.data
	}
	data, _ := json.Marshal(s.buildOverview(ctx))
	if ctx.Err() == nil { // an overview cut short by its stream's end is not shared
		c.at, c.data = time.Now(), data
	}
	return data
}

// handleStream serves GET /v1/stream: an "overview" event (functions,
// counters, workers) every OverviewInterval, for the dashboard.
func (s *Server) handleStream(w http.ResponseWriter, r *http.Request) error {
	rc, release, err := s.startEventStream(w, 2000)
	if err != nil {
		return err
	}
	defer release()
	t := time.NewTicker(s.cfg.OverviewInterval)
	defer t.Stop()
	for {
		fmt.Fprintf(w, "event: overview\ndata: %s\n\n", s.overviewEvent(r.Context()))
		if err := rc.Flush(); err != nil {
			return nil
		}
		select {
		case <-t.C:
		case <-r.Context().Done():
			return nil
		case <-s.stop:
			return nil
		}
	}
}
