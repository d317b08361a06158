package broker

import (
	"slices"
	"sync/atomic"
	"time"
)

// EventKind says what an Event reports.
type EventKind uint8

// Event kinds. EventNoop wakes a sleeping worker; the others are forwarded
// work updates for a job the session waits on.
const (
	EventNoop EventKind = iota + 1
	EventData
	EventWarning
	EventStatus
	EventComplete
	EventFail
	EventException
	// EventRetry is sent to watchers only (see Broker.Watch): a run of
	// the job ended without a result (a failure, an exception, a timeout,
	// a worker that vanished) and the job will run again; Data is the
	// exception data, if any. An Outbox that is a RetryOutbox is given
	// the job as it then is too.
	EventRetry
)

// Event is something the broker tells a session without being asked.
type Event struct {
	Kind EventKind
	// Seq identifies the job; format it with Broker.AppendHandle.
	Seq uint64
	// Data is the payload of data, warning, complete and exception events,
	// and for EventStatus the worker's own text of its two numbers
	// ("numerator\x00denominator", as WorkStatusText was given it) or nil.
	// It may be shared by several sessions and must not be modified.
	Data []byte
	// Numerator and Denominator are set for EventStatus.
	Numerator, Denominator uint32
}

// Outbox receives a session's events. Send is called with the broker's lock
// held: it must not block and must not call back into the broker.
type Outbox interface {
	Send(ev Event)
}

// NoopSignal is the Outbox of a worker that polls (an HTTP worker's grab,
// a test's worker): each NOOP is signalled on the channel, and one that
// finds a signal pending is dropped, so that it never blocks the broker.
// Other events are dropped. Make it with a buffer of one.
type NoopSignal chan struct{}

// Send implements Outbox.
func (w NoopSignal) Send(ev Event) {
	if ev.Kind == EventNoop {
		select {
		case w <- struct{}{}:
		default:
		}
	}
}

// Session is the broker's view of one connection: its worker abilities, the
// jobs it runs and the foreground jobs it waits on. A front end creates one
// per connection with Broker.NewSession and must call Broker.CloseSession
// when the connection ends. All fields are guarded by Broker.mu.
type Session struct {
	id  uint64
	out Outbox
	// Addr and ClientID are shown by the "workers" admin command.
	addr     string
	clientID string

	abilities []ability
	rr        int // round-robin start among abilities
	sleeping  bool
	noopSent  bool
	sleepGen  uint32
	running   []*job
	waiting   []*job
	// exceptions: the client asked for WORK_EXCEPTION packets.
	exceptions bool
	closed     bool
	// watching holds the seqs of jobs the session watches (Watch).
	watching map[uint64]struct{}
	// ended remembers the last jobs this session ended itself, or lost to
	// their timeout, so that a repeated final packet for one of them is
	// accepted and the late packets of a lost one get ErrJobTimedOut (see
	// Broker.notHeldLocked).
	ended     [endedMemory]endedJob
	endedNext uint8
	// cancelled holds the seqs of jobs cancelled while the session ran
	// them: the worker's work updates of one get ErrJobCancelled, its
	// final one ends the entry.
	cancelled map[uint64]struct{}
	// burst is the clock reading of the session's current burst of input
	// (BeginBurst), in Unix nanoseconds: 0 outside a burst, -1 in one that
	// has not read the clock yet. Set by the front end without the lock.
	burst atomic.Int64
}

// BeginBurst tells the broker that the session's calls until EndBurst act
// on one burst of input, read at once: they share one clock reading for
// their jobs' stamps and statistics (Broker.holdNow), the first one taken.
// A front end ends a burst before anything that may wait, and after a
// bounded number of requests. Calls that are not the session's own (its
// events, timers) read the clock as before. Safe to call without the
// broker's lock, from the goroutine that makes the session's calls.
func (s *Session) BeginBurst() { s.burst.Store(-1) }

// EndBurst ends the burst BeginBurst began; the next calls read the clock
// again. Safe to call outside a burst.
func (s *Session) EndBurst() { s.burst.Store(0) }

// endedMemory is how many of its own ended jobs a session remembers.
const endedMemory = 4

// endedJob is a job a session ended, and how.
type endedJob struct {
	seq     uint64
	outcome Outcome
}

// noteEnded remembers that the session ended job seq with outcome o.
func (s *Session) noteEnded(seq uint64, o Outcome) {
	s.ended[s.endedNext] = endedJob{seq: seq, outcome: o}
	s.endedNext = (s.endedNext + 1) % endedMemory
}

// timedOut is the outcome noted for a job the session lost to its timeout
// (CAN_DO_TIMEOUT or a policy's): the worker still runs it and sends its
// updates and its result late.
const timedOut Outcome = 0xff

// endedLast returns how the session last ended job seq (or lost it to its
// timeout), if it remembers. A session remembers at most one end of a job:
// forgetEnded drops it when the job is given to the session again.
func (s *Session) endedLast(seq uint64) (Outcome, bool) {
	if seq == 0 {
		return 0, false
	}
	for _, e := range s.ended {
		if e.seq == seq {
			return e.outcome, true
		}
	}
	return 0, false
}

// forgetEnded forgets how the session ended an earlier run of job seq, as
// the job is given to it again: the packets of the new run are answered
// for the new run (a job lost to its timeout runs again, and may be
// cancelled or end otherwise this time).
func (s *Session) forgetEnded(seq uint64) {
	for i := range s.ended {
		if s.ended[i].seq == seq {
			s.ended[i] = endedJob{}
		}
	}
}

// name identifies the session's worker in job records: its client id, or
// its address.
func (s *Session) name() string {
	if s.clientID != "" && s.clientID != "-" {
		return s.clientID
	}
	return s.addr
}

type ability struct {
	fn      *function
	timeout time.Duration // 0 = none
	// lease: timeout is the lease of an HTTP worker, not a CAN_DO_TIMEOUT
	// (see Broker.CanDoLease).
	lease bool
}

// ID returns the session's number, unique within the broker.
func (s *Session) ID() uint64 { return s.id }

func (s *Session) ability(fn *function) (ability, bool) {
	for _, a := range s.abilities {
		if a.fn == fn {
			return a, true
		}
	}
	return ability{}, false
}

// removeUnordered removes x from list, moving the last element into its
// place, and clears the freed slot so that it holds no pointer.
func removeUnordered[T comparable](list []T, x T) []T {
	i := slices.Index(list, x)
	if i < 0 {
		return list
	}
	last := len(list) - 1
	list[i] = list[last]
	var zero T
	list[last] = zero
	return list[:last]
}
