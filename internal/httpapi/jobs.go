package httpapi

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gearwork/gearwork/gearman"
	"github.com/gearwork/gearwork/internal/broker"
)

// jobJSON is the JSON form of a job.
type jobJSON struct {
	Handle   string `json:"handle"`
	Function string `json:"function,omitempty"`
	// State is pending, scheduled, queued, running, retry-wait, blocked,
	// waiting (for the jobs it was submitted after),
	// or (for a submit that joined a live job) attached while the job
	// lives, and complete, failed, exception, cancelled or dead once it
	// ended (Final is then set, and the state never changes again).
	State      string        `json:"state"`
	Created    *bool         `json:"created,omitempty"`
	Unique     string        `json:"unique,omitempty"`
	Priority   string        `json:"priority,omitempty"`
	Background *bool         `json:"background,omitempty"`
	RunAt      *time.Time    `json:"run_at,omitempty"`
	Progress   *progressJSON `json:"progress,omitempty"`
	Retries    *uint32       `json:"retries,omitempty"`
	Waiting    *int          `json:"waiting_clients,omitempty"`
	Submitted  *time.Time    `json:"submitted_at,omitempty"`
	Started    *time.Time    `json:"started_at,omitempty"`
	Finished   *time.Time    `json:"finished_at,omitempty"`
	// Attempts counts the job's runs that ended so far; MaxAttempts
	// is the job's own limit (-1: unlimited), absent when the function's
	// policy decides.
	Attempts    *uint32    `json:"attempts,omitempty"`
	MaxAttempts int        `json:"max_attempts,omitempty"`
	LastError   string     `json:"last_error,omitempty"`
	OrderingKey string     `json:"ordering_key,omitempty"`
	RetryAt     *time.Time `json:"retry_at,omitempty"`
	// Result is the worker's result (complete) or exception data, base64;
	// ResultText repeats it when it is valid UTF-8.
	Result     []byte  `json:"result,omitempty"`
	ResultText *string `json:"result_text,omitempty"`
	// ResultTruncated is set when the record kept only the first
	// broker.HistoryResultCap bytes of the result.
	ResultTruncated bool `json:"result_truncated,omitempty"`
	// NotStored is set on the record of an ended job answered from
	// memory before it was on disk (broker.JobSnapshot.Unstored).
	NotStored bool `json:"not_stored,omitempty"`
	// Final is set once the job ended.
	Final bool `json:"final,omitempty"`
	// History lists the job's attempts, oldest first.
	History []attemptJSON `json:"history,omitempty"`
	// PayloadPreview is the start of an ended job's payload (base64),
	// PayloadPreviewText the same when valid UTF-8, PayloadSize its length.
	PayloadPreview     []byte  `json:"payload_preview,omitempty"`
	PayloadPreviewText *string `json:"payload_preview_text,omitempty"`
	PayloadSize        *int    `json:"payload_size,omitempty"`
	// CancelledBy says who cancelled a cancelled job, CancelledAt when.
	CancelledBy string     `json:"cancelled_by,omitempty"`
	CancelledAt *time.Time `json:"cancelled_at,omitempty"`
	// RetryOf is the handle of the ended job that this one runs again
	// (POST /v1/jobs/{handle}/retry).
	RetryOf string `json:"retry_of,omitempty"`
	// Batch is the id of the batch the job belongs to.
	Batch string `json:"batch,omitempty"`
	// After lists the jobs a waiting job still waits for (its after,
	// less those that ended).
	After []string `json:"after,omitempty"`
}

// attemptJSON is one attempt of a job.
type attemptJSON struct {
	Worker  string     `json:"worker,omitempty"`
	Started *time.Time `json:"started_at,omitempty"`
	Ended   *time.Time `json:"ended_at,omitempty"`
	// Outcome is complete, failed, exception, timeout or worker vanished
	// (or the reason a worker's job was taken back).
	Outcome string `json:"outcome"`
	Error   string `json:"error,omitempty"`
}

func timeOf(nanos int64) *time.Time {
	if nanos == 0 {
		return nil
	}
	t := time.Unix(0, nanos).UTC()
	return &t
}

// utcOrNil is t in UTC, or nil for the zero time (the field is left out).
func utcOrNil(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	t = t.UTC()
	return &t
}

type progressJSON struct {
	Numerator   uint32 `json:"numerator"`
	Denominator uint32 `json:"denominator"`
}

