package httpapi

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gearwork/gearwork/internal/broker"
)

// batchJSON is the JSON form of a batch (broker.BatchStatus).
type batchJSON struct {
	ID        string `json:"id"`
	Closed    bool   `json:"closed"`
	Complete  bool   `json:"complete"`
	Total     uint64 `json:"total"`
	Pending   uint64 `json:"pending"`
	Running   uint64 `json:"running"`
	Succeeded uint64 `json:"succeeded"`
	Failed    uint64 `json:"failed"`
	Dead      uint64 `json:"dead"`
	// OnSuccess and OnComplete are the callbacks.
	OnSuccess  *callbackJSON `json:"on_success,omitempty"`
	OnComplete *callbackJSON `json:"on_complete,omitempty"`
	// Failures are the handles of the first failed or dead jobs.
	Failures  []string   `json:"failures"`
	Created   *time.Time `json:"created_at,omitempty"`
	Completed *time.Time `json:"completed_at,omitempty"`
}

// callbackJSON is a batch's callback. Payload is text. Fired and State
// say what became of it (read-only: a creator's are ignored): Fired
// whether the callback job was submitted, State fired, waiting or
// skipped (an on_success that never will be: broker.CallbackSkipped).
type callbackJSON struct {
	Function string `json:"function"`
	Payload  string `json:"payload,omitempty"`
	Fired    bool   `json:"fired"`
	State    string `json:"state,omitempty"`
}

// batchCreateJSON is the body of POST /v1/batches (as JSON), or the first
// line of its NDJSON form (whose other lines are the jobs).
type batchCreateJSON struct {
	OnSuccess  *callbackJSON `json:"on_success,omitempty"`
	OnComplete *callbackJSON `json:"on_complete,omitempty"`
	// Jobs are submit lines as POST /v1/jobs:batch takes them.
	Jobs []json.RawMessage `json:"jobs,omitempty"`
	// Open keeps the batch open after its jobs are submitted; by default
	// it is closed.
	Open bool `json:"open,omitempty"`
}

// batchCreatedJSON answers POST /v1/batches.
type batchCreatedJSON struct {
	Batch batchJSON     `json:"batch"`
	Jobs  []batchResult `json:"jobs"`
}

func batchStatusJSON(st broker.BatchStatus) batchJSON {
	j := batchJSON{ID: strconv.FormatUint(st.ID, 10), Closed: st.Closed, Complete: st.Complete, Total: st.Total,
		Pending: st.Pending, Running: st.Running, Succeeded: st.Succeeded, Failed: st.Failed, Dead: st.Dead,
		Failures: st.Failures, Created: utcOrNil(st.Created), Completed: utcOrNil(st.Completed)}
	if j.Failures == nil {
		j.Failures = []string{}
	}
	if st.OnSuccess.Function != "" {
		j.OnSuccess = &callbackJSON{Function: st.OnSuccess.Function, Payload: string(st.OnSuccess.Payload),
			Fired: st.SuccessFired, State: st.SuccessState()}
	}
	if st.OnComplete.Function != "" {
		j.OnComplete = &callbackJSON{Function: st.OnComplete.Function, Payload: string(st.OnComplete.Payload),
			Fired: st.CompleteFired, State: st.CompleteState()}
	}
	return j
}

// batchProblem is the problem of a batch or dependency error of the
// broker (toProblem).
func batchProblem(err error) problem {
	status, kind := http.StatusBadRequest, "invalid-option" // ErrBatchForeground
	switch {
	case errors.Is(err, broker.ErrDependency):
		kind = "invalid-dependency"
	case errors.Is(err, broker.ErrBatchNotFound):
		status, kind = http.StatusNotFound, "batch-not-found"
	case errors.Is(err, broker.ErrBatchComplete):
		status, kind = http.StatusConflict, "batch-complete"
	}
	return newProblem(status, kind, err.Error())
}

// parseBatchID parses a batch id ("" is 0, no batch).
func parseBatchID(v string) (uint64, error) {
	if v == "" {
		return 0, nil
	}
	id, err := strconv.ParseUint(v, 10, 64)
	if err != nil || id == 0 {
		return 0, errorf(http.StatusBadRequest, "invalid-option", "batch %q: use the id POST /v1/batches answered", v)
	}
	return id, nil
}

