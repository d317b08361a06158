package store

// The types below are exchanged with a store that several servers share
// (PostgreSQL) through SharedStore.

// InsertParams describes new background jobs for a shared store.
type InsertParams struct {
	// HandlePrefix is the submitting server's handle prefix; the stored
	// handle is the prefix followed by the job's sequence number.
	HandlePrefix string
	// Jobs are the new jobs. Their Handle is ignored. A job with Seq 0 is
	// numbered by the store (unique across every server); any other Seq
	// must be one the store reserved for this server (CommitParams.Reserve)
	// and not used before.
	Jobs []Job
	// Claim, when not nil, has one entry per job: true asks that the job
	// be claimed by this server as it is inserted (it is held here and
	// handed to a local worker), or, when it coalesces with an existing
	// job that no server holds, that the existing job be claimed.
	Claim []bool
}

// Inserted is the outcome of inserting one job into a shared store.
type Inserted struct {
	// Seq is the job's sequence number: the new job's, or that of the
	// live job with the same function and unique it coalesced with.
	Seq uint64
	// Created is false when the job coalesced with a live job.
	Created bool
	// Claimed reports that this insert made this server hold the job: it
	// inserted the job claimed, or claimed the unclaimed job it coalesced
	// with. A coalesced job this server held already is reported
	// unclaimed (the server has it, or gets it through its own claim).
	Claimed bool
	// Refused, when not nil, says why a new job that waits for others
	// (Job.After) was not stored: a job it names is unknown or ended
	// without success. Seq is 0 then.
	Refused *DependencyRefused
	// BatchRefused, when not nil, says why a new job of a batch
	// (Job.Batch) was not stored: its batch is unknown or has completed,
	// as read under the batch's row lock in the transaction that would
	// have added the job to it. Seq is 0 then.
	BatchRefused *BatchRefused
	// Err, when not nil, says that the job coalesced with a live job
	// that the round could not return, and that the store, after the
	// round was written, could neither find that job nor insert this one
	// (it gave up, or the context ended): the job is not stored. The
	// round's other jobs are. Seq is 0 then.
	Err error
}

// BatchRefused is why a shared store refused a job of a batch: batch
// Batch is not stored (Unknown), or it has completed.
type BatchRefused struct {
	Batch   uint64
	Unknown bool
}

// DependencyRefused is why a shared store refused a job that waits for
// others: job Dep is not live and has no record (Unknown), or it ended
// without success and the job did not ask to run anyway.
type DependencyRefused struct {
	Dep     uint64
	Unknown bool
}

// ClaimRequest asks a shared store for up to Max runnable jobs of
// Function.
type ClaimRequest struct {
	Function string
	Max      int
	// Limit, when positive, caps the jobs of Function that all servers
	// together hold (queued for a worker or running) after the claim: the
	// function's concurrency limit applied across every server.
	Limit int
	// Rate, when positive, is the function's rate limit in jobs per
	// second across every server: every claimed job takes a token from a
	// bucket of Burst tokens that the store keeps for the function.
	Rate  float64
	Burst float64
}

// Found describes a job that a shared store holds.
type Found struct {
	Seq uint64
	// Claimed reports that some server holds the job (it is running or
	// about to run there).
	Claimed bool
	// Numerator and Denominator are the last progress the server running
	// the job wrote (Progress).
	Numerator, Denominator uint32
	// RetryAt is, for a job waiting for its retry (StateRetryWait), when
	// it may run again (Unix ns; Job.NotBefore); 0 for any other job. A
	// claimed job waiting for a retry still in the future is not running.
	RetryAt int64
}

// Progress is the last WORK_STATUS of a job a server holds, and whether
// a worker runs it (a worker took it, or let it go).
type Progress struct {
	Seq                    uint64
	Numerator, Denominator uint32
	Running                bool
}

