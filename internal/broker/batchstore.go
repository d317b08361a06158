package broker

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"

	"github.com/gearwork/gearwork/internal/store"
)

// The committer writes batches (takeBatchesLocked) and replay reads them
// back (the comment "Exactly once" above type Callback says why a round
// that changes a batch is one atomic write).

// takeBatchesLocked appends the state of every dirty batch to meta and
// reports whether there was any.
func (b *Broker) takeBatchesLocked(meta []store.Meta) ([]store.Meta, bool) {
	if len(b.batches.dirty) == 0 {
		return meta, false
	}
	for _, bt := range b.batches.dirty {
		bt.dirty = false
		key := metaKey(metaBatch, strconv.FormatUint(bt.id, 10))
		if bt.forgotten {
			meta = append(meta, store.Meta{Key: key}) // deletes it
			continue
		}
		v, err := json.Marshal(&bt.storedBatch)
		if err != nil {
			panic(err)
		}
		meta = append(meta, store.Meta{Key: key, Value: v})
	}
	clear(b.batches.dirty)
	b.batches.dirty = b.batches.dirty[:0]
	return meta, true
}

// writeAtomic writes a committer round in one write of w: a round that
// changes batches (see the file comment), or one that both saves and ends
// jobs (writeBatch); it does what writeBatch does otherwise.
func (b *Broker) writeAtomic(ctx context.Context, w store.Writer, buf *commitBuffers) error {
	var err error
	if len(buf.records) > 0 {
		if buf.records, err = b.tierFillRetries(ctx, buf.records); err != nil {
			return err
		}
	}
	if len(buf.recPtrs) > 0 {
		b.encodeRecords(ctx, buf, true)
	}
	err = w.Write(ctx, store.Write{Save: buf.records, Meta: buf.meta, Delete: buf.deletes,
		ForgetRecords: buf.forget, Records: buf.recs})
	if err != nil {
		return err
	}
	if len(buf.deletes) > 0 || len(buf.recs) > 0 || len(buf.forget) > 0 {
		buf.unsyncedDeletes = true
	}
	if len(buf.barriers) > 0 {
		return b.syncDeletes(ctx, buf)
	}
	return nil
}

// loadBatchesLocked reads the stored batches before the replay of jobs.
func (b *Broker) loadBatchesLocked(ctx context.Context) error {
	ms, ok := b.store.(store.MetaStore)
	if !ok {
		return nil
	}
	return ms.LoadMeta(ctx, func(m store.Meta) error {
		name, ok := strings.CutPrefix(m.Key, metaBatch+"/")
		if !ok {
			return nil
		}
		id, err := strconv.ParseUint(name, 10, 64)
		if err != nil {
			return fmt.Errorf("stored batch %q: %w: %w", m.Key, store.ErrCorrupt, err)
		}
		bt := &batch{id: id}
		if err := json.Unmarshal(m.Value, &bt.storedBatch); err != nil {
			return fmt.Errorf("stored batch %d: %w: %w", id, store.ErrCorrupt, err)
		}
		if b.batches.byID == nil {
			b.batches.byID = make(map[uint64]*batch)
		}
		b.liveBytes += bt.callbackBytes() // --max-queued-bytes counts it
		b.batches.byID[id] = bt
		b.nextSeq = max(b.nextSeq, id+1)
		return nil
	})
}

// replayBatchJobLocked links a replayed job of a batch to its batch and
// counts it if it has not finished.
func (b *Broker) replayBatchJobLocked(r store.Job) {
	bt := b.batches.byID[r.Batch]
	if bt == nil {
		// A dead letter or retained result outlives its batch's
		// retention.
		b.log.Debug("broker: stored job of a forgotten batch", slog.Uint64("seq", r.Seq), slog.Uint64("batch", r.Batch))
		return
	}
	j := b.jobs.get(r.Seq)
	if j == nil {
		j = b.life.dead[r.Seq]
	}
	if j == nil {
		j = b.life.done[r.Seq]
	}
	if j == nil {
		return // a retained result that expired
	}
	j.extra().batch = bt
	if r.State == store.StateQueued || r.State == store.StateRetryWait {
		bt.live++
	}
}

// finishBatchReplayLocked recounts each batch's total from the replay and
// completes the batches that are due (a crash may have come between the
// end of a batch's last job and the write of its callbacks).
func (b *Broker) finishBatchReplayLocked() {
	for _, bt := range b.batches.byID {
		if total := bt.finished() + bt.live; total != bt.Total {
			b.log.Info("broker: batch recounted at replay", slog.Uint64("batch", bt.id),
				slog.Uint64("stored_total", bt.Total), slog.Uint64("total", total))
			bt.Total = total
			b.batchChangedLocked(bt)
		}
		bt.live = 0
		if bt.Completed != 0 {
			b.batches.done = append(b.batches.done, bt)
		} else {
			b.batches.incomplete++ // checkBatchLocked counts it out if it completes
		}
		b.checkBatchLocked(bt)
	}
	slices.SortFunc(b.batches.done, func(x, y *batch) int { return cmp.Compare(x.Completed, y.Completed) })
}
