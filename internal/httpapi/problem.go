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

// newProblem is the problem of status, of the type named kind (the last
// part of its URI, e.g. "not-found"), with detail.
func newProblem(status int, kind, detail string) problem {
	return problem{Type: problemTypeBase + kind, Title: http.StatusText(status), Status: status, Detail: detail}
}

// toProblem turns any error into problem details. It is the one place where
// broker errors become HTTP status codes.
func toProblem(err error) problem {
	var he *httpError
	var mbe *http.MaxBytesError
	var se *broker.StoreError
	var be *bodyError
	switch {
	case errors.As(err, &he):
		return newProblem(he.status, he.kind, he.detail)
	case errors.As(err, &mbe):
		return newProblem(http.StatusRequestEntityTooLarge, "body-too-large",
			fmt.Sprintf("the request body is larger than the limit of %d bytes", mbe.Limit))
	case errors.As(err, &be):
		return newProblem(http.StatusBadRequest, "invalid-body", be.Error())
	case errors.Is(err, broker.ErrQueueFull):
		return newProblem(http.StatusTooManyRequests, "queue-full",
			"the function's queue is at its maxqueue limit for this priority; try later")
	case errors.Is(err, broker.ErrCallbackTooLarge):
		return newProblem(http.StatusRequestEntityTooLarge, "callback-too-large", err.Error())
	case errors.Is(err, broker.ErrTooManyBatches):
		return newProblem(http.StatusServiceUnavailable, "too-many-batches", err.Error())
	case errors.Is(err, broker.ErrTooManyFunctions):
		return newProblem(http.StatusServiceUnavailable, "too-many-functions", err.Error())
	case errors.Is(err, broker.ErrStopped):
		return newProblem(http.StatusServiceUnavailable, "shutting-down", "the server is shutting down and accepts no jobs")
	case errors.As(err, &se):
		return newProblem(http.StatusServiceUnavailable, "store-failed", se.Error()+"; the job was not accepted")
	case errors.Is(err, broker.ErrPauseEnded):
		return newProblem(http.StatusBadRequest, "invalid-option", err.Error()+"; use a time in the future or a positive duration")
	case errors.Is(err, broker.ErrRunAtOutOfRange), errors.Is(err, broker.ErrUniqueTooLong), errors.Is(err, broker.ErrUniqueNUL):
		return newProblem(http.StatusBadRequest, "invalid-option", err.Error())
	case errors.Is(err, broker.ErrJobNotFound):
		return newProblem(http.StatusNotFound, "job-not-found", "no live job has this handle")
	case errors.Is(err, broker.ErrFunctionNotFound):
		return newProblem(http.StatusNotFound, "function-not-found", err.Error())
	case errors.Is(err, broker.ErrBatchNotFound), errors.Is(err, broker.ErrBatchComplete), errors.Is(err, broker.ErrBatchForeground),
		errors.Is(err, broker.ErrDependency):
		return batchProblem(err)
	case errors.Is(err, broker.ErrBatchUnsupported), errors.Is(err, errNotImplemented):
		return newProblem(http.StatusNotImplemented, "not-implemented", err.Error())
	}
	return newProblem(http.StatusInternalServerError, "internal", err.Error())
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