func textOf(b []byte) *string {
	if b == nil || !utf8.Valid(b) {
		return nil
	}
	s := string(b)
	return &s
}

func (s *Server) snapshotJSON(snap broker.JobSnapshot) jobJSON {
	bg := snap.Background
	j := jobJSON{Handle: s.b.Handle(snap.Seq), Function: snap.Function, State: snap.State, Unique: snap.Unique,
		Priority: snap.Priority.String(), Background: &bg, Retries: &snap.Retries, Waiting: &snap.Waiting}
	if snap.RunAt != 0 {
		t := time.Unix(snap.RunAt, 0).UTC()
		j.RunAt = &t
	}
	if snap.State == "running" {
		j.Progress = &progressJSON{snap.Numerator, snap.Denominator}
	}
	j.Submitted = utcOrNil(snap.Submitted)
	j.Started = utcOrNil(snap.Started)
	if snap.Attempts > 0 || snap.MaxAttempts != 0 || snap.LastError != "" {
		j.Attempts = &snap.Attempts
	}
	j.MaxAttempts, j.LastError, j.OrderingKey = snap.MaxAttempts, snap.LastError, snap.OrderingKey
	j.RetryAt = utcOrNil(snap.RetryAt)
	j.Finished = utcOrNil(snap.Finished)
	j.NotStored = snap.Unstored
	if snap.RetryOf != 0 {
		j.RetryOf = s.b.Handle(snap.RetryOf)
	}
	for _, seq := range snap.After {
		j.After = append(j.After, s.b.Handle(seq))
	}
	if snap.Batch != 0 {
		j.Batch = strconv.FormatUint(snap.Batch, 10)
	}
	for _, a := range snap.History {
		j.History = append(j.History, attemptJSON{Worker: a.Worker, Started: timeOf(a.Start), Ended: timeOf(a.End),
			Outcome: a.Outcome, Error: a.Error})
	}
	if snap.Final {
		j.Final = true
		j.Progress, j.Waiting = nil, nil
		if snap.State == broker.FinalComplete || snap.State == broker.FinalException {
			j.Result = nonNil(snap.Result)
			j.ResultText = textOf(j.Result)
			j.ResultTruncated = snap.ResultTruncated
		}
		if snap.PayloadPreview != nil || snap.PayloadSize > 0 {
			j.PayloadPreview = nonNil(snap.PayloadPreview)
			j.PayloadPreviewText = textOf(j.PayloadPreview)
			j.PayloadSize = &snap.PayloadSize
		}
		j.CancelledBy = snap.CancelledBy
		j.CancelledAt = utcOrNil(snap.CancelledAt)
	}
	return j
}

// finalJSON describes a finished job from its final event.
func (s *Server) finalJSON(seq uint64, e feedEvent, finished time.Time) jobJSON {
	j := jobJSON{Handle: s.b.Handle(seq), State: finalState(e.kind)}
	j.Finished = utcOrNil(finished)
	if e.kind != "fail" {
		j.Result = e.ev.Data
		if j.Result == nil {
			j.Result = []byte{}
		}
		j.ResultText = textOf(j.Result)
	}
	return j
}

func finalState(kind string) string {
	switch kind {
	case "complete":
		return "complete"
	case "exception":
		return "exception"
	}
	return "failed"
}

// submitOptions are a submit's options from query parameters or
// Gearwork-* headers.
type submitOptions struct {
	priority    broker.Priority
	unique      string
	runAt       int64
	wait        time.Duration
	attempts    int
	timeout     time.Duration
	orderingKey string
	// batch is the batch the job joins (0: none).
	batch uint64
	// after names the jobs the job waits for; afterAnyway runs it even
	// when one of them fails.
	after       []uint64
	afterAnyway bool
	// afterUnique names more jobs to wait for by their uniques.
	afterUnique []broker.UniqueDep
}

func parseAttempts(v string) (int, error) {
	if v == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < -1 || n == 0 || n > 1_000_000 {
		return 0, errorf(http.StatusBadRequest, "invalid-option",
			"attempts %q: use a whole number of runs (1 or more; -1 for unlimited), or leave it out for the function's policy", v)
	}
	return n, nil
}

func parseTimeout(v string) (time.Duration, error) {
	if v == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return 0, errorf(http.StatusBadRequest, "invalid-option", "timeout %q: use a positive Go duration such as 30s or 5m", v)
	}
	return d, nil
}

