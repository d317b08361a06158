package broker

import "time"

// function is the state of one function name. Guarded by Broker.mu.
type function struct {
	name   string
	queues [numPriorities]jobQueue
	// total counts the function's live jobs in every state (gearmand's
	// job_total: the TOTAL column of "status").
	total   int
	running int
	// workers counts sessions that registered the function.
	workers int
	// unsavedQueued counts the function's queued jobs waiting for their
	// first write, and unsavedAt is its place in Broker.unsaved.fns plus
	// one while that is above zero (countUnsavedLocked).
	unsavedQueued int
	unsavedAt     int
	// sleepers are sessions that may be asleep waiting for this function's
	// jobs; entries whose generation no longer matches are stale.
	sleepers []sleeper
	// maxQueue per priority; 0 means unlimited.
	maxQueue [numPriorities]int
	// uniques indexes live jobs of this function by unique key.
	uniques map[string]*job
	// life holds the function's lifecycle policy and state; nil when it
	// has none, which keeps the hot path free of lifecycle checks.
	life *fnLife
	// counters feed metrics (Stats).
	counters FunctionCounters
	// histAge and histMax are the function's history limits
	// (Policy.historyLimits), kept by applyPolicyLocked; hist is its
	// history while it has one (nil: look it up in b.hist.fns).
	histAge time.Duration
	histMax int
	hist    *fnHistory
	// known is set while the function is in Broker.functions; inIdle
	// while it is in Broker.idleFns, linked through idlePrev and idleNext
	// (forget.go).
	known  bool
	inIdle bool
	// droppedBy is why the function was dropped ("function dropped by
	// ..."; DropFunctionBy), for a job whose insert ends after the drop
	// (shared mode), which goes as the function's other jobs went.
	droppedBy          string
	idlePrev, idleNext *function
}

type sleeper struct {
	s   *Session
	gen uint32
}

func (f *function) queued() int {
	return f.queues[0].len() + f.queues[1].len() + f.queues[2].len()
}

// wakeOne sends NOOP to one sleeping worker of f, if any. It reports whether
// one was woken.
func (f *function) wakeOne() bool {
	for len(f.sleepers) > 0 {
		last := len(f.sleepers) - 1
		sl := f.sleepers[last]
		f.sleepers[last] = sleeper{}
		f.sleepers = f.sleepers[:last]
		s := sl.s
		if s.closed || !s.sleeping || s.noopSent || s.sleepGen != sl.gen {
			continue
		}
		s.noopSent = true
		s.out.Send(Event{Kind: EventNoop})
		return true
	}
	return false
}

// foregroundWakers is how many sleeping workers a queued foreground job
// wakes; a background job wakes one. The job goes to whichever asks first,
// so a client waiting on its job does not wait for one worker that is slow
// to answer its NOOP (its process not scheduled) while another sleeps; the
// one that asks second finds the next job or sleeps again. A background job
// has no one waiting on it, and a second wake costs a GRAB_JOB, a NO_JOB
// and a PRE_SLEEP more: BENCHMARKS.md, "The tail of fg64".
const foregroundWakers = 2

// wakeFor wakes sleeping workers of f for j, which was just queued: one,
// or foregroundWakers for a foreground job.
func (f *function) wakeFor(j *job) {
	n := 1
	if !j.background {
		n = foregroundWakers
	}
	for range n {
		if !f.wakeOne() {
			return
		}
	}
}

// addSleeper records s as asleep for f, dropping stale entries when the
// list has grown well beyond the number of workers.
func (f *function) addSleeper(s *Session) {
	if len(f.sleepers) > 2*f.workers+8 {
		kept := f.sleepers[:0]
		for _, sl := range f.sleepers {
			if !sl.s.closed && sl.s.sleeping && !sl.s.noopSent && sl.s.sleepGen == sl.gen {
				kept = append(kept, sl)
			}
		}
		clear(f.sleepers[len(kept):])
		f.sleepers = kept
	}
	f.sleepers = append(f.sleepers, sleeper{s, s.sleepGen})
}
