package store

import (
	"cmp"
	"context"
	"time"
)

// The contracts below are what the broker asks of a store. They live here,
// beside the record they carry, so that every implementation (memory,
// pebble, postgres) and the conformance suites (storetest) name the same
// interfaces, and each implementation asserts at compile time that it
// satisfies them:
//
//	var _ store.SharedStore = (*postgres.Store)(nil)
//
// API is not stable: these seams are internal to Gearwork. DO NOT
// IMPLEMENT outside this module.

// Store persists background jobs. Save must be durable when it returns (as
// the store's sync mode defines) and all methods must be safe for
// concurrent use. Save replaces a job with the same Seq. Delete of an
// unknown handle is not an error.
type Store interface {
	Save(ctx context.Context, jobs []Job) error
	Delete(ctx context.Context, seqs []uint64) error
	Load(ctx context.Context, each func(Job) error) error
	Close() error
}

// MetaStore is an optional capability of a Store, found by type assertion:
// a small durable key-value map for broker metadata (the last tick of each
// cron schedule, paused functions, policies). Keys are short ASCII strings
// such as "cron/<schedule>", "pause/<function>" and "policy/<function>";
// values are small (decimal numbers, or a policy's "key=value ..." text).
// Both methods must be safe for concurrent use with each other and with
// the Store methods.
type MetaStore interface {
	// LoadMeta calls each for every stored entry (any order). An error from
	// each stops the load and is returned.
	LoadMeta(ctx context.Context, each func(Meta) error) error
	// PutMeta writes the entries in order, durably as Save is: an entry
	// with a nil Value deletes its key (deleting an absent key is not an
	// error); a later entry for the same key wins. The broker calls it from
	// its committer after Save and before Delete of the same batch.
	PutMeta(ctx context.Context, entries []Meta) error
}

// PayloadReader is an optional capability of a Store, found by type
// assertion: reading back the payload of one stored job. With it and a
// memory budget, the broker keeps the payloads of stored background jobs in
// memory only up to the budget; the others stay on disk and are read back
// when the job is handed to a worker. ReadPayload must be safe for
// concurrent use with the other Store methods and return an error wrapping
// ErrNotFound for a job that is not stored.
type PayloadReader interface {
	ReadPayload(ctx context.Context, seq uint64) ([]byte, error)
}

// LendingLoader is an optional capability of a Store, found by type
// assertion: loading without copying payloads. LoadLending is Load, except
// that each job's Payload is lent from the store's own buffer and is valid
// only until each returns: each copies the payloads it keeps. With payload
// tiering most payloads of a deep queue stay on disk, and a replay that
// copied each one only to drop it would spend its time allocating them and
// collecting the garbage.
type LendingLoader interface {
	LoadLending(ctx context.Context, each func(Job) error) error
}