func checkOrderingKey(k string) error {
	if len(k) > 512 {
		return errorf(http.StatusBadRequest, "invalid-option", "ordering key: at most 512 bytes")
	}
	return checkText("ordering key", k)
}

// checkText refuses an option that is not UTF-8: the job's record is
// answered as JSON, which cannot carry other bytes, so the value would read
// back altered. (Binary unique ids are for the Gearman port.)
func checkText(name, v string) error {
	if !utf8.ValidString(v) {
		return errorf(http.StatusBadRequest, "invalid-option", "%s: not UTF-8 text (%q)", name, v)
	}
	return nil
}

// options returns every value of a submit option that may be repeated:
// those of the query (name) if there are any, else those of the header
// Gearwork-<Name>.
func options(r *http.Request, name string) []string {
	if v := r.URL.Query()[strings.ToLower(name)]; len(v) > 0 {
		return v
	}
	return r.Header.Values("Gearwork-" + name)
}

// option returns a submit option from the query (name) or the header
// Gearwork-<Name>; the query wins.
func option(r *http.Request, name string) string {
	if v := r.URL.Query().Get(strings.ToLower(name)); v != "" {
		return v
	}
	return r.Header.Get("Gearwork-" + name)
}

func parsePriority(v string) (broker.Priority, error) {
	switch strings.ToLower(v) {
	case "", "normal":
		return broker.Normal, nil
	case "high":
		return broker.High, nil
	case "low":
		return broker.Low, nil
	}
	return 0, errorf(http.StatusBadRequest, "invalid-option", "priority %q: use high, normal or low", v)
}

// parseRunAt accepts RFC 3339 or Unix seconds.
func parseRunAt(v string) (int64, error) {
	if v == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		t, terr := time.Parse(time.RFC3339, v)
		if terr != nil {
			return 0, errorf(http.StatusBadRequest, "invalid-option", "run-at %q: use RFC 3339 (2026-01-02T15:04:05Z) or Unix seconds", v)
		}
		n = t.Unix()
	}
	if n > broker.MaxRunAt {
		return 0, errorf(http.StatusBadRequest, "invalid-option", "run-at %q: after 9999-12-31T23:59:59Z, the last time RFC 3339 can write", v)
	}
	return n, nil
}

func (s *Server) parseWait(v string) (time.Duration, error) {
	if v == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return 0, errorf(http.StatusBadRequest, "invalid-option", "wait %q: use a Go duration such as 10s or 500ms", v)
	}
	return min(d, s.cfg.MaxWait), nil
}

func (s *Server) parseSubmitOptions(r *http.Request) (submitOptions, error) {
	var o submitOptions
	var err error
	if o.priority, err = parsePriority(option(r, "Priority")); err != nil {
		return o, err
	}
	o.unique = option(r, "Unique")
	if err := checkText("unique", o.unique); err != nil {
		return o, err
	}
	if o.runAt, err = parseRunAt(option(r, "Run-At")); err != nil {
		return o, err
	}
	if o.wait, err = s.parseWait(r.URL.Query().Get("wait")); err != nil {
		return o, err
	}
	if o.attempts, err = parseAttempts(option(r, "Attempts")); err != nil {
		return o, err
	}
	if o.timeout, err = parseTimeout(option(r, "Timeout")); err != nil {
		return o, err
	}
	o.orderingKey = option(r, "Ordering-Key")
	if o.batch, err = parseBatchID(option(r, "Batch")); err != nil {
		return o, err
	}
	// after may be repeated, each a comma-separated list of handles.
	if o.after, err = s.parseAfter(strings.Split(strings.Join(options(r, "After"), ","), ",")); err != nil {
		return o, err
	}
	if o.afterAnyway, err = boolOption(r, "After-Anyway"); err != nil {
		return o, err
	}
	if o.afterUnique, err = parseAfterUnique(r.PathValue("fn"), options(r, "After-Unique")); err != nil {
		return o, err
	}
	if o.afterAnyway && len(o.after) == 0 && len(o.afterUnique) == 0 {
		return o, errorf(http.StatusBadRequest, "invalid-option", "after-anyway goes with after or after-unique")
	}
	return o, checkOrderingKey(o.orderingKey)
}

// submitted is the outcome of one submit.
type submitted struct {
	seq     uint64
	created bool
	feed    *feed
	err     error
}

