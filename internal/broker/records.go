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

// queueRecordLocked hands a new record to the committer.
func (b *Broker) queueRecordLocked(r *histRec) {
	b.pendingRecs = append(b.pendingRecs, r)
	if len(b.pendingRecs) == 1 {
		b.kickCommitterLater()
	}
}

// forgetStoredLocked makes the committer forget the stored record of seq
// (if any): its job lives again, or an operator deleted it. A record still
// in memory and not yet taken by the committer is simply dropped.
func (b *Broker) forgetStoredLocked(seq uint64) {
	if r := b.hist.bySeq.get(seq); r != nil {
		writing := r.writing
		b.dropRecordLocked(r)
		if !writing {
			return
		}
	}
	b.pendingForget = append(b.pendingForget, seq)
	if len(b.pendingForget) == 1 {
		b.kickCommitterLater()
	}
}

// takeRecordsLocked moves at most CommitBatch of the records waiting for
// the committer, and the forgets, into buf, and reports whether more
// records wait. The records are encoded later, without the lock
// (encodeRecords): a record being written does not change until
// settleRecordsLocked (one dropped meanwhile is cleared there).
func (b *Broker) takeRecordsLocked(buf *commitBuffers) bool {
	buf.recs = buf.recs[:0]
	buf.recPtrs = buf.recPtrs[:0]
	buf.recSeqs = buf.recSeqs[:0]
	n := min(len(b.pendingRecs), b.cfg.CommitBatch)
	for _, r := range b.pendingRecs[:n] {
		if r.fn == nil || b.hist.bySeq.get(r.seq) != r {
			continue // dropped before it was written
		}
		r.writing = true
		buf.recPtrs = append(buf.recPtrs, r)
		buf.recSeqs = append(buf.recSeqs, r.seq)
	}
	rest := copy(b.pendingRecs, b.pendingRecs[n:])
	clear(b.pendingRecs[rest:])
	b.pendingRecs = b.pendingRecs[:rest]
	buf.forget = append(buf.forget[:0], b.pendingForget...)
	b.pendingForget = b.pendingForget[:0]
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
	more = b.takeRecordsLocked(&buf)
	b.encodeRecords(context.Background(), &buf, false)
	p.Records, p.ForgetRecords = buf.recs, buf.forget
	return buf.recPtrs, more
}

// settleSharedRecordsLocked lets the memory copies of the records a
// shared round wrote go, or queues them again after a failed round.
func (b *Broker) settleSharedRecordsLocked(ptrs []*histRec, p store.CommitParams, err error) {
	if err != nil {
		var again []*histRec
		for _, r := range ptrs {
			if b.hist.bySeq.get(r.seq) != r {
				*r = histRec{} // dropped while it was written
				continue
			}
			r.writing = false
			again = append(again, r)
		}
		b.pendingRecs = append(again, b.pendingRecs...)
		b.pendingForget = append(p.ForgetRecords, b.pendingForget...)
		return
	}
	for _, r := range ptrs {
		b.settleWrittenLocked(r, r.seq)
	}
}

// settleRecordsLocked lets the memory copies of the records a batch wrote
// go; after a failed write they stay in memory.
func (b *Broker) settleRecordsLocked(buf *commitBuffers, err error) {
	for i, r := range buf.recPtrs {
		if err == nil {
			b.settleWrittenLocked(r, buf.recSeqs[i])
			continue
		}
		if b.hist.bySeq.get(buf.recSeqs[i]) != r {
			*r = histRec{} // dropped while it was written
			continue
		}
		r.writing = false
	}
	clear(buf.recPtrs)
}

// settleWrittenLocked lets the memory copy r of the record of job seq go
// once the store has it: nothing else refers to it then, and the next
// record to wait for the committer reuses it (reuseRec).
func (b *Broker) settleWrittenLocked(r *histRec, seq uint64) {
	if b.hist.bySeq.get(seq) == r {
		r.writing = false
		b.dropRecordLocked(r) // clears it
	} else {
		*r = histRec{}
	}
	if len(b.hist.free) < b.cfg.CommitBatch {
		b.hist.free = append(b.hist.free, r)
	}
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
	b.mu.Lock()
	var out []JobSnapshot
	for name, fh := range b.hist.fns {
		if q.Function != "" && name != q.Function {
			continue
		}
		for _, r := range fh.recs[fh.head:] {
			if r == nil || r.fn == nil || !q.matchesRecord(r) ||
				!below(store.RecordPos{Finished: r.finished, Seq: r.seq}) {
				continue
			}
			out = append(out, r.snapshot())
		}
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
