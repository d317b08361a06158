// Package store holds the record that Gearwork's durable stores persist,
// the errors they share, and the contracts the broker asks of them (Store,
// its optional capabilities MetaStore and PayloadReader, and SharedStore
// for a store that several servers share).
//
// API is not stable: this package is internal to Gearwork.
package store

import "errors"

// Job is the durable record of one background job. Every field is plain
// data; a store must carry all of them unchanged (a zero field means "not
// set", so records written before a field existed read back correctly).
type Job struct {
	// Seq is the job's sequence number. It is unique per server (across servers
	// for a shared store), orders replay, and forms the last part of the
	// handle.
	Seq uint64
	// Handle is the Gearman job handle, such as "H:host:42".
	Handle   string
	Function string
	// Unique is the coalescing key as the broker indexes it; empty when the
	// job has none.
	Unique  string
	Reducer string
	Payload []byte
	// Priority is 0 (high), 1 (normal) or 2 (low).
	Priority uint8
	// RunAt is the Unix time in seconds at which the job becomes runnable;
	// 0 means at once.
	RunAt int64
	// Retries counts how often the job was taken back from a worker that
	// vanished or timed out.
	Retries uint32

	// State is where the job is in its lifecycle; see the JobState
	// constants. The zero value is StateQueued.
	State JobState
	// Attempts counts the runs that ended (completed, failed, timed out or
	// lost their worker) and were charged to the job's policy.
	Attempts uint32
	// NotBefore is the Unix time in nanoseconds before which a job in
	// StateRetryWait must not run, and for a job in StateDone the time its
	// retained result expires (0: the function's policy decides); 0
	// otherwise.
	NotBefore int64
	// LastError describes the last failed attempt: the WORK_EXCEPTION data,
	// or "failed", "timeout", "worker vanished".
	LastError string
	// History lists the most recent attempts, oldest first (at most
	// MaxHistory).
	History []Attempt
	// Result is the WORK_COMPLETE data of a job in StateDone.
	Result []byte
	// FinishedAt is the Unix time in nanoseconds at which a job entered
	// StateDone or StateDead; 0 otherwise.
	FinishedAt int64
	// OrderingKey names the ordered queue of the job: jobs of one function
	// sharing a key run one at a time in Seq order. Empty means none.
	OrderingKey string
	// MaxAttempts overrides the function's policy for this job when
	// non-zero (-1: unlimited).
	MaxAttempts int32
	// Timeout overrides the function's policy timeout for this job when
	// non-zero, in nanoseconds.
	Timeout int64
	// Schedule is the name of the cron schedule that submitted the job, and
	// Tick the Unix time in seconds of that schedule's tick; empty and 0
	// for other jobs.
	Schedule string
	Tick     int64
	// Submitted is when the job was accepted, in Unix nanoseconds; 0 when
	// unknown. The Pebble and memory stores keep what is written; the
	// PostgreSQL store ignores it on writes and answers the row's
	// created_at instead (Claim).
	Submitted int64
	// Batch is the batch the job belongs to (see the broker's batches); 0
	// for none.
	Batch uint64
	// After lists the jobs (by Seq) a waiting job still waits for, and
	// AfterAnyway says it runs even when one of them fails; empty and
	// false for other jobs.
	After       []uint64
	AfterAnyway bool
}

// JobState is the lifecycle state of a stored job.
type JobState uint8

// The states a stored job can be in. Running jobs are stored as queued: a
// job running at a crash runs again.
const (
	// StateQueued: waiting to run (at RunAt when that is set).
	StateQueued JobState = 0
	// StateRetryWait: failed, waiting until NotBefore to run again.
	StateRetryWait JobState = 1
	// StateDead: out of attempts; kept as a dead letter until retried or
	// purged.
	StateDead JobState = 2
	// StateDone: completed; Result is kept until the retention ends.
	StateDone JobState = 3
	// StateWaiting: waiting in a shared store until the jobs of After
	// complete; no server claims it meanwhile.
	StateWaiting JobState = 4
)

// String returns "queued", "retry-wait", "dead", "done" or "waiting".
func (s JobState) String() string {
	switch s {
	case StateWaiting:
		return "waiting"
	case StateRetryWait:
		return "retry-wait"
	case StateDead:
		return "dead"
	case StateDone:
		return "done"
	default:
		return "queued"
	}
}

// MaxHistory is the most attempts a Job's History keeps.
const MaxHistory = 16

// Attempt is one run of a job.
type Attempt struct {
	// Start and End are Unix times in nanoseconds.
	Start, End int64
	// Outcome is "complete", "failed", "exception", "timeout" or
	// "worker vanished".
	Outcome string
	// Error is the WORK_EXCEPTION data (or empty).
	Error string
	// Worker names the worker that ran the attempt (its client id, or its
	// address).
	Worker string `json:",omitempty"`
}

// Meta is one entry of the broker's small durable key-value map (cron
// ticks, pauses). A nil Value deletes the key.
type Meta struct {
	Key   string
	Value []byte
}

// ErrClosed is returned by a store's methods after Close.
var ErrClosed = errors.New("store: closed")

// ErrNotFound is returned when a job asked for by its Seq is not stored.
var ErrNotFound = errors.New("store: job not found")

// ErrCorrupt is returned (wrapped, with the place) when stored data cannot be
// read back: a record that does not decode, or a damaged file.
var ErrCorrupt = errors.New("store: stored data is damaged")

// ErrFailed is returned by every write after a write or sync failed: the
// store does not retry an fsync whose outcome it cannot know, and the server
// must be restarted to recover from the data on disk.
var ErrFailed = errors.New("store: an earlier write failed; the store accepts no further writes")
