package broker

import (
	"cmp"
	"context"
	"slices"
	"time"
	"unsafe"

	"github.com/gearwork/gearwork/internal/store"
)

// This file keeps the record of a job after it ended: its history entry.
// A live job answers Job from itself; once it ends (complete, failed,
// exception, cancelled or dead) its final record is kept here and never
// changes. Records are kept per function for Policy.History and at most
// Policy.HistoryMax of them, the oldest going first. Expiry by count
// happens as records are added; expiry by age runs from ExpireHistory,
// which the history goroutine calls every second and which holds the
// broker's lock for a bounded batch at a time, so dispatch never waits
// long for it. Across functions the memory the kept records take is
// bounded too (Config.MaxRecordBytes): every kept record is also on one
// list in the order the jobs ended, and past the bound the oldest on it
// goes (boundRecordsLocked), whatever its function.

// The final states of a job record.
const (
	FinalComplete  = "complete"
	FinalFailed    = "failed"
	FinalException = "exception"
	FinalCancelled = "cancelled"
	FinalDead      = "dead"
)

const (
	// HistoryResultCap is the most result bytes a job record keeps; a
	// longer result is cut to it and the record says ResultTruncated.
	HistoryResultCap = 4 << 10
	// PayloadPreviewCap is the most payload bytes a finished job's record
	// keeps (PayloadPreview); PayloadSize says how long it was.
	PayloadPreviewCap = 256
	// RetryPayloadCap is the most payload bytes the record of a failed,
	// exception or dead job keeps whole, so that RetryJob can submit the
	// job again; the record of a longer payload keeps only its preview.
	RetryPayloadCap = 16 << 10
	// DefaultHistory and DefaultHistoryMax are how long and how many
	// finished job records a function keeps when its policy says 0.
	DefaultHistory    = 24 * time.Hour
	DefaultHistoryMax = 10000
	// expireBatch is the most records ExpireHistory removes per hold of
	// the broker's lock.
	expireBatch = 1024
)

// histRec is the final record of a job that ended. It never changes once
// added. It is kept small (about 210 bytes): every ended job has one, and
// what only some records need lives in x. Guarded by Broker.mu.
type histRec struct {
	seq uint64
	// order is the position of the record in the order jobs ended; it
	// orders listings and their cursors.
	order  uint64
	fn     *fnHistory
	unique string
	// payload is the first PayloadPreviewCap bytes, or the whole payload
	// when payloadWhole.
	payload []byte
	result  []byte // at most HistoryResultCap bytes
	lastErr string
	// worker ran the only run of a job without lifecycle state (its
	// attempt is made up from the record; see snapshot).
	worker     string
	x          *histExtra
	submitted  int64
	started    int64
	finished   int64
	payloadLen uint32
	retries    uint32
	nAttempts  uint32
	priority   Priority
	state      finalState
	hasResult  bool
	truncated  bool
	// ran: the record has a made-up attempt (see worker).
	ran bool
	// payloadWhole: payload is the whole payload (retryable records).
	payloadWhole bool
	// payloadOnDisk: the job's payload was on disk only (tiering) when it
	// ended; the committer reads it back for the record (tierFillRecord).
	payloadOnDisk bool
	// foreground: the job was submitted in the foreground (a flag here
	// rather than in x: it costs the record no room).
	foreground bool
	// stage is where a record on its way to the store is (recordQueue);
	// dropped marks one that lookups no longer find there (forgotten, or
	// the store has it). The committer writes a record without reading
	// dropped, which may be set meanwhile.
	stage   uint8
	dropped bool
	// size is what the record counts against Config.MaxRecordBytes
	// (recordSize), set when it is kept.
	size uint32
	// prev and next link the records kept in memory in the order their
	// jobs ended, across functions (historyState.oldest).
	prev, next *histRec
	// slab is the block the record was taken from (nil: allocated alone).
	slab *recSlab
}

// recSlab counts the slots of a block of records (historyState.slab) that
// are in use or not yet handed out: the block's memory counts against
// Config.MaxRecordBytes until none is, as it is held until then.
type recSlab struct{ used int }

// slabBytes is the memory of one block of records.
const slabBytes = slabSize * int64(unsafe.Sizeof(histRec{}))

