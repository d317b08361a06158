package pebble

import (
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"time"

	pebbledb "github.com/cockroachdb/pebble/v2"

	"github.com/gearwork/gearwork/internal/store"
)

var _ store.RecordStore = (*Store)(nil)

// The records of jobs that ended (store.RecordStore) are kept on disk in
// blocks (encodeBlock) and found through an index in memory
// (recordIndex). A listing or a lookup reads the blocks of the records
// it returns; expiry forgets whole blocks, and writes again the one or
// two blocks whose records it forgets only in part.

// expireChunk is the most records one expiry write forgets.
const expireChunk = 4096

// blockID names a block: its function and first Seq.
type blockID struct {
	fn    string
	first uint64
}

// loadIndexLocked builds the index from the block headers on disk once
// (and first turns records of the earlier layout into blocks). Caller
// holds s.idx.mu and s.mu (shared).
func (s *Store) loadIndexLocked() error {
	x := &s.idx
	if x.loaded {
		return nil
	}
	if err := s.convertOldRecords(); err != nil {
		return fmt.Errorf("pebble store %s: converting job records: %w", s.dir, err)
	}
	x.fns, x.stateOf, x.states = make(map[string]*fnIndex), make(map[string]uint8), nil
	// wide are the blocks written when a back could be 32 bits: they are
	// written again, split (splitBlocks), after the scan.
	var wide []blockID
	var recs []blockRec
	err := guard(func() error {
		it, err := s.db.NewIter(&pebbledb.IterOptions{LowerBound: []byte{blockHdrPrefix}, UpperBound: []byte{blockHdrPrefix + 1}})
		if err != nil {
			return err
		}
		for valid := it.First(); valid; valid = it.Next() {
			fn, first, ok := parseBlockKey(it.Key())
			if !ok {
				_ = it.Close()
				return fmt.Errorf("job record block %q: %w", it.Key(), store.ErrCorrupt)
			}
			recs = recs[:0]
			err := decodeHeader(it.Value(), first, func(seq uint64, fin int64, state string) error {
				recs = append(recs, blockRec{seq: seq, fin: fin, state: state})
				return nil
			})
			if err == nil && slices.ContainsFunc(recs, func(r blockRec) bool { return r.seq-first > maxBack }) {
				wide = append(wide, blockID{fn, first})
				continue
			}
			if err == nil {
				err = x.indexBlock(fn, first, recs)
			}
			if err != nil {
				_ = it.Close()
				return err
			}
		}
		return errors.Join(it.Error(), it.Close())
	})
	if err == nil {
		err = s.splitWide(wide)
	}
	if err != nil {
		x.reset()
		return fmt.Errorf("pebble store %s: reading job records: %w", s.dir, err)
	}
	for _, f := range x.fns {
		f.sort()
	}
	x.loaded = true
	return nil
}

// indexBlock adds the records of the block of fn that starts at first to
// the index (unsorted: see fnIndex.sort).
func (x *recordIndex) indexBlock(fn string, first uint64, recs []blockRec) error {
	f := x.fn(fn)
	for _, r := range recs {
		st, err := x.state(r.state)
		if err != nil {
			return err
		}
		f.push(mkEntry(r.seq, r.fin, uint32(r.seq-first), st))
	}
	return nil
}

// splitWide writes the blocks ids again as blocks within maxBack and adds
// their records to the index.
func (s *Store) splitWide(ids []blockID) error {
	for _, id := range ids {
		recs, err := s.readHeader(id)
		if err == nil {
			err = s.readDataInto(id, recs)
		}
		if err == nil {
			err = s.commit(func(b *pebbledb.Batch) error {
				return errors.Join(deleteBlock(b, id), putBlocks(b, &s.idx.bufs, id.fn, recs))
			}, s.saveOpts)
		}
		for _, blk := range splitBlocks(nil, recs) {
			if err == nil {
				err = s.idx.indexBlock(id.fn, blockFirst(blk), blk)
			}
		}
		if err != nil {
			return fmt.Errorf("job record block %d: %w", id.first, err)
		}
	}
	return nil
}

