// Package postgres is Gearwork's shared store: background jobs are rows in
// PostgreSQL, so that several Gearwork servers can share one database.
//
// # Schema
//
// Open applies versioned migrations (see Migrate) in the connection's
// current schema, under an advisory lock so that servers starting at once
// apply each migration exactly once. "gearwork migrate" does the same
// ahead of time. A server refuses a schema newer than it knows.
//
// # Sharing
//
// Every server can insert jobs (Insert: one statement per batch, sequence
// numbers from one database sequence, coalescing on a unique index over
// (unique, function) with ON CONFLICT). A server registers itself with a
// lease (Join, Renew) and claims batches of runnable jobs for the functions
// its workers serve (Claim: FOR UPDATE SKIP LOCKED), marking them with its
// id; a statement that marks jobs locks the server's row once (FOR KEY
// SHARE) and marks nothing when the row is gone. When a server's lease
// expires, any other server's Renew deletes its registration, which
// releases its jobs (a trigger on the deletion) for the others to claim,
// once that other server has been in touch with the database for a lease
// without a break (an outage lets every lease expire). Jobs with an ordering key and functions with a
// concurrency or rate limit are claimed under a per-function advisory lock,
// so that only the head of each key runs and the limits hold across
// servers (rate limits as a token bucket per function in gearwork_rates).
// LISTEN/NOTIFY on a channel per schema wakes servers when jobs arrive and
// tells them of metadata (pauses, policies) another server changed.
//
// # Guarantees
//
// A job is stored when Insert or Save returns without error: it survives
// a crash of any Gearwork server and, with PostgreSQL's default
// synchronous_commit, of the database server too. A job runs at least
// once: a server that dies while a worker runs a job, or before it has
// deleted a finished one, loses its lease, and the job runs again
// elsewhere.
//
// API is not stable: this package is internal to Gearwork.
package postgres