// recordSize is the memory record r holds beyond its struct: its
// payload, result, texts and extra, and its slots in the indexes.
func recordSize(r *histRec) int64 {
	n := int64(cap(r.payload)+cap(r.result)+len(r.unique)+len(r.lastErr)+len(r.worker)) + 2*int64(unsafe.Sizeof(r))
	if x := r.x; x != nil {
		n += int64(unsafe.Sizeof(*x)) + int64(len(x.cancelledBy)+len(x.orderKey)+len(x.outcome))
		for _, a := range x.attempts {
			n += int64(unsafe.Sizeof(a)) + int64(len(a.Outcome)+len(a.Error)+len(a.Worker))
		}
	}
	return n
}

// histExtra is what only some records have.
type histExtra struct {
	// attempts are the attempts of a job with lifecycle state.
	attempts    []store.Attempt
	cancelledBy string
	cancelledAt int64
	orderKey    string
	maxAttempts int32
	// outcome is the made-up attempt's outcome when it is not the
	// record's state (a takeback's reason).
	outcome string
	// retryOf is the job that this one runs again (RetryJob).
	retryOf uint64
	// batch is the batch the job belonged to.
	batch uint64
}

// finalState is a record's state, one of FinalStates.
type finalState uint8

const (
	finalComplete finalState = iota
	finalFailed
	finalException
	finalCancelled
	finalDead
)

func (f finalState) String() string { return FinalStates[f] }

func parseFinal(s string) finalState {
	for i, n := range FinalStates {
		if n == s {
			return finalState(i)
		}
	}
	panic("broker: unknown final state " + s)
}

// ext returns r's extra, allocating it.
func (r *histRec) ext() *histExtra {
	if r.x == nil {
		r.x = &histExtra{}
	}
	return r.x
}

// fnHistory is the history of one function: records in the order their
// jobs ended, recs[head:] being kept.
type fnHistory struct {
	name string
	recs []*histRec
	head int
	// counts counts the kept records by state.
	counts [finalDead + 1]int
}

// slabSize is how many records are allocated at once.
const slabSize = 128

// newRecLocked returns a zero record for a history kept in memory, from
// the current block of records: one allocation per slabSize records keeps
// recording off the allocator's hot path. The block is one for every
// function, so that a function with few records does not hold a block of
// its own, and records taken in the order jobs end are mostly forgotten
// in that order too, letting whole blocks go.
func (h *historyState) newRecLocked() *histRec {
	if len(h.slab) == 0 {
		h.slab = make([]histRec, slabSize)
		h.slabOf = &recSlab{used: slabSize}
		h.bytes += slabBytes
	}
	r := &h.slab[0]
	r.slab = h.slabOf
	if len(h.slab) == 1 {
		h.slab, h.slabOf = nil, nil
	} else {
		h.slab = h.slab[1:]
	}
	return r
}

// freeRecLocked clears r, a record no longer kept nor reused, and lets
// its slot go.
func (h *historyState) freeRecLocked(r *histRec) {
	if s := r.slab; s != nil {
		if s.used--; s.used == 0 {
			h.bytes -= slabBytes
		}
	}
	*r = histRec{}
}

// historyState is the broker's job history. Guarded by Broker.mu. With
// a store that keeps records (Broker.records), the records live there and
// in recordQueue until written; fns then only gives each function's
// records their name (and slab), and expiry lets an empty one go.
type historyState struct {
	// bySeq finds a kept record by its job. Records are made in about
	// the order of their Seqs, so its pages stay dense (seqIndex).
	bySeq seqIndex[histRec]
	fns   map[string]*fnHistory
	order uint64
	// lastEnd is the end time of the latest record made (recordEndLocked).
	lastEnd int64
	// oldest and newest are the ends of the list of the records kept in
	// memory (histRec.prev, next), in the order their jobs ended.
	oldest, newest *histRec
	// bytes is the memory the records take (Config.MaxRecordBytes): the
	// size of each kept record and the blocks holding them.
	bytes int64
	// evicted counts the records forgotten for Config.MaxRecordBytes.
	evicted uint64
	// slab is what is left of the current block of records, slabOf its
	// count (newRecLocked).
	slab   []histRec
	slabOf *recSlab
}

// link adds r, just kept, to the newest end of the list of kept records.
func (h *historyState) link(r *histRec) {
	r.prev, r.next = h.newest, nil
	if h.newest != nil {
		h.newest.next = r
	} else {
		h.oldest = r
	}
	h.newest = r
	h.bytes += int64(r.size)
}

