package broker

import (
	"iter"
	"sort"
)

// seqIndex finds values by job sequence number: the live jobs (jobIndex)
// and the kept job records (historyState.bySeq). Sequence numbers are
// handed out in order and jobs mostly end in about the order they came, so
// the index keeps them in pages of jobPageSize consecutive numbers, found
// through a map with one entry per page: with a deep queue that map is
// small enough to stay in the processor's cache, where a map with one entry
// per job misses it on nearly every submit, lookup and delete. A page goes
// once its last job does (unless new numbers still go to it). The page of
// the last access is kept at hand, so a run of submits (or of ends) in
// order does not consult the map at all; the page of the latest put is
// kept apart from it, so that submits at the back of a queue interleaved
// with ends at its front (or new job records with the oldest going) do
// not take turns evicting each other.
//
// Memory: about 9 bytes per job while the live numbers are dense, against
// 20 to 40 for a map entry; a job whose neighbours all ended keeps a page
// (144 bytes) to itself. One freed page is kept for reuse, and the page
// new numbers go to stays while empty. Guarded by Broker.mu.
type seqIndex[T any] struct {
	pages map[uint64]*seqPage[T] // by seq >> jobPageShift
	n     int
	// lastKey and last are the page of the latest get or delete (nil:
	// none).
	lastKey uint64
	last    *seqPage[T]
	// hotKey and hot are the page of the latest put (hot nil: no put
	// yet). It stays when its jobs have all ended, as new numbers go
	// there: a queue that is mostly empty does not add and remove a page
	// for every job. hot is pages[hotKey]: only a page that stopped being
	// hot is freed.
	hotKey uint64
	hot    *seqPage[T]
	// spare is the last page freed, empty, for the next page needed: a
	// queue that ends jobs at its front as it takes them at its back
	// allocates no pages.
	spare *seqPage[T]
}

// jobIndex finds the live jobs by sequence number: the jobs in its pages
// and the frozen cold entries of the queues (jobQueue), which get thaws.
type jobIndex struct {
	seqIndex[job]
	// frozen counts the frozen cold entries of all queues.
	frozen int
	// cold are the queues that have had cold entries.
	cold []*jobQueue
	// listings counts the listings under way (Broker.EachJob); while
	// there are some, added logs the key of each page a thaw makes, so
	// that a listing also walks the pages made after it took the keys: a
	// job frozen then and thawed since lives in one.
	listings int
	added    []uint64
}

const (
	jobPageShift = 4
	jobPageSize  = 1 << jobPageShift
)

type seqPage[T any] struct {
	jobs [jobPageSize]*T
	n    int
}

func newSeqIndex[T any]() seqIndex[T] {
	return seqIndex[T]{pages: make(map[uint64]*seqPage[T])}
}

func newJobIndex() jobIndex { return jobIndex{seqIndex: newSeqIndex[job]()} }

// get returns the live job of seq, thawing it when it is frozen; nil when
// there is none.
func (x *jobIndex) get(seq uint64) *job {
	if j := x.seqIndex.get(seq); j != nil || x.frozen == 0 {
		return j
	}
	for _, q := range x.cold {
		i := q.cold.find(seq)
		if i < 0 || !q.cold.at(i).frozen() {
			continue
		}
		e := q.cold.at(i)
		p := q.cold.takePayload(i)
		j := q.thaw(*e, p)
		e.submitted = coldWarm
		j.prev = coldMark
		q.cold.frozen--
		if p == nil {
			q.cold.onDisk--
		}
		x.frozen--
		return j
	}
	return nil
}

// holds reports whether j is the live job of its Seq. A job struct is
// never frozen (a frozen job thaws into a new one), so this looks only at
// the index of jobs in memory: it neither walks the queues with frozen
// entries nor thaws one.
func (x *jobIndex) holds(j *job) bool { return x.seqIndex.get(j.seq) == j }

// len returns the number of live jobs, frozen ones included.
func (x *jobIndex) len() int { return x.seqIndex.len() + x.frozen }

// all yields every live job with its sequence number, in no particular
// order: those in the pages as seqIndex.all does, then a copy of each
// frozen one (not to be changed or kept), which the loop must not remove.
func (x *jobIndex) all() iter.Seq2[uint64, *job] {
	return func(yield func(uint64, *job) bool) {
		for seq, j := range x.seqIndex.all() {
			if !yield(seq, j) {
				return
			}
		}
		for _, q := range x.cold {
			for i := range q.cold.n {
				e := q.cold.at(i)
				if !e.frozen() {
					continue
				}
				var p []byte
				if pp := q.cold.payload(i); pp != nil {
					p = *pp
				}
				if !yield(e.seq, q.view(*e, p)) {
					return
				}
			}
		}
	}
}

// page returns the page holding seq, nil when it has none.
func (x *seqIndex[T]) page(seq uint64) *seqPage[T] {
	key := seq >> jobPageShift
	if x.last != nil && x.lastKey == key {
		return x.last
	}
	if x.hot != nil && x.hotKey == key {
		return x.hot
	}
	p := x.pages[key]
	if p != nil {
		x.lastKey, x.last = key, p
	}
	return p
}

// get returns the value of seq, nil when there is none.
func (x *seqIndex[T]) get(seq uint64) *T {
	if p := x.page(seq); p != nil {
		return p.jobs[seq&(jobPageSize-1)]
	}
	return nil
}

