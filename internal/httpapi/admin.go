package httpapi

import (
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gearwork/gearwork/internal/broker"
)

// functionJSON is a function's queue state and counters.
type functionJSON struct {
	Name string `json:"name"`
	// Queued counts runnable jobs by priority.
	Queued  map[string]int `json:"queued"`
	Total   int            `json:"total"`
	Running int            `json:"running"`
	Workers int            `json:"workers"`
	// MaxQueue is the queue limit by priority; 0 means none.
	MaxQueue   map[string]int `json:"max_queue"`
	Submitted  uint64         `json:"submitted"`
	Completed  uint64         `json:"completed"`
	Failed     uint64         `json:"failed"`
	Exceptions uint64         `json:"exceptions"`
	// TimedOut and Vanished count runs the server ended without a
	// result: past their timeout (or lease), or their worker gone.
	TimedOut uint64 `json:"timed_out"`
	Vanished uint64 `json:"vanished"`
	Retried  uint64 `json:"retried"`
	Dead     uint64 `json:"dead"`
	Dropped  uint64 `json:"dropped"`
	// DeadLetters counts the dead letters kept now.
	DeadLetters int        `json:"dead_letters"`
	Paused      bool       `json:"paused"`
	PausedUntil *time.Time `json:"paused_until,omitempty"`
	// Jobs counts this server's live jobs by state and the kept records
	// of its ended ones by final state (states without jobs are absent).
	Jobs map[string]int `json:"jobs_by_state"`
}

// functionsJSON lists the functions of st and counts (by name) that keep
// holds, or all of them if keep is nil.
func functionsJSON(st broker.Stats, counts []broker.JobCounts, keep map[string]bool) []functionJSON {
	byName := make(map[string]broker.JobCounts, len(counts))
	for _, c := range counts {
		byName[c.Function] = c
	}
	fns := st.Functions
	// A function known only from the records of its ended jobs (one
	// without live jobs or workers since the server started) is listed
	// with their counts, as the metrics and the job list show them.
	known := make(map[string]bool, len(fns))
	for _, f := range fns {
		known[f.Name] = true
	}
	n := len(fns)
	for _, c := range counts {
		if !known[c.Function] {
			fns = append(fns, broker.FunctionStats{FunctionStatus: broker.FunctionStatus{Name: c.Function}})
		}
	}
	if len(fns) > n {
		slices.SortFunc(fns, func(a, b broker.FunctionStats) int { return strings.Compare(a.Name, b.Name) })
	}
	out := make([]functionJSON, 0, min(len(fns), len(keep)))
	if keep == nil {
		out = make([]functionJSON, 0, len(fns))
	}
	for _, f := range fns {
		if keep != nil && !keep[f.Name] {
			continue
		}
		jobs := map[string]int{}
		c := byName[f.Name]
		for k, v := range c.Live {
			jobs[k] = v
		}
		for k, v := range c.Ended {
			jobs[k] = v
		}
		out = append(out, functionJSON{Name: f.Name, Total: f.Total, Running: f.Running, Workers: f.Workers,
			Queued:    map[string]int{"high": f.Queued[broker.High], "normal": f.Queued[broker.Normal], "low": f.Queued[broker.Low]},
			MaxQueue:  map[string]int{"high": f.MaxQueue[broker.High], "normal": f.MaxQueue[broker.Normal], "low": f.MaxQueue[broker.Low]},
			Submitted: f.Submitted, Completed: f.Completed, Failed: f.Failed, Exceptions: f.Exceptions,
			TimedOut: f.TimedOut, Vanished: f.Vanished,
			Retried: f.Retried, Dead: f.Dead, Dropped: f.Dropped, DeadLetters: f.DeadLetters, Paused: f.Paused, Jobs: jobs})
		out[len(out)-1].PausedUntil = utcOrNil(f.PausedUntil)
	}
	return out
}

// Bounds of GET /v1/functions?limit=.
const (
	defaultFunctionPage = 1000
	maxFunctionPage     = 10000
)