// unlink takes r, no longer kept, off the list of kept records.
func (h *historyState) unlink(r *histRec) {
	if r.prev != nil {
		r.prev.next = r.next
	} else {
		h.oldest = r.next
	}
	if r.next != nil {
		r.next.prev = r.prev
	} else {
		h.newest = r.prev
	}
	r.prev, r.next = nil, nil
	h.bytes -= int64(r.size)
}

// historyLimits returns how long and how many records the function keeps;
// a zero age or count keeps none.
func (p Policy) historyLimits() (time.Duration, int) {
	age, n := p.History, p.HistoryMax
	switch {
	case age == 0:
		age = DefaultHistory
	case age < 0:
		age = 0
	}
	switch {
	case n == 0:
		n = DefaultHistoryMax
	case n < 0:
		n = 0
	}
	return age, n
}

// jobEnd describes how a job ended, for its record.
type jobEnd struct {
	state string
	// errText is the last error (the attempt's error text, or why the job
	// was dropped); result the WORK_COMPLETE data.
	errText string
	result  []byte
	// cancelledBy says who cancelled the job.
	cancelledBy string
	// worker and started describe the last run of a job without
	// lifecycle state (no attempts recorded); empty otherwise.
	worker  string
	started int64
	outcome string
}

// recordEndLocked keeps the final record of job j, which has just ended.
// A job's record is kept once (the first end wins: a cancelled job stays
// cancelled); a dead letter queued again loses its record
// (retryDeadLocked) and gets a new one when it ends again.
func (b *Broker) recordEndLocked(j *job, e jobEnd) {
	if j.has(jobRecorded) {
		return
	}
	j.flags |= jobRecorded
	if j.x != nil && j.x.batch != nil {
		b.mode.batchEndedLocked(j, e.state)
	}
	if b.dependents != nil {
		b.dependencyEndedLocked(j, e.state)
	}
	b.mode.dependencyEndedLocked(j, e.state)
	age, max := j.fn.histAge, j.fn.histMax
	if age <= 0 || max <= 0 {
		return
	}
	h := &b.hist
	// A record made as its job ends ends after the record made before
	// it (the clock a connection reads once per burst may lag another
	// connection's): a store's index, ordered by end time, then takes
	// each round's records in order. (A job with lifecycle state keeps
	// its last attempt's end, below.)
	now := b.holdNow()
	if now <= h.lastEnd {
		now = h.lastEnd + 1
	}
	h.lastEnd = now
	if h.fns == nil {
		h.bySeq = newSeqIndex[histRec]()
		h.fns = make(map[string]*fnHistory)
	}
	fh := j.fn.hist
	if fh == nil {
		if fh = h.fns[j.fn.name]; fh == nil {
			fh = &fnHistory{name: j.fn.name}
			h.fns[j.fn.name] = fh
		}
		j.fn.hist = fh
	}
	h.order++
	var r *histRec
	switch {
	case b.records != nil:
		if r = b.recq.reuse(); r == nil {
			r = new(histRec)
		}
	case fh.len() >= max:
		// At its count: the oldest goes, and the new record takes its
		// place in memory (nothing else holds a record kept in memory;
		// it is overwritten whole below, but for its block).
		r = b.takeOldestLocked(fh)
	}
	if r == nil {
		r = h.newRecLocked()
	}
	slab := r.slab
	*r = histRec{slab: slab, seq: j.seq, order: h.order, fn: fh, unique: j.displayUnique(), payloadLen: uint32(min(j.payloadSize(), 1<<32-1)),
		submitted: j.submitted, finished: now, retries: j.retries, priority: j.priority,
		state: parseFinal(e.state), lastErr: e.errText, payloadOnDisk: j.payloadOnDisk(), foreground: !j.background}
	r.payload = capped(j.payload, PayloadPreviewCap)
	if retryable(e.state) && len(j.payload) <= RetryPayloadCap && (j.payload != nil || !j.has(jobTiered)) {
		// Kept whole, so that RetryJob can submit it again. (A payload
		// on disk only, tiered out, is read back by the committer when
		// it writes the record to a store that keeps records,
		// tierFillRecord; until then, or without such a store, the
		// record says only its size, and RetryJob refuses it.)
		r.payload, r.payloadWhole = j.payload, true
	}
	if e.result != nil {
		r.hasResult = true
		r.result = capped(e.result, HistoryResultCap)
		r.truncated = len(e.result) > HistoryResultCap
	}
	if e.state == FinalCancelled {
		x := r.ext()
		x.cancelledBy, x.cancelledAt = e.cancelledBy, now
	}
	if x := j.x; x != nil {
		r.started = x.started
		if x.retryOf != 0 {
			r.ext().retryOf = x.retryOf
		}
		if x.batch != nil {
			r.ext().batch = x.batch.id
		}
		if l := x.life; l != nil {
			if len(l.history) > 0 || l.maxAttempts != 0 || l.orderKey != "" {
				rx := r.ext()
				rx.attempts = slices.Clone(l.history)
				rx.maxAttempts, rx.orderKey = l.maxAttempts, l.orderKey
			}
			r.nAttempts = l.attempts
			if r.lastErr == "" && e.state != FinalComplete {
				r.lastErr = l.lastErr
			}
			if l.finishedAt != 0 && e.state != FinalCancelled {
				r.finished = l.finishedAt
			}
		}
	}
	if (r.x == nil || len(r.x.attempts) == 0) && e.outcome != "" {
		// The only run of a job without lifecycle state.
		r.worker, r.started, r.ran = e.worker, e.started, true
		r.nAttempts = j.retries + 1
		if e.outcome != runOutcome(r.state) {
			r.ext().outcome = e.outcome
		}
	}
	r.size = uint32(min(recordSize(r), 1<<32-1))
	if b.records != nil {
		// The committer writes it and lets it go; the store applies
		// the history limits to the records it keeps.
		b.queueRecordLocked(r)
		return
	}
	h.bySeq.put(j.seq, r)
	fh.recs = append(fh.recs, r)
	fh.counts[r.state]++
	h.link(r)
	for fh.len() > max {
		b.popOldestLocked(fh)
	}
	b.boundRecordsLocked()
}

