package broker

import (
	"log/slog"
	"time"

	"github.com/gearwork/gearwork/internal/store"
)

// startAttemptLocked notes the start of a run and returns the timeout to
// apply: the shorter of the worker's CAN_DO_TIMEOUT and the job's or
// function's policy timeout.
func (b *Broker) startAttemptLocked(j *job, timeout time.Duration) time.Duration {
	x := j.x
	if x.life == nil {
		x.life = &jobLife{}
	}
	l := x.life
	l.startedAt = b.nowNanos()
	if x.worker != nil {
		l.worker = x.worker.name()
	}
	pt := l.timeout
	if pt == 0 && j.fn.life != nil {
		pt = j.fn.life.pol.Timeout
	}
	if pt > 0 && (timeout == 0 || pt < timeout) {
		timeout = pt
	}
	return timeout
}

// endAttemptLocked notes the end of a run in the job's history. A run
// the server ended without a result (timeout, worker vanished) is counted
// as failed here; a worker's result is counted as it arrives
// (statFinishedLocked), for foreground jobs too.
func (b *Broker) endAttemptLocked(j *job, outcome, errText string, now int64) *jobLife {
	if outcome == outcomeTimeout || outcome == outcomeVanished {
		b.statRunFailedLocked(j, outcome)
	}
	x := j.extra()
	if x.life == nil {
		x.life = &jobLife{attempts: j.retries}
		if outcome == outcomeVanished || outcome == outcomeTimeout {
			x.life.attempts-- // this takeback is counted below
		}
	}
	l := x.life
	if l.startedAt == 0 {
		// A run that started without lifecycle state.
		l.startedAt = x.started
	}
	if l.worker == "" && x.worker != nil {
		l.worker = x.worker.name()
	}
	l.attempts++
	if len(l.history) >= store.MaxHistory {
		copy(l.history, l.history[1:])
		l.history = l.history[:len(l.history)-1]
	}
	l.history = append(l.history, store.Attempt{Start: l.startedAt, End: now, Outcome: outcome, Error: errText, Worker: l.worker})
	l.startedAt, l.worker = 0, ""
	if outcome != outcomeComplete {
		l.lastErr = outcome
		if errText != "" {
			l.lastErr = errText
		}
	}
	return l
}

// Outcomes of an attempt, as kept in its history.
const (
	outcomeComplete  = "complete"
	outcomeFailed    = "failed"
	outcomeException = "exception"
	outcomeTimeout   = "timeout"
	outcomeVanished  = "worker vanished"
	outcomeCancelled = "cancelled"
)

// maxAttemptsOf returns the job's attempt limit: 0 for gearmand's rules.
func (b *Broker) maxAttemptsOf(j *job) int {
	if j.x != nil && j.x.life != nil && j.x.life.maxAttempts != 0 {
		return int(j.x.life.maxAttempts)
	}
	if j.fn.life != nil {
		return j.fn.life.pol.MaxAttempts
	}
	return 0
}

// finishLifeLocked ends a run that a worker finished when lifecycle rules
// apply: results may be retained, failed background jobs retried or kept
// as dead letters.
func (b *Broker) finishLifeLocked(j *job, o Outcome, data []byte) {
	now := b.nowNanos()
	if o == Complete {
		b.endAttemptLocked(j, outcomeComplete, "", now)
		if j.background && !j.has(jobCancelled) && j.fn.life != nil && j.fn.life.pol.ResultRetention > 0 {
			b.retainLocked(j, data, now)
			return
		}
		b.removeLocked(j)
		return
	}
	if !j.background || j.has(jobCancelled) {
		// Foreground failures are the client's to handle, as in gearmand.
		b.removeLocked(j)
		return
	}
	// A WORK_FAIL carries no data: the run's last warning says why.
	outcome, errText := outcomeFailed, j.x.warning
	if o == Exception {
		outcome, errText = outcomeException, errorText(data)
	}
	b.endAttemptLocked(j, outcome, errText, now)
	// Attached clients were told of the failure; they are done.
	for _, c := range j.x.clients {
		c.waiting = removeUnordered(c.waiting, j)
	}
	j.x.clients = nil
	b.releaseWorkerLocked(j)
	b.retryOrDieLocked(j, now)
}

// releaseWorkerLocked takes a running job from its worker. The job is left
// in stateGone, outside every queue, until the caller places it.
func (b *Broker) releaseWorkerLocked(j *job) {
	x := j.x
	batchStoppedLocked(x)
	b.removeTimerLocked(j)
	x.worker.running = removeUnordered(x.worker.running, j)
	x.worker = nil
	j.fn.running--
	b.running--
	b.checkIdleLocked()
	b.resetProgressLocked(j)
	b.setStateLocked(j, stateGone)
	if j.fn.life != nil {
		b.slotFreedLocked(j.fn)
	}
}

