package broker

import (
	"context"
	"fmt"
)

// Syncer is an optional capability of a Store, found by type assertion:
// Sync makes every write the store took before the call as durable as a
// Save is (Delete does not wait for the disk). The broker calls it from
// its committer when someone waits for a batch with removals (Durable).
//
// API is not stable: internal to Gearwork.
type Syncer interface {
	Sync(ctx context.Context) error
}

// Durable waits until every change to stored state the broker made before
// the call (jobs saved or removed, metadata such as pauses and policies)
// is on disk as durably as a JOB_CREATED, and returns the store's error
// when writing it failed. Front ends call it before they answer an action
// that changed stored state, so that an OK is never taken back by a
// crash. In shared mode it waits for the commit round that carries them
// (the removal and record of a cancelled or dropped job this server
// holds, say), as the transactions written at once need no wait. Without
// a store it returns at once. After Stop it returns ErrStopped; while the
// store refuses writes, or in shared mode does not answer a probe, it
// returns that error at once.
func (b *Broker) Durable(ctx context.Context) error {
	if b.store == nil {
		return nil
	}
	done := make(chan error, 1)
	b.mu.Lock()
	if b.stopped {
		b.mu.Unlock()
		return ErrStopped
	}
	if err := b.storeErr; err != nil {
		// The store refuses writes (a failed fsync), or was out of reach
		// (shared mode): the change is kept, but nobody may be told it is
		// stored unless the store answers now, when the commit round
		// below writes it. The error may be older than the last probe
		// of the committer, which waits up to 5 s between probes, while
		// a transaction written at once (a dead letter's retry, the
		// cancel of a row nobody holds) has already committed.
		b.mu.Unlock()
		if !b.mode.storeAnswers(ctx) {
			return fmt.Errorf("broker: the change may not be on disk: %w", err)
		}
		b.mu.Lock()
		if b.stopped {
			b.mu.Unlock()
			return ErrStopped
		}
	}
	// Every change made before this point is in the pending writes or
	// was taken by a commit round that has finished or is under way; the
	// committer answers barriers only from a round that left nothing
	// pending, which runs after that one.
	b.barriers = append(b.barriers, done)
	b.mu.Unlock()
	b.kickCommitter()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("broker: the change may not be on disk: %w", err)
		}
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// roundMostLocked is the most new jobs, and the most job records, that a
// commit round takes: CommitBatch, or all that wait while a Durable
// waits. A waiter is answered only by a round that leaves nothing
// behind, and under a load that queues more than CommitBatch between two
// rounds, rounds of CommitBatch never did: a lookup of a job record
// (Job, ListJobs) or a retained result then waited its whole
// RecordReadWait and was answered as not stored, and an admin change
// waited for the load to end. CommitBytes still bounds the round.
func (b *Broker) roundMostLocked() int {
	if len(b.barriers) == 0 {
		return b.cfg.CommitBatch
	}
	return max(b.cfg.CommitBatch, len(b.pendingSaves), len(b.recq.pending))
}

// takeBarriersLocked takes the waiters of Durable.
func (b *Broker) takeBarriersLocked() []chan error {
	if len(b.barriers) == 0 {
		return nil
	}
	w := b.barriers
	b.barriers = nil
	return w
}

func answerBarriers(ws []chan error, err error) {
	for _, w := range ws {
		w <- err
	}
}
