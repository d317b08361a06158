package broker

import (
	"errors"
	"fmt"
)

var (
	// ErrQueueFull is returned by Submit when the function's queue is at
	// its maxqueue limit for the job's priority.
	ErrQueueFull = errors.New("Job queue is full")
	// ErrJobNotFound is returned by work updates for a handle the session
	// does not hold, and by CancelJob for an unknown handle.
	ErrJobNotFound = errors.New("Job given in work result not found")
	// ErrJobCancelled is returned by the work updates of a worker for a
	// job that was cancelled while it ran it. It matches ErrJobNotFound:
	// the job is gone for the worker.
	ErrJobCancelled = fmt.Errorf("%w: the job was cancelled", ErrJobNotFound)
	// ErrJobTimedOut is wrapped by the errors of the work updates of a
	// worker for a job it lost to its timeout (CAN_DO_TIMEOUT or a
	// policy's timeout; a lease that runs out is a takeback) and still
	// runs: the job failed or runs again, and the late update changes
	// nothing.
	// It matches ErrJobNotFound: the job is gone for the worker.
	ErrJobTimedOut = fmt.Errorf("%w: the job was lost to its timeout", ErrJobNotFound)
	// ErrStopped is returned by Submit after Stop.
	ErrStopped = errStopped
	// ErrFunctionBusy is returned by DropFunction while workers are
	// registered or jobs are running.
	ErrFunctionBusy = errors.New("there are still connected workers or executing clients")
	// ErrTooManyFunctions is wrapped by the errors of Submit, CanDo,
	// CreateFunction and SetMaxQueue for a new function name while the
	// broker knows Config.MaxFunctions functions and each holds something
	// (forget.go).
	ErrTooManyFunctions = errors.New("too many functions")
	// ErrTooManyBatches is wrapped by CreateBatch's error while
	// Config.MaxOpenBatches batches have not completed.
	ErrTooManyBatches = errors.New("too many open batches")
	// ErrCallbackTooLarge is wrapped by CreateBatch's error for a callback
	// whose payload is over MaxCallbackPayload bytes.
	ErrCallbackTooLarge = errors.New("batch callback payload too large")
	// ErrTooManyWorkerFunctions is wrapped by CanDo's error for a session
	// that has registered Config.MaxWorkerFunctions functions already.
	ErrTooManyWorkerFunctions = errors.New("too many functions for one worker")
	// ErrFunctionNotFound is returned by DropFunction for an unknown name.
	ErrFunctionNotFound = errors.New("function not found")
	// ErrJobHeldElsewhere is returned by CancelJob in shared mode for a
	// job that another server sharing the store holds (it is queued or
	// running there) when that server did not drop it within five seconds
	// of being asked to (its notification connection may be down): cancel
	// it on that server.
	ErrJobHeldElsewhere = errors.New("the job is held by another server")
	// ErrNoMatchingTime is wrapped by Submit's error for a job whose
	// SubmitParams.When matches no time within five years (such as the
	// 31st of February).
	ErrNoMatchingTime = errors.New("no time within five years matches the schedule")
	// ErrRunAtOutOfRange is wrapped by Submit's error for a job whose
	// SubmitParams.RunAt is after MaxRunAt: no record of it could say when
	// it runs (RFC 3339 ends with the year 9999).
	ErrRunAtOutOfRange = errors.New("the run time is after 9999-12-31T23:59:59Z")
	// ErrUniqueTooLong is wrapped by Submit's error for a job whose unique
	// is longer than gearman.MaxUniqueSize (64 bytes), the limit of the
	// Gearman protocol: a store indexes live jobs by their unique, and
	// PostgreSQL refuses an index entry beyond a few kilobytes, failing
	// the whole write of every job submitted with it.
	ErrUniqueTooLong = errors.New("the unique is longer than 64 bytes")
	// ErrUniqueNUL is wrapped by Submit's error for a job whose unique
	// holds a NUL byte: the Gearman protocol ends a unique with one, so a
	// worker given the job (JOB_ASSIGN_UNIQ) would read the unique cut
	// there and the rest of it as the start of the payload.
	ErrUniqueNUL = errors.New("the unique holds a NUL byte")
	// ErrPauseEnded is returned by Pause for an end that is not after the
	// broker's clock: such a pause would be over at once.
	ErrPauseEnded = errors.New("the end of the pause has passed")
	// ErrJobEnded is wrapped by CancelJob's error for a job that has
	// ended: its record (Job) says how. It does not match ErrJobNotFound.
	ErrJobEnded = errors.New("the job has already ended")
	// ErrJobLive is returned by RetryJob for a job that has not ended.
	ErrJobLive = errors.New("the job has not ended")
	// ErrNotRetryable is wrapped by RetryJob's error for a job that ended
	// complete or cancelled: only failed, exception and dead jobs run
	// again.
	ErrNotRetryable = errors.New("only a failed, exception or dead job can be retried")
	// ErrPayloadNotKept is wrapped by RetryJob's error for a job whose
	// record did not keep the whole payload (longer than RetryPayloadCap,
	// or written before records kept it).
	ErrPayloadNotKept = errors.New("the job's record does not keep its whole payload")
	// ErrPolicy is wrapped by the errors of Policy.Set for an unknown key
	// or a bad value.
	ErrPolicy = errors.New("invalid policy")
	// ErrBatchNotFound is returned for a batch id the broker does not
	// know (never created, or forgotten after its retention).
	ErrBatchNotFound = errors.New("batch not found")
	// ErrBatchComplete is returned by Submit for a job added to a batch
	// that has completed (closed, and every job of it finished), and by
	// CloseBatch never (closing twice is not an error).
	ErrBatchComplete = errors.New("the batch has completed; it takes no more jobs")
	// ErrBatchForeground is returned by Submit for a foreground job with a
	// batch: the jobs of a batch are background jobs.
	ErrBatchForeground = errors.New("only background jobs can belong to a batch")
	// ErrBatchUnsupported is returned by the batch operations of a broker
	// in shared mode whose store keeps no batches (store.BatchStore), and
	// by its Submit for a job with a batch.
	ErrBatchUnsupported = errors.New("batches are not supported in shared mode")
)

// StoreError wraps a failure of the durable store; the job was not
// accepted.
type StoreError struct{ Err error }

func (e *StoreError) Error() string { return "job not stored: " + e.Err.Error() }
func (e *StoreError) Unwrap() error { return e.Err }
