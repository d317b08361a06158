package broker

import (
	"container/heap"
	"context"
	"math"
	"time"
)

// Timers are Unix nanoseconds, which reach only to 2262-04-11. Durations
// from policies and requests may be as long as time.Duration allows (292
// years) and run-at times as late as MaxRunAt, so every deadline is made
// with these, which stop at that last nanosecond (a timer that never fires)
// instead of wrapping around into the past, where it would fire at once.

// nanosAfter returns the Unix nanoseconds d after now (Unix nanoseconds),
// at most math.MaxInt64.
func nanosAfter(now int64, d time.Duration) int64 {
	if d > 0 && now > math.MaxInt64-int64(d) {
		return math.MaxInt64
	}
	return now + int64(d)
}

// durationOfNanos returns ns nanoseconds as a time.Duration, at most
// math.MaxInt64 (the conversion of a larger float is undefined: on amd64
// it gives math.MinInt64).
func durationOfNanos(ns float64) time.Duration {
	if ns < math.MaxInt64 {
		return time.Duration(ns)
	}
	return math.MaxInt64
}

// secondsToNanos returns Unix seconds sec as Unix nanoseconds, at most
// math.MaxInt64.
func secondsToNanos(sec int64) int64 {
	if sec > math.MaxInt64/int64(time.Second) {
		return math.MaxInt64
	}
	return sec * int64(time.Second)
}

// timeNanos returns t as Unix nanoseconds, at most math.MaxInt64 (t.UnixNano
// is undefined past 2262).
func timeNanos(t time.Time) int64 {
	if sec := t.Unix(); sec >= math.MaxInt64/int64(time.Second) {
		return secondsToNanos(sec)
	}
	return t.UnixNano()
}

// timerSlot is where a timer sits in its timerHeap: its time (Unix
// nanoseconds) and its index in the heap, -1 when it is not in it.
type timerSlot struct {
	at  int64
	idx int
}

// timer is what a timerHeap holds: anything with a timerSlot.
type timer interface{ slot() *timerSlot }

// timerHeap orders timers by time; each knows its index, so that it can be
// moved or removed. The broker keeps two: job timers (Broker.timers:
// scheduled jobs by run-at time, running jobs by their timeout deadline,
// jobs waiting to be retried by the end of their backoff, retained results
// by their expiry) and function timers (lifeState.timers: lifeTimer).
// RunTimers fires both.
type timerHeap[T timer] []T

func (h timerHeap[T]) Len() int           { return len(h) }
func (h timerHeap[T]) Less(a, b int) bool { return h[a].slot().at < h[b].slot().at }
func (h timerHeap[T]) Swap(a, b int) {
	h[a], h[b] = h[b], h[a]
	h[a].slot().idx = a
	h[b].slot().idx = b
}
func (h *timerHeap[T]) Push(v any) {
	t := v.(T)
	t.slot().idx = len(*h)
	*h = append(*h, t)
}
func (h *timerHeap[T]) Pop() any {
	old := *h
	t := old[len(old)-1]
	var none T
	old[len(old)-1] = none
	*h = old[:len(old)-1]
	t.slot().idx = -1
	return t
}

// slot makes a job a timer: its timer lives in its extra.
func (j *job) slot() *timerSlot { return &j.x.timer }

func (b *Broker) addTimerLocked(j *job, atNanos int64) {
	x := j.extra()
	if x.timer.idx >= 0 {
		heap.Remove(&b.timers, x.timer.idx)
	}
	x.timer.at = atNanos
	heap.Push(&b.timers, j)
	if x.timer.idx == 0 {
		select {
		case b.timerWake <- struct{}{}:
		default:
		}
	}
}

func (b *Broker) removeTimerLocked(j *job) {
	if j.x != nil && j.x.timer.idx >= 0 {
		heap.Remove(&b.timers, j.x.timer.idx)
	}
}

// RunTimers fires every timer due at the clock's current time: scheduled
// jobs become queued, jobs past their worker's timeout fail (or are taken
// back when the timeout is an HTTP worker's lease). It
// returns the time of the next timer, or the zero time if none. The timer
// goroutine calls it; tests with a fake clock call it directly.
func (b *Broker) RunTimers() time.Time {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.clock.Now().UnixNano()
	for len(b.timers) > 0 && b.timers[0].x.timer.at <= now {
		j := heap.Pop(&b.timers).(*job)
		switch j.state {
		case stateScheduled:
			b.queueLocked(j, true)
		case stateRunning:
			if j.x.leaseTimer {
				b.requeueLocked(j, whyLeaseRanOut)
			} else {
				b.timeoutLocked(j)
			}
		case stateRetryWait:
			b.retryDueLocked(j)
		case stateDone:
			b.expireResultLocked(j)
		}
	}
	next := b.runLifeTimersLocked(now)
	if len(b.timers) > 0 && (next == 0 || b.timers[0].x.timer.at < next) {
		next = b.timers[0].x.timer.at
	}
	if next == 0 {
		return time.Time{}
	}
	return time.Unix(0, next)
}

func (b *Broker) timerLoop(ctx context.Context) {
	defer b.wg.Done()
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		next := b.RunTimers()
		d := time.Hour
		if !next.IsZero() {
			d = max(next.Sub(b.clock.Now()), time.Millisecond)
		}
		t.Reset(d)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-b.timerWake:
		}
	}
}
