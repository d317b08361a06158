package broker

import (
	"context"
	"slices"
	"time"

	"github.com/gearwork/gearwork/internal/store"
)

// This file lets a session observe jobs it did not submit in the foreground:
// a watcher receives a job's work updates (data, warning, status) and its
// final event (complete, fail, exception) exactly as a waiting client does,
// without becoming one — a watched background job stays background, and a
// watched foreground job is still dropped when its last client leaves (the
// watchers then receive EventFail).

// JobSnapshot describes a live job at one moment.
type JobSnapshot struct {
	Seq      uint64
	Function string
	// Unique is the unique as the client sent it ("-" for a payload hash);
	// empty when the job has none.
	Unique   string
	Priority Priority
	// State is "pending" (waiting to be stored), "scheduled", "queued" or
	// "running".
	State      string
	Background bool
	// RunAt is the Unix time in seconds at which a scheduled job becomes
	// runnable; 0 means at once.
	RunAt int64
	// Numerator and Denominator are the last WORK_STATUS of a running job.
	Numerator, Denominator uint32
	// Retries counts how often the job was taken back from a worker.
	Retries uint32
	// Waiting counts clients waiting for the job's result.
	Waiting int
	// Cancelled is set for a running job whose result will be dropped.
	Cancelled bool
	// Submitted is when the job was accepted (zero for jobs replayed from
	// a local store; in shared mode the time the store's row was made).
	Submitted time.Time
	// Started is when the current worker took a running job.
	Started time.Time
	// Attempts counts finished runs under a lifecycle policy (0 without
	// one); MaxAttempts is the job's own limit (0: the function's policy,
	// -1: unlimited). LastError is the last failure ("failed" or the
	// run's last warning, "timed out", "worker vanished", "lease ran out",
	// or exception data).
	Attempts    uint32
	MaxAttempts int
	LastError   string
	// OrderingKey is the job's ordered queue, if any.
	OrderingKey string
	// RetryAt is when a job in "retry-wait" runs again.
	RetryAt time.Time
	// Result is a "done" job's retained WORK_COMPLETE data; Finished is
	// when a "done" or "dead" job ended.
	Result   []byte
	Finished time.Time

	// Final is set on the record of a job that ended: State is then one
	// of FinalComplete, FinalFailed, FinalException, FinalCancelled or
	// FinalDead and never changes again.
	Final bool
	// History lists the job's attempts, oldest first (at most
	// store.MaxHistory): the worker, start, end, outcome and error text of
	// each.
	History []store.Attempt
	// ResultTruncated is set when Result was cut to HistoryResultCap.
	ResultTruncated bool
	// PayloadPreview is the start of the payload of a job that ended (at
	// most PayloadPreviewCap bytes); PayloadSize its full length.
	PayloadPreview []byte
	PayloadSize    int
	// payloadOnDisk: the job's payload was on disk only when it ended
	// (histRec.payloadOnDisk).
	payloadOnDisk bool
	// Payload is the whole payload of a failed, exception or dead job's
	// record when it is at most RetryPayloadCap bytes (nil otherwise):
	// what RetryJob submits again. It must not be modified.
	Payload []byte
	// RetryOf is the job that this one runs again (RetryJob); 0 for
	// others. It is kept with the live job in memory and then in its
	// record, not in the store's job: a job replayed after a restart, and
	// in shared mode every job (it runs from its row), has none.
	RetryOf uint64
	// Batch is the batch the job belongs to (0: none).
	Batch uint64
	// After lists the jobs a waiting job still waits for (SubmitParams.After
	// less those that ended), as this server holds it.
	After []uint64
	// CancelledBy says who cancelled a cancelled job, CancelledAt when.
	CancelledBy string
	CancelledAt time.Time
	// Cursor continues a ListJobs listing after this record; empty
	// outside one.
	Cursor string
	// Unstored is set on the record of a job that ended (Final) answered
	// from memory before it was on disk: its write failed, or did not
	// finish within Config.RecordReadWait (JobNow and the tests' listings
	// do not wait at all). A crash may still take it back and run the job
	// again.
	Unstored bool
}

// Job returns the record of job seq: a live job as it is now, or the
// final record of a job that ended (Final is set) while its function's
// history keeps it, or a dead letter or retained result (state "dead" or
// "complete"). It reports false if there is none (it never existed, or
// its record expired, or ctx ended before the store answered). Safe for
// concurrent use.
//
// A record that still waits for its write (or is being written) is made
// durable first: it says the job ended for good, which a crash must not
// take back by queueing the job again. While the store refuses writes, or
// when the write does not finish within Config.RecordReadWait, it is
// answered from memory, marked Unstored.
func (b *Broker) Job(ctx context.Context, seq uint64) (JobSnapshot, bool) {
	return b.job(ctx, seq, true)
}

