package worker

import (
	"context"
	"errors"
	"strconv"
	"sync/atomic"

	"github.com/gearwork/gearwork/gearman"
)

// Handler runs jobs of one function.
//
// ServeJob returns the job's result, sent to the client as WORK_COMPLETE.
// An error that is (or wraps) an *Exception ends the job with
// WORK_EXCEPTION carrying its Data; any other error ends it with
// WORK_FAIL, which is final (the server does not retry it). A panic is
// recovered and reported as WORK_FAIL.
//
// ctx is cancelled when the function's timeout passes, when the
// connection the job came on is lost, and when the worker is stopped (not
// by a graceful Shutdown). In those cases the server has already decided
// what becomes of the job (a lost connection or a stop: it runs again; a
// timeout: Gearwork fails it unless a retry policy allows another
// attempt), so an error returned after ctx was cancelled is not reported
// to the server.
//
// ServeJob is called on its own goroutine, concurrently with other jobs up
// to Config.Concurrency.
type Handler interface {
	ServeJob(ctx context.Context, j *Job) ([]byte, error)
}

// HandlerFunc adapts an ordinary function to a Handler.
type HandlerFunc func(ctx context.Context, j *Job) ([]byte, error)

// ServeJob calls f(ctx, j).
func (f HandlerFunc) ServeJob(ctx context.Context, j *Job) ([]byte, error) { return f(ctx, j) }

// Exception is an error a Handler returns to end its job with
// WORK_EXCEPTION instead of WORK_FAIL. Clients that asked for exceptions
// receive Data; others see a failure.
type Exception struct {
	Data []byte
}

func (e *Exception) Error() string { return "job exception: " + strconv.Quote(string(e.Data)) }

// Job is one job handed to a Handler. Its Send methods may be called from
// any goroutine until ServeJob returns.
type Job struct {
	// Handle is the server's job handle.
	Handle string
	// Function is the function name the job was submitted to.
	Function string
	// Unique is the unique id the client gave, or "" if none.
	Unique string
	// Payload is the job's argument. It is not reused and may be kept.
	Payload []byte
	// Server is the address of the server the job came from.
	Server string

	conn   *wconn
	cancel context.CancelCauseFunc
	ended  atomic.Bool
}

var (
	// ErrJobEnded is returned by a Job's Send methods after its ServeJob
	// returned.
	ErrJobEnded = errors.New("worker: job already ended")
	// ErrConnLost is returned by a Job's Send methods (and is the cause of
	// its context) when the connection to its server broke; the server
	// will give the job to another worker.
	ErrConnLost = errors.New("worker: connection to server lost")
	// ErrTimeout is the context cause when a job ran past its function's
	// Timeout.
	ErrTimeout = errors.New("worker: job timed out")
	// ErrStopped is the context cause when the worker was stopped.
	ErrStopped = errors.New("worker: stopped")
)

// SendData streams a chunk of partial output to waiting clients
// (WORK_DATA).
func (j *Job) SendData(data []byte) error {
	return j.send(gearman.WorkData, []byte(j.Handle), data)
}

// SendWarning sends a warning to waiting clients (WORK_WARNING).
func (j *Job) SendWarning(data []byte) error {
	return j.send(gearman.WorkWarning, []byte(j.Handle), data)
}

// SendStatus reports progress as numerator out of denominator
// (WORK_STATUS); the server keeps the last one for status queries.
func (j *Job) SendStatus(numerator, denominator uint32) error {
	var nb, db [10]byte
	return j.send(gearman.WorkStatus, []byte(j.Handle),
		strconv.AppendUint(nb[:0], uint64(numerator), 10),
		strconv.AppendUint(db[:0], uint64(denominator), 10))
}

func (j *Job) send(cmd gearman.Command, args ...[]byte) error {
	if j.ended.Load() {
		return ErrJobEnded
	}
	if !j.conn.write(cmd, args...) {
		return ErrConnLost
	}
	j.conn.flush()
	return nil
}
