package broker

import (
	"fmt"
	"log/slog"
	"time"
)

// CanDo registers the session as a worker for a function. timeout > 0 (from
// CAN_DO_TIMEOUT) fails a job the worker holds longer than that, as the
// protocol says (see timeoutLocked). It fails, registering nothing, for a
// session that has registered Config.MaxWorkerFunctions functions
// (ErrTooManyWorkerFunctions) or a new function beyond
// Config.MaxFunctions (ErrTooManyFunctions).
func (b *Broker) CanDo(s *Session, name []byte, timeout time.Duration) error {
	return b.canDo(s, name, timeout, false)
}

// CanDoLease registers the session as a worker for a function that holds
// each job under a lease (an HTTP worker): a worker that holds a job longer
// than lease is taken as gone, and the job goes back to the front of its
// queue, counted against Config.JobRetries, as for a worker that
// disconnected. It fails as CanDo does.
func (b *Broker) CanDoLease(s *Session, name []byte, lease time.Duration) error {
	return b.canDo(s, name, lease, true)
}

func (b *Broker) canDo(s *Session, name []byte, timeout time.Duration, lease bool) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if f := b.functions[string(name)]; f != nil {
		for i := range s.abilities {
			if s.abilities[i].fn == f {
				s.abilities[i].timeout = timeout
				s.abilities[i].lease = lease
				return nil
			}
		}
	}
	if limit := b.cfg.MaxWorkerFunctions; limit > 0 && len(s.abilities) >= limit {
		b.canDoRefused++
		return fmt.Errorf("%w: a connection may register %d functions (--max-worker-functions)",
			ErrTooManyWorkerFunctions, limit)
	}
	f, err := b.admitFunctionLocked(name)
	if err != nil {
		b.canDoRefused++
		return err
	}
	s.abilities = append(s.abilities, ability{fn: f, timeout: timeout, lease: lease})
	f.workers++
	b.mode.wantWorkLocked(s)
	if s.sleeping && !s.noopSent {
		f.addSleeper(s)
		if b.hasWorkLocked(f) {
			f.wakeOne()
		}
	}
	return nil
}

// CantDo unregisters one function.
func (b *Broker) CantDo(s *Session, name []byte) {
	b.mu.Lock()
	defer b.mu.Unlock()
	f := b.functions[string(name)]
	if f == nil {
		return
	}
	for i, a := range s.abilities {
		if a.fn == f {
			s.abilities = append(s.abilities[:i], s.abilities[i+1:]...)
			if f.workers--; f.workers == 0 {
				b.mayIdleLocked(f)
			}
			return
		}
	}
}

// ResetAbilities unregisters every function.
func (b *Broker) ResetAbilities(s *Session) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, a := range s.abilities {
		if a.fn.workers--; a.fn.workers == 0 {
			b.mayIdleLocked(a.fn)
		}
	}
	s.abilities = s.abilities[:0]
}

// PreSleep marks the worker asleep; it is sent NOOP when a job for one of
// its functions arrives, or at once if one is already waiting.
func (b *Broker) PreSleep(s *Session) {
	b.mu.Lock()
	defer b.mu.Unlock()
	s.sleepGen++
	s.sleeping = true
	s.noopSent = false
	b.mode.wantWorkLocked(s)
	if !b.draining {
		for _, a := range s.abilities {
			if b.hasWorkLocked(a.fn) {
				s.noopSent = true
				s.out.Send(Event{Kind: EventNoop})
				return
			}
		}
	}
	for _, a := range s.abilities {
		a.fn.addSleeper(s)
	}
}

// Assignment is a job handed to a worker.
type Assignment struct {
	Seq      uint64
	Function string
	// Unique is the unique as the client sent it ("-" for a payload hash).
	Unique  string
	Reducer string
	Payload []byte
}

// Grab hands the worker the next job: the highest priority first across all
// of its functions, round-robin among functions of equal priority. It
// reports false when there is none (or the server is draining). A payload
// kept on disk by tiering is read back without holding the lock.
func (b *Broker) Grab(s *Session) (Assignment, bool) {
	a, onDisk, ok := b.grab(s)
	if ok && onDisk {
		return b.grabTiered(s, a)
	}
	return a, ok
}

