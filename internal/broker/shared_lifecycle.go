package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/gearwork/gearwork/internal/store"
)

// sharedCountsMaxAge is how long the admin views reuse the counts read
// from the store: many "status" requests or dashboards cost one query a
// second.
const sharedCountsMaxAge = time.Second

// countsCache holds the last counts read from the shared store. Readers
// take sem (a one-slot semaphore, so that a waiting reader can give up
// with its context), so one query runs at a time and the others reuse it.
type countsCache struct {
	sem chan struct{}
	// The fields below are guarded by sem.
	at     time.Time
	counts []store.FunctionCount
	err    error
}

// sharedCounts returns the store's counts, at most sharedCountsMaxAge
// old. It never holds the broker lock.
func (c *sharedMode) sharedCounts(ctx context.Context) ([]store.FunctionCount, error) {
	select {
	case c.counts.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-c.counts.sem }()
	cc := &c.counts
	if !cc.at.IsZero() && c.now().Sub(cc.at) < sharedCountsMaxAge {
		return cc.counts, cc.err
	}
	qctx, cancel := context.WithTimeout(ctx, sharedStatusTimeout)
	defer cancel()
	cc.counts, cc.err = c.store.Counts(qctx)
	if cc.err != nil && ctx.Err() != nil {
		// The caller gave up: do not keep its error for the others.
		cc.at = time.Time{}
		return nil, cc.err
	}
	cc.at = c.now()
	return cc.counts, cc.err
}

// addCounts adds the jobs no server holds to a snapshot of this
// server's functions, sorted by name; it returns the snapshot with rows
// added for functions only the store knows. On a store error it leaves
// the snapshot as it is and logs.
func (c *sharedMode) addCounts(ctx context.Context, out []FunctionStats) []FunctionStats {
	b := c.b
	counts, err := c.sharedCounts(ctx)
	if err != nil {
		b.log.Warn("broker: counting the jobs in the store failed; showing this server's jobs only",
			slog.String("error", err.Error()))
		return out
	}
	idx := make(map[string]int, len(out))
	for i, f := range out {
		idx[f.Name] = i
	}
	for _, c := range counts {
		i, ok := idx[c.Function]
		if !ok {
			if c.Queued == [3]int{} && c.Waiting == 0 && c.Dead == 0 {
				continue
			}
			out = append(out, FunctionStats{FunctionStatus: FunctionStatus{Name: c.Function}})
			i = len(out) - 1
			idx[c.Function] = i
		}
		f := &out[i]
		for p := range numPriorities {
			f.Queued[p] += c.Queued[p]
			f.Total += c.Queued[p]
		}
		f.Total += c.Waiting
		f.DeadLetters = c.Dead
	}
	return out
}

// sweepLoop expires retained results and trims dead letters in the store
// every sharedPoll, in a goroutine of its own so that a slow database
// never delays the claim loop's lease renewals.
func (c *sharedMode) sweepLoop(ctx context.Context) {
	defer c.b.wg.Done()
	tick(ctx, sharedPoll, func() { c.expireShared(ctx) })
}

// expireShared deletes the retained results whose time has passed and the
// dead letters beyond their function's limit, whichever server stored
// them.
func (c *sharedMode) expireShared(ctx context.Context) {
	b := c.b
	b.mu.Lock()
	if c.failing || b.stopped {
		b.mu.Unlock()
		return
	}
	p := store.ExpireParams{Now: b.nowNanos(), DefaultRetention: int64(b.life.defaultPol.ResultRetention),
		Retention: make(map[string]int64, len(b.life.policies))}
	for name, pol := range b.life.policies {
		p.Retention[name] = int64(pol.ResultRetention)
	}
	for name := range c.trimDead {
		p.KeepDead = append(p.KeepDead, store.KeepDead{Function: name, Keep: b.policyOf(name).maxDeadLetters()})
	}
	clear(c.trimDead)
	b.mu.Unlock()
	ectx, cancel := context.WithTimeout(ctx, sharedStatusTimeout)
	defer cancel()
	n, err := c.store.Expire(ectx, p)
	if err != nil {
		if ctx.Err() == nil {
			b.log.Warn("broker: expiring results and dead letters in the store failed", slog.String("error", err.Error()))
		}
		b.mu.Lock()
		for _, k := range p.KeepDead {
			c.trimDead[k.Function] = true
		}
		b.mu.Unlock()
		return
	}
	if n > 0 {
		b.log.Debug("broker: expired results and dead letters in the store", slog.Int("rows", n))
	}
}

