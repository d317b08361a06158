package broker

import (
	"cmp"
	"slices"
)

// orderLine is the ordered queue of one ordering key: head is the one job
// of the key that may be queued, running or waiting for a retry; waiting
// jobs (stateBlocked) follow in the order they became runnable.
type orderLine struct {
	head    *job
	waiting []*job
}

// admitLocked decides whether a job that became runnable may enter its
// priority queue: it may unless another job of its ordering key is ahead
// of it, in which case it is blocked behind that one. It also stamps the
// time the job became runnable, for priority aging.
func (b *Broker) admitLocked(j *job) bool {
	l := j.x.life
	f := j.fn
	if f.life != nil && f.life.pol.AgeAfter > 0 {
		l.queuedAt = b.nowNanos()
	}
	if l.orderKey == "" {
		return true
	}
	fl := b.fnLifeLocked(f)
	line := fl.lines[l.orderKey]
	switch {
	case line == nil:
		if fl.lines == nil {
			fl.lines = make(map[string]*orderLine)
		}
		fl.lines[l.orderKey] = &orderLine{head: j}
		return true
	case line.head == nil || line.head == j:
		line.head = j
		return true
	}
	b.setStateLocked(j, stateBlocked)
	line.waiting = append(line.waiting, j)
	return false
}

// claimLineLocked makes j the head of its line (a replayed job that was
// waiting for a retry when the server stopped).
func (b *Broker) claimLineLocked(j *job) {
	fl := b.fnLifeLocked(j.fn)
	if fl.lines == nil {
		fl.lines = make(map[string]*orderLine)
	}
	line := fl.lines[j.x.life.orderKey]
	if line == nil {
		fl.lines[j.x.life.orderKey] = &orderLine{head: j}
		return
	}
	if line.head == nil {
		line.head = j
	}
}

// releaseLineLocked lets the next job of j's key run once j, the head,
// has left (completed, died, was cancelled or dropped).
func (b *Broker) releaseLineLocked(j *job) {
	f := j.fn
	if f.life == nil {
		return
	}
	key := j.x.life.orderKey
	line := f.life.lines[key]
	if line == nil || line.head != j {
		return
	}
	if j.background {
		b.mode.slotFreedLocked(f)
	}
	line.head = nil
	if len(line.waiting) == 0 {
		delete(f.life.lines, key)
		return
	}
	next := line.waiting[0]
	line.waiting[0] = nil
	line.waiting = line.waiting[1:]
	line.head = next
	b.queueLocked(next, true)
}

// unblockLocked takes a blocked job out of its line.
func (b *Broker) unblockLocked(j *job) {
	f := j.fn
	if f.life == nil {
		return
	}
	line := f.life.lines[j.x.life.orderKey]
	if line == nil {
		return
	}
	for i, w := range line.waiting {
		if w == j {
			line.waiting = append(line.waiting[:i], line.waiting[i+1:]...)
			return
		}
	}
}

// OrderingInfo describes one ordering key with jobs ("show ordering").
type OrderingInfo struct {
	Function string
	Key      string
	// Head is the job that may run; 0 if none.
	Head uint64
	// HeadState is the head's state ("queued", "running", "retry-wait").
	HeadState string
	// Waiting counts the jobs blocked behind the head.
	Waiting int
}

// Orderings lists the ordering keys of a function ("" for all) that have
// jobs.
func (b *Broker) Orderings(function string) []OrderingInfo {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []OrderingInfo
	for _, f := range b.functions {
		if f.life == nil || (function != "" && f.name != function) {
			continue
		}
		for key, line := range f.life.lines {
			oi := OrderingInfo{Function: f.name, Key: key, Waiting: len(line.waiting)}
			if line.head != nil {
				oi.Head = line.head.seq
				oi.HeadState = line.head.state.String()
			}
			out = append(out, oi)
		}
	}
	slices.SortFunc(out, func(a, c OrderingInfo) int {
		return cmp.Or(cmp.Compare(a.Function, c.Function), cmp.Compare(a.Key, c.Key))
	})
	return out
}
