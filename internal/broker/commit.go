package broker

import (
	"context"
	"log/slog"
	"time"

	"github.com/gearwork/gearwork/internal/store"
)

// kickCommitter wakes the committer for a write that someone waits for.
func (b *Broker) kickCommitter() {
	select {
	case b.commitUrgent <- struct{}{}:
	default:
	}
	b.kickCommitterLater()
}

// kickCommitterLater wakes the committer for a write that nobody waits
// for: a record, a forget, the removal of an ended job. Such a round may
// be held back briefly (paceRecords).
func (b *Broker) kickCommitterLater() {
	select {
	case b.commitWake <- struct{}{}:
	default:
	}
}

// paceRecords holds back a round that would only write job records and
// the removals of ended jobs, which nobody waits for, until
// Config.RecordPace has passed since the last round with records began,
// so that one write carries the records of a steady stream of ending
// jobs instead of one write following another. Anything someone
// waits for (a submit, a barrier, metadata, a retry) ends the wait at
// once, as does ctx. last is when the last round with records began
// (zero: none yet).
func (b *Broker) paceRecords(ctx context.Context, last time.Time) {
	if b.records == nil || last.IsZero() || b.cfg.RecordPace < 0 {
		return
	}
	wait := b.cfg.RecordPace - time.Since(last)
	if wait <= 0 {
		return
	}
	select {
	case <-b.commitUrgent: // stale: what it was for is written or pending
	default:
	}
	b.mu.Lock()
	ends := b.onlyEndsPendingLocked()
	b.mu.Unlock()
	if !ends {
		return
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
	case <-b.commitUrgent:
	case <-ctx.Done():
	}
}

// onlyEndsPendingLocked reports whether all the committer has to write
// is job records, forgets and removals of ended jobs, fewer records than
// one round takes.
func (b *Broker) onlyEndsPendingLocked() bool {
	return len(b.pendingSaves) == 0 && len(b.pendingRetries) == 0 && len(b.barriers) == 0 &&
		len(b.life.pendingMeta) == 0 && len(b.batches.dirty) == 0 && !b.mode.pendingLocked() &&
		len(b.recq.pending) < b.cfg.CommitBatch
}

// commitLoop is the group committer: it writes every job waiting at that
// moment in one store batch, then acknowledges them. Deletes of finished
// jobs ride along without waiting.
//
// Dispatch before durable: a new background job is runnable as soon as it
// is submitted (submitLocked); only its submitters' answers wait here. So
// with --sync always a job may start, and even end, before its write is
// synced, and the promise is the one a client can observe: JOB_CREATED (or
// the HTTP 201/202) comes only once the job is on disk, or once it has
// ended, whichever comes first. A job that has ended has nothing left to
// lose, so its submitters are told at once (settleEndedLocked) and, if the
// committer has not taken its write yet, nothing of it is written at all.
// A crash before the write syncs loses only jobs nobody was told about; a
// job running when the write synced is stored as queued, as every running
// job is, and a restart runs it again (at-least-once). When the write
// fails, the submitters get an ERROR and the job is dropped as by
// CancelJob (refuseLocked): a worker may have started it already.
//
// Within one batch, saves are written before metadata and deletes: a job
// that was saved (requeued, put in retry-wait) and then finished before the
// batch ran must end up deleted, and a cron tick is recorded only after the
// job it submitted is stored (see fireLocked).
func (b *Broker) commitLoop(ctx context.Context) {
	defer b.wg.Done()
	// Writes use a context that Stop does not cancel: cancelling ctx only
	// ends the loop. A write cut short by Stop would otherwise count as a
	// store failure and answer its submitters with an ERROR.
	wctx := context.WithoutCancel(ctx)
	var buf commitBuffers
	g := gatherer{early: true}
	for {
		select {
		case <-ctx.Done():
			// Final flush so that acknowledged work is not held back,
			// including what the last batch's acknowledgements queued.
			for b.commitOnce(wctx, &buf, &g) || b.hasPendingWrites() {
			}
			return
		case <-b.commitWake:
		}
		b.paceRecords(ctx, buf.recsBegan)
		g.wait(ctx, b)
		for b.commitOnce(wctx, &buf, &g) {
		}
	}
}

