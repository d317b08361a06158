package broker

import (
	"context"
	"sort"
	"time"
)

// This file keeps the counters and latency histograms that metrics front
// ends read. They are plain integers guarded by Broker.mu and updated where
// the events happen, so they cost no extra lock on the hot path.

// HistogramBounds are the upper bounds, in seconds, of the buckets of every
// Histogram the broker keeps. The last bucket is open (+Inf).
var HistogramBounds = []float64{0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600}

// Histogram counts observations (in seconds) per bucket of HistogramBounds.
type Histogram struct {
	// Counts[i] counts observations <= HistogramBounds[i] and greater than
	// the bound before it; Counts[len(HistogramBounds)] counts the rest.
	Counts [18]uint64
	Count  uint64
	// Sum is the sum of all observations in seconds.
	Sum float64
}

// histogramBounds are HistogramBounds as durations, for observe: most
// observations fall in the first buckets, so a scan from the first bound
// compares one or two integers where a search of the seconds calls its
// comparison four times.
var histogramBounds = func() (out [len(Histogram{}.Counts) - 1]time.Duration) {
	if len(HistogramBounds) != len(out) {
		panic("broker: HistogramBounds and Histogram.Counts disagree")
	}
	for i, s := range HistogramBounds {
		out[i] = time.Duration(s * float64(time.Second))
	}
	return out
}()

// observe counts d in the bucket of the first bound at least d.
func (h *Histogram) observe(d time.Duration) {
	i := 0
	for i < len(histogramBounds) && d > histogramBounds[i] {
		i++
	}
	h.Counts[i]++
	h.Count++
	h.Sum += d.Seconds()
}

// FunctionCounters are a function's totals since the broker started (or
// since the function was last dropped, or forgotten at
// Config.MaxFunctions).
type FunctionCounters struct {
	// Submitted counts jobs created (not submits that attached to a live
	// job).
	Submitted uint64
	// Completed, Failed and Exceptions count results reported by workers
	// (WORK_COMPLETE, WORK_FAIL, WORK_EXCEPTION).
	Completed, Failed, Exceptions uint64
	// TimedOut and Vanished count the runs the server ended without a
	// result (statRunFailedLocked), by the outcome their history records:
	// TimedOut ("timeout") a run past its timeout (error "timed out") or
	// whose HTTP worker's lease ran out ("lease ran out"), Vanished
	// ("worker vanished") a run whose worker disconnected. A run the
	// server ends as it stops, or of a job cancelled or abandoned by its
	// clients (Dropped), is neither.
	TimedOut, Vanished uint64
	// Retried counts jobs taken back from a worker that vanished or timed
	// out and queued again, and failed attempts that will run again.
	Retried uint64
	// Dead counts jobs that ran out of attempts (kept as dead letters, or
	// dropped when the policy keeps none).
	Dead uint64
	// Dropped counts jobs that left without a worker's result: cancelled,
	// abandoned by their clients, or removed with the function.
	Dropped uint64
	// Wait is the time from submit (or run-at) to a worker taking the job;
	// Run is the time from a worker taking the job to its result.
	Wait, Run Histogram
}

// FunctionStats is one function's counters with its current queue state.
type FunctionStats struct {
	FunctionStatus
	FunctionCounters
	// Paused is set while the function hands out no jobs; PausedUntil is
	// when the pause ends by itself (zero: at Resume).
	Paused      bool
	PausedUntil time.Time
	// DeadLetters counts the function's dead letters.
	DeadLetters int
}

// Stats is a snapshot of the broker's counters.
type Stats struct {
	// Functions is sorted by name.
	Functions []FunctionStats
	// Sessions counts open sessions (clients and workers of every front
	// end).
	Sessions int
	// Running counts jobs held by workers.
	Running int
	// Commit is the latency of store batch writes; empty without a store.
	Commit Histogram
	// CommitJobs counts jobs written by the committer.
	CommitJobs uint64
	// RecordBytes is the memory the records of ended jobs take in the
	// broker (Config.MaxRecordBytes); RecordsEvicted counts the records
	// forgotten to keep it within that bound.
	RecordBytes    int64
	RecordsEvicted uint64
	// CanDoRefused counts the functions workers could not register
	// (CanDo, CanDoLease) for Config.MaxWorkerFunctions or
	// Config.MaxFunctions.
	CanDoRefused uint64
}

