package pebble

import (
	"math"
	"unsafe"
)

// seqSpans finds a function's record by its Seq (a job's page by its
// handle) without a second index per record. The entries, in their
// (finished, Seq) order, are mostly in Seq order as well: jobs end about
// in the order they were submitted. So it keeps, for each run of
// spanWidth entries, the smallest and the largest Seq in the run; for
// each run of spanWidth of those, the same; and so on until a level has
// at most spanWidth spans. A lookup goes down only into the spans that
// hold its Seq: a few at each level when the entries are nearly in Seq
// order, so a lookup reads a few hundred entries and spans among a
// million records. A job that ran long widens its own span, which a
// lookup of a Seq inside it then also reads; at worst (no order at all)
// a lookup reads every entry. Each span also keeps the smallest block
// (recEntry.block) of its entries, so that expiry learns which blocks
// keep records after its cut without reading them (minBlockFrom). The
// spans take 24 bytes per spanWidth entries, under half a byte a record.
type seqSpans struct {
	// levels[0][c] spans the entries from c*spanWidth (positions in
	// fnIndex.entries, those before its head included: they only make a
	// span wider); levels[l+1][c] spans levels[l][c*spanWidth:][:spanWidth].
	levels [][]seqSpan
	// clean is how many entries, from the first, the spans are true for:
	// a change at entry i lowers it to i, and the next lookup makes the
	// spans from there again.
	clean int
}

// seqSpan is the smallest and largest Seq of a run, and at most its
// smallest block: a block written again (applyShrinkLocked) starts later
// than before, and its entries' spans are not made again for that.
type seqSpan struct{ lo, hi, block uint64 }

// spanWidth is how many entries (or spans) a span covers.
const spanWidth = 64

// dirty says that entries from position i on changed.
func (s *seqSpans) dirty(i int) { s.clean = min(s.clean, i) }

// refresh makes the spans true for entries.
func (s *seqSpans) refresh(entries []recEntry) {
	if s.clean == len(entries) && len(s.levels) > 0 {
		return
	}
	if len(s.levels) == 0 {
		s.levels, s.clean = [][]seqSpan{nil}, 0
	}
	from := s.clean / spanWidth
	s.levels[0] = resizeSpans(s.levels[0], (len(entries)+spanWidth-1)/spanWidth)
	for c := from; c < len(s.levels[0]); c++ {
		run := entries[c*spanWidth : min((c+1)*spanWidth, len(entries))]
		lo, hi, blk := uint64(math.MaxUint64), uint64(0), uint64(math.MaxUint64)
		for i := range run {
			e := &run[i] // not a copy: this loop reads every entry
			q := uint64(e.seqHi)<<32 | uint64(e.seqLo)
			lo, hi, blk = min(lo, q), max(hi, q), min(blk, q-uint64(e.sb&maxBack))
		}
		s.levels[0][c] = seqSpan{lo: lo, hi: hi, block: blk}
	}
	l := 0
	for ; len(s.levels[l]) > spanWidth; l++ {
		from /= spanWidth
		if l+1 == len(s.levels) {
			s.levels, from = append(s.levels, nil), 0
		}
		below := s.levels[l]
		up := resizeSpans(s.levels[l+1], (len(below)+spanWidth-1)/spanWidth)
		for c := from; c < len(up); c++ {
			run := below[c*spanWidth : min((c+1)*spanWidth, len(below))]
			sp := run[0]
			for _, r := range run[1:] {
				sp.lo, sp.hi, sp.block = min(sp.lo, r.lo), max(sp.hi, r.hi), min(sp.block, r.block)
			}
			up[c] = sp
		}
		s.levels[l+1] = up
	}
	clear(s.levels[l+1:])
	s.levels = s.levels[:l+1]
	s.clean = len(entries)
}

// resizeSpans returns spans with length n, its first ones kept.
func resizeSpans(spans []seqSpan, n int) []seqSpan {
	if n <= cap(spans) {
		return spans[:n]
	}
	return append(spans[:cap(spans)], make([]seqSpan, n-cap(spans))...)
}

// find returns the position in entries of the one with seq at head or
// after, or -1. Newer entries are looked at first.
func (s *seqSpans) find(entries []recEntry, head int, seq uint64) int {
	s.refresh(entries)
	top := len(s.levels) - 1
	return s.down(entries, head, seq, top, 0, len(s.levels[top]))
}

// down looks for seq under the spans from to to of level l.
func (s *seqSpans) down(entries []recEntry, head int, seq uint64, l, from, to int) int {
	spans := s.levels[l]
	for c := to - 1; c >= from; c-- {
		if sp := spans[c]; seq < sp.lo || seq > sp.hi {
			continue
		}
		at := c * spanWidth
		if l > 0 {
			if i := s.down(entries, head, seq, l-1, at, min(at+spanWidth, len(s.levels[l-1]))); i >= 0 {
				return i
			}
			continue
		}
		lo, hi := uint32(seq), uint32(seq>>32)
		for i := min(at+spanWidth, len(entries)) - 1; i >= max(at, head); i-- {
			if e := &entries[i]; e.seqLo == lo && e.seqHi == hi {
				return i
			}
		}
	}
	return -1
}

// minBlockFrom returns at most the smallest block (recEntry.block) of
// entries[from:] (see seqSpan), or math.MaxUint64 if there are none. It
// reads the entries up to the end of from's span, then on each level the
// spans up to the end of the span above: a few hundred entries and spans
// among a million.
func (s *seqSpans) minBlockFrom(entries []recEntry, from int) uint64 {
	m := uint64(math.MaxUint64)
	end := min((from+spanWidth-1)/spanWidth*spanWidth, len(entries))
	for i := from; i < end; i++ {
		m = min(m, entries[i].block())
	}
	if end == len(entries) {
		return m
	}
	s.refresh(entries)
	c := end / spanWidth // the first span of level l wholly after from
	for l, spans := range s.levels {
		up := len(spans)
		if l < len(s.levels)-1 {
			up = min((c+spanWidth-1)/spanWidth*spanWidth, len(spans))
		}
		for _, sp := range spans[c:up] {
			m = min(m, sp.block)
		}
		if up == len(spans) {
			break
		}
		c = up / spanWidth
	}
	return m
}

// memBytes is the room the spans take.
func (s *seqSpans) memBytes() int {
	n := 0
	for _, l := range s.levels {
		n += cap(l) * int(unsafe.Sizeof(seqSpan{}))
	}
	return n
}
