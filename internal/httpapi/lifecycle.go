package httpapi

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/gearwork/gearwork/internal/broker"
)

// Lifecycle is what the dead-letter, pause/resume and retained-result
// routes need from the broker. Each part is optional: a nil field makes its
// routes answer 501 Not Implemented with a problem that says so. The zero
// Lifecycle in Config means the broker's own (BrokerLifecycle).
type Lifecycle struct {
	DeadLetters DeadLetters
	Pauser      Pauser
	Results     Results
}

// DeadLetter is a job that used up its attempts.
type DeadLetter struct {
	Handle   string    `json:"handle"`
	Function string    `json:"function"`
	Unique   string    `json:"unique,omitempty"`
	Priority string    `json:"priority"`
	Attempts int       `json:"attempts"`
	Error    string    `json:"error,omitempty"`
	DiedAt   time.Time `json:"died_at"`
	Payload  []byte    `json:"-"`
}

// DeadLetters lists, retries and purges dead jobs. Implementations must be
// safe for concurrent use.
type DeadLetters interface {
	// ListDead returns up to limit dead jobs of function fn ("" for all),
	// oldest first.
	ListDead(ctx context.Context, fn string, limit int) ([]DeadLetter, error)
	// RetryDead queues the dead job with this handle again. It returns an
	// error matching broker.ErrJobNotFound when there is no such dead job.
	RetryDead(ctx context.Context, handle string) error
	// PurgeDead deletes the dead job with this handle, or every dead job of
	// fn when handle is empty ("" fn and handle: all). It returns how many
	// were deleted.
	PurgeDead(ctx context.Context, fn, handle string) (int, error)
}

// Pauser stops and restarts handing out a function's jobs; submits are
// still accepted while paused.
type Pauser interface {
	// Pause pauses fn until the given time (zero: until Resume). It
	// returns an error wrapping broker.ErrFunctionNotFound for a function
	// the server does not know.
	Pause(ctx context.Context, fn string, until time.Time) error
	// Resume ends a pause; resuming a running function is not an error,
	// an unknown one is (as for Pause).
	Resume(ctx context.Context, fn string) error
}

// Result is a finished job's outcome kept by the broker.
type Result struct {
	// State is "complete", "failed" or "exception".
	State    string
	Data     []byte
	Finished time.Time
}

// Results reads results the broker retains after a job finished.
type Results interface {
	// Result returns the retained result of the job with this handle, or
	// false if none is kept.
	Result(ctx context.Context, handle string) (Result, bool, error)
}

// BrokerLifecycle returns the Lifecycle of the broker's own dead letters,
// pauses and retained results.
func BrokerLifecycle(b *broker.Broker) Lifecycle {
	l := brokerLifecycle{b}
	return Lifecycle{DeadLetters: l, Pauser: l, Results: l}
}

// provided is l with each missing part (but Results, which the job route
// does without) replaced by one that answers 501 Not Implemented.
func (l Lifecycle) provided() Lifecycle {
	if l.DeadLetters == nil {
		l.DeadLetters = missing("dead letters")
	}
	if l.Pauser == nil {
		l.Pauser = missing("pause/resume")
	}
	return l
}

// missing stands in for a Lifecycle part that is not provided: every call
// fails with notImplemented, naming what is missing.
type missing string

var (
	_ DeadLetters = missing("")
	_ Pauser      = missing("")
)

func (m missing) ListDead(context.Context, string, int) ([]DeadLetter, error) {
	return nil, notImplemented(string(m))
}
func (m missing) RetryDead(context.Context, string) error { return notImplemented(string(m)) }
func (m missing) PurgeDead(context.Context, string, string) (int, error) {
	return 0, notImplemented(string(m))
}
func (m missing) Pause(context.Context, string, time.Time) error { return notImplemented(string(m)) }
func (m missing) Resume(context.Context, string) error           { return notImplemented(string(m)) }

type brokerLifecycle struct{ b *broker.Broker }

var (
	_ DeadLetters = brokerLifecycle{}
	_ Pauser      = brokerLifecycle{}
	_ Results     = brokerLifecycle{}
)

func (l brokerLifecycle) ListDead(ctx context.Context, fn string, limit int) ([]DeadLetter, error) {
	dls, err := l.b.DeadLetters(ctx, fn, limit)
	if err != nil {
		return nil, err
	}
	out := make([]DeadLetter, 0, len(dls))
	for _, d := range dls {
		out = append(out, DeadLetter{Handle: d.Handle, Function: d.Function, Unique: d.Unique,
			Priority: d.Priority.String(), Attempts: int(d.Attempts), Error: d.LastError, DiedAt: d.DiedAt.UTC(),
			Payload: d.Payload})
	}
	return out, nil
}

func (l brokerLifecycle) RetryDead(ctx context.Context, handle string) error {
	return l.b.RetryDeadLetter(ctx, []byte(handle))
}

func (l brokerLifecycle) PurgeDead(ctx context.Context, fn, handle string) (int, error) {
	if handle != "" {
		if err := l.b.PurgeDeadLetter(ctx, []byte(handle)); err != nil {
			if errors.Is(err, broker.ErrJobNotFound) {
				return 0, nil
			}
			return 0, err
		}
		return 1, nil
	}
	return l.b.PurgeDeadLetters(ctx, fn)
}

func (l brokerLifecycle) Pause(ctx context.Context, fn string, until time.Time) error {
	if !l.b.KnownFunction(fn) {
		return unknownFunction(fn)
	}
	if err := l.b.Pause(fn, until); err != nil {
		return err
	}
	return l.b.Durable(ctx)
}

func (l brokerLifecycle) Resume(ctx context.Context, fn string) error {
	if !l.b.KnownFunction(fn) {
		return unknownFunction(fn)
	}
	l.b.Resume(fn)
	return l.b.Durable(ctx)
}

// unknownFunction is the error of Pause and Resume for a function the
// broker does not know (broker.KnownFunction).
func unknownFunction(fn string) error {
	return fmt.Errorf("unknown function %q: %w", fn, broker.ErrFunctionNotFound)
}

func (l brokerLifecycle) Result(ctx context.Context, handle string) (Result, bool, error) {
	r, ok, err := l.b.Result(ctx, []byte(handle))
	if err != nil || !ok {
		return Result{}, false, err
	}
	return Result{State: "complete", Data: r.Data, Finished: r.FinishedAt}, true, nil
}
