package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"github.com/gearwork/gearwork/internal/store"
)

// This file keeps job records in a store.RecordStore (Pebble) instead of
// the broker's memory. A record is still made in memory when its job ends
// (recordEndLocked) and waits there for the committer, which writes it in
// the same store write as the removal of its job (EndJobs) and then lets
// the memory copy go: the memory holds only the records not yet written.
// Lookups and listings read the store without the broker's lock, and
// expiry runs in the store, one range deletion per chunk.

// recordStore returns the store's RecordStore, or nil when the broker keeps
// records in memory (no store, a store without the capability, shared
// mode).
func recordStoreOf(cfg Config, s store.Store) store.RecordStore {
	if cfg.Shared != nil {
		rs, _ := cfg.Shared.(store.RecordStore)
		return rs
	}
	if s == nil {
		return nil
	}
	rs, _ := s.(store.RecordStore)
	return rs
}

// recordQueue holds the records of ended jobs on their way to a store
// that keeps records (Broker.records). It is the broker's only copy of
// such a record: made when its job ends (recordEndLocked), found here by
// lookups, listings and counts until the store has it, then let go.
// Guarded by Broker.mu.
type recordQueue struct {
	// held counts the records here that are not dropped by their Seq
	// modulo its length, so that a lookup of a job whose record is not
	// here (most are: in the store already) costs no search.
	held [1 << 12]uint32
	// pending wait for the committer, in the order their jobs ended;
	// those forgotten meanwhile (histRec.dropped) stay until taken.
	pending []*histRec
	// writing are the records the committer is writing: it reads them
	// without the lock, so nothing changes them until they are settled
	// but their dropped mark, which it does not read.
	writing []*histRec
	// failed are records whose write failed; they stay here, readable,
	// until they expire (expireFailedRecordsLocked) or are forgotten.
	failed []*histRec
	// forget are the Seqs whose stored records the committer forgets.
	forget []uint64
	// free are cleared records for new ones (reuse); the committer
	// clears the records it wrote without the lock
	// (commitBuffers.recycleRecords).
	free []*histRec
	// dropped counts the records dropped unwritten because too many
	// waited (queuedRounds: the store did not keep up).
	dropped uint64
	// bytes is the memory the records held here take (heldSize), for
	// Config.MaxRecordBytes; evicted counts those forgotten for it.
	bytes   int64
	evicted uint64
}

// heldSize is the memory a record held in the queue takes: it is
// allocated alone (recordEndLocked).
func heldSize(r *histRec) int64 { return int64(unsafe.Sizeof(*r)) + int64(r.size) }

// The stages of a record in the queue (histRec.stage).
const (
	recPending uint8 = iota + 1
	recWriting
	recFailed
)

// queuedRounds bounds the records waiting for the committer to this many
// rounds' worth (CommitBatch each): past it the oldest is dropped
// unwritten, so that a store that stalls while workers finish jobs fast
// does not fill the memory with records.
const queuedRounds = 16

// reuse returns a cleared record to reuse, or nil.
func (q *recordQueue) reuse() *histRec {
	n := len(q.free)
	if n == 0 {
		return nil
	}
	r := q.free[n-1]
	q.free[n-1] = nil
	q.free = q.free[:n-1]
	return r
}

// slot is where held counts the records of job seq.
func (q *recordQueue) slot(seq uint64) *uint32 { return &q.held[seq%uint64(len(q.held))] }

// drop marks r, held until now, dropped: a lookup no longer finds it.
func (q *recordQueue) drop(r *histRec) {
	r.dropped = true
	*q.slot(r.seq)--
	q.bytes -= heldSize(r)
}

// find returns the record of job seq held here, or nil. A job has at
// most one (a record is forgotten before its job runs again).
func (q *recordQueue) find(seq uint64) *histRec {
	if *q.slot(seq) == 0 {
		return nil
	}
	for _, rs := range [...][]*histRec{q.pending, q.writing, q.failed} {
		for _, r := range rs {
			if r.seq == seq && !r.dropped {
				return r
			}
		}
	}
	return nil
}

