package broker

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"slices"
	"time"
	"unsafe"

	"github.com/gearwork/gearwork/gearman"
	"github.com/gearwork/gearwork/internal/store"
)

// SubmitParams describes a job to submit.
type SubmitParams struct {
	Function []byte
	// Unique is the coalescing key; empty means none, "-" means "hash the
	// payload".
	Unique []byte
	// Payload and Unique are kept by the broker (the unique index aliases
	// Unique's memory): the caller must not modify either afterwards.
	Payload  []byte
	Priority Priority
	// Background jobs are not tied to the submitting session.
	Background bool
	// RunAt is a Unix time in seconds at which the job becomes runnable
	// (SUBMIT_JOB_EPOCH); 0 means now.
	RunAt int64
	// When, if not nil, makes the job runnable once, at the first time
	// after the submit that it matches (SUBMIT_JOB_SCHED); it replaces
	// RunAt. A schedule that matches no time within five years fails the
	// submit with ErrNoMatchingTime.
	When    *Cron
	Reducer []byte
	// OrderingKey puts the job in an ordered queue: jobs of the function
	// sharing the key run one at a time, in order. Empty means the key the
	// function's policy derives from Unique (usually none).
	OrderingKey string
	// Attempts overrides the policy's MaxAttempts for this job when
	// non-zero (-1: unlimited).
	Attempts int
	// Timeout overrides the policy's timeout for this job when non-zero.
	Timeout time.Duration

	// After names jobs (by sequence number) that must complete
	// successfully before this background job runs: it waits until then,
	// and is cancelled when one of them fails, dies or is cancelled,
	// unless AfterAnyway is set. An unknown job, or one that has already
	// failed, fails the submit with an error wrapping ErrDependency.
	After       []uint64
	AfterAnyway bool
	// AfterUnique names more jobs to wait for, each by its function and
	// unique: the live job with that unique (queued, scheduled, running or
	// waiting itself). A function's retained result with that unique
	// counts as a job that completed; with neither, the submit fails with
	// an error wrapping ErrDependency.
	AfterUnique []UniqueDep
	// afterErr is why AfterUnique cannot be waited for, as read from a
	// shared store before the broker's lock (sharedMode.prepareAfter), or
	// the store's error reading a record of After (Broker.lockSubmit).
	afterErr error
	// known holds the outcomes of After's jobs read from the store
	// without the broker's lock (depUnknown: no stored record), by
	// Broker.lockSubmit.
	known map[uint64]depOutcome

	// Batch adds the job to the batch with this id (CreateBatch); 0 for
	// none. Only a background job can join a batch, and only one that has
	// not completed.
	Batch uint64
	// batchErr is why Batch cannot be joined, as read from a shared store
	// before the broker's lock (sharedMode.prepareBatch).
	batchErr error

	// hold keeps a new background job out of the queues until its first
	// store write is done (a batch's callback, holdLocked).
	hold bool
	// schedule and tick mark a job submitted by a cron schedule.
	schedule string
	tick     int64
	// retryOf is the ended job that the job runs again (RetryJob).
	retryOf uint64
	// own marks a submit the server makes itself (a cron tick, a batch's
	// callback, a stored job run again): it was accepted earlier, or
	// configured, so Config.MaxFunctions never refuses it.
	own bool
	// watch, when set, is called with the live job the submit created or
	// attached to, before the job can be handed out (SubmitWatched).
	watch func(j *job, created bool)
}

// DoneFunc receives the outcome of a submit: the job's sequence number, or
// an error. created is false when the submit attached to an existing job.
// It is called exactly once, with the broker's lock held, so it must only
// queue output.
type DoneFunc func(seq uint64, created bool, err error)

// Submit adds a job, or attaches the session to the live job with the same
// function and unique. A foreground submitter receives the job's events.
// done is called before Submit returns unless the job must first be made
// durable: then the committer calls it after the store write, or Submit's
// job ends first (see commitLoop). With a local store such a job is handed
// to workers at once, while its write is under way: done may come after
// the job has started, but a foreground submitter attaching to it is
// answered at once, before any event of the job.
func (b *Broker) Submit(s *Session, p SubmitParams, done DoneFunc) {
	b.lockSubmit(&p)
	defer b.mu.Unlock()
	b.enterBurstLocked(s)
	b.submitLocked(s, p, done)
	b.leaveBurstLocked(s)
}