// takebackLifeLocked handles a job taken back from a vanished or silent
// worker (named worker) under a policy with MaxAttempts. It reports false
// to let gearmand's rules (requeue at the front, Config.JobRetries) apply.
// Either way the run is an attempt in the job's history.
func (b *Broker) takebackLifeLocked(j *job, why, worker string) bool {
	max := b.maxAttemptsOf(j)
	outcome, errText := outcomeVanished, ""
	switch why {
	case "worker timeout":
		outcome = outcomeTimeout
	case whyLeaseRanOut:
		outcome, errText = outcomeTimeout, whyLeaseRanOut
	}
	if x := j.x; x.life == nil {
		// A job under gearmand's rules had no lifecycle state while it ran.
		x.life = &jobLife{attempts: j.retries - 1, startedAt: x.started, worker: worker}
	}
	now := b.nowNanos()
	l := b.endAttemptLocked(j, outcome, errText, now)
	if max == 0 {
		return false
	}
	out := max > 0 && int(l.attempts) >= max
	if !j.background {
		if !out {
			return false
		}
		j.failClients()
		b.recordEndLocked(j, jobEnd{state: FinalFailed})
		b.setStateLocked(j, stateGone)
		b.removeLocked(j)
		return true
	}
	b.setStateLocked(j, stateGone)
	if out {
		j.failClients()
	}
	b.retryOrDieLocked(j, now)
	return true
}

// retryOrDieLocked sends a failed background job (released, in stateGone)
// to retry-wait or to the dead letters.
func (b *Broker) retryOrDieLocked(j *job, now int64) {
	max := b.maxAttemptsOf(j)
	if max < 0 || (max > 0 && int(j.x.life.attempts) < max) {
		b.retryWaitLocked(j, now)
		return
	}
	b.deadLocked(j, now)
}

func (b *Broker) retryWaitLocked(j *job, now int64) {
	l := j.x.life
	pol := b.policyOf(j.fn.name)
	if j.fn.life != nil {
		pol = j.fn.life.pol
	}
	d := pol.Backoff.delay(l.attempts, b.life.rand())
	l.notBefore = nanosAfter(now, d)
	b.setStateLocked(j, stateRetryWait)
	j.fn.counters.Retried++
	b.addTimerLocked(j, l.notBefore)
	b.saveLocked(j)
	b.retryWatchersLocked(j, nil)
	b.log.Info("broker: job will be retried", slog.String("handle", b.Handle(j.seq)),
		slog.String("function", j.fn.name), slog.Int("attempts", int(l.attempts)),
		slog.Duration("backoff", d), slog.String("error", l.lastErr))
}

// retryDueLocked runs a job whose backoff has ended.
func (b *Broker) retryDueLocked(j *job) {
	if b.mode.retryDueLocked(j) {
		return
	}
	j.x.life.notBefore = 0
	b.queueLocked(j, true)
}

// errTimedOut is the error kept in the history of an attempt that ran past
// its timeout.
const errTimedOut = "timed out"

// whyLeaseRanOut is why a job is taken back from an HTTP worker whose
// lease ran out (CanDoLease), and the error kept in the history of that
// attempt (outcome timeout): it is told apart from a run past its
// timeout and from a worker that vanished.
const whyLeaseRanOut = "lease ran out"

// timeoutLocked ends the run of a job its worker held past its timeout
// (CAN_DO_TIMEOUT or the policy's timeout). As the protocol says, the job
// fails: WORK_FAIL to its waiting clients and watchers, and a background
// job is kept as a dead letter whose error is "timed out". Only when the
// function's retry policy (max_attempts) allows another attempt does it
// run again: a background job after its backoff, a foreground one from
// the front of its queue, its clients still waiting. Either way the worker
// has lost the job: its late updates and result change nothing and get
// ErrJobTimedOut (notHeldLocked).
func (b *Broker) timeoutLocked(j *job) {
	x := j.x
	if !j.has(jobCancelled) {
		x.worker.noteEnded(j.seq, timedOut)
	}
	if j.has(jobCancelled) || (!j.background && len(x.clients) == 0) {
		// Nobody waits for its outcome: drop it as a takeback does.
		b.requeueLocked(j, "worker timeout")
		return
	}
	now := b.nowNanos()
	j.retries++
	l := b.endAttemptLocked(j, outcomeTimeout, errTimedOut, now)
	max := b.maxAttemptsOf(j)
	b.releaseWorkerLocked(j)
	if max < 0 || (max > 0 && int(l.attempts) < max) {
		if j.background {
			b.retryWaitLocked(j, now)
			return
		}
		b.log.Info("broker: job timed out, will be retried", slog.String("handle", b.Handle(j.seq)),
			slog.String("function", j.fn.name), slog.Int("attempts", int(l.attempts)))
		b.setStateLocked(j, stateQueued)
		j.fn.queues[j.priority].pushFront(j)
		j.fn.counters.Retried++
		j.fn.wakeOne()
		b.retryWatchersLocked(j, nil)
		return
	}
	b.log.Info("broker: job timed out", slog.String("handle", b.Handle(j.seq)),
		slog.String("function", j.fn.name), slog.Int("attempts", int(l.attempts)))
	for _, c := range x.clients {
		c.out.Send(Event{Kind: EventFail, Seq: j.seq})
		c.waiting = removeUnordered(c.waiting, j)
	}
	x.clients = nil
	b.endWatchLocked(j)
	b.deadLocked(j, now)
}
