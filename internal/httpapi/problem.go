package httpapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/gearwork/gearwork/internal/broker"
)

// problem is an RFC 9457 problem details object.
type problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail,omitempty"`
	// Instance is the request path the problem occurred on.
	Instance string `json:"instance,omitempty"`
}

// httpError is an error with the HTTP status it should be answered with.
type httpError struct {
	status int
	// kind is the last part of the problem type URI, e.g. "not-found".
	kind   string
	detail string
}

func (e *httpError) Error() string { return e.detail }

func errorf(status int, kind, format string, args ...any) error {
	return &httpError{status: status, kind: kind, detail: fmt.Sprintf(format, args...)}
}

// problemTypeBase prefixes every problem type; the documentation lists
// each one under the same anchor name.
const problemTypeBase = "https://gearwork.dev/problems/"

// toProblem turns any error into problem details. It is the one place where
// broker errors become HTTP status codes.
func toProblem(err error) problem {
	var he *httpError
	var mbe *http.MaxBytesError
	var se *broker.StoreError
	var be *bodyError
	switch {
	case errors.As(err, &he):
		return problem{Type: problemTypeBase + he.kind, Title: http.StatusText(he.status), Status: he.status, Detail: he.detail}
	case errors.As(err, &mbe):
		return problem{Type: problemTypeBase + "body-too-large", Title: http.StatusText(http.StatusRequestEntityTooLarge),
			Status: http.StatusRequestEntityTooLarge,
			Detail: fmt.Sprintf("the request body is larger than the limit of %d bytes", mbe.Limit)}
	case errors.As(err, &be):
		return problem{Type: problemTypeBase + "invalid-body", Title: http.StatusText(http.StatusBadRequest),
			Status: http.StatusBadRequest, Detail: be.Error()}
	case errors.Is(err, broker.ErrQueueFull):
		return problem{Type: problemTypeBase + "queue-full", Title: http.StatusText(http.StatusTooManyRequests),
			Status: http.StatusTooManyRequests, Detail: "the function's queue is at its maxqueue limit for this priority; try later"}
	case errors.Is(err, broker.ErrStopped):
		return problem{Type: problemTypeBase + "shutting-down", Title: http.StatusText(http.StatusServiceUnavailable),
			Status: http.StatusServiceUnavailable, Detail: "the server is shutting down and accepts no jobs"}
	case errors.As(err, &se):
		return problem{Type: problemTypeBase + "store-failed", Title: http.StatusText(http.StatusServiceUnavailable),
			Status: http.StatusServiceUnavailable, Detail: se.Error() + "; the job was not accepted"}
	case errors.Is(err, broker.ErrRunAtOutOfRange):
		return problem{Type: problemTypeBase + "invalid-option", Title: http.StatusText(http.StatusBadRequest),
			Status: http.StatusBadRequest, Detail: err.Error()}
	case errors.Is(err, broker.ErrJobNotFound):
		return problem{Type: problemTypeBase + "job-not-found", Title: http.StatusText(http.StatusNotFound),
			Status: http.StatusNotFound, Detail: "no live job has this handle"}
	case errors.Is(err, broker.ErrFunctionNotFound):
		return problem{Type: problemTypeBase + "function-not-found", Title: http.StatusText(http.StatusNotFound),
			Status: http.StatusNotFound, Detail: err.Error()}
	case errors.Is(err, broker.ErrBatchNotFound), errors.Is(err, broker.ErrBatchComplete), errors.Is(err, broker.ErrBatchForeground),
		errors.Is(err, broker.ErrDependency):
		return batchProblem(err)
	case errors.Is(err, broker.ErrBatchUnsupported), errors.Is(err, errNotImplemented):
		return problem{Type: problemTypeBase + "not-implemented", Title: http.StatusText(http.StatusNotImplemented),
			Status: http.StatusNotImplemented, Detail: err.Error()}
	}
	return problem{Type: problemTypeBase + "internal", Title: http.StatusText(http.StatusInternalServerError),
		Status: http.StatusInternalServerError, Detail: err.Error()}
}

// writeProblem answers with an application/problem+json body.
func writeProblem(w http.ResponseWriter, r *http.Request, err error) {
	p := toProblem(err)
	p.Instance = r.URL.Path
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Del("Content-Length")
	w.WriteHeader(p.Status)
	_ = json.NewEncoder(w).Encode(p)
}

// noContent answers 204 No Content: the request was done and there is
// nothing to say. It returns nil, for a handler to return.
func noContent(w http.ResponseWriter) error {
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// writeJSON answers with status and v as JSON.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// errNotImplemented marks routes whose broker capability is missing.
var errNotImplemented = errors.New("not implemented")

func notImplemented(what string) error {
	return fmt.Errorf("%w: %s is not available in this server: the broker does not provide it", errNotImplemented, what)
}