func callbackOf(name string, c *callbackJSON) (broker.Callback, error) {
	if c == nil {
		return broker.Callback{}, nil
	}
	if err := checkFunction(c.Function); err != nil {
		return broker.Callback{}, errorf(http.StatusBadRequest, "invalid-function", "%s: %v", name, err)
	}
	return broker.Callback{Function: c.Function, Payload: []byte(c.Payload)}, nil
}

// handleCreateBatch serves POST /v1/batches: it creates a batch with its
// callbacks, submits its jobs and closes it (unless "open" is set). The
// body is JSON, or NDJSON (Content-Type application/x-ndjson) whose first
// line holds the callbacks and whose other lines are the jobs. A bad job
// line does not stop the others; its result says why.
func (s *Server) handleCreateBatch(w http.ResponseWriter, r *http.Request) error {
	if s.b.Draining() {
		return broker.ErrStopped
	}
	req, err := s.readBatchCreate(r)
	if err != nil {
		return err
	}
	if len(req.Jobs) > s.cfg.MaxBatch {
		return errorf(http.StatusRequestEntityTooLarge, "batch-too-large",
			"a request holds at most %d jobs; add more with POST /v1/batches/{id}/jobs", s.cfg.MaxBatch)
	}
	var p broker.BatchParams
	if p.OnSuccess, err = callbackOf("on_success", req.OnSuccess); err != nil {
		return err
	}
	if p.OnComplete, err = callbackOf("on_complete", req.OnComplete); err != nil {
		return err
	}
	id, err := s.b.CreateBatch(r.Context(), p)
	if err != nil {
		return err
	}
	out := batchCreatedJSON{Jobs: make([]batchResult, 0, len(req.Jobs))}
	pending := make([]pendingLine, 0, min(len(req.Jobs), batchWindow))
	flush := func() {
		for i := range pending {
			out.Jobs = append(out.Jobs, s.settleLine(r.Context(), &pending[i]))
		}
		pending = pending[:0]
	}
	for i, text := range req.Jobs {
		pl := pendingLine{res: batchResult{Line: i + 1}}
		if err := s.batchOne(text, id, &pl); err != nil {
			pr := toProblem(err)
			pl.res.Error = &pr
		}
		if pending = append(pending, pl); len(pending) >= batchWindow {
			flush()
		}
	}
	flush()
	if !req.Open {
		if err := s.b.CloseBatch(r.Context(), id); err != nil {
			return err
		}
	}
	st, err := s.b.Batch(r.Context(), id)
	if err != nil {
		return err
	}
	out.Batch = batchStatusJSON(st)
	w.Header().Set("Location", "/v1/batches/"+out.Batch.ID)
	writeJSON(w, http.StatusCreated, out)
	return nil
}

// readBatchCreate reads the body of POST /v1/batches.
func (s *Server) readBatchCreate(r *http.Request) (batchCreateJSON, error) {
	var req batchCreateJSON
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if mt != "application/x-ndjson" {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			return req, fmt.Errorf("reading the batch: %w", err)
		}
		if len(trimJSONSpace(body)) == 0 {
			return req, nil
		}
		return req, decodeStrict(body, &req)
	}
	sc := bufio.NewScanner(r.Body)
	sc.Buffer(make([]byte, 0, 64<<10), int(s.cfg.MaxBody))
	first := true
	for sc.Scan() {
		text := trimJSONSpace(sc.Bytes())
		if len(text) == 0 {
			continue
		}
		if first {
			first = false
			if err := decodeStrict(text, &req); err != nil {
				return req, fmt.Errorf("the first line (the batch): %w", err)
			}
			if req.Jobs != nil {
				return req, errorf(http.StatusBadRequest, "invalid-json", "NDJSON: the jobs follow the first line, one a line")
			}
			continue
		}
		req.Jobs = append(req.Jobs, bytes.Clone(text))
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return req, errorf(http.StatusRequestEntityTooLarge, "body-too-large", "a line is longer than %d bytes", s.cfg.MaxBody)
		}
		return req, fmt.Errorf("reading the batch: %w", err)
	}
	return req, nil
}

