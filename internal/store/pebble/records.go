package pebble

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	pebbledb "github.com/cockroachdb/pebble/v2"

	"github.com/gearwork/gearwork/internal/store"
)

var _ store.RecordStore = (*Store)(nil)

// The records of jobs that ended (store.RecordStore) are two keys each:
//
//	recPrefix, uint16 length of the function, function, ^finished (8 bytes),
//	^seq (8 bytes) -> uvarint length of the state, state, data
//	idxPrefix, seq (8 bytes) -> function, finished (8 bytes)
//
// The first orders each function's records newest first, so that a listing
// is a forward scan from a seek and expiry deletes one key range per
// function; the second finds a record by its job's Seq.
const (
	recPrefix = 'h'
	idxPrefix = 'k'
	// expireChunk is the most records one expiry write forgets.
	expireChunk = 4096
)

// recordCounts counts the kept records per function and state; it is
// built on the first use from the keys on disk and kept in step by every
// write. It costs memory per function and state, not per record.
type recordCounts struct {
	mu     sync.Mutex
	loaded bool
	by     map[string]map[string]int
}

func (c *recordCounts) add(fn, state string, n int) {
	m := c.by[fn]
	if m == nil {
		m = make(map[string]int)
		c.by[fn] = m
	}
	m[state] += n
	if m[state] <= 0 {
		delete(m, state)
	}
	if len(m) == 0 {
		delete(c.by, fn)
	}
}

func recFnPrefix(fn string) []byte {
	k := make([]byte, 0, 3+len(fn)+16)
	k = append(k, recPrefix)
	k = binary.BigEndian.AppendUint16(k, uint16(len(fn)))
	return append(k, fn...)
}

func appendRecKey(dst []byte, fn string, finished int64, seq uint64) []byte {
	dst = append(dst, recFnPrefix(fn)...)
	dst = binary.BigEndian.AppendUint64(dst, ^uint64(finished))
	return binary.BigEndian.AppendUint64(dst, ^seq)
}

// parseRecKey returns the function, finished time and seq of a record key.
func parseRecKey(k []byte) (string, int64, uint64, bool) {
	if len(k) < 3 || k[0] != recPrefix {
		return "", 0, 0, false
	}
	n := int(binary.BigEndian.Uint16(k[1:3]))
	if len(k) != 3+n+16 {
		return "", 0, 0, false
	}
	fn := string(k[3 : 3+n])
	fin := int64(^binary.BigEndian.Uint64(k[3+n:]))
	seq := ^binary.BigEndian.Uint64(k[3+n+8:])
	return fn, fin, seq, true
}

func idxKey(seq uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte{idxPrefix}, seq)
}

func recValue(r store.Record) []byte {
	v := binary.AppendUvarint(make([]byte, 0, 1+len(r.State)+len(r.Data)), uint64(len(r.State)))
	v = append(v, r.State...)
	return append(v, r.Data...)
}

func parseRecValue(v []byte) (state string, data []byte, ok bool) {
	n, w := binary.Uvarint(v)
	if w <= 0 || uint64(len(v)-w) < n {
		return "", nil, false
	}
	return string(v[w : w+int(n)]), v[w+int(n):], true
}

// prefixEnd returns the first key after every key that starts with p.
func prefixEnd(p []byte) []byte {
	end := slices.Clone(p)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] != 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}

// loadCountsLocked counts the records on disk once. Caller holds
// s.counts.mu and s.mu (shared).
func (s *Store) loadCountsLocked() error {
	if s.counts.loaded {
		return nil
	}
	by := make(map[string]map[string]int)
	err := guard(func() error {
		it, err := s.db.NewIter(&pebbledb.IterOptions{LowerBound: []byte{recPrefix}, UpperBound: []byte{recPrefix + 1}})
		if err != nil {
			return err
		}
		for valid := it.First(); valid; valid = it.Next() {
			fn, _, _, ok := parseRecKey(it.Key())
			st, _, ok2 := parseRecValue(it.Value())
			if !ok || !ok2 {
				_ = it.Close()
				return fmt.Errorf("job record %q: %w", it.Key(), store.ErrCorrupt)
			}
			m := by[fn]
			if m == nil {
				m = make(map[string]int)
				by[fn] = m
			}
			m[st]++
		}
		return errors.Join(it.Error(), it.Close())
	})
	if err != nil {
		return fmt.Errorf("pebble store %s: counting job records: %w", s.dir, err)
	}
	s.counts.by, s.counts.loaded = by, true
	return nil
}

