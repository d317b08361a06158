package store

import "context"

// Writer is an optional capability of a Store, found by type assertion:
// writing one round of the broker's committer in one atomic write. The
// broker uses it for a round that changes a batch (BatchMeta): the end of
// a job of a batch, the batch's counters and the callback job its
// completion submits must reach the disk together or not at all, so that
// a crash at any point neither loses a callback nor submits one twice.
// Write must be safe for concurrent use with the other Store methods.
type Writer interface {
	// Write applies w in one atomic write, in this order: Save, Meta,
	// Delete, ForgetRecords, Records (a job saved and deleted in the same
	// write ends up deleted). It is as durable as Save when w saves jobs
	// or metadata; a write of removals and records alone is as durable as
	// Delete, its records made durable before they are read (see
	// RecordStore).
	Write(ctx context.Context, w Write) error
}

// Write is one atomic write of a Writer.
type Write struct {
	Save   []Job
	Meta   []Meta
	Delete []uint64
	// ForgetRecords and Records are records of ended jobs to forget and
	// then to write (RecordStore); a store without records ignores them.
	ForgetRecords []uint64
	Records       []Record
}