// boundRecordsLocked forgets the kept records that ended first, whatever
// their function, while their memory is above Config.MaxRecordBytes.
// Each costs O(1): the oldest kept record is the oldest of its function's.
func (b *Broker) boundRecordsLocked() {
	h := &b.hist
	most := b.cfg.MaxRecordBytes
	for most > 0 && h.bytes > most && h.oldest != nil {
		r := h.oldest
		if fh := r.fn; fh.len() > 0 && fh.recs[fh.head] == r {
			b.popOldestLocked(fh)
		} else {
			b.dropRecordLocked(r)
		}
		h.evicted++
	}
}

// capped returns b cut to at most n bytes, copied when cut so that the
// record does not pin a large buffer (b is not modified later: payloads
// and results are owned by their job).
func capped(b []byte, n int) []byte {
	if len(b) <= n {
		return b
	}
	return slices.Clone(b[:n])
}

// retryable reports whether a job that ended in state may run again
// (RetryJob): it did not succeed, and nobody cancelled it.
func retryable(state string) bool {
	return state == FinalFailed || state == FinalException || state == FinalDead
}

// runOutcome is the outcome of the run that ended a job in state f.
func runOutcome(f finalState) string {
	switch f {
	case finalComplete:
		return outcomeComplete
	case finalException:
		return outcomeException
	}
	return outcomeFailed
}

func (fh *fnHistory) len() int { return len(fh.recs) - fh.head }

// popOldestLocked forgets the oldest record of fh, if any.
func (b *Broker) popOldestLocked(fh *fnHistory) {
	if r := b.takeOldestLocked(fh); r != nil {
		b.hist.freeRecLocked(r) // its slab may outlive it: let go of what it holds
	}
}

// takeOldestLocked forgets the oldest record of fh and returns it as it
// was, for the caller to overwrite (nil if none is kept: the slot of a
// record dropped out of order).
func (b *Broker) takeOldestLocked(fh *fnHistory) *histRec {
	r := fh.recs[fh.head]
	fh.recs[fh.head] = nil
	fh.head++
	if r != nil {
		if b.hist.bySeq.get(r.seq) == r {
			b.hist.bySeq.delete(r.seq)
		}
		fh.counts[r.state]--
		b.hist.unlink(r)
	}
	fh.compact()
	return r
}

// compact gives the slots of forgotten records back once they are half of
// the slice.
func (fh *fnHistory) compact() {
	if fh.head > 64 && fh.head >= len(fh.recs)/2 {
		n := copy(fh.recs, fh.recs[fh.head:])
		clear(fh.recs[n:])
		fh.recs = fh.recs[:n]
		fh.head = 0
	}
}

