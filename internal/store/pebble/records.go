package pebble

import (
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	pebbledb "github.com/cockroachdb/pebble/v2"

	"github.com/gearwork/gearwork/internal/store"
)

var _ store.RecordStore = (*Store)(nil)

// The records of jobs that ended (store.RecordStore) are kept on disk in
// blocks (encodeBlock) in segment files (recordseg.go) and found through
// an index in memory (recordIndex). A listing or a lookup reads the blocks
// of the records it returns; expiry forgets index entries, and removes
// the segments that keep no record.
//
// A crash leaves a job or its record, never both and never neither: the
// record's block is appended to its segment (and, with SyncAlways,
// fdatasynced) before the Pebble write that removes the job; a store that
// opens to find a job still stored as live (queued, waiting for a retry)
// whose record is in a segment removes the job, which had ended
// (loadIndexLocked). A record forgotten because its job lives again (a
// dead letter queued again) is forgotten, by a tombstone in the segment,
// before its job is saved again.

// expireChunk is the most records one expiry step forgets.
const expireChunk = 4096

// loadIndexLocked builds the index at open from the blocks' headers in
// the segments (first moving records of the earlier layouts out of
// Pebble), and removes the jobs whose records it found. Caller holds
// s.idx.mu.
func (s *Store) loadIndexLocked() error {
	x := &s.idx
	x.fns, x.stateOf, x.states = make(map[string]*fnIndex), make(map[string]uint8), nil
	g := s.segs
	err := g.list()
	if err == nil {
		err = s.convertOldRecords()
	}
	if err == nil {
		err = s.migrateBlocks()
	}
	var seqs []uint64
	var tombs []recPos
	var expiries []expiryAt
	var buf []byte
	for _, num := range g.nums {
		if err != nil {
			break
		}
		if num > maxSeg {
			err = fmt.Errorf("job record segment %d: number too large: %w", num, store.ErrCorrupt)
			break
		}
		var torn bool
		var recs []blockRec
		buf, torn, err = g.scan(num, buf, func(kind byte, off uint32, p []byte) error {
			loc := mkLoc(num, off)
			switch kind {
			case frameTomb:
				return decodeTombFrame(p, func(q uint64) { tombs = append(tombs, recPos{q, loc}) })
			case frameExpire:
				fn, upTo, err := decodeExpireFrame(p)
				expiries = append(expiries, expiryAt{fn, upTo, loc})
				return err
			}
			b, err := decodeBlockFrame(p)
			if err != nil {
				return err
			}
			recs = recs[:0]
			err = decodeHeader(b.hdr, b.first, func(seq uint64, fin int64, state string) error {
				recs = append(recs, blockRec{seq: seq, fin: fin, state: state})
				return nil
			})
			if err != nil {
				return err
			}
			f := x.fn(b.fn)
			for _, r := range recs {
				st, err := x.state(r.state)
				if err != nil {
					return err
				}
				f.push(mkEntry(r.seq, r.fin, loc, st))
				seqs = append(seqs, r.seq)
			}
			g.total[num] += len(recs)
			return nil
		})
		if err == nil && torn {
			s.log.Warn("pebble store: a job record segment ends in an incomplete write (a crash during the write); its records are lost",
				slog.String("dir", s.dir), slog.String("segment", segName(num)))
		}
	}
	if err == nil {
		x.applyExpiries(expiries)
		err = x.resolve(seqs, tombs)
	}
	if err == nil {
		// The records kept, not every one read: a job whose record was
		// forgotten lives again.
		seqs = seqs[:0]
		for _, f := range x.fns {
			for _, e := range f.live() {
				seqs = append(seqs, e.seq())
			}
		}
		slices.Sort(seqs)
		err = s.removeRecordedJobs(seqs)
	}
	if err != nil {
		x.reset()
		return fmt.Errorf("pebble store %s: reading job records: %w", s.dir, err)
	}
	for name, f := range x.fns {
		f.sort()
		for _, e := range f.live() {
			g.live[e.seg()]++
		}
		if f.len() == 0 {
			x.drop(name)
		}
	}
	x.loaded = true
	if err := g.dropDead(); err != nil {
		return fmt.Errorf("pebble store %s: removing job record segments: %w", s.dir, err)
	}
	return nil
}

// expiryAt is an expiry frame: the records of fn up to upTo (by cmpEntry)
// read before loc expired.
type expiryAt struct {
	fn   string
	upTo recEntry
	loc  recLoc
}