// SharedStore is a store that several Gearwork servers share (PostgreSQL).
// A broker given one (broker.Config.Shared) runs in shared mode: it does
// not replay the store at start; background jobs it accepts are inserted
// and handed to whichever server claims them; it claims jobs for its own
// workers; it answers status requests for jobs it does not hold from the
// store; and its dead letters and retained results are rows of the store
// (SharedLifecycle).
//
// Methods must be safe for concurrent use; the broker never calls them
// holding its lock.
type SharedStore interface {
	Store
	MetaStore
	SharedLifecycle
	// Commit writes one round of the group committer in one transaction:
	// it deletes p.Delete, writes the retries, run-at time and priority of
	// the jobs in p.Update that are still stored (never storing a deleted
	// job again), and inserts p.Insert.Jobs, numbering those without a
	// sequence number itself (unique across servers) and coalescing each
	// job that has a unique with the live job of the same function and
	// unique in the store, whichever server holds it. It reports, per new
	// job, the sequence number it got or the one it coalesced with, and
	// whether this server now holds it, and returns p.Reserve sequence
	// numbers no server will get again. Durable when it returns, as Save.
	// An error means nothing was written; a new job that could not be
	// resolved once the round was written has Inserted.Err instead.
	//
	// A new job with After waits in the store, unclaimable, until every
	// job it names has completed: Commit refuses it (Inserted.Refused)
	// when one of them is neither live nor recorded, or ended without
	// success and the job is not AfterAnyway; jobs that completed count
	// as done. p.DepEnds release the jobs that waited for them (runnable
	// once none is left), or, for an end other than "complete", cancel
	// them unless AfterAnyway: they are deleted with a record in state
	// "cancelled", and so on down their own waiting jobs. This happens in
	// the transaction of the round that writes the end, whichever server
	// ends the job.
	Commit(ctx context.Context, p CommitParams) (Committed, error)
	// Join registers this server with a lease and starts calling wake
	// (without blocking, from another goroutine) with the name of a
	// function whose jobs may have become claimable, or "" for any, and
	// meta likewise with a metadata key some server wrote or deleted, or
	// "" when any may have changed; and lost with the error when it has
	// reason to think the store is gone (a connection it holds broke). It
	// returns how often Renew must be called.
	Join(ctx context.Context, wake, meta func(name string), lost func(error)) (time.Duration, error)
	// GetMeta reads one metadata entry; ok is false when it is not
	// stored.
	GetMeta(ctx context.Context, key string) (value []byte, ok bool, err error)
	// Renew extends the lease and releases the jobs of servers whose lease
	// expired (once this server has itself been in touch with the store
	// for a lease without a break: an outage of the store lets every
	// lease expire). lost reports that this server's own lease had expired: the
	// jobs it held were released to others.
	Renew(ctx context.Context) (lost bool, err error)
	// Claim takes runnable jobs that no server holds, up to Max per
	// function, for this server, ordered by priority then sequence. A job
	// with an ordering key is taken only when no server holds a job of
	// its key and no older job of its key is runnable or waiting for a
	// retry; a function with a Limit only while the jobs of it that all
	// servers hold stay within the limit; a function with a Rate only as
	// its token bucket, shared by every server, allows.
	Claim(ctx context.Context, req []ClaimRequest) ([]Job, error)
	// Release gives held jobs back to the other servers.
	Release(ctx context.Context, seqs []uint64) error
	// Leave releases every job this server holds and unregisters it.
	Leave(ctx context.Context) error
	// Find looks a live job up by unique (any function) when unique is
	// not empty, else by sequence number.
	Find(ctx context.Context, seq uint64, unique string) (Found, bool, error)
	// FindUnique returns the sequence number of the live job (queued,
	// running or waiting) of function with unique; ok is false when there
	// is none.
	FindUnique(ctx context.Context, function, unique string) (seq uint64, ok bool, err error)
	// Ping reports whether the store can be reached.
	Ping(ctx context.Context) error
}

// BatchStore is the optional part of a SharedStore that keeps batches
// (groups of background jobs with callbacks) for every server sharing it.
// A batch is one row with its counters; each job of it names it
// (Job.Batch). A new job of a batch that Commit inserts counts in its
// total; a coalesced one does not. Commit refuses a new job whose batch
// is unknown or has completed (Inserted.BatchRefused), deciding under the
// batch's row lock, so that no job joins a batch whose callbacks were
// submitted. The ends of its jobs (CommitParams.
// BatchEnds) count once each, however often a round is written again.
// A batch completes when it is closed and its ended jobs reach its
// total: the transaction that completes it (Commit or CloseBatch)
// inserts its callback jobs, numbered by the store, unclaimed, with
// handles of the prefix given, and marks them submitted, so that each
// callback is inserted exactly once, also when servers end its last jobs
// at the same moment. The callback job's payload is the JSON of the
// broker's CallbackPayload.
//
// Methods must be safe for concurrent use.
type BatchStore interface {
	// CreateBatch stores a new open batch with an id unique across
	// servers (from the job sequence). Durable when it returns.
	CreateBatch(ctx context.Context, p NewBatch) (uint64, error)
	// CloseBatch closes batch id (closing twice changes nothing) and
	// completes it when its jobs have all ended, inserting its callbacks
	// as Commit does with handlePrefix. ErrNotFound when there is none.
	CloseBatch(ctx context.Context, id uint64, handlePrefix string) error
	// Batch reads batch id; ErrNotFound when there is none.
	Batch(ctx context.Context, id uint64) (Batch, error)
	// Batches lists the batches, the newest first, at most limit (≤ 0:
	// all).
	Batches(ctx context.Context, limit int) ([]Batch, error)
	// ExpireBatches deletes at most max batches that completed before
	// completedBefore (Unix nanoseconds) and returns how many; their
	// jobs that are still stored (dead letters, retained results) stay,
	// and count in no batch any more. Idempotent, so every server may run
	// it.
	ExpireBatches(ctx context.Context, completedBefore int64, max int) (int, error)
}