func (s *Server) batchParam(r *http.Request) (uint64, error) {
	id, err := parseBatchID(r.PathValue("id"))
	if err == nil && id == 0 {
		err = errorf(http.StatusBadRequest, "invalid-option", "a batch id is required")
	}
	return id, err
}

// handleGetBatch serves GET /v1/batches/{id}.
func (s *Server) handleGetBatch(w http.ResponseWriter, r *http.Request) error {
	id, err := s.batchParam(r)
	if err != nil {
		return err
	}
	st, err := s.b.Batch(r.Context(), id)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, batchStatusJSON(st))
	return nil
}

// handleListBatchJobs serves GET /v1/batches/{id}/jobs?state=&function=&limit=&cursor=:
// the jobs of a batch as GET /v1/jobs lists them, the live ones and the
// records kept of the ended ones.
func (s *Server) handleListBatchJobs(w http.ResponseWriter, r *http.Request) error {
	id, err := s.batchParam(r)
	if err != nil {
		return err
	}
	if _, err := s.b.Batch(r.Context(), id); err != nil {
		return err
	}
	return s.listJobs(w, r, id)
}

// handleCloseBatch serves POST /v1/batches/{id}/close.
func (s *Server) handleCloseBatch(w http.ResponseWriter, r *http.Request) error {
	id, err := s.batchParam(r)
	if err != nil {
		return err
	}
	if err := s.b.CloseBatch(r.Context(), id); err != nil {
		return err
	}
	return s.handleGetBatch(w, r)
}

// maxListedBatches is the most batches GET /v1/batches lists.
const maxListedBatches = 1000

// handleListBatches serves GET /v1/batches: the newest batches first.
func (s *Server) handleListBatches(w http.ResponseWriter, r *http.Request) error {
	limit := maxListedBatches
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return errorf(http.StatusBadRequest, "invalid-option", "limit %q: use a whole number from 1", v)
		}
		limit = min(n, maxListedBatches)
	}
	out := struct {
		Batches []batchJSON `json:"batches"`
	}{Batches: []batchJSON{}}
	list, err := s.b.Batches(r.Context(), limit)
	if err != nil {
		return err
	}
	for _, st := range list {
		out.Batches = append(out.Batches, batchStatusJSON(st))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// parseAfter turns the handles of a submit's dependencies into sequence
// numbers; empty entries are skipped.
func (s *Server) parseAfter(handles []string) ([]uint64, error) {
	var out []uint64
	for _, h := range handles {
		h = strings.TrimSpace(h)
		if h == "" {
			continue
		}
		seq, ok := s.b.ParseHandle([]byte(h))
		if !ok {
			return nil, errorf(http.StatusBadRequest, "invalid-dependency", "after: %q is not a job handle of this server", h)
		}
		out = append(out, seq)
	}
	return out, nil
}

// parseAfterUnique turns the uniques of a submit's dependencies into the
// jobs they name: "FUNCTION/UNIQUE" (split at the first '/') names the
// job of FUNCTION with that unique, and an entry without '/' a job of fn,
// the submitted job's own function.
func parseAfterUnique(fn string, entries []string) ([]broker.UniqueDep, error) {
	var out []broker.UniqueDep
	for _, e := range entries {
		d := broker.UniqueDep{Function: fn, Unique: e}
		if f, u, ok := strings.Cut(e, "/"); ok {
			d = broker.UniqueDep{Function: f, Unique: u}
		}
		if d.Function == "" || d.Unique == "" {
			return nil, errorf(http.StatusBadRequest, "invalid-dependency",
				"after_unique: %q names no unique (use UNIQUE or FUNCTION/UNIQUE)", e)
		}
		if err := checkText("after_unique", e); err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, nil
}

// parseBool parses a boolean option: true or 1, false or 0 (any case);
// "" is false. Every boolean of the API reads through it (queryBool,
// boolOption).
func parseBool(name, v string) (bool, error) {
	switch strings.ToLower(v) {
	case "", "false", "0":
		return false, nil
	case "true", "1":
		return true, nil
	}
	return false, errorf(http.StatusBadRequest, "invalid-option", "%s %q: use true or false", name, v)
}
