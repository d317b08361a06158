package httpapi

import (
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/gearwork/gearwork/internal/broker"
)

// handlerFunc is a route's handler; an error it returns is answered as
// problem details (if nothing was written yet).
type handlerFunc func(w http.ResponseWriter, r *http.Request) error

// route is one entry of the router. The OpenAPI document lists exactly
// these (a test checks both ways).
type route struct {
	method  string
	pattern string
	scope   Scope
	// rule is what the route needs from the authorization rules of a
	// client they decide for (authorizeByRules); nil refuses it to them.
	rule    ruleNeed
	handler handlerFunc
}

// routeTable lists every route the server answers.
func (s *Server) routeTable() []route {
	return []route{
		{"POST", "/v1/functions/{fn}/jobs", ScopeSubmit, ruleSubmitFunction, s.handleSubmit},
		{"POST", "/v1/jobs:batch", ScopeSubmit, ruleSubmitEvery, s.handleBatch},
		{"GET", "/v1/jobs", ScopeRead, ruleReadEvery, s.handleListJobs},
		{"POST", "/v1/batches", ScopeSubmit, ruleSubmitEvery, s.handleCreateBatch},
		{"GET", "/v1/batches", ScopeRead, ruleReadEvery, s.handleListBatches},
		{"GET", "/v1/batches/{id}", ScopeRead, ruleReadEvery, s.handleGetBatch},
		{"POST", "/v1/batches/{id}/jobs", ScopeSubmit, ruleSubmitEvery, s.handleBatch},
		{"GET", "/v1/batches/{id}/jobs", ScopeRead, ruleReadEvery, s.handleListBatchJobs},
		{"POST", "/v1/batches/{id}/close", ScopeSubmit, ruleSubmitEvery, s.handleCloseBatch},
		{"GET", "/v1/jobs/{handle}", ScopeRead, ruleReadEvery, s.handleGetJob},
		{"DELETE", "/v1/jobs/{handle}", ScopeAdmin, ruleAdmin("cancel job"), s.handleCancel},
		{"GET", "/v1/jobs/{handle}/events", ScopeRead, ruleReadEvery, s.handleJobEvents},
		{"DELETE", "/v1/jobs/{handle}/record", ScopeAdmin, ruleAdminEvery, s.handleForgetRecord},
		{"POST", "/v1/jobs/{handle}/retry", ScopeAdmin, ruleAdmin("retry job"), s.handleRetryJob},
		{"GET", "/v1/functions", ScopeRead, ruleOpen, s.handleFunctions},
		{"POST", "/v1/functions/{fn}/pause", ScopeAdmin, ruleAdmin("pause"), s.handlePause},
		{"POST", "/v1/functions/{fn}/resume", ScopeAdmin, ruleAdmin("resume"), s.handleResume},
		{"GET", "/v1/workers", ScopeRead, ruleOpen, s.handleWorkers},
		{"GET", "/v1/stream", ScopeRead, ruleReadEvery, s.handleStream},
		{"GET", "/v1/dead-letters", ScopeRead, ruleReadEvery, s.handleListDead},
		{"DELETE", "/v1/dead-letters", ScopeAdmin, ruleAdmin("deadletter purge"), s.handlePurgeDead},
		{"POST", "/v1/dead-letters/{handle}/retry", ScopeAdmin, ruleAdmin("deadletter retry"), s.handleRetryDead},
		{"DELETE", "/v1/dead-letters/{handle}", ScopeAdmin, ruleAdmin("deadletter purge"), s.handlePurgeDead},
		{"POST", "/v1/functions/{fn}/grab", ScopeWork, ruleServeFunction, s.handleGrab},
		{"POST", "/v1/jobs/{handle}/complete", ScopeWork, ruleServeSome, s.handleFinish(broker.Complete)},
		{"POST", "/v1/jobs/{handle}/fail", ScopeWork, ruleServeSome, s.handleFinish(broker.Fail)},
		{"POST", "/v1/jobs/{handle}/status", ScopeWork, ruleServeSome, s.handleWorkStatus},
		{"POST", "/v1/jobs/{handle}/data", ScopeWork, ruleServeSome, s.handleWorkData},
		{"GET", "/metrics", ScopeMetrics, ruleOpen, s.handleMetrics},
		{"GET", "/healthz", scopeNone, ruleOpen, s.handleHealthz},
		{"GET", "/readyz", scopeNone, ruleOpen, s.handleReadyz},
		{"GET", "/openapi.json", scopeNone, ruleOpen, s.handleOpenAPI},
		{"GET", "/{$}", scopeNone, ruleOpen, s.handleDashboard},
		{"GET", "/assets/{file}", scopeNone, ruleOpen, s.handleAsset},
	}
}