// grab assigns the next job; onDisk reports that its payload must still
// be read from the store. Only a job tiering admitted has its payload on
// disk: a new job's nil payload is an empty one, even while its first
// write is under way (dispatch before durable).
func (b *Broker) grab(s *Session) (a Assignment, onDisk, ok bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	defer b.mode.wantWorkLocked(s)
	s.sleeping = false
	s.noopSent = false
	if b.draining || b.stopped || len(s.abilities) == 0 {
		return Assignment{}, false, false
	}
	n := len(s.abilities)
	for p := range numPriorities {
		for i := range n {
			k := (s.rr + i) % n
			a := s.abilities[k]
			var j *job
			if a.fn.life == nil {
				j = a.fn.queues[p].popFront()
			} else {
				j = b.popLifeLocked(a.fn, Priority(p))
			}
			if j == nil {
				continue
			}
			s.rr = k + 1
			b.enterBurstLocked(s)
			b.assignLocked(s, j, a)
			b.leaveBurstLocked(s)
			return Assignment{
				Seq:      j.seq,
				Function: j.fn.name,
				Unique:   j.displayUnique(),
				Reducer:  j.reducer(),
				Payload:  j.payload,
			}, j.has(jobTiered) && j.payload == nil, true
		}
	}
	return Assignment{}, false, false
}

// resetProgressLocked forgets j's progress as its worker lets go of it,
// also in the shared store when it was written there.
func (b *Broker) resetProgressLocked(j *job) {
	j.x.num, j.x.den = 0, 0
	if j.has(jobProgress) {
		b.mode.progressResetLocked(j)
	}
}

func (b *Broker) assignLocked(s *Session, j *job, a ability) {
	x := b.extraLocked(j)
	b.setStateLocked(j, stateRunning)
	x.worker = s
	x.warning = ""
	s.forgetEnded(j.seq)
	b.resetProgressLocked(j)
	s.running = append(s.running, j)
	j.fn.running++
	b.running++
	b.batchStartedLocked(j)
	timeout := a.timeout
	if x.life != nil || j.fn.life != nil {
		timeout = b.startAttemptLocked(j, timeout)
	}
	x.leaseTimer = a.lease && timeout == a.timeout
	b.statStartedLocked(j)
	if timeout > 0 {
		b.addTimerLocked(j, nanosAfter(b.clock.Now().UnixNano(), timeout))
	}
}

// heldBy returns the job seq if s runs it.
func (b *Broker) heldBy(s *Session, seq uint64) *job {
	// A worker holds few jobs: looking through them is cheaper than the
	// job index, whose lookups miss the cache when the queue is deep.
	for _, j := range s.running {
		if j.seq == seq {
			if j.state != stateRunning || j.x.worker != s {
				return nil
			}
			return j
		}
	}
	return nil
}

// notHeldLocked returns the error of a work packet for job seq that s
// does not hold; o is the outcome of a final packet, 0 for an update
// (WORK_STATUS, WORK_DATA, WORK_WARNING):
//   - ErrJobCancelled when the job was cancelled while s ran it (a final
//     packet ends that);
//   - an error wrapping ErrJobTimedOut when s lost the job to its timeout
//     and still runs it: its late packets change nothing;
//   - nil for a final packet that repeats how s itself just ended the
//     job: WORK_FAIL after any end (Perl's Gearman::Worker and Node's
//     abraxas send it after WORK_EXCEPTION), or the same final packet
//     again. A different result (a WORK_COMPLETE after a failure)
//     contradicts the first and is not a repeat;
//   - ErrJobNotFound otherwise.
//
// Each of these errors matches ErrJobNotFound.
func (b *Broker) notHeldLocked(s *Session, seq uint64, o Outcome) error {
	if _, ok := s.cancelled[seq]; ok {
		if o != 0 {
			delete(s.cancelled, seq)
		}
		return ErrJobCancelled
	}
	if ended, ok := s.endedLast(seq); ok {
		switch {
		case ended == timedOut:
			return fmt.Errorf("job %s: %w", b.Handle(seq), ErrJobTimedOut)
		case o != 0 && (o == Fail || o == ended):
			return nil
		}
	}
	return ErrJobNotFound
}