// dropRecordLocked forgets one record out of order (its dead letter was
// queued again, or ForgetRecord): it is taken out of its function's list.
func (b *Broker) dropRecordLocked(r *histRec) {
	b.hist.bySeq.delete(r.seq)
	fh := r.fn
	i, ok := slices.BinarySearchFunc(fh.recs[fh.head:], r.order, func(x *histRec, o uint64) int {
		return cmp.Compare(x.order, o)
	})
	switch {
	case ok && i == 0:
		// The oldest: no move of the others.
		fh.recs[fh.head] = nil
		fh.head++
		fh.compact()
	case ok:
		fh.recs = slices.Delete(fh.recs, fh.head+i, fh.head+i+1)
	}
	fh.counts[r.state]--
	b.hist.unlink(r)
	b.hist.freeRecLocked(r)
}

// ExpireHistory forgets the job records older than their function's
// History, a bounded batch per hold of the broker's lock, and reports how
// many it forgot. The history goroutine calls it every second; tests with
// a fake clock call it directly.
func (b *Broker) ExpireHistory() int {
	total := 0
	if b.records != nil {
		total += b.expireStoredRecords()
	}
	for {
		n, more := b.expireHistoryBatch()
		total += n
		if !more {
			return total
		}
	}
}

func (b *Broker) expireHistoryBatch() (n int, more bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.nowNanos()
	n = b.expireFailedRecordsLocked(now)
	for name, fh := range b.hist.fns {
		age, max := b.policyOf(name).historyLimits()
		for fh.len() > 0 {
			r := fh.recs[fh.head]
			if fh.len() <= max && r.finished > now-int64(age) {
				break
			}
			if n >= expireBatch {
				return n, true
			}
			b.popOldestLocked(fh)
			n++
		}
		if fh.len() == 0 {
			delete(b.hist.fns, name)
			if f := b.functions[name]; f != nil && f.hist == fh {
				f.hist = nil
			}
		}
	}
	return n, false
}

// historyLoop expires job records every second until ctx ends.
func (b *Broker) historyLoop(ctx context.Context) {
	defer b.wg.Done()
	tick(ctx, time.Second, func() {
		b.ExpireHistory()
		b.ExpireBatches()
	})
}

// tick calls f every interval until ctx ends.
func tick(ctx context.Context, interval time.Duration, f func()) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			f()
		}
	}
}

// snapshot returns the record as a JobSnapshot.
func (r *histRec) snapshot() JobSnapshot {
	var s JobSnapshot
	r.snapshotInto(&s, nil)
	return s
}

// snapshotInto sets *s to the record. Its History is appended to
// attempts, which it returns (nil: s gets History of its own).
func (r *histRec) snapshotInto(s *JobSnapshot, attempts []store.Attempt) []store.Attempt {
	*s = JobSnapshot{Seq: r.seq, Function: r.fn.name, Unique: r.unique, Priority: r.priority, State: r.state.String(),
		Final: true, Background: !r.foreground, Retries: r.retries, Attempts: r.nAttempts, LastError: r.lastErr,
		ResultTruncated: r.truncated, PayloadPreview: r.payload, PayloadSize: int(r.payloadLen),
		Finished: time.Unix(0, r.finished), payloadOnDisk: r.payloadOnDisk}
	if r.payloadWhole {
		s.Payload = nonNilBytes(r.payload)
		s.PayloadPreview = s.Payload[:min(len(s.Payload), PayloadPreviewCap)]
	}
	if r.hasResult {
		s.Result = r.result
	}
	at := len(attempts)
	if x := r.x; x != nil {
		if len(x.attempts) > 0 {
			attempts = append(attempts, x.attempts...)
		}
		s.MaxAttempts, s.OrderingKey, s.CancelledBy = int(x.maxAttempts), x.orderKey, x.cancelledBy
		s.RetryOf, s.Batch = x.retryOf, x.batch
		if x.cancelledAt != 0 {
			s.CancelledAt = time.Unix(0, x.cancelledAt)
		}
	}
	if len(attempts) == at && r.ran {
		attempts = append(attempts, r.madeUpAttempt())
	}
	if len(attempts) > at {
		// Capped, so that a later append to attempts never writes into
		// s.History (an earlier snapshot's stays valid as attempts grows).
		s.History = attempts[at:len(attempts):len(attempts)]
	}
	if r.submitted != 0 {
		s.Submitted = time.Unix(0, r.submitted)
	}
	if r.started != 0 {
		s.Started = time.Unix(0, r.started)
	}
	return attempts
}