// RouteScope returns the scope the route method pattern needs, as the
// route table has it, for what must agree with it (the Gearman port's
// admin commands that do the same); ok is false for a route the table
// does not have.
func RouteScope(method, pattern string) (scope Scope, ok bool) {
	for _, rt := range (&Server{}).routeTable() {
		if rt.method == method && rt.pattern == pattern {
			return rt.scope, true
		}
	}
	return 0, false
}

func (s *Server) buildHandler() http.Handler {
	mux := http.NewServeMux()
	s.mux = mux
	for _, rt := range s.routes {
		mux.Handle(rt.method+" "+rt.pattern, s.wrap(rt))
	}
	var h http.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, pattern := mux.Handler(r); pattern == "" {
			s.noRoute(mux, w, r)
			return
		}
		mux.ServeHTTP(w, r)
	})
	h = gzipJSON(h)
	h = s.cors(h)
	h = s.browserChecks(h)
	return h
}

// wrap applies a route's checks: authorization, the query parameters, the
// body limit, problem answers for errors (logged: see logProblem),
// metrics.
func (s *Server) wrap(rt route) http.Handler {
	label := rt.method + " " + rt.pattern
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sw := &statusWriter{ResponseWriter: w}
		// fail answers err as a problem and logs it.
		fail := func(err error) {
			writeProblem(sw, r, err)
			s.logProblem(r, label, sw.status, err)
		}
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				s.log.ErrorContext(r.Context(), "httpapi: handler panicked", slog.String("route", label),
					slog.Any("panic", v))
				if sw.status == 0 {
					fail(fmt.Errorf("internal error"))
				}
			}
			s.metrics.request(label, sw.status)
		}()
		if err := s.authorize(r, rt); err != nil {
			fail(err)
			return
		}
		if err := checkQuery(rt, r); err != nil {
			fail(err)
			return
		}
		r.Body = requestBody{http.MaxBytesReader(sw, r.Body, s.cfg.MaxBody)}
		if err := rt.handler(sw, r); err != nil {
			if sw.status != 0 {
				s.log.DebugContext(r.Context(), "httpapi: error after the answer began", slog.String("route", label),
					slog.String("error", err.Error()))
				return
			}
			fail(err)
		}
	})
}

// logProblem logs an error answer: a client's mistake (4xx) at debug
// level, so that an operator can turn it on (--log-level debug) to see why
// clients fail; a server error (5xx) as a warning, or as an error for 500.
func (s *Server) logProblem(r *http.Request, route string, status int, err error) {
	level := slog.LevelDebug
	switch {
	case status == http.StatusInternalServerError:
		level = slog.LevelError
	case status >= 500:
		level = slog.LevelWarn
	}
	ctx := r.Context()
	if !s.log.Enabled(ctx, level) {
		return
	}
	s.log.Log(ctx, level, "httpapi: error answer", slog.Int("status", status), slog.String("route", route),
		slog.String("method", r.Method), slog.String("path", r.URL.Path), slog.String("remote", r.RemoteAddr),
		slog.String("error", err.Error()))
}

// noRoute answers requests the router has no route for: 404, or 405 with
// Allow when the path exists for other methods.
func (s *Server) noRoute(mux *http.ServeMux, w http.ResponseWriter, r *http.Request) {
	rec := &headerRecorder{h: make(http.Header)}
	mux.ServeHTTP(rec, r)
	if allow := rec.h.Get("Allow"); allow != "" {
		w.Header().Set("Allow", allow)
	}
	if rec.status == http.StatusMethodNotAllowed {
		writeProblem(w, r, errorf(http.StatusMethodNotAllowed, "method-not-allowed",
			"%s is not allowed on %s; allowed: %s", r.Method, r.URL.Path, rec.h.Get("Allow")))
		return
	}
	writeProblem(w, r, errorf(http.StatusNotFound, "no-route", "no route for %s %s; see /openapi.json", r.Method, r.URL.Path))
}

// headerRecorder captures the status and headers of the mux's own 404/405.
type headerRecorder struct {
	h      http.Header
	status int
}

func (h *headerRecorder) Header() http.Header         { return h.h }
func (h *headerRecorder) Write(b []byte) (int, error) { return len(b), nil }
func (h *headerRecorder) WriteHeader(code int)        { h.status = code }