func (b *Broker) forwardLocked(j *job, ev Event) {
	if j.has(jobCancelled) {
		return
	}
	b.notifyWatchersLocked(ev)
	for _, c := range j.x.clients {
		if ev.Kind == EventException && !c.exceptions {
			continue
		}
		c.out.Send(ev)
	}
}

// WorkStatus records and forwards a WORK_STATUS. For a job the session
// does not hold it returns the error of notHeldLocked.
func (b *Broker) WorkStatus(s *Session, seq uint64, num, den uint32) error {
	return b.WorkStatusText(s, seq, num, den, nil)
}

// WorkStatusText is WorkStatus with the text the worker sent for the two
// numbers ("numerator\x00denominator"), which the job's Gearman clients
// get as it is (as from gearmand, so that a fraction such as "33.3"/"100"
// reaches them whole), or nil when num and den say it all. The job keeps
// num and den for GET_STATUS.
func (b *Broker) WorkStatusText(s *Session, seq uint64, num, den uint32, text []byte) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	j := b.heldBy(s, seq)
	if j == nil {
		return b.notHeldLocked(s, seq, 0)
	}
	j.x.num, j.x.den = num, den
	b.mode.progressLocked(j)
	b.forwardLocked(j, Event{Kind: EventStatus, Seq: seq, Numerator: num, Denominator: den, Data: text})
	return nil
}

// WorkData forwards a WORK_DATA (warning=false) or WORK_WARNING. For a job
// the session does not hold it returns the error of notHeldLocked.
func (b *Broker) WorkData(s *Session, seq uint64, data []byte, warning bool) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	j := b.heldBy(s, seq)
	if j == nil {
		return b.notHeldLocked(s, seq, 0)
	}
	kind := EventData
	if warning {
		kind = EventWarning
		j.x.warning = errorText(data)
	}
	b.forwardLocked(j, Event{Kind: kind, Seq: seq, Data: data})
	return nil
}

// Outcome is how a worker finished a job.
type Outcome uint8

// The three final outcomes of a job.
const (
	Complete Outcome = iota + 1
	Fail
	Exception
)

// Finish ends a job the session holds, forwarding the result to every
// waiting client, and forgets the job. A final packet that repeats how the
// session itself just ended the job is accepted and changes nothing; one
// for a job the session does not hold gets the error of notHeldLocked
// (ErrJobCancelled, ErrJobTimedOut or ErrJobNotFound).
func (b *Broker) Finish(s *Session, seq uint64, o Outcome, data []byte) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	j := b.heldBy(s, seq)
	if j == nil {
		return b.notHeldLocked(s, seq, o)
	}
	if !j.has(jobCancelled) {
		s.noteEnded(seq, o)
	}
	var kind EventKind
	switch o {
	case Complete:
		kind = EventComplete
	case Exception:
		kind = EventException
		// gearmand sends a WORK_FAIL after the exception to clients that
		// did not ask for exceptions, so they still learn the outcome.
	default:
		kind = EventFail
	}
	if !j.has(jobCancelled) {
		for _, c := range j.x.clients {
			switch {
			case kind == EventException && !c.exceptions:
				c.out.Send(Event{Kind: EventFail, Seq: seq})
			default:
				c.out.Send(Event{Kind: kind, Seq: seq, Data: data})
			}
		}
	}
	removed := false
	clients := j.x.clients // unlinkLocked lets go of them; the extra's reuse keeps their room
	b.enterBurstLocked(s)
	defer b.leaveBurstLocked(s)
	b.finishObservedLocked(j, o, Event{Kind: kind, Seq: seq, Data: data}, func() {
		if o == Complete && j.x.life == nil && j.fn.life == nil {
			b.removeLocked(j)
			removed = true
			return
		}
		b.finishLifeLocked(j, o, data)
	})
	if removed {
		b.recycleExtraLocked(j, clients)
	}
	return nil
}

// maxSpareExtras bounds the extras kept for reuse (Broker.spareExtras):
// about as many as jobs run at once on a busy server.
const maxSpareExtras = 256