// Stats returns a snapshot of every function's counters. Safe for
// concurrent use; it holds the broker's lock for a time proportional to the
// number of functions. In shared mode the queue counts and DeadLetters
// also count what the store holds beyond this server's jobs, as Status
// does. A function known only from its dead letters (replayed from the
// store, they do not make it known to Status) is listed with their count.
func (b *Broker) Stats(ctx context.Context) Stats {
	return b.stats(ctx, true)
}

func (b *Broker) stats(ctx context.Context, deadOnly bool) Stats {
	b.mu.Lock()
	st := Stats{Functions: make([]FunctionStats, 0, len(b.functions)), Sessions: len(b.sessions),
		Running: b.running, Commit: b.commitHist, CommitJobs: b.commitJobs,
		RecordBytes: b.hist.bytes + b.recq.bytes, RecordsEvicted: b.hist.evicted + b.recq.evicted,
		CanDoRefused: b.canDoRefused}
	for _, f := range b.functions {
		fs := FunctionStats{FunctionStatus: FunctionStatus{Name: f.name, Total: f.total, Running: f.running,
			Workers: f.workers, MaxQueue: f.maxQueue}, FunctionCounters: f.counters}
		for p := range numPriorities {
			fs.Queued[p] = f.queues[p].len()
		}
		if l := f.life; l != nil && l.paused {
			fs.Paused = true
			if l.pausedUntil != 0 {
				fs.PausedUntil = time.Unix(0, l.pausedUntil)
			}
		}
		if list := b.life.deadLists[f.name]; list != nil {
			fs.DeadLetters = list.n
		}
		st.Functions = append(st.Functions, fs)
	}
	for name, list := range b.life.deadLists {
		if deadOnly && b.functions[name] == nil {
			st.Functions = append(st.Functions, FunctionStats{FunctionStatus: FunctionStatus{Name: name}, DeadLetters: list.n})
		}
	}
	b.mu.Unlock()
	st.Functions = b.mode.addCounts(ctx, st.Functions)
	sort.Slice(st.Functions, func(i, k int) bool { return st.Functions[i].Name < st.Functions[k].Name })
	return st
}

// Health reports whether the broker accepts and hands out work: it is not
// ready while draining or stopped, or after a store write failed.
func (b *Broker) Health() (ready bool, reason string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.stopped:
		return false, "broker stopped"
	case b.draining:
		return false, "draining: no new jobs are handed out"
	case b.storeErr != nil:
		return false, "store write failed: " + b.storeErr.Error()
	}
	return true, ""
}

// statSubmittedLocked counts a created job and stamps its submit time.
func (b *Broker) statSubmittedLocked(j *job) {
	j.submitted = b.holdNow()
	j.fn.counters.Submitted++
}

// statStartedLocked records the wait of a job a worker just took.
func (b *Broker) statStartedLocked(j *job) {
	now := b.holdNow()
	j.x.started = now
	from := j.submitted
	if at := j.runAt() * 1e9; at > from {
		from = at
	}
	if from != 0 && now >= from {
		j.fn.counters.Wait.observe(time.Duration(now - from))
	}
}

// statFinishedLocked counts a worker's result and records the run time.
func (b *Broker) statFinishedLocked(j *job, o Outcome) {
	c := &j.fn.counters
	switch o {
	case Complete:
		c.Completed++
	case Exception:
		b.statRunFailedLocked(j, outcomeException)
	default:
		b.statRunFailedLocked(j, outcomeFailed)
	}
	if j.x != nil && j.x.started != 0 {
		if now := b.holdNow(); now >= j.x.started {
			c.Run.observe(time.Duration(now - j.x.started))
		}
	}
}

// statRunFailedLocked counts a run that ended without a result, by the
// outcome kept in its history: a worker's WORK_FAIL (statFinishedLocked)
// or WORK_EXCEPTION, or a run the server ended (endAttemptLocked).
func (b *Broker) statRunFailedLocked(j *job, outcome string) {
	c := &j.fn.counters
	switch outcome {
	case outcomeFailed:
		c.Failed++
	case outcomeException:
		c.Exceptions++
	case outcomeTimeout:
		c.TimedOut++
	case outcomeVanished:
		c.Vanished++
	}
}

// statDeadLocked counts a job that ran out of attempts.
func (b *Broker) statDeadLocked(j *job) {
	j.flags |= jobFinished
	j.fn.counters.Dead++
}

// statCommitLocked records one store batch write.
func (b *Broker) statCommitLocked(d time.Duration, jobs int) {
	b.commitHist.observe(d)
	b.commitJobs += uint64(jobs)
}
