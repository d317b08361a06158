package broker

import "container/heap"

// lifeTimer is a function-level timer (end of a pause, next rate-limit
// token, next cron tick). Create it with idx -1 (not armed); a zero
// lifeTimer would claim to sit at the top of the heap.
type lifeTimer struct {
	timerSlot
	fire func(now int64)
}

func (t *lifeTimer) slot() *timerSlot { return &t.timerSlot }

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