// deadLocked stores a job that ran out of attempts as a dead letter
// of the shared store: the row gets the dead state and the broker forgets the
// job (any server lists it from the store). The job must be in stateGone,
// outside every index.
func (c *sharedMode) deadLocked(j *job) {
	b := c.b
	c.b.setStateLocked(j, stateDead)
	b.saveLocked(j)
	if j.saveState() != saveQueued {
		c.b.setStateLocked(j, stateGone)
	} // else its first write, not taken yet, stores it dead (settleEarlyLocked)
	c.trimDead[j.fn.name] = true
}

func (c *sharedMode) deadLetters(ctx context.Context, function string, limit int) ([]DeadLetter, error) {
	jobs, err := c.store.DeadJobs(ctx, function, limit)
	if err != nil {
		return nil, fmt.Errorf("broker: list dead letters: %w", err)
	}
	out := make([]DeadLetter, 0, len(jobs))
	for _, r := range jobs {
		out = append(out, deadLetterOfStored(r))
	}
	return out, nil
}

func (c *sharedMode) deadLetter(ctx context.Context, seq uint64) (DeadLetter, bool, error) {
	r, err := c.store.StoredJob(ctx, seq, store.StateDead)
	if errors.Is(err, store.ErrNotFound) {
		return DeadLetter{}, false, nil
	}
	if err != nil {
		return DeadLetter{}, false, fmt.Errorf("broker: read dead letter: %w", err)
	}
	return deadLetterOfStored(r), true, nil
}

// retryDead queues dead letters again for whichever server has workers
// for them.
func (c *sharedMode) retryDead(ctx context.Context, seq uint64, function string) (int, error) {
	b := c.b
	n, err := c.store.RetryDead(ctx, store.DeadSelector{Seq: seq, Function: function})
	if err != nil {
		return 0, fmt.Errorf("broker: retry dead letters: %w", err)
	}
	switch {
	case n > 0 && seq != 0:
		b.log.Info("broker: dead letter queued again for every server", slog.String("handle", b.Handle(seq)))
	case n > 0:
		b.log.Info("broker: dead letters queued again for every server", slog.Int("jobs", n),
			slog.String("function", function))
	}
	return n, nil
}

func (c *sharedMode) purgeDead(ctx context.Context, seq uint64, function string) (int, error) {
	n, err := c.store.PurgeDead(ctx, store.DeadSelector{Seq: seq, Function: function})
	switch {
	case err != nil && seq != 0:
		return 0, fmt.Errorf("broker: purge dead letter: %w", err)
	case err != nil:
		return 0, fmt.Errorf("broker: purge dead letters: %w", err)
	}
	return n, nil
}

func deadLetterOfStored(r store.Job) DeadLetter {
	return DeadLetter{Seq: r.Seq, Handle: r.Handle, Function: r.Function, Unique: displayUnique(r.Unique),
		Priority: Priority(min(r.Priority, 2)), Payload: r.Payload, Attempts: r.Attempts,
		LastError: r.LastError, History: r.History, DiedAt: time.Unix(0, r.FinishedAt)}
}

// resultOfStored turns a stored retained result into a Result, or reports
// false when its time has passed (and the sweep has not deleted it yet).
func (c *sharedMode) resultOfStored(r store.Job) (Result, bool) {
	b := c.b
	exp := r.NotBefore
	b.mu.Lock()
	if exp == 0 {
		exp = nanosAfter(r.FinishedAt, b.policyOf(r.Function).ResultRetention)
	}
	now := b.nowNanos()
	b.mu.Unlock()
	if exp <= now {
		return Result{}, false
	}
	return Result{Seq: r.Seq, Function: r.Function, Unique: displayUnique(r.Unique), Data: r.Result,
		FinishedAt: time.Unix(0, r.FinishedAt), Expires: time.Unix(0, exp)}, true
}

// storedResult reads a retained result that another server (or this one
// before a restart) stored.
func (c *sharedMode) storedResult(ctx context.Context, seq uint64, function, unique string) (Result, bool, error) {
	sl := c.store
	var (
		r   store.Job
		err error
	)
	if unique != "" {
		r, err = sl.DoneByUnique(ctx, function, unique)
	} else {
		r, err = sl.StoredJob(ctx, seq, store.StateDone)
	}
	if errors.Is(err, store.ErrNotFound) {
		return Result{}, false, nil
	}
	if err != nil {
		return Result{}, false, err
	}
	res, ok := c.resultOfStored(r)
	return res, ok, nil
}

