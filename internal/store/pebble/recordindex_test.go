package pebble

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/require"
)

// ordinaryEnds returns n entries as a server's jobs end: Seqs in the
// order they were submitted, finishing out of that order by up to a few
// dozen jobs (several workers), with one in a thousand running long and
// ending far later than its neighbours.
func ordinaryEnds(n int, r *rand.Rand) []recEntry {
	out := make([]recEntry, n)
	for i := range out {
		fin := int64(i)*1000 + r.Int64N(32_000)
		if r.IntN(1000) == 0 {
			fin += r.Int64N(int64(n) * 1000)
		}
		out[i] = mkEntry(uint64(i+1), fin, 0, 0)
	}
	return out
}

// A lookup by Seq finds every record kept, and none of those gone,
// through the index's changes: records added in and out of order, the
// oldest expired (which resizes the entries' room), single records
// forgotten.
func TestRecordIndexLookupBySeq(t *testing.T) {
	t.Parallel()
	r := rand.New(rand.NewPCG(3, 4))
	x := &recordIndex{fns: make(map[string]*fnIndex), stateOf: make(map[string]uint8)}
	defer x.reset()
	a, b := x.fn("a"), x.fn("b")
	ends := ordinaryEnds(20_000, r)
	kept := make(map[uint64]string)
	check := func() {
		t.Helper()
		for seq, fn := range kept {
			name, f, i, ok := x.lookup(seq)
			require.True(t, ok, "record %d", seq)
			require.Equal(t, fn, name, "record %d", seq)
			require.Equal(t, seq, f.live()[i].seq())
		}
		for range 200 {
			seq := uint64(r.IntN(len(ends) + 100))
			if _, ok := kept[seq]; !ok {
				_, _, _, ok := x.lookup(seq)
				require.False(t, ok, "record %d is gone", seq)
			}
		}
	}
	for step, e := range ends {
		f, name := a, "a"
		if e.seq()%3 == 0 {
			f, name = b, "b"
		}
		f.add(e)
		kept[e.seq()] = name
		switch {
		case step%5000 == 4999:
			for _, e := range a.live()[:a.len()/2] {
				delete(kept, e.seq())
				a.count(e.state(), -1)
			}
			a.dropOldest(a.len() / 2)
			check()
		case step%997 == 996:
			i := r.IntN(b.len())
			delete(kept, b.live()[i].seq())
			b.remove(i)
			check()
		}
	}
	check()
}

// BenchmarkRecordIndexLookup times a lookup by Seq (a job's page by its
// handle) in an index of a million records of one function, of the
// oldest record, of the one in the middle and of the newest, and reports the index's bytes per
// record.
func BenchmarkRecordIndexLookup(b *testing.B) {
	const n = 1_000_000
	x := &recordIndex{fns: make(map[string]*fnIndex), stateOf: make(map[string]uint8)}
	defer x.reset()
	f := x.fn("fn")
	for _, e := range ordinaryEnds(n, rand.New(rand.NewPCG(1, 2))) {
		f.add(e)
	}
	live := f.live()
	for _, c := range []struct {
		name string
		seq  uint64
	}{{"oldest", live[0].seq()}, {"middle", live[n/2].seq()}, {"newest", live[n-1].seq()}} {
		b.Run(fmt.Sprintf("%s-of-%d", c.name, n), func(b *testing.B) {
			x.lookup(c.seq) // the first lookup after a change of many entries is slower
			for b.Loop() {
				if _, _, i, ok := x.lookup(c.seq); !ok || f.live()[i].seq() != c.seq {
					b.Fatalf("lookup of %d: %d %v", c.seq, i, ok)
				}
			}
			b.ReportMetric(float64(f.memBytes())/float64(f.len()), "index-B/record")
		})
	}
	// The first lookup after the entries moved (loading, growing, expiry
	// of half of them) makes all the spans again.
	b.Run(fmt.Sprintf("first-after-move-of-%d", n), func(b *testing.B) {
		for b.Loop() {
			f.bySeq.dirty(0)
			x.lookup(live[0].seq())
		}
	})
}

// memBytes is the room the function's index takes.
func (f *fnIndex) memBytes() int {
	return cap(f.entries)*int(unsafe.Sizeof(recEntry{})) + f.bySeq.memBytes()
}