// CommitParams is one round of the group committer for a shared store,
// written in one transaction.
type CommitParams struct {
	// Insert holds the new jobs.
	Insert InsertParams
	// Update holds jobs whose retries, run-at time or priority changed.
	Update []Job
	// Delete holds finished jobs.
	Delete []uint64
	// Meta holds metadata entries to write, in order (see Meta). Every
	// server is told of the keys written once the round commits.
	Meta []Meta
	// Release holds jobs this server gives back to the others (written
	// after Update, so their new state is what the others claim).
	Release []uint64
	// Notify names functions whose waiting jobs may have become claimable
	// once the round commits (an ordering key or a concurrency slot was
	// freed): the servers listening are woken for them.
	Notify []string
	// Reserve asks for this many sequence numbers, unique across every
	// server, for new jobs that the server numbers itself (InsertParams).
	Reserve int
	// Progress holds the progress of running jobs (written after Insert,
	// for jobs still stored).
	Progress []Progress
	// ForgetRecords and Records are the records of ended jobs to forget
	// and then to write (RecordStore), in the same transaction as Delete.
	ForgetRecords []uint64
	Records       []Record
	// BatchEnds are the ends of jobs of batches (BatchStore), counted in
	// the same transaction as Delete and the rest of the round; see
	// BatchStore for when a batch completes.
	BatchEnds []BatchEnd
	// DepEnds are the ends of background jobs, for the jobs that wait for
	// them (see SharedStore.Commit), handled in the same transaction as
	// Delete.
	DepEnds []DepEnd
}

// DepEnd is the end of job Seq in final state State ("complete",
// "failed", "cancelled", ...). The reason a job that waited for it is
// cancelled with names it by the round's handle prefix
// (InsertParams.HandlePrefix) and Seq.
type DepEnd struct {
	Seq   uint64
	State string
}

// BatchOutcome is how a job of a batch ended.
type BatchOutcome uint8

// The outcomes a batch counts.
const (
	BatchSucceeded BatchOutcome = iota
	BatchFailed
	BatchDead
)

// BatchEnd is the end of job Seq of batch Batch. It is counted only when
// the job's stored row names that batch (Job.Batch) and its end was not
// counted before.
type BatchEnd struct {
	Seq, Batch uint64
	Outcome    BatchOutcome
}

// BatchCallback is a job a batch submits when it completes: Function,
// and PayloadJSON, the JSON value (a string) that the callback job's
// payload carries as "payload" (empty: none).
type BatchCallback struct {
	Function    string
	PayloadJSON []byte
}

// NewBatch describes a batch to create (BatchStore.CreateBatch); a
// callback with an empty Function is none.
type NewBatch struct {
	OnSuccess, OnComplete BatchCallback
	// Created is the Unix time in nanoseconds.
	Created int64
}

// Batch is a stored batch.
type Batch struct {
	ID                          uint64
	OnSuccess, OnComplete       BatchCallback
	Closed                      bool
	Total, Succeeded            uint64
	Failed, Dead                uint64
	SuccessFired, CompleteFired bool
	Failures                    []string
	Truncated                   bool
	// Created and Completed are Unix times in nanoseconds; Completed is
	// 0 until the batch completed.
	Created, Completed int64
	// Running counts the jobs of the batch that a worker runs, as the
	// servers holding them wrote (Progress.Running).
	Running uint64
}

// Committed is the outcome of one commit round.
type Committed struct {
	// Inserted has one entry per new job, in order.
	Inserted []Inserted
	// Reserved holds the sequence numbers asked for by Reserve, durable
	// (never handed out again) once the round has committed.
	Reserved []uint64
}

// DeadSelector names the dead letters an operation applies to: the one
// with sequence number Seq when Seq is not 0, else every dead letter of
// Function, or every dead letter when Function is empty too.
type DeadSelector struct {
	Seq      uint64
	Function string
}

// ExpireParams asks a shared store to delete lifecycle rows whose time has
// passed, whichever server wrote them.
type ExpireParams struct {
	// Now is the Unix time in nanoseconds to compare expiry times with.
	Now int64
	// Retention gives, for jobs in StateDone stored without an expiry time
	// (NotBefore 0), the retention in nanoseconds by function;
	// DefaultRetention applies to functions not listed. Such a job expires
	// at FinishedAt + retention.
	Retention        map[string]int64
	DefaultRetention int64
	// KeepDead lists functions whose dead letters beyond the newest Keep
	// are deleted.
	KeepDead []KeepDead
}

// KeepDead bounds the dead letters of one function.
type KeepDead struct {
	Function string
	Keep     int
}

// FunctionCount is what a shared store holds of one function beyond the
// jobs servers hold: jobs that no server holds, and dead letters.
type FunctionCount struct {
	Function string
	// Queued counts jobs no server holds that are runnable now, by
	// priority (high, normal, low).
	Queued [3]int
	// Waiting counts jobs no server holds that are not runnable yet
	// (scheduled for later, or waiting for a retry).
	Waiting int
	// Dead counts dead letters.
	Dead int
}
