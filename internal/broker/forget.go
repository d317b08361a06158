package broker

import "log/slog"

// A function is kept until "drop function", as in gearmand, but the broker
// knows at most Config.MaxFunctions of them: at that limit, a new name
// makes it forget the function that has held nothing for the longest time
// (forgettableLocked), and only when every function holds something is the
// name refused. Functions that may hold nothing are kept in Broker.idleFns,
// in the order they came to hold nothing; a function is put at its back
// whenever it may have come to hold nothing (created, its last live job
// ended, its last worker left, its pause ended, its retained results
// expired, its policy was reset), and taken out when found to hold
// something, until it may again. So finding one to forget costs O(1) per
// function put there, never a look through every function.

// fnList is a list of functions linked through function.idlePrev and
// idleNext. Guarded by Broker.mu.
type fnList struct {
	head, tail *function
}

// mayIdleLocked puts f, a function that may have come to hold nothing, at
// the back of the idle list (forgettableLocked decides when it is taken).
func (b *Broker) mayIdleLocked(f *function) {
	if !f.known || b.cfg.MaxFunctions <= 0 {
		return
	}
	l := &b.idleFns
	if l.tail == f {
		return
	}
	if f.inIdle {
		b.unlistIdleLocked(f)
	}
	f.idlePrev, f.idleNext, f.inIdle = l.tail, nil, true
	if l.tail != nil {
		l.tail.idleNext = f
	} else {
		l.head = f
	}
	l.tail = f
}

// unlistIdleLocked takes f out of the idle list, if it is there.
func (b *Broker) unlistIdleLocked(f *function) {
	if !f.inIdle {
		return
	}
	l := &b.idleFns
	if f.idlePrev != nil {
		f.idlePrev.idleNext = f.idleNext
	} else {
		l.head = f.idleNext
	}
	if f.idleNext != nil {
		f.idleNext.idlePrev = f.idlePrev
	} else {
		l.tail = f.idlePrev
	}
	f.idlePrev, f.idleNext, f.inIdle = nil, nil, false
}

// forgettableLocked reports whether f holds nothing that forgetting it
// would lose: no live job in any state (queued, frozen, scheduled,
// running, waiting to retry, blocked behind an ordering key, waiting for
// other jobs, waiting for its first write), no worker and so no sleeper,
// no retained result, no pause, and no policy of its own (set at run
// time, by "maxqueue", or in the configuration), and no cron schedule of
// the configuration submits to it. Its counters (Stats) go with it, as
// with "drop function". Its dead letters and the records of its ended
// jobs are kept by name, and its rate limiter's bucket, refilling while
// nothing waits, starts full again.
func (b *Broker) forgettableLocked(f *function) bool {
	if f.total > 0 || f.running > 0 || f.workers > 0 || f.unsavedAt != 0 || len(f.uniques) > 0 {
		return false
	}
	for p := range numPriorities {
		if q := &f.queues[p]; q.len() > 0 || q.listed {
			return false
		}
	}
	if l := f.life; l != nil && (l.paused || len(l.lines) > 0 || len(l.done) > 0 || l.pauseTimer.idx >= 0) {
		return false
	}
	if _, ok := b.life.policies[f.name]; ok {
		return false
	}
	return !b.life.configured[f.name]
}

// makeRoomLocked forgets functions that hold nothing, those that came to
// hold nothing first first, until the broker knows fewer than limit
// functions. It reports whether it got there.
func (b *Broker) makeRoomLocked(limit int) bool {
	for len(b.functions) >= limit {
		f := b.idleFns.head
		if f == nil {
			return false
		}
		b.unlistIdleLocked(f)
		if b.functions[f.name] == f && b.forgettableLocked(f) {
			b.forgetFunctionLocked(f)
		}
	}
	return true
}

// forgetFunctionLocked forgets f, which holds nothing (forgettableLocked).
func (b *Broker) forgetFunctionLocked(f *function) {
	b.unknowFunctionLocked(f)
	if f.life != nil {
		b.removeLifeTimerLocked(&f.life.rateTimer)
	}
	b.log.Debug("broker: forgot an idle function to make room for a new one (--max-functions)",
		slog.String("function", f.name))
}

// unknowFunctionLocked removes f from the functions the broker knows
// ("drop function", or forgotten).
func (b *Broker) unknowFunctionLocked(f *function) {
	b.unlistIdleLocked(f)
	f.known = false
	b.mode.functionGoneLocked(f)
	delete(b.functions, f.name)
}
