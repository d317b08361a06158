package broker

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/gearwork/gearwork/internal/store"
)

// sharedCommitLoop is the committer in shared mode. Like commitLoop it
// writes every job waiting at that moment in one batch, together with the
// deletes of finished jobs and new retry counts, in one transaction
// (store.SharedStore.Commit: the store numbers new jobs and coalesces uniques
// across servers). A new job is kept here only when it is claimed as it
// is inserted, and store errors are not final: submits get errors while the
// store cannot be reached, and the loop retries with backoff until it can.
// Deletes and retry counts that could not be written are written then.
func (c *sharedMode) sharedCommitLoop(ctx context.Context) {
	b := c.b
	defer b.wg.Done()
	backoff := 100 * time.Millisecond
	var g gatherer
	due := time.NewTimer(time.Hour)
	defer due.Stop()
	for {
		b.mu.Lock()
		d, ok := c.earlyDueLocked()
		b.mu.Unlock()
		if !ok {
			d = time.Hour
		}
		due.Reset(d)
		select {
		case <-ctx.Done():
			c.sharedFinalFlush(context.WithoutCancel(ctx))
			return
		case <-b.commitWake:
			g.wait(ctx, b)
		case <-due.C:
		}
		b.mu.Lock()
		lost := c.failing
		if lost {
			// storeLost: what waits for the store is refused, and nothing
			// is written until the store answers.
			c.refusePendingLocked(b.storeErr)
		}
		b.mu.Unlock()
		if lost {
			c.awaitStore(ctx, &backoff)
		}
		for ctx.Err() == nil {
			// Stop must not cancel a write under way: its submitters would
			// be told it failed although it may have been stored.
			more, err := c.sharedCommitOnce(context.WithoutCancel(ctx), &g, false)
			if err == nil {
				backoff = 100 * time.Millisecond
				if !more {
					break
				}
				continue
			}
			if ctx.Err() != nil {
				break
			}
			c.awaitStore(ctx, &backoff)
		}
	}
}

// awaitStore waits, then probes, until the store answers again, and then
// accepts background submits again.
func (c *sharedMode) awaitStore(ctx context.Context, backoff *time.Duration) {
	b := c.b
	for ctx.Err() == nil {
		wait := time.NewTimer(*backoff)
	sleep:
		for {
			select {
			case <-ctx.Done():
				break sleep
			case <-wait.C:
				break sleep
			case <-b.commitWake:
				// Durable found that the store answers: write now.
				b.mu.Lock()
				back := !c.failing
				b.mu.Unlock()
				if back {
					wait.Stop()
					return
				}
			}
		}
		wait.Stop()
		*backoff = min(2**backoff, 5*time.Second)
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		perr := c.store.Ping(pctx)
		cancel()
		if perr == nil {
			c.answered()
			return
		}
	}
}

// answered records that the store answers again: background submits are
// accepted again.
func (c *sharedMode) answered() {
	b := c.b
	b.mu.Lock()
	was := c.failing
	c.failing = false
	c.answeredAt = c.now()
	b.storeErr = nil
	b.mu.Unlock()
	if was {
		b.log.Info("broker: the store answers again; accepting background submits")
	}
	c.kick()
}

// storeAnswers probes the store, as storeLost does, and records that it
// answers again when it does.
func (c *sharedMode) storeAnswers(ctx context.Context) bool {
	pctx, cancel := context.WithTimeout(ctx, storeLostProbe)
	perr := c.store.Ping(pctx)
	cancel()
	if perr != nil {
		return false
	}
	c.answered()
	return true
}

// storeLostProbe bounds the probe of storeLost.
const storeLostProbe = time.Second

// storeLost is called when the shared store has reason to think the
// database is gone: when it does not answer a probe either, background
// submits are refused from now on (rather than after a write fails) until
// the committer finds it answers again.
func (c *sharedMode) storeLost(err error) {
	b := c.b
	// A connection can break alone (a proxy's idle timeout, a restarted
	// backend): refuse only when the store does not answer either.
	began := c.now()
	ctx, cancel := context.WithTimeout(context.Background(), storeLostProbe)
	perr := c.store.Ping(ctx)
	cancel()
	if perr == nil {
		b.log.Warn("broker: a connection to the store broke, but the store answers",
			slog.String("error", err.Error()))
		return
	}
	b.mu.Lock()
	// A write or probe that succeeded while this probe ran says more.
	if !c.failing && !b.stopped && !c.answeredAt.After(began) {
		c.failing = true
		b.storeErr = fmt.Errorf("lost the connection to the store: %w", err)
		b.log.Error("broker: lost the connection to the store; refusing background submits until it answers",
			slog.String("error", err.Error()))
	}
	b.mu.Unlock()
	b.kickCommitter()
}

