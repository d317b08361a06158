package client

import (
	"errors"
	"strconv"
)

var (
	// ErrClosed is returned by every method called after Close, and to
	// callers still waiting when Close is called.
	ErrClosed = errors.New("client: closed")

	// ErrNoServer is returned (wrapping the last dial or connection error)
	// when no configured server could take a request: each one was down or
	// waiting out its reconnect backoff.
	ErrNoServer = errors.New("client: no server available")

	// ErrConnLost is returned when the connection carrying a request or a
	// foreground job broke before the answer arrived. A submit that fails
	// this way may or may not have created the job; a foreground job is
	// dropped by the server when its client goes away.
	ErrConnLost = errors.New("client: connection lost")

	// ErrJobFailed is returned by Task.Wait and Client.Do when the worker
	// reported WORK_FAIL (or, on servers that do not forward exceptions,
	// threw one).
	ErrJobFailed = errors.New("client: job failed")

	// ErrInvalidRequest is returned (wrapped with the reason) for a
	// Request that cannot be encoded: an empty or oversized function name,
	// an oversized unique, or RunAt on a foreground or non-normal priority
	// job.
	ErrInvalidRequest = errors.New("client: invalid request")
)

// ExceptionError is returned by Task.Wait and Client.Do when the worker
// ended the job with WORK_EXCEPTION. Data is the exception payload as the
// worker sent it.
type ExceptionError struct {
	Handle string
	Data   []byte
}

func (e *ExceptionError) Error() string {
	return "client: job " + e.Handle + " threw an exception: " + strconv.Quote(string(e.Data))
}

// ServerError is an ERROR packet the server sent in answer to a request,
// for example QUEUE_ERROR when a function's queue is full.
type ServerError struct {
	// Code is the server's error code, such as "QUEUE_ERROR".
	Code string
	// Text is the server's readable explanation.
	Text string
}

func (e *ServerError) Error() string { return "client: server error " + e.Code + ": " + e.Text }

// protocolError reports a packet that makes no sense at that point of the
// conversation; the connection is closed.
type protocolError struct{ msg string }

func (e *protocolError) Error() string { return "client: protocol error: " + e.msg }