// cancelElsewhere cancels a queued job that this server does not hold: it
// deletes the row when no live server holds it (its record says by
// cancelled it), and asks the live server that holds it otherwise.
func (c *sharedMode) cancelElsewhere(ctx context.Context, seq uint64, by string) error {
	if seq&localSeqBit != 0 {
		return ErrJobNotFound // a job numbered here that is gone
	}
	b, sl := c.b, c.store
	ok, err := sl.CancelQueued(ctx, seq, by)
	if err != nil {
		return fmt.Errorf("broker: cancel job in the store: %w", err)
	}
	if ok {
		b.log.Info("broker: cancelled a job nobody held", slog.String("handle", b.Handle(seq)))
		return nil
	}
	f, found, err := c.store.Find(ctx, seq, "")
	if err != nil {
		return fmt.Errorf("broker: cancel job in the store: %w", err)
	}
	if !found || !f.Claimed {
		return ErrJobNotFound
	}
	// Another live server holds it: ask that one to cancel it, and wait
	// until its commit round has deleted the row.
	if err := sl.Signal(ctx, cancelKey(seq, by)); err != nil {
		return fmt.Errorf("broker: cancel job on the server holding it: %w", err)
	}
	wctx, stop := context.WithTimeout(ctx, remoteCancelWait)
	defer stop()
	for {
		select {
		case <-wctx.Done():
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return ErrJobHeldElsewhere
		case <-time.After(20 * time.Millisecond):
		}
		f, found, err := c.store.Find(wctx, seq, "")
		if err != nil && wctx.Err() == nil {
			return fmt.Errorf("broker: cancel job in the store: %w", err)
		}
		if err == nil && !found {
			b.log.Info("broker: cancelled a job another server held", slog.String("handle", b.Handle(seq)))
			return nil
		}
		if err == nil && !f.Claimed {
			// Given back meanwhile (its server stopped or lost its
			// lease): nobody holds it, so it is deleted here.
			if ok, err := sl.CancelQueued(wctx, seq, by); err == nil && ok {
				b.log.Info("broker: cancelled a job nobody held", slog.String("handle", b.Handle(seq)))
				return nil
			}
		}
	}
}

// dropUnheld cancels, one by one as cancelElsewhere does, the jobs of
// function that no server holds, so that "drop function" drops the rows
// nobody claimed as well as the jobs this server held; each gets its
// record, cancelled by why ("function dropped", and by whom).
func (c *sharedMode) dropUnheld(ctx context.Context, function, why string) (int, error) {
	const page = 1000
	var after uint64
	n := 0
	for {
		seqs, err := c.store.UnheldJobs(ctx, function, after, page)
		if err != nil {
			return n, fmt.Errorf("broker: drop the stored jobs of %s: %w", function, err)
		}
		for _, seq := range seqs {
			ok, err := c.store.CancelQueued(ctx, seq, why)
			if err != nil {
				return n, fmt.Errorf("broker: drop the stored jobs of %s: %w", function, err)
			}
			if ok {
				n++
			}
		}
		if len(seqs) < page {
			break
		}
		after = seqs[len(seqs)-1]
	}
	if n > 0 {
		c.b.log.Info("broker: dropped the stored jobs nobody held", slog.String("function", function), slog.Int("jobs", n))
	}
	return n, nil
}

// remoteCancelWait bounds how long a cancel waits for the server holding
// the job to drop it.
const remoteCancelWait = 5 * time.Second

// cancelPrefix starts the signal asking the server holding a job to cancel
// it (cancelKey); it is never stored.
const cancelPrefix = "cancel/"

// maxCancelledBy bounds the "cancelled by" a cancel signal carries.
const maxCancelledBy = 256

// cancelKey is the signal asking the server holding job seq to cancel it
// on behalf of by: "cancel/SEQ/BY" (BY cut to maxCancelledBy bytes).
func cancelKey(seq uint64, by string) string {
	if len(by) > maxCancelledBy {
		by = by[:maxCancelledBy]
	}
	return cancelPrefix + strconv.FormatUint(seq, 10) + "/" + by
}