// EndJobs deletes dels, forgets the records forget and writes recs in one
// batch, so that a crash leaves either a job or its record. A batch with
// records is synced as Save is; one without waits for no fsync, as Delete.
func (s *Store) EndJobs(ctx context.Context, dels []uint64, recs []store.Record, forget []uint64) error {
	if err := s.begin(ctx, true); err != nil {
		return err
	}
	defer s.mu.RUnlock()
	if len(dels) == 0 && len(recs) == 0 && len(forget) == 0 {
		return nil
	}
	s.counts.mu.Lock()
	defer s.counts.mu.Unlock()
	if err := s.loadCountsLocked(); err != nil {
		return err
	}
	// Removals alone are never waited for (see Delete); a write that
	// carries records is as durable as Save, so that a record that was
	// written is on disk in SyncAlways mode.
	wo := pebbledb.NoSync
	if len(recs) > 0 {
		wo = s.saveOpts
	}
	type gone struct{ fn, state string }
	var forgotten []gone
	err := s.commit(func(b *pebbledb.Batch) error {
		for _, q := range dels {
			op := b.DeleteDeferred(jobKeyLen)
			putJobKey(op.Key, q)
			if err := op.Finish(); err != nil {
				return err
			}
		}
		for _, q := range forget {
			k, st, ok, err := s.recKeyOf(q)
			if err != nil {
				return err
			}
			if !ok {
				continue
			}
			fn, _, _, _ := parseRecKey(k)
			forgotten = append(forgotten, gone{fn, st})
			if err := b.Delete(k, nil); err != nil {
				return err
			}
			if err := b.Delete(idxKey(q), nil); err != nil {
				return err
			}
		}
		for _, r := range recs {
			k := appendRecKey(nil, r.Function, r.Finished, r.Seq)
			if err := b.Set(k, recValue(r), nil); err != nil {
				return err
			}
			iv := binary.BigEndian.AppendUint64([]byte(r.Function), uint64(r.Finished))
			if err := b.Set(idxKey(r.Seq), iv, nil); err != nil {
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
	for _, g := range forgotten {
		s.counts.add(g.fn, g.state, -1)
	}
	for _, r := range recs {
		s.counts.add(r.Function, r.State, 1)
	}
	return nil
}

// readRecord finds job seq's record through its index entry and hands its
// key, function, finish time, state and data to use while the value is
// valid. ok is false where the job has no record: none was kept, or it
// expired (the index entry then goes with the next expiry).
func (s *Store) readRecord(seq uint64, use func(key []byte, fn string, fin int64, state string, data []byte)) (ok bool, err error) {
	v, closer, err := s.db.Get(idxKey(seq))
	if errors.Is(err, pebbledb.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if len(v) < 8 {
		closer.Close()
		return false, fmt.Errorf("index of job record %d: %w", seq, store.ErrCorrupt)
	}
	fn := string(v[:len(v)-8])
	fin := int64(binary.BigEndian.Uint64(v[len(v)-8:]))
	closer.Close()
	k := appendRecKey(nil, fn, fin, seq)
	rv, closer, err := s.db.Get(k)
	if errors.Is(err, pebbledb.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer closer.Close()
	st, data, vok := parseRecValue(rv)
	if !vok {
		return false, fmt.Errorf("job record %d: %w", seq, store.ErrCorrupt)
	}
	use(k, fn, fin, st, data)
	return true, nil
}

// recKeyOf returns the record key and state of job seq's record.
func (s *Store) recKeyOf(seq uint64) (key []byte, state string, ok bool, err error) {
	err = guard(func() error {
		var rerr error
		ok, rerr = s.readRecord(seq, func(k []byte, _ string, _ int64, st string, _ []byte) {
			key, state = k, st
		})
		return rerr
	})
	return key, state, ok, err
}

// Record returns the record of job seq, read from disk (or Pebble's
// cache).
func (s *Store) Record(ctx context.Context, seq uint64) (store.Record, error) {
	if err := s.begin(ctx, false); err != nil {
		return store.Record{}, err
	}
	defer s.mu.RUnlock()
	var rec store.Record
	found := false
	err := guard(func() error {
		var rerr error
		found, rerr = s.readRecord(seq, func(_ []byte, fn string, fin int64, st string, data []byte) {
			rec = store.Record{Seq: seq, Function: fn, State: st, Finished: fin, Data: slices.Clone(data)}
		})
		return rerr
	})
	switch {
	case err != nil:
		return store.Record{}, fmt.Errorf("pebble store %s: reading job record %d: %w", s.dir, seq, err)
	case !found:
		return store.Record{}, fmt.Errorf("pebble store %s: job record %d: %w", s.dir, seq, store.ErrNotFound)
	}
	return rec, nil
}

// Records lists records newest first. A listing of one function is one
// seek and a scan of the records it returns (and of those of other states
// it skips); a listing of every function does so per function and merges.
func (s *Store) Records(ctx context.Context, q store.RecordQuery) ([]store.Record, error) {
	if err := s.begin(ctx, false); err != nil {
		return nil, err
	}
	defer s.mu.RUnlock()
	if q.Limit <= 0 {
		return nil, nil
	}
	fns := []string{q.Function}
	if q.Function == "" {
		s.counts.mu.Lock()
		err := s.loadCountsLocked()
		fns = fns[:0]
		for fn := range s.counts.by {
			fns = append(fns, fn)
		}
		s.counts.mu.Unlock()
		if err != nil {
			return nil, err
		}
	}
	var out []store.Record
	for _, fn := range fns {
		recs, err := s.fnRecords(ctx, fn, q)
		if err != nil {
			return nil, err
		}
		out = append(out, recs...)
	}
	if len(fns) > 1 {
		slices.SortFunc(out, func(a, b store.Record) int {
			pa, pb := store.RecordPos{Finished: a.Finished, Seq: a.Seq}, store.RecordPos{Finished: b.Finished, Seq: b.Seq}
			return pb.Compare(pa)
		})
		out = out[:min(len(out), q.Limit)]
	}
	return out, nil
}

func (s *Store) fnRecords(ctx context.Context, fn string, q store.RecordQuery) ([]store.Record, error) {
	prefix := recFnPrefix(fn)
	var out []store.Record
	err := guard(func() error {
		it, err := s.db.NewIter(&pebbledb.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)})
		if err != nil {
			return err
		}
		valid := it.First()
		var after []byte
		if q.After != (store.RecordPos{}) {
			after = appendRecKey(nil, fn, q.After.Finished, q.After.Seq)
			valid = it.SeekGE(after)
		}
		n := 0
		for ; valid && len(out) < q.Limit; valid = it.Next() {
			if n++; n%4096 == 0 && ctx.Err() != nil {
				break
			}
			if after != nil && bytes.Equal(it.Key(), after) {
				continue
			}
			_, fin, seq, ok := parseRecKey(it.Key())
			st, data, ok2 := parseRecValue(it.Value())
			if !ok || !ok2 {
				_ = it.Close()
				return fmt.Errorf("job record %q: %w", it.Key(), store.ErrCorrupt)
			}
			if q.State != "" && st != q.State {
				continue
			}
			out = append(out, store.Record{Seq: seq, Function: fn, State: st, Finished: fin, Data: slices.Clone(data)})
		}
		return errors.Join(it.Error(), it.Close(), ctx.Err())
	})
	if err != nil {
		return nil, fmt.Errorf("pebble store %s: listing job records of %q: %w", s.dir, fn, err)
	}
	return out, nil
}

// RecordCounts returns the kept records per function and state.
func (s *Store) RecordCounts(ctx context.Context) (map[string]map[string]int, error) {
	if err := s.begin(ctx, false); err != nil {
		return nil, err
	}
	defer s.mu.RUnlock()
	s.counts.mu.Lock()
	defer s.counts.mu.Unlock()
	if err := s.loadCountsLocked(); err != nil {
		return nil, err
	}
	out := make(map[string]map[string]int, len(s.counts.by))
	for fn, m := range s.counts.by {
		c := make(map[string]int, len(m))
		for k, v := range m {
			c[k] = v
		}
		out[fn] = c
	}
	return out, nil
}

// ExpireRecords forgets the records of each function that ended before
// its age limit or lie beyond its count: one range deletion per chunk of
// expireChunk records (and a point deletion of each one's index entry),
// each its own write.
func (s *Store) ExpireRecords(ctx context.Context, now int64, limits func(string) (time.Duration, int)) (int, error) {
	counts, err := s.RecordCounts(ctx)
	if err != nil {
		return 0, err
	}
	total := 0
	for fn := range counts {
		age, max := limits(fn)
		n, err := s.expireFn(ctx, fn, now, age, max)
		total += n
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

func (s *Store) expireFn(ctx context.Context, fn string, now int64, age time.Duration, max int) (int, error) {
	total := 0
	for {
		n, more, err := s.expireChunk(ctx, fn, now, age, max)
		total += n
		if err != nil || !more {
			return total, err
		}
	}
}

// expireChunk forgets at most expireChunk expired records of fn.
func (s *Store) expireChunk(ctx context.Context, fn string, now int64, age time.Duration, max int) (int, bool, error) {
	if err := s.begin(ctx, true); err != nil {
		return 0, false, err
	}
	defer s.mu.RUnlock()
	// Holding the counts' lock keeps EndJobs out until the chunk is gone,
	// so that the counts stay exact.
	s.counts.mu.Lock()
	defer s.counts.mu.Unlock()
	prefix := recFnPrefix(fn)
	end := prefixEnd(prefix)
	type gone struct {
		seq   uint64
		state string
	}
	var doomed []gone
	var from, to []byte
	total := 0
	for _, n := range s.counts.by[fn] {
		total += n
	}
	excess := total - max // the oldest records beyond the count go
	var cut []byte        // and so does every record at or after cut
	switch {
	case age <= 0 || max <= 0:
		excess = total
	case now-int64(age) > 0:
		cut = appendRecKey(nil, fn, now-int64(age)-1, ^uint64(0))
	}
	err := guard(func() error {
		it, err := s.db.NewIter(&pebbledb.IterOptions{LowerBound: prefix, UpperBound: end})
		if err != nil {
			return err
		}
		// The oldest records are last: walk back from the end while
		// they are doomed.
		for valid := it.Last(); valid && len(doomed) < expireChunk; valid = it.Prev() {
			if len(doomed) >= excess && (cut == nil || bytes.Compare(it.Key(), cut) < 0) {
				break
			}
			_, _, seq, ok := parseRecKey(it.Key())
			st, _, ok2 := parseRecValue(it.Value())
			if !ok || !ok2 {
				_ = it.Close()
				return fmt.Errorf("job record %q: %w", it.Key(), store.ErrCorrupt)
			}
			if to == nil {
				to = slices.Clone(it.Key())
			}
			from = slices.Clone(it.Key())
			doomed = append(doomed, gone{seq, st})
		}
		return errors.Join(it.Error(), it.Close())
	})
	if err != nil {
		return 0, false, fmt.Errorf("pebble store %s: expiring job records of %q: %w", s.dir, fn, err)
	}
	if len(doomed) == 0 {
		return 0, false, nil
	}
	err = s.commit(func(b *pebbledb.Batch) error {
		if err := b.DeleteRange(from, append(to, 0), nil); err != nil {
			return err
		}
		for _, g := range doomed {
			if err := b.Delete(idxKey(g.seq), nil); err != nil {
				return err
			}
		}
		return nil
	}, pebbledb.NoSync)
	if err != nil {
		return 0, false, fmt.Errorf("pebble store %s: expiring job records of %q: %w", s.dir, fn, err)
	}
	for _, g := range doomed {
		s.counts.add(fn, g.state, -1)
	}
	return len(doomed), len(doomed) == expireChunk, nil
}
