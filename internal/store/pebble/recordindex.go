package pebble

import (
	"cmp"
	"fmt"
	"slices"
	"sync"
)

// recordIndex is the memory side of the job records (Store.EndJobs): per
// function, where each kept record is (its block) and its place in the
// listing order, 20 bytes a record outside Go's heap (allocEntries), and
// a quarter of a byte a record more to find a record by Seq (seqSpans), so
// that a listing, a lookup and expiry read only the blocks they need. It is built on the first use
// from the blocks' headers on disk and kept in step by every write.
type recordIndex struct {
	// mu guards everything below. It is held across a write of records
	// and its update of the index, so the index is always what is on
	// disk. Lock order: Store.mu (shared), then mu.
	mu     sync.Mutex
	loaded bool
	fns    map[string]*fnIndex
	// states names the states the records are in (a record keeps the
	// position here); stateOf finds a name's position.
	states  []string
	stateOf map[string]uint8
	// bufs are where writes encode blocks.
	bufs blockBufs
	// expiring is where expiry lists blocks (expiryBlocks).
	expiring []uint64
	// unsynced: records were written without an fsync of the
	// write-ahead log since the last read of records
	// (syncRecordsLocked) or write of records that was fsynced.
	unsynced bool
}

// recEntry is one kept record in memory, in 20 bytes: its Seq and finish
// time as halves (so that the entry aligns on 4 bytes, not 8, and needs
// no padding), and in sb its state (the top 8 bits) and its back: Seq
// minus the first Seq of its block (the block's key), below maxBack.
type recEntry struct {
	seqLo, seqHi, finLo, finHi, sb uint32
}

// maxBack bounds a record's back (splitBlocks).
const maxBack = 1<<24 - 1

func mkEntry(seq uint64, fin int64, back uint32, state uint8) recEntry {
	return recEntry{seqLo: uint32(seq), seqHi: uint32(seq >> 32), finLo: uint32(fin), finHi: uint32(uint64(fin) >> 32),
		sb: uint32(state)<<24 | back&maxBack}
}

func (e recEntry) seq() uint64   { return uint64(e.seqHi)<<32 | uint64(e.seqLo) }
func (e recEntry) fin() int64    { return int64(uint64(e.finHi)<<32 | uint64(e.finLo)) }
func (e recEntry) back() uint32  { return e.sb & maxBack }
func (e recEntry) state() uint8  { return uint8(e.sb >> 24) }
func (e recEntry) block() uint64 { return e.seq() - uint64(e.back()) }

// withBack returns e with another back.
func (e recEntry) withBack(back uint32) recEntry { e.sb = e.sb&^maxBack | back&maxBack; return e }

// cmpEntry orders entries by (finished, seq), oldest first.
// (It reads the fields itself: through the methods, each call copied the
// entries, which cost more than the comparison.)
func cmpEntry(a, b recEntry) int {
	if a.finHi != b.finHi || a.finLo != b.finLo {
		return cmp.Compare(int64(uint64(a.finHi)<<32|uint64(a.finLo)), int64(uint64(b.finHi)<<32|uint64(b.finLo)))
	}
	return cmp.Compare(uint64(a.seqHi)<<32|uint64(a.seqLo), uint64(b.seqHi)<<32|uint64(b.seqLo))
}

// fnIndex holds the records of one function.
type fnIndex struct {
	// entries are the records, oldest first; those before head are gone.
	entries []recEntry
	head    int
	// counts counts the records per state position.
	counts []int
	// bySeq finds an entry by its Seq; every change of entries tells it
	// from where they changed (dirty).
	bySeq seqSpans
}

func (f *fnIndex) live() []recEntry { return f.entries[f.head:] }

func (f *fnIndex) len() int { return len(f.entries) - f.head }

// state returns the position of state name, adding it.
func (x *recordIndex) state(name string) (uint8, error) {
	if i, ok := x.stateOf[name]; ok {
		return i, nil
	}
	if len(x.states) == 256 {
		return 0, fmt.Errorf("more than 256 job record states (%q)", name)
	}
	i := uint8(len(x.states))
	x.states = append(x.states, name)
	x.stateOf[name] = i
	return i, nil
}

func (x *recordIndex) fn(name string) *fnIndex {
	f := x.fns[name]
	if f == nil {
		f = &fnIndex{}
		x.fns[name] = f
	}
	return f
}

func (f *fnIndex) count(state uint8, n int) {
	for int(state) >= len(f.counts) {
		f.counts = append(f.counts, 0)
	}
	f.counts[state] += n
}

// uncount takes entries off the counts.
func (f *fnIndex) uncount(entries []recEntry) {
	var n [256]int
	for i := range entries {
		n[entries[i].state()]++
	}
	for st := range f.counts {
		f.counts[st] -= n[st]
	}
}