// sharedFinalFlush writes what is pending at Stop, then waits for the
// claim loop and leaves the shared store, which releases the jobs held here.
func (c *sharedMode) sharedFinalFlush(ctx context.Context) {
	b := c.b
	fctx, cancel := context.WithTimeout(ctx, sharedFlushTimeout)
	defer cancel()
	for {
		more, err := c.sharedCommitOnce(fctx, &gatherer{}, true)
		if err != nil || !more {
			break
		}
	}
	<-c.loopDone
	if err := c.store.Leave(fctx); err != nil {
		b.log.Warn("broker: leaving the shared store failed; the jobs held here go to other servers when the lease expires",
			slog.String("error", err.Error()))
	}
}

// sharedCommitOnce writes one batch: the new jobs waiting for their
// insert, and those handed out before it that have waited long enough (all
// of them when all is set). It reports whether more new jobs are waiting.
func (c *sharedMode) sharedCommitOnce(ctx context.Context, g *gatherer, all bool) (bool, error) {
	b := c.b
	r := c.takeRound(all)
	var (
		res store.Committed
		err error
	)
	if !r.empty() {
		wctx, cancel := context.WithTimeout(ctx, sharedWriteTimeout)
		began := c.now()
		res, err = c.store.Commit(wctx, r.params)
		cancel()
		g.done(r.pending, c.now().Sub(began))
	}

	b.mu.Lock()
	defer b.mu.Unlock()
	answerBarriers(r.barriers, err)
	b.settleSharedRecordsLocked(r.recs, r.params, err)
	if err != nil {
		c.putBackLocked(r.params)
	} else {
		c.metaCommittedLocked(r.params.Meta)
		c.reservedLocked(res.Reserved)
		c.answeredAt = c.now()
	}
	if err != nil && !c.failing {
		c.failing = true
		b.storeErr = err
		b.log.Error("broker: store write failed; refusing background submits until the store answers",
			slog.String("error", err.Error()))
	}
	for i, j := range r.live {
		var ins store.Inserted
		if err == nil {
			ins = res.Inserted[i]
		}
		if r.early[i] {
			c.settleEarlyLocked(j, ins, err)
		} else {
			c.settleInsertedLocked(j, ins, err)
		}
	}
	more := r.more
	if err != nil {
		// Everything still waiting would fail the same way; answer now
		// rather than keep clients waiting through the outage.
		c.refusePendingLocked(err)
		more = false
	}
	return more, err
}

// sharedRound is one round of the shared-mode committer.
type sharedRound struct {
	params store.CommitParams
	// live are the jobs inserted, in params.Insert.Jobs order; early
	// marks those handed out before their insert.
	live  []*job
	early []bool
	// pending counts the jobs that wait for their insert (not handed out).
	pending int
	// more reports that more waits for the committer.
	more bool
	// recs are the memory copies of params.Records.
	recs []*histRec
	// barriers are the waiters of Durable that this round answers: it
	// took every write pending when they came.
	barriers []chan error
}

func (r *sharedRound) empty() bool {
	p := &r.params
	return len(p.Insert.Jobs) == 0 && len(p.Update) == 0 && len(p.Delete) == 0 && len(p.Meta) == 0 &&
		len(p.Release) == 0 && len(p.Notify) == 0 && p.Reserve == 0 && len(p.Progress) == 0 &&
		len(p.Records) == 0 && len(p.ForgetRecords) == 0 && len(p.BatchEnds) == 0 && len(p.DepEnds) == 0
}