// cancelSignalled cancels a job held here that another server was asked
// to cancel (cancelElsewhere), on behalf of whom that server names.
func (c *sharedMode) cancelSignalled(key string) {
	b := c.b
	num, by, named := strings.Cut(strings.TrimPrefix(key, cancelPrefix), "/")
	seq, err := strconv.ParseUint(num, 10, 64)
	if err != nil {
		return
	}
	if !named || by == "" {
		by = "another server sharing the store"
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	j := b.jobs.get(seq)
	if j == nil || !j.background || j.has(jobCancelled) {
		return
	}
	b.log.Info("broker: cancelling a job at another server's request", slog.String("handle", b.Handle(seq)))
	b.cancelLocked(j, by)
}

// liveElsewhere reports whether the store holds job seq as a live job
// (queued, or running at some server).
func (c *sharedMode) liveElsewhere(ctx context.Context, seq uint64) (bool, error) {
	_, ok, err := c.store.Find(ctx, seq, "")
	if err != nil {
		return false, fmt.Errorf("broker: look job %d up: %w", seq, err)
	}
	return ok, nil
}

// storedJob reads job seq from the store when it is a dead letter, a
// retained result or a job that waits for others, whichever server stored
// it.
func (c *sharedMode) storedJob(ctx context.Context, seq uint64) (JobSnapshot, bool, error) {
	sl := c.store
	for _, state := range []store.JobState{store.StateDead, store.StateDone, store.StateWaiting} {
		r, err := sl.StoredJob(ctx, seq, state)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return JobSnapshot{}, false, fmt.Errorf("broker: read job %d: %w", seq, err)
		}
		snap := JobSnapshot{Seq: r.Seq, Function: r.Function, Unique: displayUnique(r.Unique),
			Priority: Priority(min(r.Priority, 2)), State: "dead", Background: true, Retries: r.Retries,
			RunAt: r.RunAt, Attempts: r.Attempts, MaxAttempts: int(r.MaxAttempts), LastError: r.LastError,
			OrderingKey: r.OrderingKey, Finished: time.Unix(0, r.FinishedAt), Final: true, History: r.History}
		switch state {
		case store.StateDone:
			res, ok := c.resultOfStored(r)
			if !ok {
				return JobSnapshot{}, false, nil
			}
			snap.State, snap.Result, snap.Final = FinalComplete, res.Data, true
		case store.StateWaiting:
			snap.State, snap.Final, snap.Finished = "waiting", false, time.Time{}
		}
		return snap, true, nil
	}
	return c.storedLiveJob(ctx, seq)
}

// storedLiveJob answers a live job this server does not hold from its row:
// one no server claimed yet, or one another server holds (running, as
// GET_STATUS says of a claimed row, with the progress that server wrote).
func (c *sharedMode) storedLiveJob(ctx context.Context, seq uint64) (JobSnapshot, bool, error) {
	for _, state := range []store.JobState{store.StateQueued, store.StateRetryWait} {
		r, err := c.store.StoredJob(ctx, seq, state)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return JobSnapshot{}, false, fmt.Errorf("broker: read job %d: %w", seq, err)
		}
		snap := JobSnapshot{Seq: r.Seq, Function: r.Function, Unique: displayUnique(r.Unique),
			Priority: Priority(min(r.Priority, 2)), State: "queued", Background: true, Retries: r.Retries,
			RunAt: r.RunAt, Attempts: r.Attempts, MaxAttempts: int(r.MaxAttempts), LastError: r.LastError,
			OrderingKey: r.OrderingKey, History: r.History}
		if r.Submitted > 0 {
			snap.Submitted = time.Unix(0, r.Submitted)
		}
		f, found, err := c.store.Find(ctx, seq, "")
		if err != nil {
			return JobSnapshot{}, false, fmt.Errorf("broker: read job %d: %w", seq, err)
		}
		now := c.b.nowNanos()
		switch {
		case !found:
			return JobSnapshot{}, false, nil // it ended meanwhile
		case state == store.StateRetryWait && r.NotBefore > now:
			// Held or not, it waits for its retry: no worker runs it.
			snap.State, snap.RetryAt = "retry-wait", time.Unix(0, r.NotBefore)
		case f.Claimed:
			snap.State, snap.Numerator, snap.Denominator = "running", f.Numerator, f.Denominator
		case r.RunAt > now/1e9:
			snap.State = "scheduled"
		}
		return snap, true, nil
	}
	return JobSnapshot{}, false, nil
}
