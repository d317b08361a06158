package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
)

// RetryJob runs a job that ended without success again, and returns the
// sequence number of the job that runs and whether the submit created it.
//
// A dead letter is queued again under its own handle, as RetryDeadLetter
// does (created is false). Any other failed, exception or dead job whose
// record is kept, with its whole payload (RetryPayloadCap), is submitted
// again as a new background job with the same function, unique, priority,
// ordering key and payload; the new job's record names the old one
// (JobSnapshot.RetryOf). When a live job has the same unique the submit
// joins it, as any submit does (created is false). While the job that a
// retry created here is live, another retry of the same job joins it too,
// so that a retry sent twice runs the job once.
//
// It returns ErrJobNotFound when no record of the job is kept, ErrJobLive
// for a job that has not ended, and errors wrapping ErrNotRetryable (a
// complete or cancelled job) or ErrPayloadNotKept (a payload longer than
// RetryPayloadCap, or on disk only, beyond the memory budget, when the job
// ended). It returns once the new job is durable. by says who asked, for
// the log. Safe for concurrent use.
func (b *Broker) RetryJob(ctx context.Context, handle []byte, by string) (seq uint64, created bool, err error) {
	old, ok := b.ParseHandle(handle)
	if !ok {
		return 0, false, ErrJobNotFound
	}
	if _, dead, err := b.mode.deadLetter(ctx, old); err != nil {
		return 0, false, err
	} else if dead {
		err := b.RetryDeadLetter(ctx, handle)
		if err == nil {
			return old, false, nil
		}
		if !errors.Is(err, ErrJobNotFound) {
			return 0, false, err
		}
		// Another retry (or purge) took the dead letter first: the job
		// answers as it is now.
	}
	rec, ok := b.Job(ctx, old)
	if !ok {
		if rec, ok, err = b.StoredJob(ctx, old); err != nil {
			return 0, false, err
		}
	}
	if !ok || rec.Final {
		// A job that another server runs (a dead letter queued again
		// there) may have no record, or one of its earlier end.
		if live, err := b.mode.liveElsewhere(ctx, old); err != nil {
			return 0, false, err
		} else if live {
			return 0, false, ErrJobLive
		}
	}
	switch {
	case !ok:
		return 0, false, ErrJobNotFound
	case !rec.Final:
		return 0, false, ErrJobLive
	case !retryable(rec.State):
		return 0, false, fmt.Errorf("%w: job %s is %s", ErrNotRetryable, handle, rec.State)
	case rec.Payload == nil && rec.PayloadSize <= RetryPayloadCap:
		// A payload on disk only (tiering) when the job ended.
		return 0, false, fmt.Errorf("%w: the record keeps only the payload's size (%d bytes): the payload was on disk only, "+
			"beyond the memory budget, when the job ended", ErrPayloadNotKept, rec.PayloadSize)
	case rec.Payload == nil:
		return 0, false, fmt.Errorf("%w: its payload is %d bytes; a record keeps up to %d", ErrPayloadNotKept,
			rec.PayloadSize, RetryPayloadCap)
	}
	p := SubmitParams{Function: []byte(rec.Function), Payload: rec.Payload, Priority: rec.Priority, Background: true,
		OrderingKey: rec.OrderingKey, Attempts: rec.MaxAttempts, retryOf: old, own: true}
	if rec.Unique != "" {
		p.Unique = []byte(rec.Unique)
	}
	type outcome struct {
		seq     uint64
		created bool
		err     error
	}
	ch := make(chan outcome, 1)
	done := func(seq uint64, created bool, err error) {
		if err == nil && created {
			b.noteRetryLocked(old, seq)
		}
		ch <- outcome{seq, created, err}
	}
	// The job is known as old's retry from when it is created (watch) or,
	// in shared mode, has its handle (done).
	p.watch = func(j *job, created bool) {
		if created {
			b.noteRetryLocked(old, j.seq)
		}
	}
	b.mu.Lock()
	if j := b.liveRetryLocked(old); j != nil {
		b.attachLocked(nil, j, true, done)
	} else {
		b.submitLocked(nil, p, done)
	}
	b.mu.Unlock()
	select {
	case o := <-ch:
		if o.err == nil {
			b.log.Info("broker: job run again", slog.String("handle", string(handle)), slog.String("as", b.Handle(o.seq)),
				slog.Bool("created", o.created), slog.String("by", by))
		}
		return o.seq, o.created, o.err
	case <-ctx.Done():
		// The submit goes on; the job may still be accepted.
		return 0, false, ctx.Err()
	}
}

// retriesSwept is how many jobs run again b.retries holds before
// noteRetryLocked forgets those whose retry has ended.
const retriesSwept = 1024

// noteRetryLocked records that job seq runs job old again.
func (b *Broker) noteRetryLocked(old, seq uint64) {
	if b.retries == nil {
		b.retries = make(map[uint64]uint64)
	}
	if len(b.retries) >= retriesSwept {
		for o := range b.retries {
			if b.liveRetryLocked(o) == nil {
				delete(b.retries, o)
			}
		}
	}
	b.retries[old] = seq
}

// liveRetryLocked returns the live job that a retry of old created here,
// or nil.
func (b *Broker) liveRetryLocked(old uint64) *job {
	seq, ok := b.retries[old]
	if !ok {
		return nil
	}
	if j := b.jobs.get(seq); j != nil && j.state != stateGone && j.x != nil && j.x.retryOf == old {
		return j
	}
	return nil
}