// takeRound takes what waits for the committer: at most CommitBatch new
// jobs (those waiting for their insert first, all of them while a
// Durable waits, then those handed out before it, all of them when all
// is set) and every other write.
func (c *sharedMode) takeRound(all bool) *sharedRound {
	b := c.b
	b.mu.Lock()
	defer b.mu.Unlock()
	n := min(len(b.pendingSaves), b.roundMostLocked())
	held := c.takeEarlyLocked(all, max(b.cfg.CommitBatch-n, 0))
	r := &sharedRound{live: make([]*job, 0, n+len(held)), early: make([]bool, 0, n+len(held))}
	// Sized for the whole round: a job record is some 250 bytes, and
	// growing the slice by appends copied each round's records again.
	p := store.InsertParams{HandlePrefix: b.prefix, Jobs: make([]store.Job, 0, n+len(held)),
		Claim: make([]bool, 0, n+len(held))}
	budget := make(map[*function]int)
	now := b.clock.Now().Unix()
	for _, j := range b.pendingSaves[:n] {
		switch {
		case j.state == statePending:
			rec := b.record(j)
			rec.Seq = 0 // the store numbers it
			r.live = append(r.live, j)
			r.early = append(r.early, false)
			p.Jobs = append(p.Jobs, rec)
			p.Claim = append(p.Claim, claimOnInsert(j) &&
				(len(j.x.clients) > 0 || (j.runAt() <= now && c.claimBudgetLocked(j.fn, budget))))
		case j.saveState() == saveQueued:
			c.b.setSaveLocked(j, saveWriting)
			held = append(held, j)
		}
		// Anything else was dropped, ended before it was written, or
		// is here twice.
	}
	r.pending = len(p.Jobs)
	for _, j := range held {
		// Handed out before its insert (holdEarlyLocked): written as it
		// is now, held here.
		rec := b.record(j)
		r.live = append(r.live, j)
		r.early = append(r.early, true)
		p.Jobs = append(p.Jobs, rec)
		// A dead letter or a retained result is nobody's to run, and must
		// not claim a live job of its unique.
		p.Claim = append(p.Claim, rec.State == store.StateQueued || rec.State == store.StateRetryWait)
	}
	reserve := c.reserveLocked()
	rest := copy(b.pendingSaves, b.pendingSaves[n:])
	clear(b.pendingSaves[rest:])
	b.pendingSaves = b.pendingSaves[:rest]
	retries := b.pendingRetries
	b.pendingRetries = nil
	deletes := b.pendingDeletes
	b.pendingDeletes = nil
	meta := b.takePendingMetaLocked()
	release, notify := c.takeNotifyLocked()
	r.params = store.CommitParams{Insert: p, Update: retries, Delete: deletes, Meta: meta,
		Release: release, Notify: notify, Reserve: reserve, Progress: c.takeProgressLocked(),
		BatchEnds: c.batchEnds, DepEnds: c.depEnds}
	c.batchEnds, c.depEnds = nil, nil
	var moreRecs bool
	if b.records != nil {
		r.recs, moreRecs = b.takeSharedRecordsLocked(&r.params)
	}
	r.more = len(b.pendingSaves) > 0 || (all && len(c.early) > 0) || moreRecs
	if len(b.pendingSaves) == 0 && !moreRecs {
		// Nothing written before a barrier is left behind this round
		// (jobs handed out before their insert are submits, which no
		// barrier waits for).
		r.barriers = b.takeBarriersLocked()
	}
	return r
}

// putBackLocked keeps the writes of a failed round for the next one; all
// are idempotent. The new jobs are answered by their settle functions.
func (c *sharedMode) putBackLocked(p store.CommitParams) {
	b := c.b
	b.pendingRetries = append(p.Update, b.pendingRetries...)
	b.pendingDeletes = append(p.Delete, b.pendingDeletes...)
	b.life.pendingMeta = append(p.Meta, b.life.pendingMeta...)
	c.batchEnds = append(p.BatchEnds, c.batchEnds...)
	c.depEnds = append(p.DepEnds, c.depEnds...)
	c.meta.release = append(p.Release, c.meta.release...)
	c.progressFailedLocked(p.Progress)
	for _, f := range p.Notify {
		if c.meta.notify == nil {
			c.meta.notify = make(map[string]bool)
		}
		c.meta.notify[f] = true
	}
}

// refusePendingLocked answers every new job still waiting for its insert
// with err, and drops it, and answers the waiters of Durable with err.
func (c *sharedMode) refusePendingLocked(err error) {
	b := c.b
	for _, j := range b.pendingSaves {
		switch {
		case j.state == statePending:
			c.settleInsertedLocked(j, store.Inserted{}, err)
		case j.saveState() == saveQueued:
			c.failEarlyLocked(j, err)
		}
	}
	for _, j := range c.takeEarlyLocked(true, len(c.early)) {
		c.failEarlyLocked(j, err)
	}
	clear(b.pendingSaves)
	b.pendingSaves = b.pendingSaves[:0]
	// The changes Durable waits for stay pending, to be written once the
	// store answers; until then nobody may be told they are stored.
	answerBarriers(b.takeBarriersLocked(), err)
}