// statusWriter records the status a handler answered with.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// cors answers preflight requests and adds CORS headers for allowed
// origins.
func (s *Server) cors(next http.Handler) http.Handler {
	if len(s.cfg.CORSOrigins) == 0 {
		return next
	}
	any := slices.Contains(s.cfg.CORSOrigins, "*")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		origin := r.Header.Get("Origin")
		if origin != "" && (any || slices.Contains(s.cfg.CORSOrigins, origin)) {
			h := w.Header()
			h.Set("Access-Control-Allow-Origin", origin)
			h.Add("Vary", "Origin")
			h.Set("Access-Control-Expose-Headers", "Location, Content-Type")
			if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
				h.Set("Access-Control-Allow-Methods", "GET, POST, DELETE")
				h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type, Last-Event-ID, Gearwork-Priority, "+
					"Gearwork-Unique, Gearwork-Run-At, Gearwork-Attempts, Gearwork-Timeout, Gearwork-Ordering-Key, Gearwork-Lease")
				h.Set("Access-Control-Max-Age", "600")
				w.WriteHeader(http.StatusNoContent)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// gzipJSON compresses JSON and NDJSON answers for clients that accept gzip.
// Event streams and other bodies pass through.
func gzipJSON(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !acceptsGzip(r.Header.Get("Accept-Encoding")) {
			next.ServeHTTP(w, r)
			return
		}
		gw := &gzipWriter{ResponseWriter: w}
		defer gw.close()
		next.ServeHTTP(gw, r)
	})
}

func acceptsGzip(ae string) bool {
	for _, part := range strings.Split(ae, ",") {
		name, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		if strings.TrimSpace(name) != "gzip" {
			continue
		}
		if q, ok := strings.CutPrefix(strings.TrimSpace(params), "q="); ok {
			if f, err := strconv.ParseFloat(q, 64); err == nil && f == 0 {
				return false
			}
		}
		return true
	}
	return false
}

var gzipPool = sync.Pool{New: func() any { w, _ := gzip.NewWriterLevel(io.Discard, gzip.BestSpeed); return w }}

// gzipWriter decides at WriteHeader whether to compress, by content type.
type gzipWriter struct {
	http.ResponseWriter
	gz      *gzip.Writer
	decided bool
}

func (w *gzipWriter) WriteHeader(code int) {
	if !w.decided {
		w.decided = true
		h := w.Header()
		h.Add("Vary", "Accept-Encoding")
		ct := h.Get("Content-Type")
		if code != http.StatusNoContent && code != http.StatusNotModified && h.Get("Content-Encoding") == "" &&
			(strings.HasPrefix(ct, "application/json") || strings.HasPrefix(ct, "application/problem+json") ||
				strings.HasPrefix(ct, "application/x-ndjson")) {
			h.Set("Content-Encoding", "gzip")
			h.Del("Content-Length")
			w.gz = gzipPool.Get().(*gzip.Writer)
			w.gz.Reset(w.ResponseWriter)
		}
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *gzipWriter) Write(b []byte) (int, error) {
	if !w.decided {
		if w.Header().Get("Content-Type") == "" {
			w.Header().Set("Content-Type", http.DetectContentType(b))
		}
		w.WriteHeader(http.StatusOK)
	}
	if w.gz != nil {
		return w.gz.Write(b)
	}
	return w.ResponseWriter.Write(b)
}

// Flush flushes compressed data too (NDJSON answers stream line by line).
func (w *gzipWriter) Flush() {
	if w.gz != nil {
		_ = w.gz.Flush()
	}
	http.NewResponseController(w.ResponseWriter).Flush()
}

func (w *gzipWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *gzipWriter) close() {
	if w.gz != nil {
		_ = w.gz.Close()
		w.gz.Reset(io.Discard)
		gzipPool.Put(w.gz)
		w.gz = nil
	}
}

// requestBody marks the errors of reading a request body, other than the
// size limit, as the client's: a malformed chunked encoding or a body cut
// short is a bad request, not a server error.
type requestBody struct{ io.ReadCloser }

func (b requestBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	var mbe *http.MaxBytesError
	if err != nil && err != io.EOF && !errors.As(err, &mbe) {
		err = &bodyError{err: err}
	}
	return n, err
}

// bodyError is a failure to read the request body that the client caused.
type bodyError struct{ err error }

func (e *bodyError) Error() string { return "reading the request body: " + e.err.Error() }
func (e *bodyError) Unwrap() error { return e.err }