// JobNow is Job for an answer that shows a job's state in passing, as the
// answer to a submit does: a record that waits for its write is answered
// from memory, without waiting for the write.
func (b *Broker) JobNow(ctx context.Context, seq uint64) (JobSnapshot, bool) {
	return b.job(ctx, seq, false)
}

// recordsDurable waits, at most Config.RecordReadWait, until the records
// waiting for their write are on disk (Durable), for a lookup or listing
// that would answer one: a read must not hang while the store does. It
// reports whether they are.
func (b *Broker) recordsDurable(ctx context.Context) bool {
	ctx, cancel := context.WithTimeout(ctx, b.cfg.RecordReadWait)
	defer cancel()
	return b.Durable(ctx) == nil
}

// job is Job, which makes a record durable before it answers it when
// durable is set.
func (b *Broker) job(ctx context.Context, seq uint64, durable bool) (JobSnapshot, bool) {
	// A live job answers itself; one that ended answers its record, the
	// same wherever it is read (ListJobs too). A dead letter or retained
	// result answers only when no record is kept. A record leaves memory
	// only once it is in the store: look there second.
	snap, live, ok := b.jobInMemory(seq)
	if durable && live && snap.Final && b.records != nil && b.recordUnwritten(seq) && b.recordsDurable(ctx) {
		if s, l, o := b.jobInMemory(seq); l || o {
			snap, live, ok = s, l, o
		} else {
			live = false // written: read from the store below
		}
	}
	if live || b.records == nil {
		if live && snap.Final && b.records != nil {
			// Still in memory: the record is not on disk yet.
			snap.Unstored = true
		}
		return snap, ok
	}
	if rec, found := b.storedRecord(ctx, seq); found {
		return rec, true
	}
	return snap, ok
}

// Live reports whether job seq is live on this server (queued, scheduled,
// running, ...): not ended, not a dead letter. It reads memory only, so it
// costs no store read where Job would answer a record. Safe for
// concurrent use.
func (b *Broker) Live(seq uint64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	j := b.jobs.get(seq)
	return j != nil && j.state != stateGone && j.state != stateDead && j.state != stateDone
}

// jobInMemory returns the snapshot of job seq from memory: live reports a
// live job or a record (final); otherwise ok reports a dead letter or
// retained result, whose record may be in the store.
func (b *Broker) jobInMemory(seq uint64) (snap JobSnapshot, live, ok bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	j := b.jobs.get(seq)
	if j == nil {
		if snap, ok := b.historyLocked(seq); ok {
			return snap, true, true
		}
		j = b.life.dead[seq]
		if j == nil {
			j = b.life.done[seq]
		}
		if j == nil || j.state == stateGone {
			return JobSnapshot{}, false, false
		}
		return b.snapshotLocked(j), false, true
	}
	if j.state == stateGone {
		return JobSnapshot{}, false, false
	}
	return b.snapshotLocked(j), true, true
}

func (b *Broker) snapshotLocked(j *job) JobSnapshot {
	snap := JobSnapshot{Seq: j.seq, Function: j.fn.name, Unique: j.displayUnique(), Priority: j.priority,
		State: j.state.String(), Background: j.background, Retries: j.retries, Cancelled: j.has(jobCancelled),
		RunAt: j.runAt()}
	if j.submitted != 0 {
		snap.Submitted = time.Unix(0, j.submitted)
	}
	if x := j.x; x != nil {
		snap.Numerator, snap.Denominator = x.num, x.den
		snap.RetryOf = x.retryOf
		snap.Waiting = len(x.clients)
		if x.batch != nil {
			snap.Batch = x.batch.id
		}
		if len(x.after) > 0 {
			snap.After = slices.Clone(x.after)
		}
		if j.state == stateRunning && x.started != 0 {
			snap.Started = time.Unix(0, x.started)
		}
		if l := x.life; l != nil {
			snap.Attempts, snap.MaxAttempts, snap.LastError, snap.OrderingKey = l.attempts, int(l.maxAttempts), l.lastErr, l.orderKey
			if j.state == stateRetryWait && l.notBefore != 0 {
				snap.RetryAt = time.Unix(0, l.notBefore)
			}
			snap.History = slices.Clone(l.history)
			if j.state == stateDone {
				snap.State, snap.Final = FinalComplete, true
				snap.Result = l.result
			}
			if j.state == stateDead {
				snap.Final = true
			}
			if (j.state == stateDone || j.state == stateDead) && l.finishedAt != 0 {
				snap.Finished = time.Unix(0, l.finishedAt)
			}
		}
	}
	return snap
}