// SharedLifecycle is the part of a SharedStore that holds the lifecycle
// rows of every server sharing the store. A broker in shared mode keeps no
// dead letters in memory (they are rows that any server lists, retries and
// purges, also after the server where the job died is gone), reads
// retained results that other servers stored, expires retained results and
// trims dead letters whichever server wrote them, and counts the jobs
// nobody holds in the admin views.
type SharedLifecycle interface {
	// DeadJobs lists the dead letters of function ("" for all) by
	// function name, then in the order they died; at most limit of them
	// (limit ≤ 0: all).
	DeadJobs(ctx context.Context, function string, limit int) ([]Job, error)
	// StoredJob returns job seq if it is stored in state, or an error
	// wrapping ErrNotFound.
	StoredJob(ctx context.Context, seq uint64, state JobState) (Job, error)
	// DoneByUnique returns a job in StateDone with unique, of function or
	// ("") of the first function by name; or an error wrapping
	// ErrNotFound.
	DoneByUnique(ctx context.Context, function, unique string) (Job, error)
	// RetryDead queues the selected dead letters again, with a fresh
	// count of attempts, for any server to claim, and returns how many.
	// Their job records (RecordStore) go in the same change: they live
	// again, and get new records when they end.
	RetryDead(ctx context.Context, sel DeadSelector) (int, error)
	// PurgeDead deletes the selected dead letters and returns how many.
	PurgeDead(ctx context.Context, sel DeadSelector) (int, error)
	// Expire deletes retained results whose time has passed and dead
	// letters beyond their function's limit; idempotent.
	Expire(ctx context.Context, p ExpireParams) (int, error)
	// Counts returns, per function, the jobs no server holds and the
	// dead letters.
	Counts(ctx context.Context) ([]FunctionCount, error)
	// CancelQueued deletes queued or waiting job seq if no live server
	// holds it, writes its record in state "cancelled" (cancelled by by,
	// who asked), and reports whether it did; the jobs waiting for it are
	// cancelled as Commit's DepEnds do.
	CancelQueued(ctx context.Context, seq uint64, by string) (bool, error)
	// UnheldJobs returns the sequence numbers of function's live jobs
	// (queued, scheduled, waiting for a retry or for other jobs; the
	// function's name matched exactly) that no live server
	// holds as CancelQueued judges it, greater than after, in order, at
	// most limit of them:
	// the jobs "drop function" cancels (CancelQueued) besides those the
	// server holds.
	UnheldJobs(ctx context.Context, function string, after uint64, limit int) ([]uint64, error)
	// Signal tells every server (through Join's meta callback) of key,
	// without storing anything.
	Signal(ctx context.Context, key string) error
}