// commitBuffers holds one batch of the committer; its slices are reused
// from batch to batch.
type commitBuffers struct {
	// saves are the jobs whose first write this batch is; records are
	// what the batch saves (the retries and other state changes queued,
	// then the records of saves); deletes what it deletes; meta the metadata
	// entries it writes.
	saves   []*job
	records []store.Job
	deletes []uint64
	meta    []store.Meta
	// barriers are the waiters of Durable that this batch answers.
	barriers []chan error
	// recs are the job records the batch writes (recPtrs their memory
	// copies), forget the records it forgets.
	recs    []store.Record
	recData []byte
	// recsBegan is when the last round that wrote records began
	// (paceRecords).
	recsBegan time.Time
	recPtrs   []*histRec
	// spare are the records of the last batch, cleared for reuse.
	spare  []*histRec
	forget []uint64
	// atomic is set when the batch changes batches of jobs: it is written
	// in one write (writeAtomic).
	atomic bool
	// unsyncedDeletes is set when a batch deleted without a sync since
	// the last Sync: a barrier must sync them, whichever batch they were
	// in.
	unsyncedDeletes bool
}

func (c *commitBuffers) empty() bool {
	return len(c.records) == 0 && len(c.deletes) == 0 && len(c.meta) == 0 && len(c.recPtrs) == 0 && len(c.forget) == 0
}

// commitOnce writes one batch. It reports whether more work is waiting.
func (b *Broker) commitOnce(ctx context.Context, buf *commitBuffers, g *gatherer) bool {
	more := b.takeBatch(buf)
	if buf.empty() {
		var err error
		if len(buf.barriers) > 0 {
			err = b.syncDeletes(ctx, buf)
		}
		answerBarriers(buf.barriers, err)
		clear(buf.barriers)
		return more
	}
	began := time.Now()
	if len(buf.recPtrs) > 0 {
		buf.recsBegan = began
	}
	err := b.writeBatch(ctx, buf)
	defer func() {
		answerBarriers(buf.barriers, err)
		clear(buf.barriers)
	}()
	b.settleBatch(buf, began, g, err)
	buf.recycleRecords()
	return more
}

// settleBatch takes in what writing batch buf did (err: it failed).
func (b *Broker) settleBatch(buf *commitBuffers, began time.Time, g *gatherer, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	took := time.Since(began)
	g.done(len(buf.saves), took)
	b.statCommitLocked(took, len(buf.records))
	if err != nil && b.storeErr == nil {
		b.storeErr = err
		b.log.Error("broker: store write failed; refusing background submits until restart",
			slog.String("error", err.Error()))
	}
	b.settleBatchLocked(buf.saves, err)
	b.settleRecordsLocked(buf, err)
	clear(buf.saves)
}

