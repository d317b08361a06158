// Package pebble is Gearwork's default durable store: background jobs kept
// in an embedded Pebble database (the LSM under CockroachDB) in one
// directory.
//
// # Layout
//
// Each job is one key, "j" followed by its Seq as eight big-endian bytes,
// so iteration order is submission order. The value is a compact versioned
// binary record (see putRecord); the payload is its tail. A marker key
// records the layout version of the directory, and a store refuses a
// directory or a record whose version it does not know. The records of
// jobs that ended are blocks of two keys per function and write
// (encodeBlock; the records' data packed with MinLZ), found through an
// index in memory (recordIndex).
//
// # Durability
//
// Every Save is one Pebble batch. In SyncAlways mode (the default) Save
// returns after the write-ahead log is fsynced; the broker's group committer
// puts all submits waiting at that moment into one Save, so one fsync
// covers many jobs. SyncInterval writes without waiting and fsyncs the log
// every interval; SyncNone leaves it to the operating system. Deletes of
// finished jobs, and the job records written with them, are never waited
// for: a delete lost in a crash only runs a finished job again
// (at-least-once), and the next synced write carries it to disk anyway,
// because the log is written in order. In SyncAlways mode a read of job
// records fsyncs the log first when records were written without one
// since, so that a record once read survives a crash.
//
// # Failures
//
// A failed write or fsync is never retried: after an fsync error the
// kernel may have dropped the dirty pages, so a retry that succeeds proves
// nothing ("fsyncgate"). The first failure is logged and every later write
// returns an error wrapping store.ErrFailed; reads go on working, except
// reads of job records while some were written without an fsync (they may
// not be on disk), which return that error too. Recovery
// is a restart, which replays what is really on disk. Pebble reacts to some
// I/O errors by panicking or calling its logger's Fatalf; the store turns
// those into errors when they happen inside one of its calls. A fatal error
// in one of Pebble's background goroutines (a failed MANIFEST sync during
// a flush) ends the process after logging why.
//
// # Damage
//
// Open, Load and ReadPayload never panic on damaged data: they return an
// error that names the directory and, for a record, its Seq, and that wraps
// store.ErrCorrupt when the data is recognisably damaged. Pebble checksums
// its log records and blocks; a torn write at the very end of the log (a
// crash in the middle of a write) is not damage, and the jobs it held were
// never acknowledged.
//
// API is not stable: this package is internal to Gearwork.
package pebble