// add puts e in its place: most records end after those kept, so the
// place is usually the end, or a few entries before it (records that
// ended in the same tick, written out of Seq order).
func (f *fnIndex) add(e recEntry) {
	f.push(e)
	n := len(f.entries) - 1
	i := n
	for ; i > f.head && n-i < addScan && cmpEntry(f.entries[i-1], e) > 0; i-- {
	}
	if i > f.head && n-i == addScan && cmpEntry(f.entries[i-1], e) > 0 {
		j, _ := slices.BinarySearchFunc(f.entries[f.head:i], e, cmpEntry)
		i = f.head + j
	}
	if i == n {
		return
	}
	f.bySeq.dirty(i)
	copy(f.entries[i+1:], f.entries[i:n])
	f.entries[i] = e
}

// addScan is how many entries add steps back before it searches.
const addScan = 16

// push puts e last, in or out of order (see sort).
func (f *fnIndex) push(e recEntry) {
	f.count(uint8(e.sb>>24), 1) // e.state(), without copying e
	if len(f.entries) == cap(f.entries) {
		if f.head > 0 && f.head >= cap(f.entries)/4 {
			f.slide()
		} else {
			f.move(max(1024, 2*f.len()+1))
		}
	}
	f.bySeq.dirty(len(f.entries))
	f.entries = append(f.entries, e)
}

// sort puts the entries in order after push.
func (f *fnIndex) sort() {
	slices.SortFunc(f.live(), cmpEntry)
	f.bySeq.dirty(0)
}

// move puts the live entries at the start of room for size of them
// (resizeEntries).
func (f *fnIndex) move(size int) {
	if f.head > 0 {
		f.slide()
	}
	f.entries = resizeEntries(f.entries, size)
	f.bySeq.dirty(0)
}

// copyEntries returns the first min(len, n) entries of s copied into new
// room for n (allocEntries), and gives the room of s back.
func copyEntries(s []recEntry, n int) []recEntry {
	to := append(allocEntries(n), s[:min(len(s), n)]...)
	freeEntries(s)
	return to
}

// slide puts the live entries at the start of their room, in place: no
// new room, whose pages the kernel would have to fault in, and no old
// room to unmap (a function at its history_max, whose oldest records
// expire as new ones come, slides its entries rather than moving them).
func (f *fnIndex) slide() {
	n := copy(f.entries, f.entries[f.head:])
	f.entries, f.head = f.entries[:n], 0
	f.bySeq.dirty(0)
}

// release gives the entries' room back; f is empty afterwards.
func (f *fnIndex) release() {
	freeEntries(f.entries)
	f.entries, f.head = nil, 0
	f.bySeq = seqSpans{}
}

// find returns the position in live() of the entry at (fin, seq).
func (f *fnIndex) find(fin int64, seq uint64) (int, bool) {
	return slices.BinarySearchFunc(f.live(), mkEntry(seq, fin, 0, 0), cmpEntry)
}

// findAfter is find, which looks at position prev+1 first.
func (f *fnIndex) findAfter(fin int64, seq uint64, prev int) (int, bool) {
	if i := prev + 1; i >= 0 && i < f.len() {
		if e := &f.entries[f.head+i]; e.seq() == seq && e.fin() == fin {
			return i, true
		}
	}
	return f.find(fin, seq)
}

// remove forgets the live entry at i.
func (f *fnIndex) remove(i int) {
	e := f.entries[f.head+i]
	f.count(e.state(), -1)
	if i == 0 {
		f.dropOldest(1)
		return
	}
	f.bySeq.dirty(f.head + i)
	f.entries = slices.Delete(f.entries, f.head+i, f.head+i+1)
}

// dropOldest forgets the n oldest entries; the caller takes them off the
// counts.
func (f *fnIndex) dropOldest(n int) {
	f.head += n
	// Once the forgotten entries are half, their room is used again:
	// given back if most of the room is then empty, else slid over.
	if f.head >= 1024 && f.head >= len(f.entries)/2 {
		if live := f.len(); cap(f.entries) > 4*max(1024, live) {
			f.move(max(1024, live+live/4))
		} else {
			f.slide()
		}
	}
}

// drop forgets function name's entries.
func (x *recordIndex) drop(name string) {
	if f := x.fns[name]; f != nil {
		f.release()
		delete(x.fns, name)
	}
}

// reset forgets every entry.
func (x *recordIndex) reset() {
	for name := range x.fns {
		x.drop(name)
	}
	x.loaded = false
}

// lookup returns the function and entry of the record of job seq: each
// function's entries are searched by their spans of Seqs (seqSpans).
func (x *recordIndex) lookup(seq uint64) (string, *fnIndex, int, bool) {
	for name, f := range x.fns {
		if i := f.bySeq.find(f.entries, f.head, seq); i >= 0 {
			return name, f, i - f.head, true
		}
	}
	return "", nil, 0, false
}