// maxSpareClients bounds the room for clients that a kept extra keeps
// (recycleExtraLocked): a foreground job mostly has one.
const maxSpareClients = 4

// extraLocked returns j's extra, giving j one that a finished job left
// (recycleExtraLocked) when it has none: a job that starts to run, or a
// foreground job as it is submitted.
func (b *Broker) extraLocked(j *job) *jobExtra {
	if j.x != nil {
		return j.x
	}
	if n := len(b.spareExtras); n > 0 {
		j.x = b.spareExtras[n-1]
		b.spareExtras[n-1] = nil
		b.spareExtras = b.spareExtras[:n-1]
		return j.x
	}
	return j.extra()
}

// recycleExtraLocked keeps the extra of j, a job its worker completed and
// removeLocked took out of every index, for the next job that starts or
// foreground job submitted, so that running a job allocates nothing but
// the job. clients are the job's clients as they were before removeLocked
// let go of them: nothing else holds that slice, and the extra keeps its
// room (at most maxSpareClients) for the next job's clients. Only without
// a store: then nothing but the caller still holds j (with a store, a
// write queued before the job ended may still read it; in shared mode a
// round may).
func (b *Broker) recycleExtraLocked(j *job, clients []*Session) {
	x := j.x
	if x == nil || b.store != nil || j.state != stateGone || x.life != nil ||
		len(b.spareExtras) >= maxSpareExtras {
		return
	}
	j.x = nil
	*x = *newExtra()
	if cap(clients) <= maxSpareClients {
		clear(clients)
		x.clients = clients[:0]
	}
	b.spareExtras = append(b.spareExtras, x)
}

// requeueLocked takes a running job back from its worker (disconnect or
// timeout). It goes to the front of its queue, or fails when it has used up
// its retries.
//
// A run that the server ends as it stops (Stopping: its sessions close)
// is no failure of its worker: as after a crash, the job runs again after
// a restart, and the interrupted run uses neither an attempt of its policy
// nor a retry of --job-retries.
func (b *Broker) requeueLocked(j *job, why string) {
	x := j.x
	w := x.worker
	b.releaseWorkerLocked(j)
	stopping := b.closeReason != "" && why == b.closeReason
	if !stopping {
		j.retries++
	}
	if j.has(jobCancelled) || (!j.background && len(x.clients) == 0) {
		b.recordEndLocked(j, jobEnd{state: FinalCancelled, cancelledBy: "every client left"})
		b.setStateLocked(j, stateQueued) // for removeLocked's bookkeeping
		j.fn.queues[j.priority].pushFront(j)
		b.removeLocked(j)
		return
	}
	if !stopping && b.takebackLifeLocked(j, why, w.name()) {
		return
	}
	if limit := b.cfg.JobRetries; !stopping && limit > 0 && int(j.retries) >= limit {
		b.log.Warn("broker: dropped job after too many retries",
			slog.String("handle", b.Handle(j.seq)), slog.String("function", j.fn.name),
			slog.Int("retries", int(j.retries)), slog.String("reason", why))
		j.failClients()
		if j.background {
			// Kept as a dead letter (gearmand drops it).
			b.deadLocked(j, b.clock.Now().UnixNano())
			return
		}
		// Its run is in its history already (takebackLifeLocked), with
		// the outcome and error every view names it by.
		b.recordEndLocked(j, jobEnd{state: FinalFailed, worker: w.name(), started: x.started})
		b.setStateLocked(j, stateQueued)
		j.fn.queues[j.priority].pushFront(j)
		b.removeLocked(j)
		return
	}
	b.log.Info("broker: job taken back", slog.String("handle", b.Handle(j.seq)),
		slog.String("reason", why), slog.Int("retries", int(j.retries)))
	b.setStateLocked(j, stateQueued)
	j.fn.queues[j.priority].pushFront(j)
	j.fn.counters.Retried++
	j.fn.wakeOne()
	if j.background && b.store != nil && j.saveState() != saveQueued {
		b.pendingRetries = append(b.pendingRetries, b.record(j))
		b.kickCommitter()
	}
	if !stopping {
		b.retryWatchersLocked(j, nil)
	}
}