// lockSubmit reads what submit p needs from the store and takes the
// broker's lock. The jobs it names by unique are read first (shared
// mode). Then, under the lock, the jobs it waits for that only the store
// knows (unreadAfterLocked) have their records read without the lock, and
// the lock is taken again to look once more: a job seen live may have
// ended, and its record left memory for the store, meanwhile, and counts
// as ended, not unknown. Each pass reads jobs not read before, so it
// takes at most len(p.After) of them. In shared mode the batch of a submit
// with a unique, which may coalesce with a job in memory, is read first
// too (prepareBatch).
func (b *Broker) lockSubmit(p *SubmitParams) {
	if !p.Background {
		// Only background jobs join batches or wait for others: nothing
		// to read first (submitLocked refuses the rest).
		b.mu.Lock()
		return
	}
	if p.Batch != 0 && len(p.Unique) > 0 {
		p.batchErr = b.mode.prepareBatch(p.Batch)
	}
	if n := len(p.After) + len(p.AfterUnique); n > MaxDependencies {
		// Refused before anything is read for them (submitAfterLocked
		// answers p.afterErr).
		p.afterErr = fmt.Errorf("%w: %d jobs named; a job waits for at most %d", ErrDependency, n, MaxDependencies)
		b.mu.Lock()
		return
	}
	if len(p.After) > 0 || len(p.AfterUnique) > 0 {
		r := b.mode.prepareAfter(p.After, p.AfterUnique)
		p.After, p.afterErr = r.after, r.err
	}
	b.mu.Lock()
	for range len(p.After) {
		look := b.mode.unreadAfterLocked(p.After, p.known)
		if len(look) == 0 {
			return
		}
		b.mu.Unlock()
		if p.known == nil {
			p.known = make(map[uint64]depOutcome, len(look))
		}
		for _, q := range look {
			outcome, err := b.storedOutcome(q)
			if err != nil {
				p.afterErr = err
				b.mu.Lock()
				return
			}
			p.known[q] = outcome
			if outcome == depUnknown {
				break // the submit is refused here at the latest
			}
		}
		b.mu.Lock()
	}
}

// MaxDependencies is the most jobs one submit may name to wait for
// (SubmitParams.After and AfterUnique together; a job named twice counts
// twice): each costs memory (and in shared mode an entry of the job's row)
// that Config.MaxQueuedBytes does not count.
const MaxDependencies = 1024

// MaxRunAt is the latest SubmitParams.RunAt a submit takes:
// 9999-12-31T23:59:59Z, the last second RFC 3339 can write.
const MaxRunAt = 253402300799

