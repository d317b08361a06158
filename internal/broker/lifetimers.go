package broker

import "container/heap"

// lifeTimer is a function-level timer (end of a pause, next rate-limit
// token, next cron tick). Create it with idx -1 (not armed); a zero
// lifeTimer would claim to sit at the top of the heap.
type lifeTimer struct {
	at   int64 // Unix nanoseconds
	idx  int   // index in the heap; -1 when not armed
	fire func(now int64)
}

// lifeTimerHeap orders function-level timers by time. It lives beside the
// job timer heap and RunTimers fires both.
type lifeTimerHeap []*lifeTimer

func (h lifeTimerHeap) Len() int           { return len(h) }
func (h lifeTimerHeap) Less(a, b int) bool { return h[a].at < h[b].at }
func (h lifeTimerHeap) Swap(a, b int) {
	h[a], h[b] = h[b], h[a]
	h[a].idx = a
	h[b].idx = b
}
func (h *lifeTimerHeap) Push(v any) {
	t := v.(*lifeTimer)
	t.idx = len(*h)
	*h = append(*h, t)
}
func (h *lifeTimerHeap) Pop() any {
	old := *h
	t := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	t.idx = -1
	return t
}

// armLifeTimerLocked (re)arms t to fire at at (Unix ns).
func (b *Broker) armLifeTimerLocked(t *lifeTimer, at int64, fire func(now int64)) {
	t.fire = fire
	if t.idx >= 0 {
		t.at = at
		heap.Fix(&b.life.timers, t.idx)
	} else {
		t.at = at
		heap.Push(&b.life.timers, t)
	}
	if t.idx == 0 {
		select {
		case b.timerWake <- struct{}{}:
		default:
		}
	}
}

func (b *Broker) removeLifeTimerLocked(t *lifeTimer) {
	if t.idx >= 0 {
		heap.Remove(&b.life.timers, t.idx)
	}
}

// runLifeTimersLocked fires the function-level timers due at now and
// returns the time of the next one (0: none).
func (b *Broker) runLifeTimersLocked(now int64) int64 {
	for len(b.life.timers) > 0 && b.life.timers[0].at <= now {
		t := heap.Pop(&b.life.timers).(*lifeTimer)
		t.fire(now)
	}
	if len(b.life.timers) == 0 {
		return 0
	}
	return b.life.timers[0].at
}