// claimBudgetLocked reports whether a new job of f should be claimed by
// this server as it is inserted: when local workers would otherwise soon
// claim it anyway.
func (c *sharedMode) claimBudgetLocked(f *function, budget map[*function]int) bool {
	b := c.b
	if f.workers == 0 || b.draining || (f.life != nil && f.life.paused) || sharedLimits(f) {
		return false
	}
	left, ok := budget[f]
	if !ok {
		left = c.claimTargetLocked(f) - f.queued()
	}
	if left <= 0 {
		budget[f] = 0
		return false
	}
	budget[f] = left - 1
	return true
}

// claimOnInsert reports whether a new job may be held by the server that
// inserts it. A job with an ordering key, or of a function with a
// concurrency or rate limit, may not: only the store's claim knows
// whether another server holds a job of its key, the function's slots
// and its tokens.
func claimOnInsert(j *job) bool {
	if j.x != nil && (len(j.x.after) > 0 || (j.x.life != nil && j.x.life.orderKey != "")) {
		return false
	}
	return !sharedLimits(j.fn)
}

// settleInsertedLocked acknowledges the submitters of a job the store has
// written (or failed to) and decides where the job lives: here when it was
// claimed, in the store only otherwise.
func (c *sharedMode) settleInsertedLocked(j *job, r store.Inserted, err error) {
	b := c.b
	if j.state != statePending {
		// Dropped while the insert ran (cancelled, function dropped).
		if err == nil && r.Created {
			b.pendingDeletes = append(b.pendingDeletes, r.Seq)
			b.kickCommitter()
		}
		return
	}
	waiters := j.x.waiters
	j.x.waiters = nil
	if err == nil {
		err = r.Err // the round was written, this job was not
	}
	if err != nil {
		c.forgetLocked(j)
		for _, w := range waiters {
			w(0, false, &StoreError{err})
		}
		return
	}
	if r.Refused != nil || r.BatchRefused != nil {
		c.forgetLocked(j)
		var err error
		if r.Refused != nil {
			err = b.dependencyErr(r.Refused.Dep, r.Refused.Unknown)
		} else {
			err = batchRefusedErr(r.BatchRefused)
		}
		for _, w := range waiters {
			w(0, false, err)
		}
		return
	}
	if other := b.jobs.get(r.Seq); other != nil && other != j {
		// Coalesced with a job held here (claimed by this insert, or
		// already by the claim loop): attach the clients to it.
		c.attachCoalescedLocked(j, other, waiters)
		return
	}
	if !r.Claimed {
		// Another server will run it (or this one, through a claim that is
		// under way, or it finished here already). Foreground clients that
		// attached to it here cannot follow it: they are told it failed.
		clients := j.x.clients
		for i, w := range waiters {
			w(r.Seq, r.Created && i == 0, nil)
		}
		for _, s := range clients {
			s.out.Send(Event{Kind: EventFail, Seq: r.Seq})
		}
		c.forgetLocked(j)
		return
	}
	b.jobs.delete(j.seq)
	j.seq = r.Seq
	b.jobs.put(j.seq, j)
	for i, w := range waiters {
		w(r.Seq, r.Created && i == 0, nil)
	}
	if !j.fn.known {
		// Its function was dropped (drop function) while the insert ran:
		// the job goes as the function's queued jobs went. Queued in the
		// function dropped, no worker here would ever take it, and no
		// other server either, this one holding it.
		why := j.fn.droppedBy
		if why == "" {
			why = "function dropped"
		}
		j.failClients()
		b.dropLocked(j, why)
		return
	}
	b.makeRunnableLocked(j, true)
}

// attachCoalescedLocked moves the clients of j, a new job that coalesced in
// the store with other, a job held here, to other, and acknowledges j's
// submitters with other's handle.
func (c *sharedMode) attachCoalescedLocked(j, other *job, waiters []DoneFunc) {
	clients := j.x.clients
	c.forgetLocked(j)
	for _, s := range clients {
		ox := other.extra()
		ox.clients = append(ox.clients, s)
		s.waiting = append(s.waiting, other)
	}
	for _, w := range waiters {
		w(other.seq, false, nil)
	}
}