// takeBatch moves what waits for the committer into buf, at most
// CommitBatch first writes (all of them while a Durable waits) and
// CommitBytes of the payloads of the jobs written again and of those (but
// one, written alone), the jobs written again first, and reports whether
// more of them wait.
func (b *Broker) takeBatch(buf *commitBuffers) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	most := b.roundMostLocked()
	n := min(len(b.pendingSaves), most)
	buf.saves = buf.saves[:0]
	buf.records = buf.records[:0]
	var bytes int64
	// Jobs written again (a retry, a job taken back) carry their payloads
	// too: the same bound holds for them. They go first: the removals,
	// records and metadata of ended jobs wait while some are left over
	// (below), and new jobs taken first would leave them over for as long
	// as new jobs fill rounds.
	took := 0
	for _, r := range b.pendingRetries {
		if bytes += b.retryBytesLocked(&r); took > 0 && bytes > b.cfg.CommitBytes {
			break
		}
		buf.records = append(buf.records, r)
		took++
	}
	retriesLeft := copy(b.pendingRetries, b.pendingRetries[took:])
	clear(b.pendingRetries[retriesLeft:])
	b.pendingRetries = b.pendingRetries[:retriesLeft]
	for i, j := range b.pendingSaves[:n] {
		if j.saveState() != saveQueued {
			continue // ended before it was written (settleEndedLocked)
		}
		if bytes += j.size(); len(buf.records) > 0 && bytes > b.cfg.CommitBytes {
			n = i // the next round takes it
			break
		}
		// The record is the job as it is now (it may have run, failed
		// and be waiting for a retry): nothing else of it was queued.
		b.setSaveLocked(j, saveWriting)
		buf.saves = append(buf.saves, j)
		buf.records = append(buf.records, b.record(j))
	}
	rest := copy(b.pendingSaves, b.pendingSaves[n:])
	clear(b.pendingSaves[rest:])
	b.pendingSaves = b.pendingSaves[:rest]
	buf.barriers = buf.barriers[:0]
	if retriesLeft > 0 {
		// The removals, records and metadata of jobs that ended wait
		// for the jobs written again before them, for the next round: a
		// job taken back and then ended, removed before its retry is
		// written, would be brought back by that write.
		buf.deletes = buf.deletes[:0]
		buf.meta, buf.atomic = buf.meta[:0], false
		if b.records != nil {
			b.takeRecordsLocked(buf, 0)
		}
		return true
	}
	buf.deletes = append(buf.deletes[:0], b.pendingDeletes...)
	b.pendingDeletes = b.pendingDeletes[:0]
	buf.meta, buf.atomic = b.takeBatchesLocked(b.takePendingMetaLocked())
	moreRecs := b.records != nil && b.takeRecordsLocked(buf, most)
	more := len(b.pendingSaves) > 0
	if !more && !moreRecs {
		// Nothing written before a barrier is left behind this batch.
		buf.barriers = append(buf.barriers, b.takeBarriersLocked()...)
	}
	return more || moreRecs
}

// retryBytesLocked is what a job written again counts against
// CommitBytes: its unique and its payload, which tierFillRetries reads
// back from disk for the write when tiering left it there (its length was
// noted when the job was handed out; a job frozen in its queue since is
// counted without it).
func (b *Broker) retryBytesLocked(r *store.Job) int64 {
	n := len(r.Payload)
	if r.Payload == nil && b.tier.reader != nil {
		if j := b.jobs.seqIndex.get(r.Seq); j != nil {
			n = j.payloadSize()
		}
	}
	return int64(n + len(r.Unique))
}

// writeBatch writes buf to the store: saves, then metadata, then deletes
// (synced when a barrier waits for them). A store that writes atomically
// (store.Writer) gets a round that changes batches, or that both saves
// and ends jobs, as one write: one commit, and with --sync always one
// fsync, carries the round's submits together with the removals and
// records of the jobs that ended since the last round, instead of a
// synced write followed by an unsynced one.
func (b *Broker) writeBatch(ctx context.Context, buf *commitBuffers) error {
	saves := len(buf.records) > 0 || len(buf.meta) > 0
	ends := len(buf.deletes) > 0 || len(buf.recPtrs) > 0 || len(buf.forget) > 0
	if w, ok := b.store.(store.Writer); ok && (buf.atomic || saves && ends) {
		return b.writeAtomic(ctx, w, buf)
	}
	var err error
	if len(buf.records) > 0 {
		buf.records, err = b.tierFillRetries(ctx, buf.records)
	}
	if err == nil && len(buf.records) > 0 {
		err = b.store.Save(ctx, buf.records)
	}
	if err == nil && len(buf.meta) > 0 {
		err = b.putMeta(ctx, buf.meta)
	}
	if len(buf.recPtrs) > 0 {
		b.encodeRecords(ctx, buf, true)
	}
	switch {
	case err != nil:
	case b.records != nil && (len(buf.deletes) > 0 || len(buf.recs) > 0 || len(buf.forget) > 0):
		// A finished job's record and its removal are one write.
		err = b.records.EndJobs(ctx, buf.deletes, buf.recs, buf.forget)
	case len(buf.deletes) > 0:
		err = b.store.Delete(ctx, buf.deletes)
	}
	if err == nil && (len(buf.deletes) > 0 || len(buf.recs) > 0 || len(buf.forget) > 0) {
		buf.unsyncedDeletes = true
	}
	if err == nil && len(buf.barriers) > 0 {
		err = b.syncDeletes(ctx, buf)
	}
	return err
}