// unwritten reports whether a record that match accepts waits for its
// write or is being written: it is not on disk yet.
func (q *recordQueue) unwritten(match func(*histRec) bool) bool {
	for _, rs := range [...][]*histRec{q.pending, q.writing} {
		for _, r := range rs {
			if !r.dropped && match(r) {
				return true
			}
		}
	}
	return false
}

// recordUnwritten reports whether the record of job seq waits in the
// queue for its write or is being written.
func (b *Broker) recordUnwritten(seq uint64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	r := b.recq.find(seq)
	return r != nil && r.stage != recFailed
}

// each calls f for every record held here (no store has it yet).
func (q *recordQueue) each(f func(*histRec)) {
	for _, rs := range [...][]*histRec{q.pending, q.writing, q.failed} {
		for _, r := range rs {
			if !r.dropped {
				f(r)
			}
		}
	}
}

// keptRecordLocked returns the record of job seq kept in memory: with a
// store that keeps records, one not yet written (recordQueue); without,
// any the history keeps.
func (b *Broker) keptRecordLocked(seq uint64) *histRec {
	if b.records != nil {
		return b.recq.find(seq)
	}
	return b.hist.bySeq.get(seq)
}

// queueRecordLocked hands a new record to the committer.
func (b *Broker) queueRecordLocked(r *histRec) {
	q := &b.recq
	if most := queuedRounds * b.cfg.CommitBatch; len(q.pending) >= most {
		if q.popPending() {
			if q.dropped == 0 {
				b.log.Warn("broker: the store does not keep up with the job records; dropping the oldest unwritten ones",
					slog.Int("waiting", most))
			}
			q.dropped++
		}
	}
	r.stage = recPending
	*q.slot(r.seq)++
	q.bytes += heldSize(r)
	q.pending = append(q.pending, r)
	if len(q.pending) == 1 {
		b.kickCommitterLater()
	}
	// Past Config.MaxRecordBytes the oldest unwritten records go: those
	// whose write failed, then those waiting (the ones being written
	// are the committer's until it is done with them).
	for most := b.cfg.MaxRecordBytes; most > 0 && q.bytes > most; {
		switch {
		case len(q.failed) > 0:
			old := q.failed[0]
			q.failed[0] = nil
			q.failed = q.failed[1:]
			q.drop(old)
			*old = histRec{}
			q.evicted++
		case len(q.pending) > 0:
			if q.popPending() {
				q.evicted++
			}
		default:
			return
		}
	}
}

// popPending lets the oldest waiting record go unwritten, and reports
// whether it was held (not forgotten already).
func (q *recordQueue) popPending() bool {
	old := q.pending[0]
	q.pending[0] = nil
	q.pending = q.pending[1:]
	held := !old.dropped
	if held {
		q.drop(old)
	}
	*old = histRec{}
	return held
}

// forgetStoredLocked makes the committer forget the stored record of seq
// (if any): its job lives again, or an operator deleted it. A record still
// waiting for the committer is simply dropped.
func (b *Broker) forgetStoredLocked(seq uint64) {
	q := &b.recq
	if r := q.find(seq); r != nil {
		q.drop(r)
		switch r.stage {
		case recPending:
			return // takeRecordsLocked lets it go
		case recFailed:
			i := slices.Index(q.failed, r)
			q.failed = slices.Delete(q.failed, i, i+1)
			*r = histRec{}
		}
		// Being written (or its write failed): forgotten in the store
		// after the write.
	}
	q.forget = append(q.forget, seq)
	if len(q.forget) == 1 {
		b.kickCommitterLater()
	}
}

// takeRecordsLocked moves at most most of the records waiting for the
// committer into buf.recPtrs, and the forgets (none when most is 0: they
// wait too), and reports whether
// more records wait. The records are encoded later, without the lock
// (encodeRecords); they stay readable here until settleRecordsLocked.
// The records the committer cleared after its last round (buf.spare) are
// given back for reuse.
func (b *Broker) takeRecordsLocked(buf *commitBuffers, most int) bool {
	q := &b.recq
	if room := b.cfg.CommitBatch - len(q.free); room > 0 {
		q.free = append(q.free, buf.spare[:min(room, len(buf.spare))]...)
	}
	clear(buf.spare)
	buf.spare = buf.spare[:0]
	buf.recs = buf.recs[:0]
	buf.recPtrs = buf.recPtrs[:0]
	n := min(len(q.pending), most)
	for _, r := range q.pending[:n] {
		if r.dropped {
			*r = histRec{}
			buf.spare = append(buf.spare, r)
			continue
		}
		r.stage = recWriting
		buf.recPtrs = append(buf.recPtrs, r)
	}
	rest := copy(q.pending, q.pending[n:])
	clear(q.pending[rest:])
	q.pending = q.pending[:rest]
	q.writing = buf.recPtrs
	buf.forget = buf.forget[:0]
	if most > 0 {
		buf.forget = append(buf.forget, q.forget...)
		q.forget = q.forget[:0]
	}
	return rest > 0
}

