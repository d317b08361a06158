package broker

import (
	"container/heap"
	"context"
	"time"
)

// timerHeap orders jobs by jobExtra.timerAt: scheduled jobs by run-at time,
// running jobs by their timeout deadline, jobs waiting to be retried by the
// end of their backoff, retained results by their expiry.
type timerHeap []*job

func (h timerHeap) Len() int           { return len(h) }
func (h timerHeap) Less(a, b int) bool { return h[a].x.timerAt < h[b].x.timerAt }
func (h timerHeap) Swap(a, b int) {
	h[a], h[b] = h[b], h[a]
	h[a].x.timerIdx = a
	h[b].x.timerIdx = b
}
func (h *timerHeap) Push(v any) {
	j := v.(*job)
	j.x.timerIdx = len(*h)
	*h = append(*h, j)
}
func (h *timerHeap) Pop() any {
	old := *h
	j := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	j.x.timerIdx = -1
	return j
}

func (b *Broker) addTimerLocked(j *job, atNanos int64) {
	x := j.extra()
	if x.timerIdx >= 0 {
		heap.Remove(&b.timers, x.timerIdx)
	}
	x.timerAt = atNanos
	heap.Push(&b.timers, j)
	if x.timerIdx == 0 {
		select {
		case b.timerWake <- struct{}{}:
		default:
		}
	}
}

func (b *Broker) removeTimerLocked(j *job) {
	if j.x != nil && j.x.timerIdx >= 0 {
		heap.Remove(&b.timers, j.x.timerIdx)
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
	for len(b.timers) > 0 && b.timers[0].x.timerAt <= now {
		j := heap.Pop(&b.timers).(*job)
		switch j.state {
		case stateScheduled:
			b.queueLocked(j, true)
		case stateRunning:
			if j.x.leaseTimer {
				b.requeueLocked(j, "worker timeout")
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
	if len(b.timers) > 0 && (next == 0 || b.timers[0].x.timerAt < next) {
		next = b.timers[0].x.timerAt
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