// startSubmit hands a background job to the broker; the channel gets the
// outcome once the job is accepted (stored, with a durable store). The job
// is watched by the hub when there is room, so its events and result can
// be read later.
func (s *Server) startSubmit(fn string, payload []byte, o submitOptions) <-chan submitted {
	p := broker.SubmitParams{Function: []byte(fn), Payload: payload, Priority: o.priority, Background: true, RunAt: o.runAt,
		Attempts: o.attempts, Timeout: o.timeout, OrderingKey: o.orderingKey, Batch: o.batch,
		After: o.after, AfterAnyway: o.afterAnyway, AfterUnique: o.afterUnique}
	if o.unique != "" {
		p.Unique = []byte(o.unique)
	}
	ch := make(chan submitted, 1)
	state := "queued"
	if o.runAt > time.Now().Unix() {
		state = "scheduled"
	}
	if s.hub.hasRoom() {
		// The feed starts when the watch does, before the job's first
		// event: with a durable store the job may run before done. Both
		// callbacks run with the broker's lock held, one after the other.
		var f *feed
		track := func(seq uint64, created bool) *feed {
			st := state
			if !created {
				st = "attached"
			}
			return s.hub.track(seq, broker.JobSnapshot{Seq: seq, Function: fn, State: st,
				Priority: o.priority, Background: true, RunAt: o.runAt})
		}
		s.b.SubmitWatched(s.hub.sess, p, func(seq uint64, created bool) {
			if f != nil && f.seq != seq {
				// The job became another (shared mode): follow that one.
				s.hub.forget(f)
			}
			f = track(seq, created)
		}, func(seq uint64, created bool, err error) {
			out := submitted{seq: seq, created: created, err: err}
			if err == nil {
				if f == nil {
					f = track(seq, created) // attached to a retained result
				}
				out.feed = f
			}
			ch <- out
		})
	} else {
		s.b.Submit(s.hub.sess, p, func(seq uint64, created bool, err error) {
			ch <- submitted{seq: seq, created: created, err: err}
		})
	}
	return ch
}

// submittedState is the state the answer to a submit (single, or a
// batch's line) gives its job: the live job's as it is now (queued,
// scheduled, blocked, waiting, running...; for a submit that joined a job,
// that job's), as GET /v1/jobs/{handle} would say; in shared mode a job
// that waits for others is read from the store, where alone it is. final
// is set when the job already ended (a retained result the submit joined,
// a job its worker ended at once): its state is then its outcome.
func (s *Server) submittedState(ctx context.Context, seq uint64, o submitOptions) (state string, final bool) {
	if snap, ok := s.b.JobNow(ctx, seq); ok {
		return snap.State, snap.Final
	}
	if len(o.after) > 0 || len(o.afterUnique) > 0 {
		if snap, ok, err := s.b.StoredJob(ctx, seq); err == nil && ok {
			return snap.State, snap.Final
		}
	}
	if o.runAt > time.Now().Unix() {
		return "scheduled", false
	}
	return "queued", false
}

// awaitSubmit waits for a submit's outcome.
func awaitSubmit(ctx context.Context, ch <-chan submitted) submitted {
	select {
	case out := <-ch:
		return out
	case <-ctx.Done():
		// The broker will still answer; the job may be accepted.
		return submitted{err: errorf(http.StatusServiceUnavailable, "timeout", "the request ended before the job was accepted")}
	}
}

func (s *Server) jobLocation(seq uint64) string {
	return "/v1/jobs/" + url.PathEscape(s.b.Handle(seq))
}