// Watch makes s receive the work updates and the final event of job seq
// through its Outbox, and returns the job's snapshot at that moment (so no
// update is lost between the two). It reports false if the job is not live.
// Watching a job twice is the same as watching it once. The watch ends by
// itself after the final event, with Unwatch, or when s is closed.
func (b *Broker) Watch(s *Session, seq uint64) (JobSnapshot, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	j := b.jobs.get(seq)
	if j == nil || j.state == stateGone || s.closed {
		return JobSnapshot{}, false
	}
	b.watchLocked(s, j)
	return b.snapshotLocked(j), true
}

// Unwatch ends s's watch of job seq. Unwatching a job that is not watched
// is a no-op.
func (b *Broker) Unwatch(s *Session, seq uint64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.unwatchLocked(s, seq)
}

// SubmitWatched is Submit followed by Watch, atomically: s receives every
// update of the job from its creation (or, when the submit attaches to a
// live job, from that moment). It is how a front end waits for a
// background job's result. watching is called, with the broker's lock
// held, once the watch is in place and before any update is sent to s,
// with the job's sequence number and whether the submit created it; it is
// not called when the submit fails before there is a job, or attaches to a
// retained result. done is called as for Submit, possibly later: with a
// local store a job runs while it is written, and done waits for the
// write. An Outbox of s that is a PlacedOutbox is then given the job as
// the submit left it (the job it created as it was placed: queued,
// blocked, scheduled, waiting...; or the live job it joined as it is),
// before any update of it.
func (b *Broker) SubmitWatched(s *Session, p SubmitParams, watching func(seq uint64, created bool), done DoneFunc) {
	b.lockSubmit(&p)
	defer b.mu.Unlock()
	watched, seen := false, uint64(0)
	p.watch = func(j *job, created bool) {
		watched, seen = true, j.seq
		if !s.closed {
			b.watchLocked(s, j)
		}
		watching(j.seq, created)
	}
	defer func() {
		// The job was placed (or joined) by the submit, under this hold
		// of the lock.
		if watched {
			b.placedLocked(s, seen)
		}
	}()
	if b.mode.watchesAfterInsert() {
		// In shared mode a job that waits for its insert gets its handle
		// from it, and is handed out only after done: watch it then. A job
		// handed out before its insert is watched from the submit, and
		// watched again when its insert made it another job (it coalesced
		// with one: settleEarlyLocked moved the watch).
		b.submitLocked(s, p, func(seq uint64, created bool, err error) {
			if err == nil && (!watched || seen != seq) && !s.closed {
				if j := b.jobs.get(seq); j != nil && j.state != stateGone {
					b.watchLocked(s, j)
					watching(seq, created)
					b.placedLocked(s, seq)
				}
			}
			done(seq, created, err)
		})
		return
	}
	b.submitLocked(s, p, done)
}

// PlacedOutbox is an optional capability of the Outbox of a session that
// submits with SubmitWatched: Placed is given the job as the submit left
// it (created and placed, or joined), before any update of it. Like Send, it runs
// with the broker's lock held.
type PlacedOutbox interface {
	Placed(job JobSnapshot)
}

// placedLocked gives s's PlacedOutbox, if it has one, job seq as it is.
func (b *Broker) placedLocked(s *Session, seq uint64) {
	o, ok := s.out.(PlacedOutbox)
	if !ok || s.closed {
		return
	}
	if j := b.jobs.get(seq); j != nil && j.state != stateGone {
		o.Placed(b.snapshotLocked(j))
	}
}

// moveWatchersLocked hands the watchers of job from to job to (a job
// handed out before its insert that became, or joined, another).
func (b *Broker) moveWatchersLocked(from, to uint64) {
	for _, w := range b.watchers[from] {
		delete(w.watching, from)
		if t := b.jobs.get(to); t != nil {
			b.watchLocked(w, t)
		}
	}
	delete(b.watchers, from)
}

// dropWatchersLocked ends the watches of job seq without an event: the job
// goes on elsewhere.
func (b *Broker) dropWatchersLocked(seq uint64) {
	for _, w := range b.watchers[seq] {
		delete(w.watching, seq)
	}
	delete(b.watchers, seq)
}

func (b *Broker) watchLocked(s *Session, j *job) {
	if b.watchers == nil {
		b.watchers = make(map[uint64][]*Session)
	}
	for _, w := range b.watchers[j.seq] {
		if w == s {
			return
		}
	}
	b.watchers[j.seq] = append(b.watchers[j.seq], s)
	if s.watching == nil {
		s.watching = make(map[uint64]struct{})
	}
	s.watching[j.seq] = struct{}{}
}

