package broker

import (
	"log/slog"
	"math"
	"time"
)

// hasWorkLocked reports whether a worker of f could be handed a job now.
func (b *Broker) hasWorkLocked(f *function) bool {
	if f.queued() == 0 {
		return false
	}
	if f.life == nil {
		return true
	}
	return b.canStartLocked(f, b.nowNanos(), false)
}

// canStartLocked reports whether f may hand out a job at now: it is not
// paused, below its concurrency limit and has a rate token. When only a
// token is missing it arms a timer that wakes a worker once one is due.
// take consumes the token.
func (b *Broker) canStartLocked(f *function, now int64, take bool) bool {
	l := f.life
	if l.paused {
		if l.pausedUntil == 0 || now < l.pausedUntil {
			return false
		}
		b.resumeLocked(f, true)
	}
	if c := l.pol.Concurrency; c > 0 && f.running >= c {
		return false
	}
	if l.pol.Rate > 0 {
		burst := l.pol.burst()
		if now > l.tokensAt {
			l.tokens = min(burst, l.tokens+float64(now-l.tokensAt)/1e9*l.pol.Rate)
			l.tokensAt = now
		}
		if l.tokens < 1 {
			// With a tiny rate the wait is beyond int64 nanoseconds, whose
			// conversion gave math.MinInt64: a timer due at once, re-armed
			// as it fired, for ever.
			at := int64(math.MaxInt64)
			if wait := math.Ceil((1 - l.tokens) / l.pol.Rate * 1e9); wait < math.MaxInt64 {
				at = nanosAfter(now, time.Duration(max(wait, 1)))
			}
			if l.rateTimer.idx < 0 {
				b.armLifeTimerLocked(&l.rateTimer, at, func(int64) { b.wakeReadyLocked(f) })
			}
			return false
		}
		if take {
			l.tokens--
		}
	}
	return true
}

// popLifeLocked is Grab's path for a function with lifecycle state: it
// honours pause, concurrency and rate limits and priority aging.
func (b *Broker) popLifeLocked(f *function, p Priority) *job {
	if f.queued() == 0 {
		return nil
	}
	// Only look at a level that has a candidate, so that a token is not
	// taken for nothing.
	now := b.nowNanos()
	if b.candidateLocked(f, p, now) == nil || !b.canStartLocked(f, now, true) {
		return nil
	}
	j := b.candidateLocked(f, p, now)
	f.queues[j.priority].remove(j)
	return j
}

// candidateLocked returns the job f would hand out at priority level p:
// the head of queue p, or with aging the longest-waiting head of a lower
// queue that has waited long enough to count as p.
func (b *Broker) candidateLocked(f *function, p Priority, now int64) *job {
	age := f.life.pol.AgeAfter
	if age <= 0 {
		return f.queues[p].front()
	}
	var best *job
	for q := p; q < numPriorities; q++ {
		h := f.queues[q].front()
		if h == nil {
			continue
		}
		at := queuedAt(h)
		if q > p {
			if at == 0 || int64(q)-(now-at)/int64(age) > int64(p) {
				continue
			}
		}
		if best == nil || (at != 0 && at < queuedAt(best)) {
			best = h
		}
	}
	return best
}

func queuedAt(j *job) int64 {
	if j.x == nil || j.x.life == nil {
		return 0
	}
	return j.x.life.queuedAt
}

// slotFreedLocked is called when a job of f stops running.
func (b *Broker) slotFreedLocked(f *function) {
	if f.life.pol.Concurrency > 0 {
		b.mode.slotFreedLocked(f)
		if f.queued() > 0 {
			f.wakeOne()
		}
	}
}

// wakeReadyLocked wakes as many sleeping workers of f as could be handed a
// job now.
func (b *Broker) wakeReadyLocked(f *function) {
	n := f.queued()
	if n == 0 {
		return
	}
	if l := f.life; l != nil {
		now := b.nowNanos()
		if !b.canStartLocked(f, now, false) {
			return
		}
		if c := l.pol.Concurrency; c > 0 {
			n = min(n, c-f.running)
		}
		if l.pol.Rate > 0 {
			n = min(n, int(l.tokens))
		}
	}
	for i := 0; i < n && f.wakeOne(); i++ {
	}
}

// overflowLocked makes room in f's full queue for a job of priority p by
// dropping the oldest queued job of the same or a lower priority, lowest
// first, if the policy says drop-oldest. It reports whether it dropped one.
func (b *Broker) overflowLocked(f *function, p Priority) bool {
	if f.life.pol.Overflow != OverflowDropOldest {
		return false
	}
	for q := Priority(numPriorities - 1); q >= p && q < numPriorities; q-- {
		j := f.queues[q].front()
		if j == nil {
			continue
		}
		b.log.Warn("broker: queue full; dropped the oldest job", slog.String("function", f.name),
			slog.String("handle", b.Handle(j.seq)), slog.String("priority", q.String()))
		j.failClients()
		b.dropLocked(j, "queue overflow (drop-oldest)")
		return true
	}
	return false
}