// encodeRecords encodes the records taken (buf.recPtrs) into buf.recs,
// their data one after another in buf.recData, which the next batch
// reuses (the store keeps nothing of a write's records once it returns).
// Each is encoded straight from its memory copy, except that, with fill,
// the record of a job whose payload was on disk only and that needs it
// (recordReadsPayload: not one that completed) gets it read back first
// (tierFillRecord).
func (b *Broker) encodeRecords(ctx context.Context, buf *commitBuffers, fill bool) {
	buf.recData = buf.recData[:0]
	for _, r := range buf.recPtrs {
		start := len(buf.recData)
		if fill && r.payloadOnDisk && b.tier.reader != nil && recordReadsPayload(r.state.String(), int(r.payloadLen)) {
			s := r.snapshot()
			b.tierFillRecord(ctx, &s)
			buf.recData = appendSnapshot(buf.recData, &s)
		} else {
			buf.recData = r.appendRecord(buf.recData)
		}
		end := len(buf.recData)
		buf.recs = append(buf.recs, store.Record{Seq: r.seq, Function: r.fn.name, State: r.state.String(),
			Finished: r.finished, Batch: r.batchOf(), Data: buf.recData[start:end:end]})
	}
}

// takeSharedRecordsLocked is takeRecordsLocked for the shared committer,
// which encodes under the lock; it returns the records' memory copies.
func (b *Broker) takeSharedRecordsLocked(p *store.CommitParams) (ptrs []*histRec, more bool) {
	var buf commitBuffers
	more = b.takeRecordsLocked(&buf, b.roundMostLocked())
	b.encodeRecords(context.Background(), &buf, false)
	p.Records, p.ForgetRecords = buf.recs, buf.forget
	return buf.recPtrs, more
}

// settleSharedRecordsLocked lets the memory copies of the records a
// shared round wrote go, or queues them again after a failed round.
func (b *Broker) settleSharedRecordsLocked(ptrs []*histRec, p store.CommitParams, err error) {
	q := &b.recq
	q.writing = nil
	if err != nil {
		var again []*histRec
		for _, r := range ptrs {
			if !r.dropped {
				r.stage = recPending
				again = append(again, r)
			}
		}
		q.pending = append(again, q.pending...)
		// Forgotten while written: forgotten in the store by p's
		// forgets, or the ones queued since (forgetStoredLocked).
		q.forget = append(p.ForgetRecords, q.forget...)
		return
	}
	for _, r := range ptrs {
		if !r.dropped {
			q.drop(r)
		}
		*r = histRec{}
		if len(q.free) < b.cfg.CommitBatch {
			q.free = append(q.free, r)
		}
	}
}

// settleRecordsLocked lets the records a batch wrote go: lookups read them
// from the store from now on, and the committer clears them for reuse
// once it let go of the lock (commitBuffers.recycleRecords). After a
// failed write they stay readable here (recordQueue.failed).
func (b *Broker) settleRecordsLocked(buf *commitBuffers, err error) {
	q := &b.recq
	q.writing = nil
	keep := buf.recPtrs[:0]
	for _, r := range buf.recPtrs {
		switch {
		case r.dropped:
			keep = append(keep, r) // forgotten while written
		case err != nil:
			r.stage = recFailed
			q.failed = append(q.failed, r)
		default:
			q.drop(r) // the store has it
			keep = append(keep, r)
		}
	}
	clear(buf.recPtrs[len(keep):])
	buf.recPtrs = keep
}