// The smallest block after a position, found through the spans, is the
// one a reading of every entry after it finds, through the index's
// changes (entries added in and out of order, the oldest dropped, single
// ones removed).
func TestRecordIndexMinBlockFrom(t *testing.T) {
	t.Parallel()
	r := rand.New(rand.NewPCG(7, 8))
	f := &fnIndex{}
	defer f.release()
	check := func() {
		t.Helper()
		for range 20 {
			from := f.head + r.IntN(f.len()+1)
			want := uint64(math.MaxUint64)
			for _, e := range f.entries[from:] {
				want = min(want, e.block())
			}
			require.Equal(t, want, f.bySeq.minBlockFrom(f.entries, from), "from %d of %d", from, len(f.entries))
		}
	}
	for i, e := range ordinaryEnds(100_000, r) { // spans on two levels
		f.add(e.withBack(uint32(r.IntN(1000)) % uint32(e.seq())))
		switch {
		case i%20_000 == 19_999:
			f.uncount(f.live()[:f.len()/3])
			f.dropOldest(f.len() / 3)
			check()
		case i%4_999 == 4_998:
			f.remove(r.IntN(f.len()))
			check()
		}
	}
	check()
}

// A function at its count, whose oldest entry goes as each new one comes,
// keeps its entries in the same room once it has grown: it slides them
// to the start instead of moving them to new room (whose pages would
// fault in, and whose old room would be unmapped), and keeps them in
// order; room mostly empty is given back.
func TestIndexAtItsCountReusesItsRoom(t *testing.T) {
	var f fnIndex
	defer f.release()
	seq := uint64(0)
	add := func() {
		seq++
		f.add(mkEntry(seq, int64(seq), 0, 0))
	}
	const kept = 10_000
	for range kept {
		add()
	}
	room, size, moves := unsafe.SliceData(f.entries[:1]), cap(f.entries), 0
	for i := range 100_000 {
		add()
		f.count(0, -1)
		f.dropOldest(1)
		// A move to new room changes the room's address, a resize its
		// size (a resize of a mapping may keep the address).
		if r := unsafe.SliceData(f.entries[:1]); r != room || cap(f.entries) != size {
			room, size = r, cap(f.entries)
			if i > 50_000 {
				moves++
			}
		}
	}
	require.Zero(t, moves, "entries moved to new room once grown")
	require.Equal(t, kept, f.len())
	for i, e := range f.live() {
		require.Equal(t, seq-kept+1+uint64(i), e.seq())
	}
	require.Equal(t, kept, f.counts[0])

	// Most of the room empty: given back.
	f.count(0, -(kept - 10))
	f.dropOldest(kept - 10)
	require.Equal(t, 10, f.len())
	require.LessOrEqual(t, cap(f.entries), 4*1024)
	require.Equal(t, seq-9, f.live()[0].seq())
}

// BenchmarkRecordIndexAdd times adding the entry of a record that ended
// after all before it, what every written record costs the index (the
// committer writes records in the order their jobs ended).
func BenchmarkRecordIndexAdd(b *testing.B) {
	x := &recordIndex{fns: make(map[string]*fnIndex), stateOf: make(map[string]uint8)}
	defer x.reset()
	f := x.fn("fn")
	seq, fin := uint64(1), int64(1796624774464587630)
	for b.Loop() {
		f.add(mkEntry(seq, fin, 0, 0))
		seq, fin = seq+1, fin+1000
		if f.len() == 1<<20 {
			b.StopTimer()
			f.dropOldest(1 << 19)
			b.StartTimer()
		}
	}
}

// Room for entries grows and shrinks keeping the entries it holds (the
// first n when it shrinks to n), whether it is mapped or of the heap.
func TestResizeEntriesKeepsEntries(t *testing.T) {
	t.Parallel()
	for _, room := range []struct {
		name string
		s    []recEntry
	}{{"mapped", allocEntries(1024)}, {"heap", make([]recEntry, 0, 1024)}} {
		s := room.s
		for i := range 1000 {
			s = append(s, mkEntry(uint64(i+1), int64(i), 0, 0))
		}
		s = resizeEntries(s, 1<<16)
		require.Equal(t, 1000, len(s), room.name)
		require.Equal(t, 1<<16, cap(s), room.name)
		for len(s) < cap(s) { // no further than the room: append would move it to the heap
			s = append(s, mkEntry(uint64(len(s)+1), int64(len(s)), 0, 0))
		}
		s = resizeEntries(s, 2048)
		require.Equal(t, 2048, len(s), room.name)
		require.Equal(t, 2048, cap(s), room.name)
		for i, e := range s {
			require.Equal(t, uint64(i+1), e.seq(), room.name)
		}
		freeEntries(s)
	}
}
