package pebble

import (
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"runtime"
	"slices"
	"testing"
	"time"

	pebbledb "github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/internal/store"
)

// Records of the earlier layout (two keys a record) are turned into
// blocks on the first use and read as before.
func TestRecordsOfEarlierLayoutConverted(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	fs := vfs.NewMem()
	st, err := Open(ctx, "data", Options{FS: fs, Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	old := func(fn string, fin int64, seq uint64, state, data string) {
		k := []byte{oldRecPrefix}
		k = binary.BigEndian.AppendUint16(k, uint16(len(fn)))
		k = append(k, fn...)
		k = binary.BigEndian.AppendUint64(k, ^uint64(fin))
		k = binary.BigEndian.AppendUint64(k, ^seq)
		v := binary.AppendUvarint(nil, uint64(len(state)))
		v = append(append(v, state...), data...)
		idx := binary.BigEndian.AppendUint64([]byte{oldIdxPrefix}, seq)
		require.NoError(t, st.commit(func(b *pebbledb.Batch) error {
			return errors.Join(b.Set(k, v, nil), b.Set(idx, binary.BigEndian.AppendUint64([]byte(fn), uint64(fin)), nil))
		}, pebbledb.Sync))
	}
	old("a", 10, 3, "complete", "three")
	old("a", 20, 1, "failed", "one")
	old("b", 15, 2, "complete", "two")
	require.NoError(t, st.Close())

	st, err = Open(ctx, "data", Options{FS: fs, Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	defer st.Close()
	recs, err := st.Records(ctx, store.RecordQuery{Limit: 10})
	require.NoError(t, err)
	require.Equal(t, []store.Record{
		{Seq: 1, Function: "a", State: "failed", Finished: 20, Data: []byte("one")},
		{Seq: 2, Function: "b", State: "complete", Finished: 15, Data: []byte("two")},
		{Seq: 3, Function: "a", State: "complete", Finished: 10, Data: []byte("three")},
	}, recs)
	for _, p := range []byte{oldRecPrefix, oldIdxPrefix} {
		it, err := st.db.NewIter(&pebbledb.IterOptions{LowerBound: []byte{p}, UpperBound: []byte{p + 1}})
		require.NoError(t, err)
		require.False(t, it.First(), "keys of the earlier layout are gone")
		require.NoError(t, it.Close())
	}
}

// The index keeps its entries in order whatever order they come in, and
// keeps them through the moves that grow and shrink its room.
func TestRecordIndexOrderAndMoves(t *testing.T) {
	t.Parallel()
	f := &fnIndex{}
	defer f.release()
	const n = 5000
	for i := range n {
		// Mostly in order, every seventh one ended long before.
		fin := int64(i * 10)
		if i%7 == 0 {
			fin -= 5000
		}
		f.add(mkEntry(uint64(i+1), fin, 0, uint8(i%2)))
	}
	require.Equal(t, n, f.len())
	require.True(t, slices.IsSortedFunc(f.live(), cmpEntry))
	require.Equal(t, []int{n / 2, n / 2}, f.counts)
	oldest := slices.Clone(f.live()[:3000])
	rest := slices.Clone(f.live()[3000:])
	for _, e := range oldest {
		f.count(e.state(), -1)
	}
	f.dropOldest(3000) // puts the 2000 left into smaller room
	require.Equal(t, rest, f.live())
	i, ok := f.find(rest[10].fin(), rest[10].seq())
	require.True(t, ok)
	require.Equal(t, 10, i)
	f.remove(i)
	require.Equal(t, 1999, f.len())
	require.Equal(t, 1999, f.counts[0]+f.counts[1])
}

// Records whose Seqs lie further apart than a block may span (a job from
// before a restart ending with one from after it) are split into blocks
// when written, and a block written wider by an earlier version is split
// when the index is built; either way every record reads back.
func TestRecordsWideSeqsSplit(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	open := reopener(t, vfs.NewMem())
	st := open()
	rec := func(seq uint64) store.Record {
		return store.Record{Seq: seq, Function: "f", State: "complete", Finished: int64(seq % 1000), Data: []byte(fmt.Sprint(seq))}
	}
	far := uint64(maxBack) + 10
	require.NoError(t, st.EndJobs(ctx, nil, []store.Record{rec(5), rec(5 + far), rec(6)}, nil))
	// A wide block as the earlier version wrote it.
	wide := []blockRec{{seq: 100, fin: 1, state: "failed", data: []byte("100")}, {seq: 100 + 2*far, fin: 2, state: "failed", data: []byte("wide")}}
	var bb blockBufs
	hdr, _ := bb.encode(wide)
	data := bb.data // unpacked, as the earlier version wrote it
	require.Equal(t, byte(blockVersion), data[0])
	require.NoError(t, st.commit(func(b *pebbledb.Batch) error {
		return errors.Join(b.Set(blockKey(blockHdrPrefix, "g", 100), hdr, nil), b.Set(blockKey(blockDataPrefix, "g", 100), data, nil))
	}, pebbledb.Sync))
	require.NoError(t, st.Close())
	for range 2 { // once converting, once as converted
		st = open()
		for _, seq := range []uint64{5, 5 + far, 6} {
			got, err := st.Record(ctx, seq)
			require.NoError(t, err)
			require.Equal(t, rec(seq), got)
		}
		got, err := st.Record(ctx, 100+2*far)
		require.NoError(t, err)
		require.Equal(t, "wide", string(got.Data))
		counts, err := st.RecordCounts(ctx)
		require.NoError(t, err)
		require.Equal(t, map[string]map[string]int{"f": {"complete": 3}, "g": {"failed": 2}}, counts)
		require.NoError(t, st.Close())
	}
}

// The records of one write come in the order their jobs ended, not by
// Seq: a block keeps that order under its smallest Seq, and every record
// reads back, in listing order, after a restart (the index rebuilt from
// the headers), after one is forgotten (its block written again) and
// after expiry of the oldest.
func TestRecordsOutOfSeqOrder(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	open := reopener(t, vfs.NewMem())
	rec := func(seq uint64, fin int64) store.Record {
		return store.Record{Seq: seq, Function: "f", State: "complete", Finished: fin, Data: []byte(fmt.Sprint(seq))}
	}
	// Ended in this order; 4 and 2 in the same tick.
	ended := []store.Record{rec(7, 10), rec(3, 20), rec(9, 30), rec(4, 40), rec(2, 40), rec(8, 50)}
	st := open()
	require.NoError(t, st.EndJobs(ctx, nil, ended[:3], nil))
	require.NoError(t, st.EndJobs(ctx, nil, ended[3:], nil))
	newestFirst := func(st *Store) []uint64 {
		recs, err := st.Records(ctx, store.RecordQuery{Limit: 10})
		require.NoError(t, err)
		var seqs []uint64
		for _, r := range recs {
			require.Equal(t, fmt.Sprint(r.Seq), string(r.Data))
			seqs = append(seqs, r.Seq)
		}
		return seqs
	}
	require.Equal(t, []uint64{8, 4, 2, 9, 3, 7}, newestFirst(st))
	require.NoError(t, st.Close())

	st = open()
	defer st.Close()
	require.Equal(t, []uint64{8, 4, 2, 9, 3, 7}, newestFirst(st))
	for _, r := range ended {
		got, err := st.Record(ctx, r.Seq)
		require.NoError(t, err)
		require.Equal(t, r, got)
	}
	require.NoError(t, st.EndJobs(ctx, nil, nil, []uint64{2})) // the smallest of its block
	require.Equal(t, []uint64{8, 4, 9, 3, 7}, newestFirst(st))
	_, err := st.Record(ctx, 2)
	require.ErrorIs(t, err, store.ErrNotFound)
	n, err := st.ExpireRecords(ctx, 45, func(string) (time.Duration, int) { return 10, 100 })
	require.NoError(t, err)
	require.Equal(t, 3, n)
	require.Equal(t, []uint64{8, 4}, newestFirst(st))
	got, err := st.Record(ctx, 4)
	require.NoError(t, err)
	require.Equal(t, rec(4, 40), got)
}

// reopener returns a function that opens the store in "data" on fs.
func reopener(t *testing.T, fs vfs.FS) func() *Store {
	return func() *Store {
		t.Helper()
		st, err := Open(context.Background(), "data", Options{FS: fs, Logger: slog.New(slog.DiscardHandler)})
		require.NoError(t, err)
		return st
	}
}

// A block's data is written packed (blockDataPacked) and takes much less
// room than its records; data written unpacked by earlier versions reads
// the same; damaged packed data is an error, not a panic.
func TestRecordBlockDataPacked(t *testing.T) {
	t.Parallel()
	var recs []blockRec
	for i := range 300 {
		recs = append(recs, blockRec{seq: uint64(1000 + i), fin: int64(i), state: "complete",
			data: fmt.Appendf(nil, `{"worker":"127.0.0.1:45360","outcome":"complete","payload":"%064d"}`, i)})
	}
	var bb blockBufs
	_, packed := bb.encode(recs)
	raw := bb.data
	require.Equal(t, byte(blockDataPacked), packed[0])
	require.Equal(t, byte(blockVersion), raw[0])
	require.Less(t, len(packed), len(raw)/2, "packed data should be well under half of the records")
	read := func(v []byte) []blockRec {
		var got []blockRec
		require.NoError(t, decodeData(v, 1000, func(seq uint64, data []byte) bool {
			got = append(got, blockRec{seq: seq, data: slices.Clone(data)})
			return true
		}))
		return got
	}
	want := read(raw)
	require.Len(t, want, len(recs))
	for i, r := range want {
		require.Equal(t, recs[i].seq, r.seq)
		require.Equal(t, recs[i].data, r.data)
	}
	require.Equal(t, want, read(packed))
	for _, cut := range []int{1, len(packed) / 2, len(packed) - 1} {
		err := decodeData(packed[:cut], 1000, func(uint64, []byte) bool { return true })
		require.ErrorIs(t, err, store.ErrCorrupt, "cut at %d", cut)
	}
}

// Packed data that claims more than MinLZ's largest block, or is not a
// MinLZ block at all, is damage: nothing of the claimed size is
// allocated.
func TestRecordBlockDataClaimingTooMuch(t *testing.T) {
	t.Parallel()
	for name, v := range map[string][]byte{
		"minlz 1 GiB":  append([]byte{blockDataPacked, 0}, binary.AppendUvarint(nil, 1<<30)...),
		"snappy 1 GiB": binary.AppendUvarint([]byte{blockDataPacked}, 1<<30),
	} {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		err := decodeData(v, 1, func(uint64, []byte) bool { return true })
		runtime.ReadMemStats(&after)
		require.ErrorIs(t, err, store.ErrCorrupt, name)
		require.Less(t, after.TotalAlloc-before.TotalAlloc, uint64(16<<20), name)
	}
}

// A block holds at most blockBytes of data (a larger record alone), so
// that reading one record unpacks a bounded block.
func TestRecordBlocksBoundedInBytes(t *testing.T) {
	t.Parallel()
	var recs []blockRec
	for i := range 40 {
		recs = append(recs, blockRec{seq: uint64(i + 1), data: make([]byte, 21<<10)})
	}
	recs = append(recs, blockRec{seq: 41, data: make([]byte, blockBytes+1)}, blockRec{seq: 42, data: []byte("x")})
	n := 0
	for _, blk := range splitBlocks(nil, recs) {
		size := 0
		for _, r := range blk {
			size += len(r.data)
		}
		require.True(t, size <= blockBytes || len(blk) == 1, "a block of %d records and %d bytes", len(blk), size)
		n += len(blk)
	}
	require.Equal(t, len(recs), n)
}

// A store of layout 1 (record data unpacked) opens and is marked with
// the current layout, so that a server of layout 1 refuses it afterwards
// instead of reading packed record blocks as damage.
func TestLayoutOneMarkedCurrent(t *testing.T) {
	t.Parallel()
	open := reopener(t, vfs.NewMem())
	st := open()
	require.NoError(t, st.commit(func(b *pebbledb.Batch) error { return b.Set(formatKey, formatValueV1, nil) }, pebbledb.Sync))
	require.NoError(t, st.Close())
	st = open()
	defer st.Close()
	v, closer, err := st.db.Get(formatKey)
	require.NoError(t, err)
	require.Equal(t, string(formatValue), string(v))
	require.NoError(t, closer.Close())
}

// Expiry forgets exactly the oldest records beyond the count and the age,
// whatever blocks they share with records kept: blocks whose records end
// out of order with other blocks' (so that a block may hold both records
// expired and records kept, on either side of the cut, and a block that
// starts early may be kept long), blocks split by the chunks of one
// expiry, blocks written again when a record is forgotten. After each
// expiry every record kept reads back with its data, every one expired is
// gone, and the index built again from disk after a restart is the one in
// memory.
func TestExpiryKeepsRecordsOfSplitBlocks(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	open := reopener(t, vfs.NewMem())
	st := open()
	defer func() { st.Close() }()
	r := rand.New(rand.NewPCG(5, 6))
	model := make(map[uint64]store.Record) // the records that should be kept
	next, now := uint64(1), int64(1_000_000)
	var late []uint64 // Seqs of jobs that run long: they end in a later round
	write := func(n int) {
		var recs []store.Record
		for range n {
			seq := next
			next++
			if r.IntN(20) == 0 {
				late = append(late, seq)
				continue
			}
			if len(late) > 0 && r.IntN(10) == 0 {
				seq, late = late[0], late[1:]
				next--
			}
			// Up to 50 ticks early: before records of earlier rounds.
			fin := now - r.Int64N(50)
			now++
			fn := "f"
			if seq%7 == 0 {
				fn = "g"
			}
			rec := store.Record{Seq: seq, Function: fn, State: []string{"complete", "failed"}[r.IntN(2)],
				Finished: fin, Data: fmt.Appendf(nil, "record %d", seq)}
			recs = append(recs, rec)
			model[seq] = rec
		}
		require.NoError(t, st.EndJobs(ctx, nil, recs, nil))
	}
	// kept returns the model's records of fn, oldest first.
	kept := func(fn string) []store.Record {
		var out []store.Record
		for _, rec := range model {
			if rec.Function == fn {
				out = append(out, rec)
			}
		}
		slices.SortFunc(out, func(a, b store.Record) int {
			return cmp.Or(cmp.Compare(a.Finished, b.Finished), cmp.Compare(a.Seq, b.Seq))
		})
		return out
	}
	expire := func(age time.Duration, most int) {
		t.Helper()
		want := 0
		for _, fn := range []string{"f", "g"} {
			recs := kept(fn)
			n := len(recs) - most
			for n < len(recs) && recs[max(n, 0)].Finished < now-int64(age) {
				n++
			}
			for _, rec := range recs[:max(n, 0)] {
				delete(model, rec.Seq)
				want++
			}
		}
		got, err := st.ExpireRecords(ctx, now, func(string) (time.Duration, int) { return age, most })
		require.NoError(t, err)
		require.Equal(t, want, got)
		all, err := st.Records(ctx, store.RecordQuery{Limit: 1 << 20})
		require.NoError(t, err)
		require.Len(t, all, len(model))
		for _, rec := range all {
			require.Equal(t, model[rec.Seq], rec)
		}
	}
	// sameAfterRestart checks that the index built from disk is the one
	// in memory: the same entries (blocks included) and counts.
	type entry struct {
		seq, block uint64
		fin        int64
		state      string
	}
	index := func() map[string][]entry {
		_, err := st.RecordCounts(ctx) // builds the index if it is not
		require.NoError(t, err)
		out := make(map[string][]entry)
		for fn, f := range st.idx.fns {
			for _, e := range f.live() {
				out[fn] = append(out[fn], entry{e.seq(), e.block(), e.fin(), st.idx.states[e.state()]})
			}
		}
		return out
	}
	sameAfterRestart := func() {
		t.Helper()
		before := index()
		require.NoError(t, st.Close())
		st = open()
		require.Equal(t, before, index())
	}
	for round := range 300 {
		write(1 + r.IntN(60))
		if round%25 == 24 && len(model) > 0 {
			// Forget one record: its block is written again.
			for seq := range model {
				require.NoError(t, st.EndJobs(ctx, nil, nil, []uint64{seq}))
				delete(model, seq)
				break
			}
		}
		if round%10 == 9 {
			expire(40, 150+r.IntN(100))
		}
		if round%100 == 99 {
			sameAfterRestart()
		}
	}
	// More than a chunk at once: expiry's chunks cut blocks too.
	for range 200 {
		write(60)
	}
	expire(1<<40, 300)
	sameAfterRestart()
	expire(1<<40, 0)
	require.Empty(t, st.idx.fns)
}

// A write's records are grouped by function, each function's in the
// order given, whether of one function, of a few or of more than
// fewGroups interleaved, and the buffers reused by the next write
// (of fewer functions) hold nothing of it.
func TestGroupRecordsByFunction(t *testing.T) {
	t.Parallel()
	r := rand.New(rand.NewPCG(5, 6))
	var bb blockBufs
	for _, nfn := range []int{1, 3, fewGroups, fewGroups + 1, 40, 2, 1} {
		var recs []store.Record
		want := make(map[string][]uint64)
		for seq := uint64(1); seq <= 500; seq++ {
			fn := fmt.Sprint("fn", r.IntN(nfn))
			recs = append(recs, store.Record{Seq: seq, Function: fn, State: "complete", Finished: int64(seq)})
			want[fn] = append(want[fn], seq)
		}
		got := make(map[string][]uint64)
		for _, g := range bb.group(recs) {
			require.NotContains(t, got, g.fn, "one group per function")
			for _, rec := range g.recs {
				got[g.fn] = append(got[g.fn], rec.seq)
			}
		}
		require.Equal(t, want, got, "%d functions", nfn)
	}
	require.Empty(t, bb.group(nil))
}