// handleFunctions serves GET /v1/functions?limit=&function=&after=: at
// most limit functions (selectFunctions says which) and how many were left
// out; with after= the next limit functions by name (pageFunctions) and
// the name to continue after; with function= (repeatable) just those
// named.
func (s *Server) handleFunctions(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	limit := defaultFunctionPage
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxFunctionPage {
			return errorf(http.StatusBadRequest, "invalid-option", "limit %q: use a whole number from 1 to %d", v, maxFunctionPage)
		}
		limit = n
	}
	named, paged := q["function"], q.Has("after")
	if len(named) > 0 && paged {
		return errorf(http.StatusBadRequest, "invalid-option", "function and after: use one or the other")
	}
	st, counts := s.b.Stats(r.Context()), s.b.CountJobs(r.Context())
	var keep map[string]bool
	omitted, next := 0, ""
	switch {
	case len(named) > 0:
		keep = make(map[string]bool, len(named))
		for _, fn := range named {
			keep[fn] = true
		}
	case paged:
		keep, omitted, next = pageFunctions(st.Functions, counts, q.Get("after"), limit)
	default:
		keep, omitted = selectFunctions(st.Functions, counts, limit, nil)
	}
	out := map[string]any{"functions": functionsJSON(st, counts, keep), "functions_omitted": omitted}
	if next != "" {
		out["next_after"] = next
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// workerJSON is one session of any front end.
type workerJSON struct {
	ID        uint64   `json:"id"`
	Addr      string   `json:"addr"`
	ClientID  string   `json:"client_id"`
	Functions []string `json:"functions"`
}

// handleWorkers serves GET /v1/workers: every session that registered at
// least one function (Gearman workers and polling HTTP workers), or with
// ?all=true (or ?all) every session.
func (s *Server) handleWorkers(w http.ResponseWriter, r *http.Request) error {
	all, _, err := queryBool(r, "all")
	if err != nil {
		return err
	}
	out := []workerJSON{}
	for _, wi := range s.b.Workers() {
		if len(wi.Functions) == 0 && !all {
			continue
		}
		fns := wi.Functions
		if fns == nil {
			fns = []string{}
		}
		out = append(out, workerJSON{ID: wi.ID, Addr: wi.Addr, ClientID: wi.ClientID, Functions: fns})
	}
	writeJSON(w, http.StatusOK, map[string]any{"workers": out})
	return nil
}

// handleListDead serves GET /v1/dead-letters?function=&limit=.
func (s *Server) handleListDead(w http.ResponseWriter, r *http.Request) error {
	limit := 100
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 10000 {
			return errorf(http.StatusBadRequest, "invalid-option", "limit %q: use 1 to 10000", v)
		}
		limit = n
	}
	dl, err := s.life.DeadLetters.ListDead(r.Context(), r.URL.Query().Get("function"), limit)
	if err != nil {
		return err
	}
	type deadJSON struct {
		DeadLetter
		Payload     []byte  `json:"payload"`
		PayloadText *string `json:"payload_text,omitempty"`
	}
	out := make([]deadJSON, 0, len(dl))
	for _, d := range dl {
		out = append(out, deadJSON{DeadLetter: d, Payload: nonNil(d.Payload), PayloadText: textOf(nonNil(d.Payload))})
	}
	writeJSON(w, http.StatusOK, map[string]any{"dead_letters": out})
	return nil
}

// handleRetryDead serves POST /v1/dead-letters/{handle}/retry.
func (s *Server) handleRetryDead(w http.ResponseWriter, r *http.Request) error {
	handle := r.PathValue("handle")
	if err := s.life.DeadLetters.RetryDead(r.Context(), handle); err != nil {
		if errors.Is(err, broker.ErrJobNotFound) {
			return errorf(http.StatusNotFound, "job-not-found", "no dead job %s", handle)
		}
		return err
	}
	w.Header().Set("Location", "/v1/jobs/"+handle)
	writeJSON(w, http.StatusAccepted, jobJSON{Handle: handle, State: "queued"})
	return nil
}

// handlePurgeDead serves DELETE /v1/dead-letters/{handle} and
// DELETE /v1/dead-letters?function=.
func (s *Server) handlePurgeDead(w http.ResponseWriter, r *http.Request) error {
	handle := r.PathValue("handle")
	n, err := s.life.DeadLetters.PurgeDead(r.Context(), r.URL.Query().Get("function"), handle)
	if err != nil {
		return err
	}
	if handle != "" && n == 0 {
		return errorf(http.StatusNotFound, "job-not-found", "no dead job %s", handle)
	}
	writeJSON(w, http.StatusOK, map[string]int{"purged": n})
	return nil
}

// handlePause serves POST /v1/functions/{fn}/pause?until=, where until is
// an RFC 3339 time or a positive duration from now (30m), as in the admin
// command.
func (s *Server) handlePause(w http.ResponseWriter, r *http.Request) error {
	fn := r.PathValue("fn")
	var until time.Time
	if v := r.URL.Query().Get("until"); v != "" {
		if d, err := time.ParseDuration(v); err == nil && d > 0 {
			until = time.Now().Add(d)
		} else if until, err = time.Parse(time.RFC3339, v); err != nil {
			return errorf(http.StatusBadRequest, "invalid-option",
				"until %q: use an RFC 3339 time, such as 2026-01-02T15:04:05Z, or a positive duration, such as 30m", v)
		}
	}
	if err := s.life.Pauser.Pause(r.Context(), fn, until); err != nil {
		return err
	}
	return noContent(w)
}

// handleResume serves POST /v1/functions/{fn}/resume.
func (s *Server) handleResume(w http.ResponseWriter, r *http.Request) error {
	if err := s.life.Pauser.Resume(r.Context(), r.PathValue("fn")); err != nil {
		return err
	}
	return noContent(w)
}

// handleHealthz serves GET /healthz: the process serves HTTP.
func (s *Server) handleHealthz(w http.ResponseWriter, _ *http.Request) error {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	return nil
}

// handleReadyz serves GET /readyz: 200 while the broker accepts and hands
// out jobs, 503 while draining or after a store failure.
func (s *Server) handleReadyz(w http.ResponseWriter, _ *http.Request) error {
	select {
	case <-s.stop:
		return errorf(http.StatusServiceUnavailable, "not-ready", "the HTTP server is shutting down")
	default:
	}
	if ready, why := s.b.Health(); !ready {
		return errorf(http.StatusServiceUnavailable, "not-ready", "%s", why)
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	return nil
}