// syncDeletes makes the deletes written since the last sync durable, for
// the barriers that wait (the store does not wait for the disk when it
// deletes), with the records ForgetRecord deleted from the store itself.
func (b *Broker) syncDeletes(ctx context.Context, buf *commitBuffers) error {
	sy, ok := b.store.(Syncer)
	forgot := b.forgotUnsynced.Swap(false)
	if !ok || !buf.unsyncedDeletes && !forgot {
		return nil
	}
	if err := sy.Sync(ctx); err != nil {
		if forgot {
			b.forgotUnsynced.Store(true)
		}
		return err
	}
	buf.unsyncedDeletes = false
	return nil
}

// settleBatchLocked answers the submitters of the jobs whose first write
// a batch was, with err when it failed.
func (b *Broker) settleBatchLocked(saves []*job, err error) {
	for _, j := range saves {
		if j.saveState() != saveWriting {
			// Ended while it was written: its submitters were answered
			// and its delete queued behind this write.
			continue
		}
		b.setSaveLocked(j, saveNone)
		waiters := j.x.waiters
		j.x.waiters = nil
		if err != nil {
			for _, w := range waiters {
				w(0, false, &StoreError{err})
			}
			if j.state != stateDone && j.state != stateDead {
				b.refuseLocked(j) // a kept one has ended already
			}
			continue
		}
		for i, w := range waiters {
			w(j.seq, i == 0, nil)
		}
		b.releaseHeldLocked(j)
		b.tierAdmitLocked(j, true)
		j.releaseExtra() // the waiters were all a queued job's extra held, usually
		b.freezeLocked(j)
	}
}

// settleEndedLocked answers the submitters of a job that ends (completes,
// fails for good, is cancelled or dropped) before its first store write is
// done: they are told it was accepted, since an ended job has nothing left
// to lose. A write the committer has not taken yet is dropped (commitOnce
// skips the job); one under way completes, and the caller's delete, queued
// behind it, removes the job again. A job kept as a retained result or a
// dead letter has not ended in this sense: its submitters go on waiting,
// for the write that takes the job as it is now (saveQueued) or for the
// one under way, whose record of the job as queued is followed by the one
// saveLocked queued (saveWriting), until it is deleted (deleteStoredLocked).
func (b *Broker) settleEndedLocked(j *job) {
	if j.saveState() == saveNone {
		return
	}
	b.setSaveLocked(j, saveNone)
	waiters := j.x.waiters
	j.x.waiters = nil
	for i, w := range waiters {
		w(j.seq, i == 0, nil)
	}
	if b.gatherRunning && !b.runningUnsavedLocked() {
		b.endGatherLocked()
	}
}

// refuseLocked drops a live job whose first store write failed, after its
// submitters were told so. It goes as with CancelJob: attached clients get
// WORK_FAIL, a queued job is removed and a running one detached (its
// worker's result is dropped), so a job its submitter was refused may
// still have run (at-least-once: the client retries). Its delete is
// queued in case a record of it reached the store after all.
func (b *Broker) refuseLocked(j *job) {
	b.log.Warn("broker: dropped a job whose store write failed",
		slog.String("handle", b.Handle(j.seq)), slog.String("function", j.fn.name),
		slog.String("state", j.state.String()))
	b.cancelLocked(j, "the store write failed")
}