// put makes v the value of seq, replacing any other.
func (x *seqIndex[T]) put(seq uint64, v *T) {
	key := seq >> jobPageShift
	p := x.hot
	if p == nil || key != x.hotKey {
		if p != nil && p.n == 0 {
			x.free(x.hotKey, p)
		}
		x.hotKey = key
		if p = x.pages[key]; p == nil {
			p = x.spare
			x.spare = nil
			if p == nil {
				p = new(seqPage[T])
			}
			x.pages[key] = p
		}
		x.hot = p
	}
	slot := &p.jobs[seq&(jobPageSize-1)]
	if *slot == nil {
		p.n++
		x.n++
	}
	*slot = v
}

// delete forgets the value of seq, if any.
func (x *seqIndex[T]) delete(seq uint64) {
	p := x.page(seq)
	if p == nil {
		return
	}
	slot := &p.jobs[seq&(jobPageSize-1)]
	if *slot == nil {
		return
	}
	*slot = nil
	p.n--
	x.n--
	if key := seq >> jobPageShift; p.n == 0 && key != x.hotKey {
		x.free(key, p)
	}
}

// free forgets the empty page p of key, keeping it as the spare.
func (x *seqIndex[T]) free(key uint64, p *seqPage[T]) {
	delete(x.pages, key)
	if x.lastKey == key {
		x.last = nil
	}
	x.spare = p
}

// len returns the number of values.
func (x *seqIndex[T]) len() int { return x.n }

// all yields every live job with its sequence number, in no particular
// order. The loop may delete jobs (and add them: an added one may or may not
// be yielded, as for a map).
func (x *seqIndex[T]) all() iter.Seq2[uint64, *T] {
	return func(yield func(uint64, *T) bool) {
		for key, p := range x.pages {
			for i := range p.jobs {
				j := p.jobs[i]
				if j == nil {
					continue
				}
				if !yield(key<<jobPageShift|uint64(i), j) {
					return
				}
				if x.pages[key] != p {
					// The loop ended the page's last job; the page may
					// already serve other numbers.
					break
				}
			}
		}
	}
}

// pageKeys returns the keys of the pages (seq >> jobPageShift), in no
// particular order: one entry per page, a sixteenth of the live jobs while
// their numbers are dense.
func (x *seqIndex[T]) pageKeys() []uint64 {
	keys := make([]uint64, 0, len(x.pages))
	for k := range x.pages {
		keys = append(keys, k)
	}
	return keys
}

// pageRange calls each for the values of the page of key whose sequence
// numbers are in [lo, hi), in order. each must not change the index.
func (x *seqIndex[T]) pageRange(key, lo, hi uint64, each func(*T)) {
	p := x.pages[key]
	if p == nil {
		return
	}
	for i, v := range p.jobs {
		if seq := key<<jobPageShift | uint64(i); v != nil && seq >= lo && seq < hi {
			each(v)
		}
	}
}

// frozenRange calls each with a view (not to be changed or kept, without
// its payload) of each frozen job whose sequence number is in [lo, hi),
// queue by queue, and returns hi, lowered when a queue had more than limit
// of them: to the number of the first it left out, after which the
// listing goes on; the views of numbers from there on, which earlier
// queues gave, are the caller's to ignore. It neither thaws a job nor
// changes the index.
func (x *jobIndex) frozenRange(lo, hi uint64, limit int, each func(*job)) uint64 {
	for _, q := range x.cold {
		c := &q.cold
		if c.n == 0 || c.last().seq < lo || c.at(0).seq >= hi {
			continue
		}
		n := 0
		for i := sort.Search(c.n, func(i int) bool { return c.at(i).seq >= lo }); i < c.n; i++ {
			e := c.at(i)
			if e.seq >= hi {
				break
			}
			if !e.frozen() {
				continue
			}
			if n == limit {
				hi = e.seq
				break
			}
			n++
			each(q.view(*e, nil))
		}
	}
	return hi
}

// frozenRangeDown is frozenRange walking down, and for the cold entries
// of thawed jobs too, in the queues of the functions fnOK takes: queue by
// queue, each queue's from the newest, it calls each with a view of each
// frozen job whose sequence number is in [lo, hi) (made only when frozenOK:
// the query lists frozen jobs) and with the job of each thawed entry there
// (a job of the index's pages, which a walk of the pages that were there
// before the thaw would miss: the caller may see it twice); each reports
// whether it took the job. It returns lo, raised when a queue had more
// than limit entries there, or need that each took: to just above the
// last it looked at, down to which the walk has gone (the jobs of numbers
// below it, which earlier queues gave, are the caller's to ignore), and
// the number of entries it looked at. It neither thaws a job nor changes
// the index.
func (x *jobIndex) frozenRangeDown(lo, hi uint64, limit, need int, fnOK func(*function) bool, frozenOK bool,
	each func(*job) bool) (uint64, int) {
	looked := 0
	for _, q := range x.cold {
		c := &q.cold
		if c.n == 0 || c.last().seq < lo || c.at(0).seq >= hi || !fnOK(q.fn) {
			continue
		}
		n, took := 0, 0
		for i := sort.Search(c.n, func(i int) bool { return c.at(i).seq >= hi }) - 1; i >= 0; i-- {
			e := c.at(i)
			if e.seq < lo {
				break
			}
			if !e.frozen() && e.submitted != coldWarm {
				continue
			}
			if n == limit || took == need {
				lo = e.seq + 1
				break
			}
			n++
			var j *job
			switch {
			case !e.frozen():
				j = x.seqIndex.get(e.seq)
			case frozenOK:
				j = q.view(*e, nil)
			}
			if j != nil && each(j) {
				took++
			}
		}
		looked += n
	}
	return lo, looked
}