func (b *Broker) submitLocked(s *Session, p SubmitParams, done DoneFunc) {
	if b.stopped {
		done(0, false, ErrStopped)
		return
	}
	if b.storeErr != nil && p.Background {
		done(0, false, &StoreError{b.storeErr})
		return
	}
	if p.When != nil {
		next := p.When.Next(b.clock.Now())
		if next.IsZero() {
			done(0, false, fmt.Errorf("%w: %q", ErrNoMatchingTime, p.When.String()))
			return
		}
		p.RunAt = next.Unix()
	}
	if p.RunAt > MaxRunAt {
		done(0, false, fmt.Errorf("%w: %d", ErrRunAtOutOfRange, p.RunAt))
		return
	}
	if len(p.Unique) > gearman.MaxUniqueSize {
		done(0, false, fmt.Errorf("%w: %d bytes", ErrUniqueTooLong, len(p.Unique)))
		return
	}
	if bytes.IndexByte(p.Unique, 0) >= 0 {
		done(0, false, fmt.Errorf("%w: %q", ErrUniqueNUL, p.Unique))
		return
	}
	bt, err := b.submitBatchLocked(&p)
	if err != nil {
		done(0, false, err)
		return
	}
	deps, err := b.submitAfterLocked(&p)
	if err != nil {
		done(0, false, err)
		return
	}
	var f *function
	if p.own {
		// The server's own submit (a tick of a schedule of the
		// configuration, a batch's callback, a stored job run again),
		// never refused.
		f = b.ownFunctionLocked(p.Function)
	} else if f, err = b.admitFunctionLocked(p.Function); err != nil {
		done(0, false, err)
		return
	}
	var key string
	if len(p.Unique) > 0 {
		key = uniqueKey(p.Unique, p.Payload)
		if j := f.uniques[key]; j != nil {
			if p.watch != nil && j.state != statePending {
				// (A job waiting for its insert has no handle yet: it is
				// watched once it has, see SubmitWatched.)
				p.watch(j, false)
			}
			b.attachLocked(s, j, p.Background, b.ownBatchDone(s, j, p, done))
			return
		}
		if f.life != nil && b.attachDoneLocked(s, f, key, p.Background, done) {
			return
		}
	}
	if limit := f.maxQueue[p.Priority]; limit > 0 && f.total >= limit {
		if f.life == nil || !b.overflowLocked(f, p.Priority) {
			done(0, false, ErrQueueFull)
			return
		}
	}
	if budget := b.cfg.MaxQueuedBytes; budget > 0 && b.liveBytes+int64(len(p.Payload)+len(key)) > budget {
		done(0, false, ErrQueueFull)
		return
	}
	j := &job{seq: b.nextSeq, fn: f, payload: p.Payload, priority: p.Priority, background: p.Background}
	b.nextSeq++
	if key != "" {
		j.unique = key
		b.setUniqueLocked(j)
	}
	if p.RunAt != 0 || len(p.Reducer) > 0 || p.retryOf != 0 {
		x := b.extraLocked(j)
		x.runAt = p.RunAt
		x.reducer = string(p.Reducer)
		x.retryOf = p.retryOf
	}
	b.jobs.put(j.seq, j)
	b.liveBytes += j.size()
	f.total++
	if f.life != nil || p.OrderingKey != "" || p.Attempts != 0 || p.Timeout != 0 || p.schedule != "" {
		b.initJobLifeLocked(j, &p)
	}
	if bt != nil {
		b.joinBatchLocked(j, bt)
	}
	if len(deps) > 0 || len(p.After) > 0 {
		b.mode.waitLocked(j, deps, p.After, p.AfterAnyway)
	}
	b.statSubmittedLocked(j)
	if !p.Background {
		x := b.extraLocked(j)
		x.clients = append(x.clients, s)
		s.waiting = append(s.waiting, j)
	}
	if p.Background && b.store != nil {
		x := j.extra()
		x.waiters = append(x.waiters, done)
		if !b.mode.submitLocked(j) {
			return
		}
		// Dispatch before durable: the job runs while it is written; only
		// the answer to its submitter waits for the store (commitLoop).
		b.setSaveLocked(j, saveQueued)
		if p.hold {
			b.holdLocked(j)
			return
		}
		if p.watch != nil {
			p.watch(j, true)
		}
		b.makeRunnableLocked(j, true)
		return
	}
	if p.watch != nil {
		p.watch(j, true)
	}
	done(j.seq, true, nil)
	b.makeRunnableLocked(j, true)
}

// queueSaveLocked hands a new job's first write to the committer, and
// ends the committer's gathering wait once as many wait as it waits for.
func (b *Broker) queueSaveLocked(j *job) {
	b.pendingSaves = append(b.pendingSaves, j)
	if len(b.pendingSaves) == 1 {
		b.kickCommitter()
	}
	if b.gatherAt > 0 && len(b.pendingSaves) >= b.gatherAt {
		b.endGatherLocked()
	}
}

// attachLocked coalesces a submit onto an existing job.
func (b *Broker) attachLocked(s *Session, j *job, background bool, done DoneFunc) {
	if !background {
		x := j.extra()
		x.clients = append(x.clients, s)
		s.waiting = append(s.waiting, j)
		if j.has(jobCancelled) && j.state == stateRunning {
			// Someone waits for it again.
			j.flags &^= jobCancelled
		}
	}
	// A background submitter waits for the job to be durable, as the one
	// that created it. A foreground one is promised nothing about the
	// store and is answered at once: a job being written may already run,
	// and its events must not come before the answer.
	if j.state == statePending || (background && j.saveState() != saveNone) {
		x := j.extra()
		x.waiters = append(x.waiters, done)
		return
	}
	done(j.seq, false, nil)
}

// uniqueKey returns the index key for a unique. It aliases u's memory: the
// packet body is never modified after it is read, and the job keeps it
// alive through its payload.
func uniqueKey(u, payload []byte) string {
	if len(u) == 1 && u[0] == '-' {
		sum := sha256.Sum256(payload)
		return hashedUniquePrefix + string(sum[:16])
	}
	return unsafe.String(&u[0], len(u))
}