// applyExpiries forgets the records that expiry frames read after them
// expired.
func (x *recordIndex) applyExpiries(ex []expiryAt) {
	byFn := make(map[string][]expiryAt)
	for _, e := range ex {
		byFn[e.fn] = append(byFn[e.fn], e)
	}
	for fn, ex := range byFn {
		f := x.fns[fn]
		if f == nil {
			continue
		}
		// Frames in the order written (by place); upTo[i] is the furthest
		// of the frames from i on.
		slices.SortFunc(ex, func(a, b expiryAt) int { return cmp.Compare(a.loc, b.loc) })
		for i := len(ex) - 2; i >= 0; i-- {
			if cmpEntry(ex[i+1].upTo, ex[i].upTo) > 0 {
				ex[i].upTo = ex[i+1].upTo
			}
		}
		f.keep(func(e recEntry) bool {
			i, _ := slices.BinarySearchFunc(ex, e.loc(), func(a expiryAt, l recLoc) int { return cmp.Compare(a.loc, l) })
			return i == len(ex) || cmpEntry(e, ex[i].upTo) > 0
		})
	}
}

// recPos is a record's Seq and the place of its frame (a block or a
// tombstone); the later place wins.
type recPos struct {
	seq uint64
	loc recLoc
}

// resolve keeps, of the records read (seqs, in the index), only the
// last of each Seq, and of those only the ones no later tombstone
// forgets.
func (x *recordIndex) resolve(seqs []uint64, tombs []recPos) error {
	slices.Sort(seqs)
	doubt := make(map[uint64]recLoc) // Seq -> the place of its last record
	for i := 1; i < len(seqs); i++ {
		if seqs[i] == seqs[i-1] {
			doubt[seqs[i]] = 0
		}
	}
	for _, t := range tombs {
		doubt[t.seq] = 0
	}
	if len(doubt) == 0 {
		return nil
	}
	for _, f := range x.fns {
		for _, e := range f.live() {
			if l, ok := doubt[e.seq()]; ok && e.loc() > l {
				doubt[e.seq()] = e.loc()
			}
		}
	}
	for _, t := range tombs {
		if l, ok := doubt[t.seq]; ok && t.loc > l {
			doubt[t.seq] = 0 // forgotten after its last record
		}
	}
	for _, f := range x.fns {
		f.keep(func(e recEntry) bool {
			l, ok := doubt[e.seq()]
			return !ok || l == e.loc()
		})
	}
	return nil
}

// removeRecordedJobs removes the jobs stored as live (queued, waiting for
// a retry or for others) that have a record (seqs, sorted): they ended,
// and the write that removed them was lost in a crash.
func (s *Store) removeRecordedJobs(seqs []uint64) error {
	if len(seqs) == 0 {
		return nil
	}
	var gone []uint64
	err := guard(func() error {
		it, err := s.db.NewIter(&pebbledb.IterOptions{LowerBound: appendJobKey(nil, seqs[0]), UpperBound: jobUpper})
		if err != nil {
			return err
		}
		var dec recordDecoder
		i := 0
		for valid := it.First(); valid && i < len(seqs); {
			q, ok := parseJobKey(it.Key())
			if !ok {
				break
			}
			for i < len(seqs) && seqs[i] < q {
				i++
			}
			if i == len(seqs) {
				break
			}
			if seqs[i] > q {
				valid = it.SeekGE(appendJobKey(nil, seqs[i]))
				continue
			}
			j, err := dec.decode(q, it.Value(), true)
			if err != nil {
				_ = it.Close()
				return err
			}
			if j.State != store.StateDead && j.State != store.StateDone {
				gone = append(gone, q)
			}
			i++
			valid = it.Next()
		}
		return errors.Join(it.Error(), it.Close())
	})
	if err != nil || len(gone) == 0 {
		return err
	}
	s.log.Info("pebble store: removing jobs that ended before a crash (their records are stored)",
		slog.String("dir", s.dir), slog.Int("jobs", len(gone)))
	return s.commit(func(b *pebbledb.Batch) error {
		for _, q := range gone {
			if err := b.Delete(appendJobKey(nil, q), nil); err != nil {
				return err
			}
		}
		return nil
	}, pebbledb.Sync)
}

