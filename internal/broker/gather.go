package broker

import (
	"context"
	"time"
)

// gatherer holds a commit round back briefly, for one of two reasons:
//
//   - Fewer submits wait than the last round carried. The submitters that
//     round answered are about to send their next jobs; waiting for them
//     lets one write carry them all instead of splitting them over
//     alternating half-full rounds, which halves the rate of clients that
//     wait for each acknowledgement (the idea behind PostgreSQL's
//     commit_delay). The wait ends once as many wait as the last round
//     carried, after half the last write's duration, and never lasts more
//     than maxGather.
//   - A job the round would write is already held by a worker (dispatch
//     before durable), or about to be: its function has a worker for each
//     of its live jobs. A job that ends before its write is never written
//     and its submitters are answered as it ends (settleEndedLocked), so
//     a short wait spares a write, an fsync and the wake-ups around them
//     for every job that ends meanwhile: under a steady moderate load most
//     jobs end within a few hundred microseconds, and each submit would
//     otherwise start a write of its own. The wait ends once none of the
//     jobs waiting for their write is held by a worker, after twice the
//     last write's duration, and never lasts more than maxGather. Only
//     the local committer waits so (early), not the shared one, which has
//     its own delay for jobs it hands out before their insert.
//
// The wait is one sleep: the submit or the end of a job that meets its
// condition wakes it, so that gathering costs no wake-up per submit. Only
// the committer goroutine uses it.
type gatherer struct {
	// last is the number of submits the last round carried, took how long
	// its write lasted.
	last int
	took time.Duration
	// early lets the round wait for jobs held by workers.
	early bool
	// bound is the longest any wait lasts; zero means maxGather.
	bound time.Duration
	// timer bounds a wait; the first wait makes it.
	timer *time.Timer
}

// maxGather bounds the wait.
const maxGather = 2 * time.Millisecond

// done records a round that carried n submits and whose write took d.
func (g *gatherer) done(n int, d time.Duration) {
	if n > 0 {
		g.last, g.took = n, d
	}
}

// limit is the longest the next round may wait for more submits: half the
// last write's duration, at most maxGather, and nothing when the last
// round carried at most one submit.
func (g *gatherer) limit() time.Duration {
	if g.last <= 1 {
		return 0
	}
	return min(g.took/2, g.maxWait())
}

// maxWait is the longest any wait lasts.
func (g *gatherer) maxWait() time.Duration {
	if g.bound > 0 {
		return g.bound
	}
	return maxGather
}

// runningLimit is the longest the next round may wait for the jobs held
// by workers to end: twice the last write's duration, at most maxGather.
func (g *gatherer) runningLimit() time.Duration {
	return min(2*g.took, g.maxWait())
}

// wait returns when ctx ends, at once when no submit waits, and otherwise
// as the type's comment says.
func (g *gatherer) wait(ctx context.Context, b *Broker) {
	b.mu.Lock()
	n := len(b.pendingSaves)
	limit, target := g.limit(), g.last
	if g.early && b.runningUnsavedLocked() {
		limit, target = g.runningLimit(), 0
	}
	if n == 0 || limit <= 0 || target > 0 && n >= target {
		b.mu.Unlock()
		return
	}
	select {
	case <-b.gatherFull: // stale: from a wait that ended otherwise
	default:
	}
	b.gatherAt, b.gatherRunning = target, target == 0
	b.mu.Unlock()
	if g.timer == nil {
		g.timer = time.NewTimer(limit)
	} else {
		g.timer.Reset(limit)
	}
	select {
	case <-g.timer.C:
	case <-b.gatherFull:
	case <-ctx.Done():
	}
	g.timer.Stop()
	b.mu.Lock()
	b.gatherAt, b.gatherRunning = 0, false
	b.mu.Unlock()
}

// runningUnsavedLocked reports whether a job waiting for its first write
// is held by a worker, or queued while its function has a worker for each
// of its live jobs (one of them is about to take it). It reads the counts
// that setStateLocked and setSaveLocked keep, so that the check at every
// job's end during a gathering wait does not look through the round's
// jobs: it costs one comparison per function with such queued jobs.
func (b *Broker) runningUnsavedLocked() bool {
	if b.unsaved.held > 0 {
		return true
	}
	for _, f := range b.unsaved.fns {
		if f.total <= f.workers {
			return true
		}
	}
	return false
}

// unsavedCounts counts the jobs waiting for their first write (saveQueued)
// that runningUnsavedLocked looks for. Guarded by Broker.mu.
type unsavedCounts struct {
	// held counts those held by a worker (stateRunning).
	held int
	// fns are the functions with such jobs in a queue (stateQueued), each
	// at its function.unsavedAt-1; function.unsavedQueued counts them.
	fns []*function
}

// setStateLocked moves j to state s, keeping the counts of unsavedCounts.
// Every change of a live job's state goes through it.
func (b *Broker) setStateLocked(j *job, s jobState) {
	b.countUnsavedLocked(j, -1)
	j.state = s
	b.countUnsavedLocked(j, 1)
}

// setSaveLocked sets the state of j's first store write, keeping the
// counts of unsavedCounts. Every change of it goes through here.
func (b *Broker) setSaveLocked(j *job, s saveState) {
	b.countUnsavedLocked(j, -1)
	j.setSave(s)
	b.countUnsavedLocked(j, 1)
}

// countUnsavedLocked adds d to the count j belongs to as it is now, if
// any.
func (b *Broker) countUnsavedLocked(j *job, d int) {
	if j.saveState() != saveQueued {
		return
	}
	switch j.state {
	case stateRunning:
		b.unsaved.held += d
	case stateQueued:
		f := j.fn
		f.unsavedQueued += d
		switch {
		case f.unsavedQueued == 1 && d > 0:
			b.unsaved.fns = append(b.unsaved.fns, f)
			f.unsavedAt = len(b.unsaved.fns)
		case f.unsavedQueued == 0:
			fns := b.unsaved.fns
			last := fns[len(fns)-1]
			fns[f.unsavedAt-1], last.unsavedAt = last, f.unsavedAt
			fns[len(fns)-1] = nil
			b.unsaved.fns, f.unsavedAt = fns[:len(fns)-1], 0
		}
	}
}

// endGatherLocked wakes the committer's gathering wait.
func (b *Broker) endGatherLocked() {
	b.gatherAt, b.gatherRunning = 0, false
	select {
	case b.gatherFull <- struct{}{}:
	default:
	}
}