// recycleRecords clears the records the last batch wrote, which nothing
// refers to any more (settleRecordsLocked), without the lock; the next
// batch gives them back for reuse (takeRecordsLocked).
func (buf *commitBuffers) recycleRecords() {
	for i, r := range buf.recPtrs {
		*r = histRec{}
		buf.recPtrs[i] = nil
		buf.spare = append(buf.spare, r)
	}
	buf.recPtrs = buf.recPtrs[:0]
}

// expireFailedRecordsLocked applies the history limits to the records
// kept after a failed write (recordQueue.failed), as the store would
// have: those that ended before their function's age limit, or lie
// beyond its count, the oldest first, go. It returns how many went.
func (b *Broker) expireFailedRecordsLocked(now int64) int {
	q := &b.recq
	if len(q.failed) == 0 {
		return 0
	}
	kept := make(map[string]int) // by name: a function's fnHistory may be made again
	out := make([]*histRec, 0, len(q.failed))
	gone := 0
	for i := len(q.failed) - 1; i >= 0; i-- { // newest first
		r := q.failed[i]
		age, max := b.policyOf(r.fn.name).historyLimits()
		if kept[r.fn.name] >= max || r.finished <= now-int64(age) {
			q.drop(r)
			*r = histRec{}
			gone++
			continue
		}
		kept[r.fn.name]++
		out = append(out, r)
	}
	slices.Reverse(out)
	q.failed = out
	return gone
}

// decodeRecord turns a stored record back into a snapshot.
func decodeRecord(r store.Record) (JobSnapshot, error) {
	var s JobSnapshot
	if err := decodeSnapshot(r.Data, &s); err != nil {
		return JobSnapshot{}, fmt.Errorf("job record %d: %w", r.Seq, err)
	}
	s.Seq, s.Function, s.State, s.Final = r.Seq, r.Function, r.State, true
	s.Finished = time.Unix(0, r.Finished)
	return s, nil
}

// storedRecord reads the record of job seq from the store.
func (b *Broker) storedRecord(ctx context.Context, seq uint64) (JobSnapshot, bool) {
	r, err := b.records.Record(ctx, seq)
	if err != nil {
		if !errors.Is(err, store.ErrNotFound) && ctx.Err() == nil {
			b.log.Warn("broker: cannot read a job record", slog.Uint64("seq", seq), slog.String("error", err.Error()))
		}
		return JobSnapshot{}, false
	}
	s, err := decodeRecord(r)
	if err != nil {
		b.log.Warn("broker: cannot read a job record", slog.Uint64("seq", seq), slog.String("error", err.Error()))
		return JobSnapshot{}, false
	}
	return s, true
}

// Cursors into the stored records are "R<finished>.<seq>".
func recordCursor(p store.RecordPos) string {
	return "R" + strconv.FormatInt(p.Finished, 10) + "." + strconv.FormatUint(p.Seq, 10)
}

func parseRecordCursor(c string) (store.RecordPos, bool) {
	fin, seq, ok := strings.Cut(c[1:], ".")
	if !ok {
		return store.RecordPos{}, false
	}
	f, err1 := strconv.ParseInt(fin, 10, 64)
	s, err2 := strconv.ParseUint(seq, 10, 64)
	if err1 != nil || err2 != nil {
		return store.RecordPos{}, false
	}
	return store.RecordPos{Finished: f, Seq: s}, true
}