// migrateBlocks moves the blocks of the earlier layout (two Pebble keys
// each) into a segment: appended and synced, then deleted from Pebble. A
// crash in between leaves them in both; the next open moves them again,
// and the later copy of each record wins.
func (s *Store) migrateBlocks() error {
	g := s.segs
	n := 0
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
			var recs []blockRec
			err := decodeHeader(it.Value(), first, func(seq uint64, fin int64, state string) error {
				recs = append(recs, blockRec{seq: seq, fin: fin, state: state})
				return nil
			})
			if err == nil {
				err = s.readOldData(fn, first, recs)
			}
			if err != nil {
				_ = it.Close()
				return err
			}
			for _, blk := range splitBlocks(recs) {
				g.appendBlockFrame(fn, blk)
			}
			n++
		}
		return errors.Join(it.Error(), it.Close())
	})
	if err != nil || n == 0 {
		return err
	}
	if _, _, err := s.appendFrames(true); err != nil {
		return err
	}
	return s.commit(func(b *pebbledb.Batch) error {
		return errors.Join(b.DeleteRange([]byte{blockHdrPrefix}, []byte{blockHdrPrefix + 1}, nil),
			b.DeleteRange([]byte{blockDataPrefix}, []byte{blockDataPrefix + 1}, nil))
	}, pebbledb.Sync)
}

// appendFrames appends the frames in the segments' buffer (if any), synced
// when sync is set, and returns the segment and offset they start at. A
// failure marks the store failed.
func (s *Store) appendFrames(sync bool) (uint32, int64, error) {
	g := s.segs
	if len(g.buf) == 0 {
		return 0, 0, nil
	}
	seg, base, err := g.prepare(len(g.buf))
	if err == nil {
		err = g.write(sync)
	}
	if err != nil {
		g.buf = g.buf[:0]
		s.fail(err)
		return 0, 0, err
	}
	if s.mode == SyncInterval {
		s.dirty.Store(true)
	}
	return seg, base, nil
}

// readOldData fills in the data of recs, the records of the Pebble block
// of fn that starts at first, in their order.
func (s *Store) readOldData(fn string, first uint64, recs []blockRec) error {
	v, closer, err := s.db.Get(blockKey(blockDataPrefix, fn, first))
	if err != nil {
		return fmt.Errorf("job record block %d: %w", first, err)
	}
	defer closer.Close()
	i := 0
	err = decodeData(v, first, func(seq uint64, data []byte) bool {
		if i < len(recs) && recs[i].seq == seq {
			recs[i].data = slices.Clone(data)
			i++
		}
		return true
	})
	if err == nil && i != len(recs) {
		err = fmt.Errorf("job record block %d: header and data differ: %w", first, store.ErrCorrupt)
	}
	return err
}

// readBlock calls each with the data of the wanted Seqs of the block at
// loc (valid during the call).
func (s *Store) readBlock(loc recLoc, want func(seq uint64) bool, each func(seq uint64, data []byte)) error {
	kind, p, err := s.segs.readFrame(loc.seg(), loc.off())
	if err != nil {
		return err
	}
	if kind != frameBlock {
		return fmt.Errorf("job record block at %d of segment %d: not a block: %w", loc.off(), loc.seg(), store.ErrCorrupt)
	}
	b, err := decodeBlockFrame(p)
	if err != nil {
		return err
	}
	return decodeData(b.data, b.first, func(seq uint64, data []byte) bool {
		if want(seq) {
			each(seq, data)
		}
		return true
	})
}

// EndJobs deletes dels, forgets the records forget and writes recs, so
// that a crash leaves either a job or its record: the records (and the
// tombstones of those forgotten) are appended to a segment, synced as
// Save is, before the Pebble write that deletes the jobs, which waits for
// no fsync (as Delete). recs must not be of jobs whose records are kept
// (forget those first).
func (s *Store) EndJobs(ctx context.Context, dels []uint64, recs []store.Record, forget []uint64) error {
	return s.endJobs(ctx, dels, recs, forget, nil)
}