func (b *Broker) unwatchLocked(s *Session, seq uint64) {
	if _, ok := s.watching[seq]; !ok {
		return
	}
	delete(s.watching, seq)
	ws := removeUnordered(b.watchers[seq], s)
	if len(ws) == 0 {
		delete(b.watchers, seq)
	} else {
		b.watchers[seq] = ws
	}
}

// unwatchAllLocked ends every watch of a closing session.
func (b *Broker) unwatchAllLocked(s *Session) {
	for seq := range s.watching {
		b.unwatchLocked(s, seq)
	}
}

// notifyWatchersLocked sends ev to the watchers of job ev.Seq. A final
// event (complete, fail, exception) ends their watch.
func (b *Broker) notifyWatchersLocked(ev Event) {
	ws := b.watchers[ev.Seq]
	if len(ws) == 0 {
		return
	}
	final := ev.Kind == EventComplete || ev.Kind == EventFail || ev.Kind == EventException
	for _, w := range ws {
		w.out.Send(ev)
		if final {
			delete(w.watching, ev.Seq)
		}
	}
	if final {
		clear(ws)
		delete(b.watchers, ev.Seq)
	}
}

// finishObservedLocked runs end, which takes a job a worker finished out of
// its worker's hands (done, retained, retrying or dead), and tells the
// job's watchers: the final event, or EventRetry when the job will run
// again (their watch then goes on).
func (b *Broker) finishObservedLocked(j *job, o Outcome, ev Event, end func()) {
	cancelled := j.has(jobCancelled)
	if !cancelled {
		j.flags |= jobFinished
		b.statFinishedLocked(j, o)
	}
	var worker, warning string
	var started int64
	if x := j.x; x != nil {
		started, warning = x.started, x.warning
		if x.worker != nil {
			worker = x.worker.name()
		}
	}
	ws := b.watchers[j.seq]
	delete(b.watchers, j.seq)
	end()
	if !b.jobs.holds(j) {
		// It ended (a dead job was recorded as such already).
		e := jobEnd{worker: worker, started: started}
		switch o {
		case Complete:
			e.state, e.outcome, e.result = FinalComplete, outcomeComplete, nonNilBytes(ev.Data)
		case Exception:
			e.state, e.outcome, e.errText, e.result = FinalException, outcomeException, errorText(ev.Data), nonNilBytes(ev.Data)
		default:
			e.state, e.outcome, e.errText = FinalFailed, outcomeFailed, warning
		}
		if e.errText == "" && o != Complete {
			// A run that said nothing of why it ended is named by its
			// outcome, as an attempt under a lifecycle policy is
			// (endAttemptLocked): a foreground WORK_FAIL is "failed"
			// as a background job's is.
			e.errText = e.outcome
		}
		b.recordEndLocked(j, e)
	}
	if len(ws) == 0 {
		return
	}
	if b.jobs.holds(j) && j.state != stateGone {
		// Still live: the failed attempt will be retried.
		j.flags &^= jobFinished
		b.watchers[j.seq] = ws
		b.retryWatchersLocked(j, ev.Data)
		return
	}
	if cancelled {
		ev = Event{Kind: EventFail, Seq: j.seq}
	}
	for _, w := range ws {
		w.out.Send(ev)
		delete(w.watching, j.seq)
	}
}

// RetryOutbox is an optional capability of a watcher's Outbox (Watch):
// its SendRetry is given the EventRetry of a job whose run ended without
// a result (a failure, an exception, a timeout, a worker that vanished)
// and that will run again, with the job as it is then: its state
// (retry-wait, or queued when it runs again at once), attempts, last
// error, when it runs again and its history, which say why the run ended
// and what comes next. Like Send, it runs with the broker's lock held.
type RetryOutbox interface {
	SendRetry(ev Event, job JobSnapshot)
}

// retryWatchersLocked tells the watchers of j, which will run again after
// a run that ended without a result, that it will: EventRetry, with the
// exception data if any.
func (b *Broker) retryWatchersLocked(j *job, data []byte) {
	ws := b.watchers[j.seq]
	if len(ws) == 0 {
		return
	}
	ev := Event{Kind: EventRetry, Seq: j.seq, Data: data}
	var snap *JobSnapshot
	for _, w := range ws {
		r, ok := w.out.(RetryOutbox)
		if !ok {
			w.out.Send(ev)
			continue
		}
		if snap == nil {
			s := b.snapshotLocked(j)
			snap = &s
		}
		r.SendRetry(ev, *snap)
	}
}

// endWatchLocked tells the remaining watchers of a job that is leaving the
// broker without a result (dropped, cancelled, out of retries) that it
// failed.
func (b *Broker) endWatchLocked(j *job) {
	if len(b.watchers) > 0 {
		b.notifyWatchersLocked(Event{Kind: EventFail, Seq: j.seq})
	}
}
