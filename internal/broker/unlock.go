package broker

import (
	"sync"
	"sync/atomic"
)

// hookedMutex is the broker's lock. Unlock runs the registered hooks after
// releasing the lock, so that a front end can write the output that events
// queued while the lock was held (Outbox.Send and DoneFunc may only queue)
// in the goroutine that caused them, instead of handing it to another
// goroutine.
type hookedMutex struct {
	sync.Mutex
	// now is the clock reading taken during the current hold of the lock
	// (Broker.holdNow), in Unix nanoseconds; 0 until one is taken.
	now   int64
	hooks atomic.Pointer[[]func()]
}

// Unlock forgets the hold's clock reading, releases the lock, then runs
// the hooks.
func (m *hookedMutex) Unlock() {
	m.now = 0
	m.Mutex.Unlock()
	if hs := m.hooks.Load(); hs != nil {
		for _, f := range *hs {
			f()
		}
	}
}

// OnUnlock registers f to run after every release of the broker's lock, in
// the goroutine that released it. f must be cheap when it has nothing to
// do, must not block, and may call the broker. Safe for concurrent use.
func (b *Broker) OnUnlock(f func()) {
	b.mu.Lock()
	defer b.mu.Mutex.Unlock()
	var hs []func()
	if old := b.mu.hooks.Load(); old != nil {
		hs = append(hs, *old...)
	}
	hs = append(hs, f)
	b.mu.hooks.Store(&hs)
}
