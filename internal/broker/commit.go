package broker

import (
	"context"
	"log/slog"
	"time"

	"github.com/gearwork/gearwork/internal/store"
)

func (b *Broker) kickCommitter() {
	select {
	case b.commitWake <- struct{}{}:
	default:
	}
}

// commitLoop is the group committer: it writes every job waiting at that
// moment in one store batch, then makes them runnable and acknowledges
// them. Deletes of finished jobs ride along without waiting.
//
// Within one batch, saves are written before metadata and deletes: a job
// that was saved (requeued, put in retry-wait) and then finished before the
// batch ran must end up deleted, and a cron tick is recorded only after the
// job it submitted is stored (see cron.go).
func (b *Broker) commitLoop(ctx context.Context) {
	defer b.wg.Done()
	var (
		saves   []*job
		records []store.Job
		deletes []uint64
	)
	// Writes use a context that Stop does not cancel: cancelling ctx only
	// ends the loop. A write cut short by Stop would otherwise count as a
	// store failure and answer its submitters with an ERROR.
	wctx := context.WithoutCancel(ctx)
	for {
		select {
		case <-ctx.Done():
			// Final flush so that acknowledged work is not held back,
			// including what the last batch's acknowledgements queued.
			for b.commitOnce(wctx, &saves, &records, &deletes) || b.hasPendingWrites() {
			}
			return
		case <-b.commitWake:
		}
		for b.commitOnce(wctx, &saves, &records, &deletes) {
		}
	}
}

// commitOnce writes one batch. It reports whether more work is waiting.
func (b *Broker) commitOnce(ctx context.Context, saves *[]*job, records *[]store.Job, deletes *[]uint64) bool {
	b.mu.Lock()
	n := min(len(b.pendingSaves), b.cfg.CommitBatch)
	*saves = append((*saves)[:0], b.pendingSaves[:n]...)
	rest := copy(b.pendingSaves, b.pendingSaves[n:])
	clear(b.pendingSaves[rest:])
	b.pendingSaves = b.pendingSaves[:rest]
	*records = (*records)[:0]
	for _, j := range *saves {
		if j.state == statePending {
			*records = append(*records, b.record(j))
		}
	}
	*records = append(*records, b.pendingRetries...)
	clear(b.pendingRetries)
	b.pendingRetries = b.pendingRetries[:0]
	*deletes = append((*deletes)[:0], b.pendingDeletes...)
	b.pendingDeletes = b.pendingDeletes[:0]
	meta := b.takePendingMetaLocked()
	more := len(b.pendingSaves) > 0
	b.mu.Unlock()

	if len(*records) == 0 && len(*deletes) == 0 && len(*saves) == 0 && len(meta) == 0 {
		return more
	}
	var err error
	began := time.Now()
	if len(*records) > 0 {
		*records, err = b.tierFillRetries(ctx, *records)
	}
	if err == nil && len(*records) > 0 {
		err = b.store.Save(ctx, *records)
	}
	if err == nil && len(meta) > 0 {
		err = b.putMeta(ctx, meta)
	}
	if err == nil && len(*deletes) > 0 {
		err = b.store.Delete(ctx, *deletes)
	}

	b.mu.Lock()
	defer b.mu.Unlock()
	b.statCommitLocked(time.Since(began), len(*records))
	if err != nil && b.storeErr == nil {
		b.storeErr = err
		b.log.Error("broker: store write failed; refusing background submits until restart",
			slog.String("error", err.Error()))
	}
	for _, j := range *saves {
		if j.state != statePending {
			continue // dropped while waiting (e.g. cancelled)
		}
		waiters := j.x.waiters
		j.x.waiters = nil
		if err != nil {
			j.state = stateQueued
			j.fn.queues[j.priority].pushBack(j)
			j.background = false // nothing to delete from the store
			b.removeLocked(j)
			for _, w := range waiters {
				w(0, false, &StoreError{err})
			}
			continue
		}
		for i, w := range waiters {
			w(j.seq, i == 0, nil)
		}
		b.tierAdmitLocked(j, true)
		b.makeRunnableLocked(j, true)
	}
	clear(*saves)
	return more
}
