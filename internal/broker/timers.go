package broker

import (
	"container/heap"
	"context"
	"time"
)

// timerHeap orders jobs by jobExtra.timerAt: scheduled jobs by run-at time,
// running jobs by their CAN_DO_TIMEOUT deadline.
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
// jobs become queued, jobs past their worker's timeout are taken back. It
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
			j.state = stateQueued
			j.fn.queues[j.priority].pushBack(j)
			j.fn.wakeOne()
		case stateRunning:
			b.requeueLocked(j, "worker timeout")
		}
	}
	if len(b.timers) == 0 {
		return time.Time{}
	}
	return time.Unix(0, b.timers[0].x.timerAt)
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