// appendRecord appends the stored form of the record to b, as
// appendSnapshot of its snapshot would, without making the snapshot.
func (r *histRec) appendRecord(b []byte) []byte {
	f := recordFields{unique: r.unique, lastErr: r.lastErr, payload: r.payload, background: !r.foreground,
		truncated: r.truncated, whole: r.payloadWhole, priority: r.priority, retries: r.retries,
		attempts: r.nAttempts, payloadSize: int(r.payloadLen), submitted: r.submitted, started: r.started}
	if r.payloadWhole {
		f.payload = nonNilBytes(r.payload)
	}
	if r.hasResult {
		f.result = r.result
	}
	var made [1]store.Attempt
	if x := r.x; x != nil {
		f.history = x.attempts
		f.maxAttempts, f.orderKey, f.cancelledBy, f.cancelledAt = int(x.maxAttempts), x.orderKey, x.cancelledBy, x.cancelledAt
		f.retryOf, f.batch = x.retryOf, x.batch
	}
	if len(f.history) == 0 && r.ran {
		made[0] = r.madeUpAttempt()
		f.history = made[:]
	}
	return appendRecordFields(b, &f)
}

// madeUpAttempt is the attempt of a record that ran once without
// lifecycle state (ran).
func (r *histRec) madeUpAttempt() store.Attempt {
	a := store.Attempt{Start: r.started, End: r.finished, Outcome: runOutcome(r.state), Worker: r.worker}
	if r.x != nil && r.x.outcome != "" {
		a.Outcome = r.x.outcome
	}
	if r.state != finalComplete && r.lastErr != a.Outcome {
		// A last error that is only the outcome's name was not sent by
		// the run (finishObservedLocked), as in endAttemptLocked.
		a.Error = r.lastErr
	}
	return a
}

// batchOf is the batch of the record's job (0: none).
func (r *histRec) batchOf() uint64 {
	if r.x == nil {
		return 0
	}
	return r.x.batch
}

// historyLocked returns the record of a job that ended, if kept.
func (b *Broker) historyLocked(seq uint64) (JobSnapshot, bool) {
	r := b.keptRecordLocked(seq)
	if r == nil {
		return JobSnapshot{}, false
	}
	return r.snapshot(), true
}

// dropLocked removes a live job that ends without a worker's result
// (overflow, its function dropped, its clients gone), recording it as
// cancelled with why.
func (b *Broker) dropLocked(j *job, why string) {
	b.recordEndLocked(j, jobEnd{state: FinalCancelled, cancelledBy: why})
	b.removeLocked(j)
}

// nonNilBytes returns b, or an empty slice for nil: a record's result of a
// job completed with no data is empty, not absent.
func nonNilBytes(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

// ForgetRecord forgets the kept record of job seq, which ended. It reports
// false when none is kept (the job lives, never existed, or its record
// expired). A dead letter or retained result of the job stays: purge
// those on their own. A record only the store holds is read with ctx,
// and deleted with a context that ctx's end does not cancel. It returns
// before the delete is on disk: call Durable before acknowledging it.
// Safe for concurrent use.
func (b *Broker) ForgetRecord(ctx context.Context, seq uint64) bool {
	if b.records != nil {
		b.mu.Lock()
		r := b.keptRecordLocked(seq)
		if r != nil {
			b.forgetStoredLocked(seq)
		}
		b.mu.Unlock()
		if r != nil {
			return true
		}
		// Only in the store: forget it there now, so that a lookup
		// right after does not find it.
		if _, err := b.records.Record(ctx, seq); err != nil {
			return false
		}
		// The delete goes on if the caller goes away (an HTTP client
		// that hangs up): the record was found and is being forgotten.
		// It is bounded as the shared store's other writes are.
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), sharedWriteTimeout)
		defer cancel()
		if err := b.records.EndJobs(wctx, nil, nil, []uint64{seq}); err != nil {
			b.log.Warn("broker: cannot forget a job record", "seq", seq, "error", err.Error())
			return false
		}
		b.forgotUnsynced.Store(true)
		return true
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	r := b.hist.bySeq.get(seq)
	if r == nil {
		return false
	}
	b.dropRecordLocked(r)
	return true
}