// endJobs is EndJobs; first, when not nil, adds more writes (saves and
// metadata: Write) at the start of the Pebble batch, which is then synced
// as Save is.
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
	if !x.loaded {
		return fmt.Errorf("pebble store %s: the job records were not read: %w", s.dir, store.ErrFailed)
	}
	g := s.segs
	g.buf = g.buf[:0]
	if len(forget) > 0 {
		// Every one, kept or not: an expired record comes back at the
		// next open until expiry forgets it again, and must not then
		// win over its job, which lives again.
		g.appendTombFrame(forget)
	}
	// The new records, by function, in the order given (the order their
	// jobs ended, so that the index mostly appends).
	byFn := make(map[string][]blockRec)
	var fns []string
	for _, r := range recs {
		if _, err := x.state(r.State); err != nil {
			return fmt.Errorf("pebble store %s: %w", s.dir, err)
		}
		if _, ok := byFn[r.Function]; !ok {
			fns = append(fns, r.Function)
		}
		byFn[r.Function] = append(byFn[r.Function], blockRec{seq: r.Seq, fin: r.Finished, state: r.State, data: r.Data})
	}
	type placed struct {
		fn  string
		blk []blockRec
		at  int
	}
	var blocks []placed
	for _, fn := range fns {
		for _, blk := range splitBlocks(byFn[fn]) {
			blocks = append(blocks, placed{fn, blk, g.appendBlockFrame(fn, blk)})
		}
	}
	seg, base, err := s.appendFrames(s.mode == SyncAlways)
	if err != nil {
		return fmt.Errorf("pebble store %s: writing %d job records: %w", s.dir, len(recs), err)
	}
	if len(dels) > 0 || first != nil {
		// Removals alone are never waited for (see Delete).
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
			return fillDelete(b, dels)
		}, wo)
		if err != nil {
			return fmt.Errorf("pebble store %s: ending %d jobs with %d records: %w", s.dir, len(dels), len(recs), err)
		}
		if s.mode == SyncInterval && first != nil {
			s.dirty.Store(true)
		}
	}
	for _, q := range forget {
		if _, f, i, ok := x.lookup(q); ok {
			g.live[f.live()[i].seg()]--
			f.remove(i)
		}
	}
	for _, p := range blocks {
		f := x.fn(p.fn)
		loc := mkLoc(seg, uint32(base)+uint32(p.at))
		for _, r := range p.blk {
			f.add(mkEntry(r.seq, r.fin, loc, x.stateOf[r.state]))
		}
		g.live[seg] += len(p.blk)
		g.total[seg] += len(p.blk)
	}
	if len(forget) > 0 {
		for name, f := range x.fns {
			if f.len() == 0 {
				x.drop(name)
			}
		}
	}
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
	fn, f, i, ok := x.lookup(seq)
	if !ok {
		return store.Record{}, fmt.Errorf("pebble store %s: job record %d: %w", s.dir, seq, store.ErrNotFound)
	}
	e := f.live()[i]
	rec := store.Record{Seq: seq, Function: fn, State: x.states[e.state()], Finished: e.fin()}
	found := false
	err := s.readBlock(e.loc(), func(q uint64) bool { return q == seq }, func(_ uint64, data []byte) {
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
	var locs []recLoc
	for i, p := range picks {
		out[i] = store.Record{Seq: p.e.seq(), Function: p.fn, State: x.states[p.e.state()], Finished: p.e.fin()}
		at[p.e.seq()] = i
		if l := p.e.loc(); !slices.Contains(locs, l) {
			locs = append(locs, l)
		}
	}
	for _, l := range locs {
		err := s.readBlock(l, func(seq uint64) bool { i, ok := at[seq]; return ok && out[i].Data == nil }, func(seq uint64, data []byte) {
			out[at[seq]].Data = slices.Clone(data)
		})
		if err != nil {
			return nil, fmt.Errorf("pebble store %s: listing job records: %w", s.dir, err)
		}
	}
	return out, nil
}

// RecordCounts returns the kept records per function and state.
func (s *Store) RecordCounts(ctx context.Context) (map[string]map[string]int, error) {
	if err := s.begin(ctx, false); err != nil {
		return nil, err
	}
	defer s.mu.RUnlock()
	x := &s.idx
	x.mu.Lock()
	defer x.mu.Unlock()
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
// expireChunk of them per step (each holding the index's lock), then
// removes the segments left without records and copies the records of a
// mostly forgotten oldest segment forward (compactSegmentLocked).
func (s *Store) ExpireRecords(ctx context.Context, now int64, limits func(string) (time.Duration, int)) (int, error) {
	counts, err := s.RecordCounts(ctx)
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
	if err := s.begin(ctx, true); err != nil {
		return total, err
	}
	defer s.mu.RUnlock()
	s.idx.mu.Lock()
	defer s.idx.mu.Unlock()
	err = s.segs.dropDead()
	if err == nil {
		err = s.compactSegmentLocked()
	}
	if err != nil {
		return total, fmt.Errorf("pebble store %s: expiring job records: %w", s.dir, err)
	}
	return total, nil
}

// expireChunk forgets at most expireChunk expired records of fn, from
// the index only: their segments keep them until none of a segment's
// records is kept.
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
	doomed := f.len() // age <= 0 or max <= 0: every record goes
	if age > 0 && most > 0 {
		doomed = f.len() - most // the oldest beyond the count
		if cut := now - int64(age); cut > 0 {
			// and every one that ended before cut
			i, _ := slices.BinarySearchFunc(f.live(), mkEntry(0, cut, 0, 0), cmpEntry)
			doomed = max(doomed, i)
		}
	}
	if doomed <= 0 {
		return 0, false, nil
	}
	n := min(doomed, expireChunk)
	// An expiry frame (not waited for: a lost one only brings the records
	// back until the next expiry) keeps them expired after a restart.
	g := s.segs
	g.buf = g.buf[:0]
	g.appendExpireFrame(fn, f.live()[n-1])
	if _, _, err := s.appendFrames(false); err != nil {
		return 0, false, fmt.Errorf("pebble store %s: expiring job records of %q: %w", s.dir, fn, err)
	}
	for _, e := range f.live()[:n] {
		f.count(e.state(), -1)
		g.live[e.seg()]--
	}
	f.dropOldest(n)
	if f.len() == 0 {
		x.drop(fn)
	}
	return n, doomed > n, nil
}

// compactSegmentLocked copies the records still kept in the oldest
// segment, once fewer than a quarter of its records are, to the active
// one (synced whatever the sync mode), so that the segment can go: a
// function whose records stay long would otherwise keep every later
// segment on disk. Caller holds s.idx.mu and s.mu (shared).
func (s *Store) compactSegmentLocked() error {
	g := s.segs
	if len(g.nums) < 2 || g.nums[0] == g.active {
		return nil
	}
	old := g.nums[0]
	if g.live[old]*4 >= g.total[old] {
		return nil
	}
	x := &s.idx
	type moved struct {
		fn string
		f  *fnIndex
		i  int
	}
	byLoc := make(map[recLoc][]moved)
	for name, f := range x.fns {
		for i, e := range f.live() {
			if e.seg() == old {
				byLoc[e.loc()] = append(byLoc[e.loc()], moved{name, f, i})
			}
		}
	}
	g.buf = g.buf[:0]
	type placed struct {
		recs []moved
		at   int
	}
	var blocks []placed
	for l, ms := range byLoc {
		want := make(map[uint64]int, len(ms))
		for k, m := range ms {
			want[m.f.live()[m.i].seq()] = k
		}
		recs := make([]blockRec, len(ms))
		found := 0
		err := s.readBlock(l, func(q uint64) bool { _, ok := want[q]; return ok }, func(q uint64, data []byte) {
			m := ms[want[q]]
			e := m.f.live()[m.i]
			recs[want[q]] = blockRec{seq: q, fin: e.fin(), state: x.states[e.state()], data: slices.Clone(data)}
			found++
		})
		if err == nil && found != len(ms) {
			err = fmt.Errorf("job record block at %d of segment %d: a record of the index is missing: %w", l.off(), l.seg(), store.ErrCorrupt)
		}
		if err != nil {
			return err
		}
		// One block of the old segment stays one block (same function,
		// within blockMax and maxBack).
		blocks = append(blocks, placed{ms, g.appendBlockFrame(ms[0].fn, recs)})
	}
	if len(g.buf) > 0 {
		seg, base, err := s.appendFrames(true)
		if err != nil {
			return err
		}
		for _, p := range blocks {
			loc := mkLoc(seg, uint32(base)+uint32(p.at))
			for _, m := range p.recs {
				m.f.live()[m.i] = m.f.live()[m.i].withLoc(loc)
			}
			g.live[seg] += len(p.recs)
			g.total[seg] += len(p.recs)
		}
	}
	g.live[old] = 0
	return g.dropDead()
}

// putBlocks adds the blocks of recs of fn to b as the earlier layout kept
// them, two Pebble keys each (convertOldRecords; migrateBlocks moves them
// into a segment).
func putBlocks(b *pebbledb.Batch, fn string, recs []blockRec) error {
	for _, blk := range splitBlocks(recs) {
		hdr, data := encodeBlock(blk)
		first := blockFirst(blk)
		if err := b.Set(blockKey(blockHdrPrefix, fn, first), hdr, nil); err != nil {
			return err
		}
		if err := b.Set(blockKey(blockDataPrefix, fn, first), data, nil); err != nil {
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
			if err := putBlocks(b, fn, rs); err != nil {
				return err
			}
		}
		return errors.Join(b.DeleteRange([]byte{oldRecPrefix}, []byte{oldRecPrefix + 1}, nil),
			b.DeleteRange([]byte{oldIdxPrefix}, []byte{oldIdxPrefix + 1}, nil))
	}, s.saveOpts)
}