// makeRunnableLocked puts a job that is due into its queue (waking one
// sleeping worker) or a future one into the timer heap.
func (b *Broker) makeRunnableLocked(j *job, wake bool) {
	if j.x != nil && len(j.x.after) > 0 {
		b.setStateLocked(j, stateWaiting) // released by dependencyEndedLocked
		return
	}
	if at := j.runAt(); at != 0 && at > b.clock.Now().Unix() {
		b.setStateLocked(j, stateScheduled)
		b.addTimerLocked(j, secondsToNanos(at))
		return
	}
	b.queueLocked(j, wake)
}

// queueLocked puts a job at the back of its priority queue (or behind the
// head of its ordering key) and optionally wakes sleeping workers for it
// (function.wakeFor).
func (b *Broker) queueLocked(j *job, wake bool) {
	if j.x != nil && j.x.life != nil && !b.admitLocked(j) {
		return
	}
	b.setStateLocked(j, stateQueued)
	j.fn.queues[j.priority].pushBack(j)
	if wake && (j.fn.life == nil || b.hasWorkLocked(j.fn)) {
		j.fn.wakeFor(j)
	}
}

// removeLocked takes a job out of every index and deletes it from the
// store. It does not notify anyone but the submitters still waiting for
// its store write (unlinkLocked).
func (b *Broker) removeLocked(j *job) {
	// A job whose save the committer has not taken yet was never written:
	// dropping the save is enough (commitLoop).
	stored := j.saveState() != saveQueued
	b.settleEndedLocked(j)
	b.unlinkLocked(j)
	if stored && j.background && b.store != nil {
		b.pendingDeletes = append(b.pendingDeletes, j.seq)
		if len(b.pendingDeletes) == 1 {
			b.kickCommitterLater()
		}
	}
}

// unlinkLocked takes a job out of every in-memory index, leaving the store
// alone. It does not notify anyone but, in shared mode, the submitters
// still waiting for its insert. The submitters waiting for a local store
// write are the caller's (settleEndedLocked): a job kept as a retained
// result or dead letter still waits for a write.
func (b *Broker) unlinkLocked(j *job) {
	f := j.fn
	b.tierForgetLocked(j)
	switch j.state {
	case statePending:
		// Still waiting for the store: tell the submitters it was accepted
		// (it is gone again before anyone could run it).
		waiters := j.x.waiters
		j.x.waiters = nil
		for i, w := range waiters {
			w(j.seq, i == 0, nil)
		}
	case stateQueued:
		f.queues[j.priority].remove(j)
	case stateScheduled, stateRetryWait:
		b.removeTimerLocked(j)
	case stateBlocked:
		b.unblockLocked(j)
	case stateWaiting:
		b.unlinkWaitingLocked(j)
	case stateRunning:
		x := j.x
		batchStoppedLocked(x)
		b.removeTimerLocked(j)
		x.worker.running = removeUnordered(x.worker.running, j)
		x.worker = nil
		f.running--
		b.running--
		b.checkIdleLocked()
		if f.life != nil {
			b.slotFreedLocked(f)
		}
	}
	b.setStateLocked(j, stateGone)
	if !j.has(jobFinished) {
		f.counters.Dropped++
	}
	b.endWatchLocked(j)
	b.dropUniqueLocked(j)
	b.jobs.delete(j.seq)
	b.liveBytes -= j.size()
	if f.total--; f.total == 0 {
		b.mayIdleLocked(f)
	}
	if j.x != nil {
		for _, c := range j.x.clients {
			c.waiting = removeUnordered(c.waiting, j)
		}
		j.x.clients = nil
		if j.x.life != nil {
			b.unlinkLifeLocked(j)
		}
	}
}

func (b *Broker) record(j *job) store.Job {
	r := store.Job{
		Seq:       j.seq,
		Handle:    b.Handle(j.seq),
		Function:  j.fn.name,
		Unique:    j.unique,
		Reducer:   j.reducer(),
		Payload:   j.payload,
		Priority:  uint8(j.priority),
		RunAt:     j.runAt(),
		Retries:   j.retries,
		Submitted: j.submitted,
	}
	if j.x != nil {
		if j.x.life != nil {
			b.recordLife(&r, j)
		}
		if j.x.batch != nil {
			r.Batch = j.x.batch.id
		}
		if len(j.x.after) > 0 {
			r.After, r.AfterAnyway = slices.Clone(j.x.after), j.x.anyway
		}
	}
	return r
}