// handleSubmit serves POST /v1/functions/{fn}/jobs.
func (s *Server) handleSubmit(w http.ResponseWriter, r *http.Request) error {
	if s.b.Draining() {
		return broker.ErrStopped
	}
	fn := r.PathValue("fn")
	if err := checkFunction(fn); err != nil {
		return err
	}
	o, err := s.parseSubmitOptions(r)
	if err != nil {
		return err
	}
	payload, err := io.ReadAll(r.Body)
	if err != nil {
		return fmt.Errorf("reading the payload: %w", err)
	}
	out := awaitSubmit(r.Context(), s.startSubmit(fn, payload, o))
	if out.err != nil {
		return out.err
	}
	w.Header().Set("Location", s.jobLocation(out.seq))
	created := out.created
	res := jobJSON{Handle: s.b.Handle(out.seq), Function: fn, Created: &created}
	res.State, res.Final = s.submittedState(r.Context(), out.seq, o)
	if o.wait > 0 && out.feed != nil {
		// With too many requests waiting, the submit answers at once.
		release, ok := s.longRequest(w, o.wait)
		if !ok {
			writeJSON(w, http.StatusAccepted, res)
			return nil
		}
		defer release()
		if e, finished, ok := s.waitFinal(r.Context(), out.feed, o.wait); ok {
			// The job's end is on disk before the client hears of it, so
			// that a crash does not run again a job it was told had ended.
			// When it cannot be written (the store refuses writes, or in
			// shared mode does not answer), the job is stored all the
			// same: the answer is 202 as when the wait ends first, with
			// the state it had then, not an error that a client would
			// take for a submit to send again.
			if err := s.b.Durable(r.Context()); err != nil {
				if r.Context().Err() != nil {
					return err
				}
				writeJSON(w, http.StatusAccepted, res)
				return nil
			}
			fj := s.finalJSON(out.seq, e, finished)
			if snap, ok := s.b.Job(r.Context(), out.seq); ok && snap.Final {
				// The job's record: its outcome, attempts and last error.
				fj = s.snapshotJSON(snap)
			}
			fj.Function, fj.Created = fn, &created
			writeJSON(w, http.StatusOK, fj)
			return nil
		}
		if snap, ok := s.b.Job(r.Context(), out.seq); ok {
			res.State, res.Final = snap.State, snap.Final
		}
	}
	writeJSON(w, http.StatusAccepted, res)
	return nil
}

// waitFinal waits up to d for a feed's final event.
func (s *Server) waitFinal(ctx context.Context, f *feed, d time.Duration) (feedEvent, time.Time, bool) {
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		_, done, changed := s.hub.read(f, ^uint64(0))
		if done {
			e, _ := s.hub.outcome(f)
			return e, s.hub.finishedAt(f), true
		}
		select {
		case <-changed:
		case <-t.C:
			return feedEvent{}, time.Time{}, false
		case <-ctx.Done():
			return feedEvent{}, time.Time{}, false
		case <-s.stop:
			return feedEvent{}, time.Time{}, false
		}
	}
}

// checkFunction applies the rule of function names over HTTP: the
// Gearman port's (gearman.CheckFunctionName), and no spaces or control
// characters but tab (bytes below 0x20, and 0x7f), as names in paths and
// query strings are typed and read by people; JSON would carry them, but
// no client of the HTTP API needs them. A tab is taken: Perl's
// Gearman::Client puts one between its prefix and a function name.
func checkFunction(fn string) error {
	if gearman.CheckFunctionName(fn) != nil ||
		strings.ContainsFunc(fn, func(r rune) bool { return (r <= ' ' && r != '\t') || r == 0x7f }) {
		return errorf(http.StatusBadRequest, "invalid-function",
			"function name %q: must be 1 to %d bytes without spaces or control characters but tab", fn, gearman.MaxFunctionSize)
	}
	return nil
}

// batchLine is one line of a batch submit.
type batchLine struct {
	Function string `json:"function"`
	// Payload is text; PayloadBase64 is binary. At most one may be set.
	Payload       *string `json:"payload,omitempty"`
	PayloadBase64 []byte  `json:"payload_base64,omitempty"`
	Priority      string  `json:"priority,omitempty"`
	Unique        string  `json:"unique,omitempty"`
	// RunAt is RFC 3339 or Unix seconds.
	RunAt       json.RawMessage `json:"run_at,omitempty"`
	Attempts    *int            `json:"attempts,omitempty"`
	Timeout     string          `json:"timeout,omitempty"`
	OrderingKey string          `json:"ordering_key,omitempty"`
	// After lists handles of jobs that must complete first; AfterAnyway
	// runs the job even when one of them fails.
	After       []string `json:"after,omitempty"`
	AfterAnyway bool     `json:"after_anyway,omitempty"`
	// AfterUnique names more jobs by their uniques (parseAfterUnique).
	AfterUnique []string `json:"after_unique,omitempty"`
}

// batchResult is one line of a batch submit's answer.
type batchResult struct {
	Line    int    `json:"line"`
	Handle  string `json:"handle,omitempty"`
	State   string `json:"state,omitempty"`
	Created *bool  `json:"created,omitempty"`
	// Final is set when the job already ended (a retained result the
	// line joined): State is then its outcome, as for a single submit.
	Final bool     `json:"final,omitempty"`
	Error *problem `json:"error,omitempty"`
}

