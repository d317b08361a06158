package client

import (
	"context"
	"fmt"
	"time"

	"github.com/gearwork/gearwork/gearman"
)

// Priority is a job's priority. Priorities apply across functions: a
// worker that can run several functions is handed high priority jobs of
// any of them before normal ones.
type Priority int8

// The three Gearman priorities. The zero value is PriorityNormal.
const (
	PriorityNormal Priority = iota
	PriorityHigh
	PriorityLow
)

// String returns "normal", "high" or "low".
func (p Priority) String() string {
	switch p {
	case PriorityHigh:
		return "high"
	case PriorityLow:
		return "low"
	case PriorityNormal:
		return "normal"
	}
	return fmt.Sprintf("Priority(%d)", int8(p))
}

// ParsePriority parses "high", "normal" or "low" (and "" as normal).
func ParsePriority(s string) (Priority, error) {
	switch s {
	case "high":
		return PriorityHigh, nil
	case "normal", "":
		return PriorityNormal, nil
	case "low":
		return PriorityLow, nil
	}
	return 0, fmt.Errorf("unknown priority %q: use high, normal or low", s)
}

// Request describes a job to submit.
type Request struct {
	// Function names the function a worker registered; 1 to 511 bytes.
	Function string
	// Payload is the job's argument, handed to the worker as is. The
	// client does not keep it after the submit returns.
	Payload []byte
	// Unique, if set, coalesces jobs: a submit whose function and unique
	// match a job the server still holds attaches to that job instead of
	// creating another, and every foreground submitter gets its result.
	// "-" asks the server to use a hash of the payload. At most 64 bytes.
	// With several servers, the unique also picks the server, so equal
	// uniques meet on the same one.
	Unique string
	// Priority defaults to PriorityNormal.
	Priority Priority
	// RunAt, if not zero, delays a background job until that time
	// (SUBMIT_JOB_EPOCH, whole seconds). Only valid for background jobs of
	// normal priority: the protocol has no other form.
	RunAt time.Time
	// UpdateFunc, if set, receives the WORK_DATA, WORK_WARNING and
	// WORK_STATUS updates of a foreground job in the order the worker sent
	// them, before the job's outcome. It is called on the connection's
	// reader goroutine: it must return quickly and must not call back into
	// the Client, or every request on that connection waits. Ignored for
	// background jobs.
	UpdateFunc func(Update)
}

// submitCommand picks the packet type for a request.
func (r *Request) submitCommand(background bool) (gearman.Command, error) {
	if r.Function == "" || len(r.Function) > gearman.MaxFunctionSize {
		return 0, fmt.Errorf("%w: function name must be 1 to %d bytes", ErrInvalidRequest, gearman.MaxFunctionSize)
	}
	if len(r.Unique) > gearman.MaxUniqueSize {
		return 0, fmt.Errorf("%w: unique must be at most %d bytes", ErrInvalidRequest, gearman.MaxUniqueSize)
	}
	if !r.RunAt.IsZero() {
		switch {
		case !background:
			return 0, fmt.Errorf("%w: RunAt needs a background job", ErrInvalidRequest)
		case r.Priority != PriorityNormal:
			return 0, fmt.Errorf("%w: RunAt needs normal priority (SUBMIT_JOB_EPOCH has none)", ErrInvalidRequest)
		}
		return gearman.SubmitJobEpoch, nil
	}
	switch r.Priority {
	case PriorityNormal:
		if background {
			return gearman.SubmitJobBg, nil
		}
		return gearman.SubmitJob, nil
	case PriorityHigh:
		if background {
			return gearman.SubmitJobHighBg, nil
		}
		return gearman.SubmitJobHigh, nil
	case PriorityLow:
		if background {
			return gearman.SubmitJobLowBg, nil
		}
		return gearman.SubmitJobLow, nil
	}
	return 0, fmt.Errorf("%w: unknown priority %d", ErrInvalidRequest, r.Priority)
}

// UpdateKind says what an Update carries.
type UpdateKind uint8

// The kinds of update a foreground job can stream.
const (
	// UpdateData is a WORK_DATA packet: a chunk of partial output in Data.
	UpdateData UpdateKind = iota + 1
	// UpdateWarning is a WORK_WARNING packet: a warning in Data.
	UpdateWarning
	// UpdateStatus is a WORK_STATUS packet: progress in Numerator and
	// Denominator.
	UpdateStatus
)

// Update is one progress report of a running foreground job.
type Update struct {
	Kind UpdateKind
	// Data is set for UpdateData and UpdateWarning. It is not reused by
	// the client and may be kept.
	Data []byte
	// Numerator and Denominator are set for UpdateStatus.
	Numerator, Denominator uint32
}

// Job identifies a job held by a server.
type Job struct {
	// Handle is the job handle the server assigned, such as "H:host:42".
	Handle string
	// Server is the address (as configured) of the server that holds the
	// job. Handles are only unique per server.
	Server string
}

// Status is a server's answer to GET_STATUS or GET_STATUS_UNIQUE.
type Status struct {
	// Known is false when the server holds no such job (it never existed,
	// or it has finished).
	Known bool
	// Running is true while a worker holds the job.
	Running bool
	// Numerator and Denominator are the job's last WORK_STATUS.
	Numerator, Denominator uint32
	// Waiting is the number of clients waiting for the job's result. Only
	// GET_STATUS_UNIQUE reports it; it is 0 for GET_STATUS.
	Waiting int
}

// Task is a submitted foreground job. Its methods are safe for concurrent
// use.
type Task struct {
	job    Job
	update func(Update)
	done   chan struct{}
	result []byte
	err    error

	// Fields used only by the connection's reader goroutine: when several
	// foreground submits on one connection coalesce onto the same job, the
	// first Task routes updates to the others and skips the server's
	// duplicate packets.
	coalesced []*Task
	skip      int
	finished  bool
}

// Job returns the job's handle and server.
func (t *Task) Job() Job { return t.job }

// Done returns a channel that is closed once the job's outcome is known.
func (t *Task) Done() <-chan struct{} { return t.done }

// Wait waits for the job's outcome and returns its result (WORK_COMPLETE).
// It returns ErrJobFailed (wrapped) for WORK_FAIL, an *ExceptionError for
// WORK_EXCEPTION, and an error wrapping ErrConnLost or ErrClosed if the
// connection went away first. If ctx ends first it returns ctx.Err(); the
// job goes on and Wait may be called again.
func (t *Task) Wait(ctx context.Context) ([]byte, error) {
	select {
	case <-t.done:
		return t.result, t.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// finish records the outcome; called once, by the reader goroutine.
func (t *Task) finish(result []byte, err error) {
	t.result, t.err = result, err
	close(t.done)
}