// RecordStore is an optional capability of a Store, found by type
// assertion: keeping the final records of jobs that ended (their history)
// in the store rather than in the broker's memory. A broker given one
// writes each record in the same write that removes the ended job
// (EndJobs), reads records back for lookups and listings, and expires
// them in the background; a broker whose store lacks it keeps the records
// in its own memory. Methods must be safe for concurrent use with each
// other and with the Store methods; the broker never calls them holding
// its lock.
type RecordStore interface {
	// EndJobs deletes the jobs dels, forgets the records forget, and then
	// writes recs, all in one atomic write (a crash leaves all of it or
	// none), as durable as Delete. recs must be of jobs without a kept
	// record: a job that lives again has its record forgotten (in forget,
	// here or in an earlier call) before its next record is written.
	// It keeps nothing of recs (their Data included) once it returns.
	EndJobs(ctx context.Context, dels []uint64, recs []Record, forget []uint64) error
	// Record returns the record of job seq, or an error wrapping
	// ErrNotFound. Record, Records and RecordCounts answer only what is
	// as durable as Save makes a job: a store that wrote records without
	// waiting makes them so first.
	Record(ctx context.Context, seq uint64) (Record, error)
	// Records lists the records of q.Function ("" for every function) in
	// q.State ("" for any), the most recently ended first, after q.After
	// when it is set; at most q.Limit of them.
	Records(ctx context.Context, q RecordQuery) ([]Record, error)
	// ExpireRecords forgets, per function, the records that ended before
	// the time limits gives for it and those beyond its count, and
	// returns how many it forgot. limits is called without locks held.
	ExpireRecords(ctx context.Context, now int64, limits func(function string) (age time.Duration, max int)) (int, error)
	// RecordCounts returns, per function, how many records are kept in
	// each state.
	RecordCounts(ctx context.Context) (map[string]map[string]int, error)
}

// Record is the final record of a job that ended, as a RecordStore keeps
// it. The store orders and selects records by Function, Finished, Seq and
// State; Data is the rest of the record as the broker encodes it, opaque
// to the store.
type Record struct {
	Seq      uint64
	Function string
	// State is the final state ("complete", "failed", …).
	State string
	// Finished is the Unix time in nanoseconds at which the job ended.
	Finished int64
	// Batch is the batch the job belonged to (0: none). Data holds it
	// too; a BatchRecordStore keeps it apart to select by it.
	Batch uint64
	Data  []byte
}

// BatchRecordStore is an optional capability of a RecordStore, found by
// type assertion: listing the records of the jobs of one batch (by
// Record.Batch) without reading the others. A broker whose record store
// lacks it reads the records of q.State newest first and keeps those of
// the batch.
type BatchRecordStore interface {
	// BatchRecords lists the records of batch ("" q.Function for every
	// function, "" q.State for any), the most recently ended first,
	// after q.After when it is set; at most q.Limit of them.
	BatchRecords(ctx context.Context, batch uint64, q RecordQuery) ([]Record, error)
}

// RecordQuery selects records for RecordStore.Records.
type RecordQuery struct {
	Function string
	State    string
	// After continues a listing after the record it names (by Finished
	// and Seq); the zero value starts at the newest.
	After RecordPos
	Limit int
}

// RecordPos is a record's place in a listing: the newest first, by
// Finished then Seq.
type RecordPos struct {
	Finished int64
	Seq      uint64
}

// Before reports whether a record at p is listed after one at q (it ended
// earlier, or at the same time with a lower Seq).
func (p RecordPos) Before(q RecordPos) bool {
	return p.Compare(q) < 0
}

// Compare returns -1 when p is Before q, +1 when q is Before p and 0 when
// they are the same place, so that q.Compare(p) sorts newest first.
func (p RecordPos) Compare(q RecordPos) int {
	return cmp.Or(cmp.Compare(p.Finished, q.Finished), cmp.Compare(p.Seq, q.Seq))
}

// ManyFinder is an optional capability of a SharedStore, found by type
// assertion: Find of many jobs in one round trip, for a server that
// gathers the status lookups of its clients while one is under way.
type ManyFinder interface {
	// FindMany looks live jobs up as Find does: by sequence number, each
	// of seqs, and by unique (of any function; the lowest number when
	// several), each of uniques. A job not found is not in the maps.
	// Safe for concurrent use.
	FindMany(ctx context.Context, seqs []uint64, uniques []string) (bySeq map[uint64]Found, byUnique map[string]Found, err error)
}