// readKey hands the value of a block's key (valid during the call) to
// use; a key that is not there is no error.
func (s *Store) readKey(prefix byte, id blockID, use func(v []byte) error) error {
	return guard(func() error {
		v, closer, err := s.db.Get(blockKey(prefix, id.fn, id.first))
		if errors.Is(err, pebbledb.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		defer closer.Close()
		return use(v)
	})
}

// readHeader returns the records of a block without their data, or none
// if it is not there.
func (s *Store) readHeader(id blockID) ([]blockRec, error) {
	var recs []blockRec
	err := s.readKey(blockHdrPrefix, id, func(v []byte) error {
		return decodeHeader(v, id.first, func(seq uint64, fin int64, state string) error {
			recs = append(recs, blockRec{seq: seq, fin: fin, state: state})
			return nil
		})
	})
	return recs, err
}

// readDataInto fills in the data of recs, the records of block id in
// their order, copied into one new buffer.
func (s *Store) readDataInto(id blockID, recs []blockRec) error {
	var all []byte
	ends := make([]int, 0, len(recs))
	err := s.readData(id, func(uint64) bool { return true }, func(seq uint64, data []byte) {
		if i := len(ends); i < len(recs) && recs[i].seq == seq {
			if all == nil { // room for as many more of about this size
				all = make([]byte, 0, len(data)*(len(recs)+1))
			}
			all = append(all, data...)
			ends = append(ends, len(all))
		}
	})
	if err == nil && len(ends) != len(recs) {
		err = fmt.Errorf("job record block %d: header and data differ: %w", id.first, store.ErrCorrupt)
	}
	if err != nil {
		return err
	}
	start := 0
	for i, end := range ends {
		recs[i].data = all[start:end:end]
		start = end
	}
	return nil
}

// readData calls each with the data of the wanted Seqs of a block (valid
// during the call).
func (s *Store) readData(id blockID, want func(seq uint64) bool, each func(seq uint64, data []byte)) error {
	return s.readKey(blockDataPrefix, id, func(v []byte) error {
		return decodeData(v, id.first, func(seq uint64, data []byte) bool {
			if want(seq) {
				each(seq, data)
			}
			return true
		})
	})
}

// putBlocks adds the blocks of recs of fn to b (splitBlocks), encoded in
// bb.
func putBlocks(b *pebbledb.Batch, bb *blockBufs, fn string, recs []blockRec) error {
	bb.blocks = splitBlocks(bb.blocks[:0], recs)
	for _, blk := range bb.blocks {
		hdr, data := bb.encode(blk)
		first := blockFirst(blk)
		bb.key = appendBlockKey(bb.key[:0], blockHdrPrefix, fn, first)
		if err := b.Set(bb.key, hdr, nil); err != nil {
			return err
		}
		bb.key = appendBlockKey(bb.key[:0], blockDataPrefix, fn, first)
		if err := b.Set(bb.key, data, nil); err != nil {
			return err
		}
	}
	clear(bb.blocks)
	return nil
}

// deleteBlock adds the deletion of block id's keys to b (their room
// in b, without allocating).
func deleteBlock(b *pebbledb.Batch, id blockID) error {
	for _, prefix := range [...]byte{blockHdrPrefix, blockDataPrefix} {
		op := b.DeleteDeferred(blockKeyLen(id.fn))
		appendBlockKey(op.Key[:0], prefix, id.fn, id.first)
		if err := op.Finish(); err != nil {
			return err
		}
	}
	return nil
}

// shrink is a block that loses some of its records: it is deleted and
// the records kept are written again as a block of their own.
type shrink struct {
	id   blockID
	gone []blockRec
	keep []blockRec
}

// shrinkBlocks reads the blocks of ids and splits each one's records into
// those for which doomed is true and the others (shrinkBlock).
func (s *Store) shrinkBlocks(ids map[blockID]bool, doomed func(seq uint64, fin int64) bool, listGone bool) ([]shrink, error) {
	out := make([]shrink, 0, len(ids))
	for id := range ids {
		sh, err := s.shrinkBlock(id, doomed, listGone)
		if err != nil {
			return nil, err
		}
		out = append(out, sh)
	}
	return out, nil
}

// shrinkBlock reads block id's header and splits its records into those
// for which doomed is true (gone) and the others (keep). The data is read
// only if some records stay; the records of a block that goes as a whole
// are listed (gone) only if listGone.
func (s *Store) shrinkBlock(id blockID, doomed func(seq uint64, fin int64) bool, listGone bool) (shrink, error) {
	if !listGone {
		whole, err := s.doomedWhole(id, doomed)
		if err != nil {
			return shrink{}, err
		}
		if whole {
			return shrink{id: id}, nil
		}
	}
	recs, err := s.readHeader(id)
	if err != nil {
		return shrink{}, err
	}
	if !slices.ContainsFunc(recs, func(r blockRec) bool { return !doomed(r.seq, r.fin) }) {
		return shrink{id: id, gone: recs}, nil
	}
	if err := s.readDataInto(id, recs); err != nil {
		return shrink{}, err
	}
	sh := shrink{id: id}
	for _, r := range recs {
		if doomed(r.seq, r.fin) {
			sh.gone = append(sh.gone, r)
		} else {
			sh.keep = append(sh.keep, r)
		}
	}
	return sh, nil
}

// doomedWhole reports whether doomed is true for every record of block
// id (or it is not there), reading its header without copying it.
func (s *Store) doomedWhole(id blockID, doomed func(seq uint64, fin int64) bool) (bool, error) {
	whole := true
	err := s.readKey(blockHdrPrefix, id, func(v []byte) error {
		return decodeHeader(v, id.first, func(seq uint64, fin int64, _ string) error {
			whole = whole && doomed(seq, fin)
			return nil
		})
	})
	return whole, err
}

func (sh shrink) write(b *pebbledb.Batch, bb *blockBufs) error {
	if err := deleteBlock(b, sh.id); err != nil {
		return err
	}
	if len(sh.keep) == 0 {
		return nil
	}
	return putBlocks(b, bb, sh.id.fn, sh.keep)
}

// applyShrinkLocked updates the index after the shrink was written; the
// entries of the records gone are taken out unless expiry does so.
func (x *recordIndex) applyShrinkLocked(sh shrink, takeGone bool) {
	f := x.fns[sh.id.fn]
	if f == nil {
		return
	}
	for _, r := range sh.gone {
		if !takeGone {
			break
		}
		if i, ok := f.find(r.fin, r.seq); ok {
			f.remove(i)
		}
	}
	// A block's records are mostly in their entries' order, one after
	// the other: each is looked for first after the one before. They move
	// to blocks that start at one of them, never before the block they
	// leave, so the spans' smallest blocks stay at most the true ones
	// (seqSpan) without being made again.
	i := -1
	for _, blk := range splitBlocks(nil, sh.keep) {
		first := blockFirst(blk)
		for _, r := range blk {
			var ok bool
			if i, ok = f.findAfter(r.fin, r.seq, i); ok {
				f.entries[f.head+i] = f.entries[f.head+i].withBack(uint32(r.seq - first))
			}
		}
	}
	if f.len() == 0 {
		x.drop(sh.id.fn)
	}
}

// EndJobs deletes dels, forgets the records forget and writes recs in one
// batch, so that a crash leaves either a job or its record. It waits for
// no fsync, as Delete; the records are made durable before they are read
// (syncRecordsLocked). recs must not be of jobs whose records are kept
// (forget those first).
func (s *Store) EndJobs(ctx context.Context, dels []uint64, recs []store.Record, forget []uint64) error {
	return s.endJobs(ctx, dels, recs, forget, nil)
}

// endJobs is EndJobs; first, when not nil, adds more writes (saves and
// metadata: Write) at the start of the same batch, which is then synced as
// Save is.
func (s *Store) endJobs(ctx context.Context, dels []uint64, recs []store.Record, forget []uint64, first func(*pebbledb.Batch) error) error {
	if err := s.begin(ctx, true); err != nil {
		return err
	}
	defer s.mu.RUnlock()
	if len(dels) == 0 && len(recs) == 0 && len(forget) == 0 && first == nil {
		return nil
	}
	x := &s.idx
	x.mu.Lock()
	defer x.mu.Unlock()
	if err := s.loadIndexLocked(); err != nil {
		return err
	}
	var shrinks []shrink
	if len(forget) > 0 {
		ids := make(map[blockID]bool)
		doomed := make(map[uint64]bool, len(forget))
		for _, q := range forget {
			fn, f, i, ok := x.lookup(q)
			if !ok {
				continue
			}
			doomed[q] = true
			ids[blockID{fn, f.live()[i].block()}] = true
		}
		var err error
		if shrinks, err = s.shrinkBlocks(ids, func(q uint64, _ int64) bool { return doomed[q] }, true); err != nil {
			return fmt.Errorf("pebble store %s: forgetting job records: %w", s.dir, err)
		}
	}
	// The new records, by function, each function's in the order given
	// (the order their jobs ended, so that the index mostly appends).
	// (A round's records are mostly of one state: each name is looked
	// up when it changes.)
	var state string
	for i, r := range recs {
		if i == 0 || r.State != state {
			if _, err := x.state(r.State); err != nil {
				return fmt.Errorf("pebble store %s: %w", s.dir, err)
			}
			state = r.State
		}
	}
	byFn := x.bufs.group(recs)
	defer x.bufs.letGo() // the caller reuses the records' data
	// Removals and records are not waited for (see Delete): a record is
	// made durable before anyone reads it (syncRecordsLocked) or by the
	// next synced write, whichever comes first; a crash before that runs
	// its job again. A write with saves or metadata is synced as Save is.
	wo := pebbledb.NoSync
	if first != nil {
		wo = s.saveOpts
	}
	err := s.commit(func(b *pebbledb.Batch) error {
		if first != nil {
			if err := first(b); err != nil {
				return err
			}
		}
		for _, q := range dels {
			op := b.DeleteDeferred(jobKeyLen)
			putJobKey(op.Key, q)
			if err := op.Finish(); err != nil {
				return err
			}
		}
		for _, sh := range shrinks {
			if err := sh.write(b, &x.bufs); err != nil {
				return err
			}
		}
		for _, g := range byFn {
			if err := putBlocks(b, &x.bufs, g.fn, g.recs); err != nil {
				return err
			}
		}
		return nil
	}, wo)
	if err != nil {
		return fmt.Errorf("pebble store %s: ending %d jobs with %d records: %w", s.dir, len(dels), len(recs), err)
	}
	if s.mode == SyncInterval {
		s.dirty.Store(true)
	}
	switch {
	case wo == pebbledb.Sync:
		x.unsynced = false // this fsync covered every earlier write
	case len(recs) > 0 && s.mode == SyncAlways:
		x.unsynced = true
	}
	for _, sh := range shrinks {
		x.applyShrinkLocked(sh, true)
	}
	for _, g := range byFn {
		rs := g.recs
		f := x.fn(g.fn)
		state, st := rs[0].state, x.stateOf[rs[0].state]
		x.bufs.blocks = splitBlocks(x.bufs.blocks[:0], rs)
		for _, blk := range x.bufs.blocks {
			first := blockFirst(blk)
			for _, r := range blk {
				if r.state != state {
					state, st = r.state, x.stateOf[r.state]
				}
				f.add(mkEntry(r.seq, r.fin, uint32(r.seq-first), st))
			}
		}
		clear(x.bufs.blocks) // another function's may be fewer
	}
	return nil
}

// syncRecordsLocked fsyncs the write-ahead log if records were written
// without an fsync since the last read of records (SyncAlways mode), so
// that a record a lookup, listing or count answers survives a crash.
// After a failed write nothing is written any more (Pebble's commit
// pipeline may be broken): records that may not be on disk are then not
// answered at all. Caller holds s.idx.mu and s.mu (shared).
func (s *Store) syncRecordsLocked() error {
	if !s.idx.unsynced {
		return nil
	}
	if p := s.failed.Load(); p != nil {
		return fmt.Errorf("pebble store %s: job records written since the last fsync may not be on disk: %w (first failure: %v)",
			s.dir, store.ErrFailed, *p)
	}
	if err := s.syncWAL(); err != nil {
		return fmt.Errorf("pebble store %s: making job records durable: %w", s.dir, err)
	}
	s.idx.unsynced = false
	return nil
}

// Record returns the record of job seq, read from disk (or Pebble's
// cache).
func (s *Store) Record(ctx context.Context, seq uint64) (store.Record, error) {
	if err := s.begin(ctx, false); err != nil {
		return store.Record{}, err
	}
	defer s.mu.RUnlock()
	x := &s.idx
	x.mu.Lock()
	defer x.mu.Unlock()
	if err := s.loadIndexLocked(); err != nil {
		return store.Record{}, err
	}
	if err := s.syncRecordsLocked(); err != nil {
		return store.Record{}, err
	}
	fn, f, i, ok := x.lookup(seq)
	if !ok {
		return store.Record{}, fmt.Errorf("pebble store %s: job record %d: %w", s.dir, seq, store.ErrNotFound)
	}
	e := f.live()[i]
	rec := store.Record{Seq: seq, Function: fn, State: x.states[e.state()], Finished: e.fin()}
	found := false
	err := s.readData(blockID{fn, e.block()}, func(q uint64) bool { return q == seq }, func(_ uint64, data []byte) {
		rec.Data, found = slices.Clone(data), true
	})
	if err == nil && !found {
		err = fmt.Errorf("job record %d: not in its block: %w", seq, store.ErrCorrupt)
	}
	if err != nil {
		return store.Record{}, fmt.Errorf("pebble store %s: reading job record %d: %w", s.dir, seq, err)
	}
	return rec, nil
}

// Records lists records newest first: it picks them in the index, then
// reads their blocks.
func (s *Store) Records(ctx context.Context, q store.RecordQuery) ([]store.Record, error) {
	if err := s.begin(ctx, false); err != nil {
		return nil, err
	}
	defer s.mu.RUnlock()
	if q.Limit <= 0 {
		return nil, nil
	}
	x := &s.idx
	x.mu.Lock()
	defer x.mu.Unlock()
	if err := s.loadIndexLocked(); err != nil {
		return nil, err
	}
	if err := s.syncRecordsLocked(); err != nil {
		return nil, err
	}
	type pick struct {
		fn string
		e  recEntry
	}
	var picks []pick
	for fn, f := range x.fns {
		if q.Function != "" && fn != q.Function {
			continue
		}
		live := f.live()
		end := len(live)
		if q.After != (store.RecordPos{}) {
			end, _ = f.find(q.After.Finished, q.After.Seq)
		}
		n := 0
		for i := end - 1; i >= 0 && n < q.Limit; i-- {
			if q.State != "" && x.states[live[i].state()] != q.State {
				continue
			}
			picks = append(picks, pick{fn, live[i]})
			n++
		}
	}
	slices.SortFunc(picks, func(a, b pick) int { return cmpEntry(b.e, a.e) })
	picks = picks[:min(len(picks), q.Limit)]
	out := make([]store.Record, len(picks))
	at := make(map[uint64]int, len(picks))
	var ids []blockID
	for i, p := range picks {
		out[i] = store.Record{Seq: p.e.seq(), Function: p.fn, State: x.states[p.e.state()], Finished: p.e.fin()}
		at[p.e.seq()] = i
		if id := (blockID{p.fn, p.e.block()}); !slices.Contains(ids, id) {
			ids = append(ids, id)
		}
	}
	for _, id := range ids {
		err := s.readData(id, func(seq uint64) bool { _, ok := at[seq]; return ok }, func(seq uint64, data []byte) {
			out[at[seq]].Data = slices.Clone(data)
		})
		if err != nil {
			return nil, fmt.Errorf("pebble store %s: listing job records of %q: %w", s.dir, id.fn, err)
		}
	}
	return out, nil
}

// RecordCounts returns the kept records per function and state.
func (s *Store) RecordCounts(ctx context.Context) (map[string]map[string]int, error) {
	return s.recordCounts(ctx, true)
}

// recordCounts is RecordCounts; expiry, which answers nobody with them,
// counts records without making them durable first (synced false).
func (s *Store) recordCounts(ctx context.Context, synced bool) (map[string]map[string]int, error) {
	if err := s.begin(ctx, false); err != nil {
		return nil, err
	}
	defer s.mu.RUnlock()
	x := &s.idx
	x.mu.Lock()
	defer x.mu.Unlock()
	if err := s.loadIndexLocked(); err != nil {
		return nil, err
	}
	if synced {
		if err := s.syncRecordsLocked(); err != nil {
			return nil, err
		}
	}
	out := make(map[string]map[string]int, len(x.fns))
	for fn, f := range x.fns {
		c := make(map[string]int)
		for st, n := range f.counts {
			if n > 0 {
				c[x.states[st]] = n
			}
		}
		out[fn] = c
	}
	return out, nil
}

// ExpireRecords forgets the records of each function that ended before
// its age limit or lie beyond its count, the oldest first, at most
// expireChunk of them per write.
func (s *Store) ExpireRecords(ctx context.Context, now int64, limits func(string) (time.Duration, int)) (int, error) {
	counts, err := s.recordCounts(ctx, false)
	if err != nil {
		return 0, err
	}
	total := 0
	for fn := range counts {
		age, most := limits(fn)
		for {
			n, more, err := s.expireChunk(ctx, fn, now, age, most)
			total += n
			if err != nil {
				return total, err
			}
			if !more {
				break
			}
		}
	}
	return total, nil
}

// expireChunk forgets at most expireChunk expired records of fn, its n
// oldest entries: the blocks that hold only expired records are deleted,
// the others written again without them.
//
// Which blocks go as a whole is decided from the index (expiryBlocks),
// which holds every record on disk and no other: x.mu is held from that
// choice through the write to the update of the index, so that no EndJobs
// or forgetting (the only other writers of records, both under x.mu) adds
// a record to a block or writes one again in between. Only a block that
// may also hold records after the cut has its header read.
func (s *Store) expireChunk(ctx context.Context, fn string, now int64, age time.Duration, most int) (int, bool, error) {
	if err := s.begin(ctx, true); err != nil {
		return 0, false, err
	}
	defer s.mu.RUnlock()
	x := &s.idx
	x.mu.Lock()
	defer x.mu.Unlock()
	f := x.fns[fn]
	if f == nil {
		return 0, false, nil
	}
	live := f.live()
	doomed := len(live) // age <= 0 or max <= 0: every record goes
	if age > 0 && most > 0 {
		doomed = len(live) - most // the oldest beyond the count
		if cut := now - int64(age); cut > 0 {
			// and every one that ended before cut
			i, _ := slices.BinarySearchFunc(live, mkEntry(0, cut, 0, 0), cmpEntry)
			doomed = max(doomed, i)
		}
	}
	if doomed <= 0 {
		return 0, false, nil
	}
	n := min(doomed, expireChunk)
	// A record is gone if it comes before the first entry kept.
	gone := func(seq uint64, fin int64) bool {
		return n == len(live) || cmpEntry(mkEntry(seq, fin, 0, 0), live[n]) < 0
	}
	whole, mixed := x.expiryBlocks(f, n)
	shrinks := make([]shrink, 0, len(mixed))
	var err error
	for _, first := range mixed {
		var sh shrink
		if sh, err = s.shrinkBlock(blockID{fn, first}, gone, false); err != nil {
			break
		}
		shrinks = append(shrinks, sh)
	}
	if err == nil {
		err = s.commit(func(b *pebbledb.Batch) error {
			if err := deleteBlocks(b, fn, whole); err != nil {
				return err
			}
			for _, sh := range shrinks {
				if err := sh.write(b, &x.bufs); err != nil {
					return err
				}
			}
			return nil
		}, pebbledb.NoSync)
	}
	if err != nil {
		return 0, false, fmt.Errorf("pebble store %s: expiring job records of %q: %w", s.dir, fn, err)
	}
	f.uncount(live[:n])
	f.dropOldest(n)
	for _, sh := range shrinks {
		x.applyShrinkLocked(sh, false)
	}
	if f.len() == 0 {
		x.drop(fn)
	}
	return n, doomed > n, nil
}

// expiryBlocks returns the blocks of the n oldest entries of f, each
// once, in order: those that hold no other record (whole) and those that
// may (mixed). A block before every block of the entries after the n
// oldest (seqSpans.minBlockFrom) has no record among them, and so, as the
// index holds every record on disk, none but its expired ones. The slices
// are valid until the next call. Caller holds x.mu.
func (x *recordIndex) expiryBlocks(f *fnIndex, n int) (whole, mixed []uint64) {
	ids := x.expiring[:0]
	gone := f.live()[:n]
	for i := range gone {
		if b := gone[i].block(); i == 0 || b != ids[len(ids)-1] {
			ids = append(ids, b)
		}
	}
	slices.Sort(ids)
	ids = slices.Compact(ids)
	x.expiring = ids
	k, _ := slices.BinarySearch(ids, f.bySeq.minBlockFrom(f.entries, f.head+n))
	return ids[:k], ids[k:]
}

// deleteBlocks adds the deletion of fn's blocks firsts to b.
func deleteBlocks(b *pebbledb.Batch, fn string, firsts []uint64) error {
	for _, first := range firsts {
		if err := deleteBlock(b, blockID{fn, first}); err != nil {
			return err
		}
	}
	return nil
}

// The earlier layout kept each record as two keys: oldRecPrefix, uint16
// length of the function, function, ^finished, ^seq -> uvarint length of
// the state, state, data; and oldIdxPrefix, seq -> function, finished.
const (
	oldRecPrefix = 'h'
	oldIdxPrefix = 'k'
)

// convertOldRecords writes the records of the earlier layout as blocks
// and deletes them, in one write.
func (s *Store) convertOldRecords() error {
	byFn := make(map[string][]blockRec)
	err := guard(func() error {
		it, err := s.db.NewIter(&pebbledb.IterOptions{LowerBound: []byte{oldRecPrefix}, UpperBound: []byte{oldRecPrefix + 1}})
		if err != nil {
			return err
		}
		for valid := it.First(); valid; valid = it.Next() {
			k, v := it.Key(), it.Value()
			n := 0
			if len(k) >= 3 {
				n = int(binary.BigEndian.Uint16(k[1:3]))
			}
			sl, w := binary.Uvarint(v)
			if len(k) != 3+n+16 || w <= 0 || uint64(len(v)-w) < sl {
				_ = it.Close()
				return fmt.Errorf("job record %q: %w", k, store.ErrCorrupt)
			}
			fn := string(k[3 : 3+n])
			byFn[fn] = append(byFn[fn], blockRec{
				seq: ^binary.BigEndian.Uint64(k[3+n+8:]), fin: int64(^binary.BigEndian.Uint64(k[3+n:])),
				state: string(v[w : w+int(sl)]), data: slices.Clone(v[w+int(sl):])})
		}
		return errors.Join(it.Error(), it.Close())
	})
	if err != nil || len(byFn) == 0 {
		return err
	}
	return s.commit(func(b *pebbledb.Batch) error {
		for fn, rs := range byFn {
			slices.SortFunc(rs, func(a, b blockRec) int { return cmp.Compare(a.seq, b.seq) })
			if err := putBlocks(b, &s.idx.bufs, fn, rs); err != nil {
				return err
			}
		}
		return errors.Join(b.DeleteRange([]byte{oldRecPrefix}, []byte{oldRecPrefix + 1}, nil),
			b.DeleteRange([]byte{oldIdxPrefix}, []byte{oldIdxPrefix + 1}, nil))
	}, s.saveOpts)
}