// batchWindow is how many batch lines may wait for the store at once: their
// jobs share group commits instead of waiting for one each.
const batchWindow = 256

// pendingLine is a batch line whose submit may still be waiting.
type pendingLine struct {
	res batchResult
	ch  <-chan submitted
	o   submitOptions
}

// handleBatch serves POST /v1/jobs:batch: NDJSON in, NDJSON out, one
// result line per input line, in order. A bad line does not stop the
// others.
func (s *Server) handleBatch(w http.ResponseWriter, r *http.Request) error {
	if s.b.Draining() {
		return broker.ErrStopped
	}
	sc := bufio.NewScanner(r.Body)
	sc.Buffer(make([]byte, 0, 64<<10), int(s.cfg.MaxBody))
	w.Header().Set("Content-Type", "application/x-ndjson")
	enc := json.NewEncoder(w)
	started := false
	line, jobs := 0, 0
	var pending []pendingLine
	// The jobs of POST /v1/batches/{id}/jobs join that batch.
	batch, err := parseBatchID(r.PathValue("id"))
	if err != nil {
		return err
	}
	flush := func() {
		for i := range pending {
			_ = enc.Encode(s.settleLine(r.Context(), &pending[i]))
		}
		clear(pending)
		pending = pending[:0]
	}
	for sc.Scan() {
		line++
		text := trimJSONSpace(sc.Bytes())
		if len(text) == 0 {
			continue
		}
		jobs++
		if jobs > s.cfg.MaxBatch {
			err := errorf(http.StatusRequestEntityTooLarge, "batch-too-large",
				"a batch holds at most %d jobs; this line and the rest were not submitted", s.cfg.MaxBatch)
			if !started {
				return err
			}
			flush()
			p := toProblem(err)
			_ = enc.Encode(batchResult{Line: line, Error: &p})
			return nil
		}
		if !started {
			w.WriteHeader(http.StatusOK)
			started = true
		}
		pl := pendingLine{res: batchResult{Line: line}}
		if err := s.batchOne(text, batch, &pl); err != nil {
			p := toProblem(err)
			pl.res.Error = &p
		}
		pending = append(pending, pl)
		if len(pending) >= batchWindow {
			flush()
		}
	}
	flush()
	if err := sc.Err(); err != nil {
		if !started {
			if errors.Is(err, bufio.ErrTooLong) {
				return errorf(http.StatusRequestEntityTooLarge, "body-too-large", "line %d is longer than %d bytes", line+1, s.cfg.MaxBody)
			}
			return fmt.Errorf("reading the batch: %w", err)
		}
		p := toProblem(fmt.Errorf("reading the batch after line %d: %w", line, err))
		_ = enc.Encode(batchResult{Line: line + 1, Error: &p})
		return nil
	}
	if !started {
		return errorf(http.StatusBadRequest, "empty-batch", "the batch has no jobs: send one JSON object a line")
	}
	return nil
}

// settleLine waits for the outcome of a batch line's submit and returns
// the line's result.
func (s *Server) settleLine(ctx context.Context, p *pendingLine) batchResult {
	if p.ch == nil {
		return p.res
	}
	out := awaitSubmit(ctx, p.ch)
	if out.err != nil {
		pr := toProblem(out.err)
		p.res.Error = &pr
		return p.res
	}
	p.res.Handle = s.b.Handle(out.seq)
	p.res.Created = &out.created
	p.res.State, p.res.Final = s.submittedState(ctx, out.seq, p.o)
	return p.res
}