// endedFromStore returns up to n records of ended jobs of q after pos
// (zero: from the newest), newest first: those in the store merged with
// those still waiting in memory for the committer.
func (b *Broker) endedFromStore(ctx context.Context, q JobQuery, after store.RecordPos, n int) ([]JobSnapshot, error) {
	if n <= 0 {
		return nil, nil
	}
	below := func(p store.RecordPos) bool { return after == (store.RecordPos{}) || p.Before(after) }
	match := func(r *histRec) bool {
		return (q.Function == "" || r.fn.name == q.Function) && q.matchesRecord(r) &&
			below(store.RecordPos{Finished: r.finished, Seq: r.seq})
	}
	b.mu.Lock()
	unwritten := !q.now && b.recq.unwritten(match)
	b.mu.Unlock()
	if unwritten {
		// Records the listing would answer that still wait for their
		// write are made durable first, as for a lookup (Job); while the
		// store refuses writes, or past Config.RecordReadWait, they are
		// answered from memory, marked Unstored.
		b.recordsDurable(ctx)
	}
	b.mu.Lock()
	var waiting []*histRec
	b.recq.each(func(r *histRec) {
		if match(r) {
			waiting = append(waiting, r)
		}
	})
	// The newest n of them (few wait: about a round's worth).
	slices.SortFunc(waiting, func(a, c *histRec) int {
		return store.RecordPos{Finished: c.finished, Seq: c.seq}.Compare(store.RecordPos{Finished: a.finished, Seq: a.seq})
	})
	out := make([]JobSnapshot, 0, min(len(waiting), n))
	for _, r := range waiting[:min(len(waiting), n)] {
		s := r.snapshot()
		s.Unstored = true // in memory until the store has it
		out = append(out, s)
	}
	b.mu.Unlock()
	stored, err := b.storedRecords(ctx, q, after, n)
	if err != nil {
		return nil, err
	}
	seen := make(map[uint64]bool, len(out))
	for _, s := range out {
		seen[s.Seq] = true
	}
	for _, s := range stored {
		if !seen[s.Seq] {
			out = append(out, s)
		}
	}
	slices.SortFunc(out, func(a, c JobSnapshot) int {
		pa := store.RecordPos{Finished: a.Finished.UnixNano(), Seq: a.Seq}
		pc := store.RecordPos{Finished: c.Finished.UnixNano(), Seq: c.Seq}
		return pc.Compare(pa)
	})
	return out[:min(len(out), n)], nil
}

// batchScanPage is how many records one read of a listing of a batch's
// records takes from a store that cannot select them by batch.
const batchScanPage = 256

// storedRecords reads up to n records of q from the store after pos,
// newest first. The records of a batch come from a store that selects
// them (store.BatchRecordStore), or else from the records of q's
// function and state, read a page at a time until n of them are of the
// batch: such a listing reads the records kept, newest first, down to the
// batch's.
func (b *Broker) storedRecords(ctx context.Context, q JobQuery, after store.RecordPos, n int) ([]JobSnapshot, error) {
	rq := store.RecordQuery{Function: q.Function, State: q.State, After: after, Limit: n}
	var recs []store.Record
	var err error
	bs, selects := b.records.(store.BatchRecordStore)
	switch {
	case q.Batch == 0:
		recs, err = b.records.Records(ctx, rq)
	case selects:
		recs, err = bs.BatchRecords(ctx, q.Batch, rq)
	default:
		return b.scanBatchRecords(ctx, q.Batch, rq, n)
	}
	if err != nil {
		return nil, err
	}
	out := make([]JobSnapshot, 0, len(recs))
	for _, r := range recs {
		s, err := decodeRecord(r)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

// scanBatchRecords is storedRecords for a store that cannot select the
// records of a batch.
func (b *Broker) scanBatchRecords(ctx context.Context, batch uint64, rq store.RecordQuery, n int) ([]JobSnapshot, error) {
	var out []JobSnapshot
	rq.Limit = max(n, batchScanPage)
	for len(out) < n {
		page, err := b.records.Records(ctx, rq)
		if err != nil {
			return nil, err
		}
		for _, r := range page {
			s, err := decodeRecord(r)
			if err != nil {
				return nil, err
			}
			if s.Batch == batch {
				out = append(out, s)
			}
		}
		if len(page) < rq.Limit {
			break
		}
		last := page[len(page)-1]
		rq.After = store.RecordPos{Finished: last.Finished, Seq: last.Seq}
	}
	return out[:min(len(out), n)], nil
}

// expireStoredRecords expires the records in the store by their
// functions' policies; the broker's lock is held only to read a policy.
func (b *Broker) expireStoredRecords() int {
	n, err := b.records.ExpireRecords(context.Background(), b.nowNanos(), func(fn string) (time.Duration, int) {
		b.mu.Lock()
		defer b.mu.Unlock()
		return b.policyOf(fn).historyLimits()
	})
	if err != nil {
		b.log.Warn("broker: expiring job records failed", slog.String("error", err.Error()))
	}
	return n
}
