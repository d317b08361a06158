// Package store holds the record that Gearwork's durable stores persist and
// the errors they share. The Store interfaces themselves are defined by
// their consumers (see internal/broker).
//
// API is not stable: this package is internal to Gearwork.
package store

import "errors"

// Job is the durable record of one background job.
type Job struct {
	// Seq is the job's sequence number. It is unique per server (per cluster
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
}

// ErrClosed is returned by a store's methods after Close.
var ErrClosed = errors.New("store: closed")

// ErrFailed is returned by every write after a write or sync failed: the
// store does not retry an fsync whose outcome it cannot know, and the server
// must be restarted to recover from the data on disk.
var ErrFailed = errors.New("store: an earlier write failed; the store accepts no further writes")