// batchOne parses one batch line and starts its submit, in batch when it
// is not 0.
func (s *Server) batchOne(text []byte, batch uint64, pl *pendingLine) error {
	var l batchLine
	if err := decodeStrict(text, &l); err != nil {
		return err
	}
	if err := checkFunction(l.Function); err != nil {
		return err
	}
	if l.Payload != nil && l.PayloadBase64 != nil {
		return errorf(http.StatusBadRequest, "invalid-job", "set payload or payload_base64, not both")
	}
	o := submitOptions{batch: batch, afterAnyway: l.AfterAnyway}
	var err error
	if o.after, err = s.parseAfter(l.After); err != nil {
		return err
	}
	if o.afterUnique, err = parseAfterUnique(l.Function, l.AfterUnique); err != nil {
		return err
	}
	if l.Attempts != nil {
		if o.attempts, err = parseAttempts(strconv.Itoa(*l.Attempts)); err != nil {
			return err
		}
	}
	if o.timeout, err = parseTimeout(l.Timeout); err != nil {
		return err
	}
	o.orderingKey = l.OrderingKey
	if err := checkOrderingKey(o.orderingKey); err != nil {
		return err
	}
	if o.priority, err = parsePriority(l.Priority); err != nil {
		return err
	}
	o.unique = l.Unique
	if len(l.RunAt) > 0 {
		var v any
		_ = json.Unmarshal(l.RunAt, &v)
		switch x := v.(type) {
		case string:
			o.runAt, err = parseRunAt(x)
		case float64:
			// Unix seconds: a whole number, however it is written (41,
			// 41.0, 4.1e1); a fraction is refused rather than cut.
			if x != math.Trunc(x) || x < 0 || x >= 1<<63 {
				err = errorf(http.StatusBadRequest, "invalid-option", "run_at %v: Unix seconds are a whole number of seconds from 0", x)
			} else {
				o.runAt, err = parseRunAt(strconv.FormatInt(int64(x), 10))
			}
		default:
			err = errorf(http.StatusBadRequest, "invalid-option", "run_at: use an RFC 3339 string or Unix seconds")
		}
		if err != nil {
			return err
		}
	}
	payload := l.PayloadBase64
	if l.Payload != nil {
		payload = []byte(*l.Payload)
	}
	if payload == nil {
		payload = []byte{}
	}
	pl.ch = s.startSubmit(l.Function, payload, o)
	pl.o = o
	return nil
}

// trimJSONSpace returns line without the whitespace JSON allows around a
// value (space, tab, CR, LF): an NDJSON line is one JSON text, and a
// line that is one only once other spaces are cut (a form feed, a
// no-break space) is refused as invalid JSON, as the same object sent
// alone would be.
func trimJSONSpace(line []byte) []byte {
	return bytes.Trim(line, " \t\r\n")
}

// decodeStrict decodes one JSON value, rejecting unknown fields and
// trailing data.
func decodeStrict(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return errorf(http.StatusBadRequest, "invalid-json", "%s", strings.TrimPrefix(err.Error(), "json: "))
	}
	// More would miss a stray '}' or ']': only the end of the input may
	// follow the object.
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errorf(http.StatusBadRequest, "invalid-json", "unexpected data after the JSON object")
	}
	return nil
}

// handleGetJob serves GET /v1/jobs/{handle}.
func (s *Server) handleGetJob(w http.ResponseWriter, r *http.Request) error {
	seq, handle, err := s.handleParam(r)
	if err != nil {
		return err
	}
	if snap, ok := s.b.Job(r.Context(), seq); ok {
		writeJSON(w, http.StatusOK, s.snapshotJSON(snap))
		return nil
	}
	// A dead letter or retained result that another server sharing the store
	// stored (or this one, before a restart).
	if snap, ok, err := s.b.StoredJob(r.Context(), seq); err != nil {
		return err
	} else if ok {
		writeJSON(w, http.StatusOK, s.snapshotJSON(snap))
		return nil
	}
	if s.life.Results != nil {
		res, ok, err := s.life.Results.Result(r.Context(), handle)
		if err != nil {
			return err
		}
		if ok {
			j := jobJSON{Handle: handle, State: res.State, Result: res.Data, ResultText: textOf(res.Data)}
			j.Finished = utcOrNil(res.Finished)
			writeJSON(w, http.StatusOK, j)
			return nil
		}
	}
	return errorf(http.StatusNotFound, "job-not-found",
		"no job %s: it never existed, or its record is no longer kept (see the policy keys history and history_max)", handle)
}

// handleCancel serves DELETE /v1/jobs/{handle}.
func (s *Server) handleCancel(w http.ResponseWriter, r *http.Request) error {
	_, handle, err := s.handleParam(r)
	if err != nil {
		return err
	}
	if err := s.b.CancelJobBy(r.Context(), []byte(handle), "http "+r.RemoteAddr); err != nil {
		if errors.Is(err, broker.ErrJobEnded) {
			return errorf(http.StatusConflict, "job-ended",
				"job %s %s: only a live job is cancelled; GET /v1/jobs/{handle} shows its record", handle, strings.TrimPrefix(err.Error(), "the job "))
		}
		if errors.Is(err, broker.ErrJobNotFound) {
			return errorf(http.StatusNotFound, "job-not-found",
				"no job %s: it never existed, or its record is no longer kept (see the policy keys history and history_max)", handle)
		}
		if errors.Is(err, broker.ErrJobHeldElsewhere) {
			return errorf(http.StatusConflict, "job-held-elsewhere",
				"job %s is held by another server sharing the store, which did not drop it when asked; cancel it there", handle)
		}
		return err
	}
	return noContent(w)
}

// handleParam returns the job named by the {handle} path wildcard.
func (s *Server) handleParam(r *http.Request) (uint64, string, error) {
	handle := r.PathValue("handle")
	seq, ok := s.b.ParseHandle([]byte(handle))
	if !ok {
		return 0, handle, errorf(http.StatusNotFound, "job-not-found",
			"%q is not a job handle of this server (handles look like %s42)", handle, s.b.HandlePrefix())
	}
	return seq, handle, nil
}

// jobListJSON is a page of GET /v1/jobs.
type jobListJSON struct {
	Jobs []jobJSON `json:"jobs"`
	// Next continues the list (?cursor=); absent on the last page.
	Next string `json:"next_cursor,omitempty"`
}

// handleListJobs serves GET /v1/jobs?function=&state=&limit=&cursor=.
func (s *Server) handleListJobs(w http.ResponseWriter, r *http.Request) error {
	return s.listJobs(w, r, 0)
}

// listJobs answers a page of the job records of ListJobs, of batch when
// it is not 0.
func (s *Server) listJobs(w http.ResponseWriter, r *http.Request, batch uint64) error {
	q := r.URL.Query()
	limit := 0
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > broker.MaxJobPage {
			return errorf(http.StatusBadRequest, "invalid-option", "limit %q: use a whole number from 1 to %d", v, broker.MaxJobPage)
		}
		limit = n
	}
	page, err := s.b.ListJobs(r.Context(), broker.JobQuery{Function: q.Get("function"), State: q.Get("state"), Batch: batch,
		Limit: limit, Cursor: q.Get("cursor")})
	if errors.Is(err, broker.ErrBadQuery) {
		return errorf(http.StatusBadRequest, "invalid-option", "%s", err)
	}
	if err != nil {
		return err
	}
	out := jobListJSON{Jobs: make([]jobJSON, 0, len(page.Jobs)), Next: page.Next}
	for _, snap := range page.Jobs {
		out.Jobs = append(out.Jobs, s.snapshotJSON(snap))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// handleForgetRecord serves DELETE /v1/jobs/{handle}/record: it forgets
// the kept record of a job that ended.
func (s *Server) handleForgetRecord(w http.ResponseWriter, r *http.Request) error {
	seq, handle, err := s.handleParam(r)
	if err != nil {
		return err
	}
	if !s.b.ForgetRecord(r.Context(), seq) {
		return errorf(http.StatusNotFound, "job-not-found", "no record of an ended job %s is kept (a live job is cancelled with DELETE /v1/jobs/{handle})", handle)
	}
	// A crash after the 204 must not bring the record back.
	if err := s.b.Durable(r.Context()); err != nil {
		return err
	}
	return noContent(w)
}

// handleRetryJob serves POST /v1/jobs/{handle}/retry: a failed, exception
// or dead job runs again (broker.RetryJob).
func (s *Server) handleRetryJob(w http.ResponseWriter, r *http.Request) error {
	_, handle, err := s.handleParam(r)
	if err != nil {
		return err
	}
	seq, created, err := s.b.RetryJob(r.Context(), []byte(handle), "http "+r.RemoteAddr)
	switch {
	case errors.Is(err, broker.ErrJobNotFound):
		return errorf(http.StatusNotFound, "job-not-found", "no record of job %s is kept", handle)
	case errors.Is(err, broker.ErrJobLive):
		return errorf(http.StatusConflict, "job-live", "job %s has not ended: only an ended job runs again", handle)
	case errors.Is(err, broker.ErrNotRetryable), errors.Is(err, broker.ErrPayloadNotKept):
		return errorf(http.StatusConflict, "not-retryable", "%s", err)
	case err != nil:
		return err
	}
	w.Header().Set("Location", s.jobLocation(seq))
	res := jobJSON{Handle: s.b.Handle(seq), State: "queued", Created: &created}
	if snap, ok := s.b.Job(r.Context(), seq); ok {
		res = s.snapshotJSON(snap)
		res.Created = &created
	}
	writeJSON(w, http.StatusAccepted, res)
	return nil
}
