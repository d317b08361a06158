package broker

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/gearwork/gearwork/internal/store"
)

// This file lists job records: live jobs and the records of ended ones,
// filtered by function and state, a page at a time.

// JobQuery selects job records for ListJobs.
type JobQuery struct {
	// Function limits the list to one function; "" lists every function.
	Function string
	// State limits the list to one state: a live one (pending, scheduled,
	// queued, running, retry-wait, blocked, waiting) or a final one (complete,
	// failed, exception, cancelled, dead). "" lists every state.
	State string
	// Batch limits the list to the jobs of one batch; 0 lists jobs of
	// any batch or none. The records of ended jobs of a batch are those
	// kept by their functions' history policy (they expire with it).
	Batch uint64
	// Limit is the most records of the page: 0 means DefaultJobPage, more
	// than MaxJobPage means MaxJobPage.
	Limit int
	// Cursor continues the list after the page that returned it; "" starts
	// at the newest.
	Cursor string
	// now answers the records that wait for their write from memory,
	// without making them durable first (the tests of the record queue,
	// whose writes they hold).
	now bool
}

// DefaultJobPage and MaxJobPage bound a page of ListJobs.
const (
	DefaultJobPage = 50
	MaxJobPage     = 1000
)

// JobPage is one page of job records.
type JobPage struct {
	Jobs []JobSnapshot
	// Next continues the list (JobQuery.Cursor); "" on the last page.
	Next string
}

// LiveStates and FinalStates are the states ListJobs filters by.
var (
	LiveStates  = []string{"pending", "scheduled", "queued", "running", "retry-wait", "blocked", "waiting"}
	FinalStates = []string{FinalComplete, FinalFailed, FinalException, FinalCancelled, FinalDead}
)

// ErrBadQuery is wrapped by ListJobs for an unknown state or a cursor it
// did not give out.
var ErrBadQuery = errors.New("invalid job query")

// ListJobs returns a page of job records, newest first: live jobs first,
// the most recently submitted first, then the records of ended jobs, the
// most recently ended first. Paging with Next sees each record at most
// once (a job that ends while the list is paged may be missed). Ended
// ones are found from their function's history, so a page costs about
// Limit records there, however many are kept. Safe for concurrent use.
//
// Live jobs are found by a walk down the index from the cursor, in chunks
// under short holds of the lock (livePage): a page looks at about as many
// as it holds, and at most liveLooked when the query matches few. A page
// may then hold fewer than Limit records, or none, with a Next that goes
// on: the list ends where Next is "".
func (b *Broker) ListJobs(ctx context.Context, q JobQuery) (JobPage, error) {
	limit := q.Limit
	if limit <= 0 {
		limit = DefaultJobPage
	}
	limit = min(limit, MaxJobPage)
	live, final := q.State == "", q.State == ""
	switch {
	case slices.Contains(LiveStates, q.State):
		live = true
	case slices.Contains(FinalStates, q.State):
		final = true
	case q.State != "":
		return JobPage{}, fmt.Errorf("%w: unknown state %q (known: %v and %v)", ErrBadQuery, q.State, LiveStates, FinalStates)
	}
	// The cursor is "L<seq>" inside the live jobs, "F<order>" inside the
	// ended ones.
	var liveBelow, finalBelow uint64 = ^uint64(0), ^uint64(0)
	var after store.RecordPos // in the stored records (store.RecordStore)
	if c := q.Cursor; c != "" && c[0] == 'R' && b.records != nil {
		p, ok := parseRecordCursor(c)
		if !ok {
			return JobPage{}, fmt.Errorf("%w: cursor %q is not one this server gave out", ErrBadQuery, c)
		}
		live, after = false, p
	} else if c != "" {
		n, err := strconv.ParseUint(c[1:], 10, 64)
		switch {
		case err != nil || (c[0] != 'L' && c[0] != 'F'):
			return JobPage{}, fmt.Errorf("%w: cursor %q is not one this server gave out", ErrBadQuery, c)
		case c[0] == 'L':
			liveBelow = n
		default:
			live, finalBelow = false, n
		}
	}
	if b.records != nil {
		return b.listStored(ctx, q, limit, live, final, liveBelow, after)
	}
	var page JobPage
	if live {
		var full bool
		if page, full = b.livePage(q, liveBelow, limit); full {
			return page, nil
		}
	}
	if !final {
		return page, nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	want := limit - len(page.Jobs)
	recs := b.newestEndedLocked(q, finalBelow, want+1)
	for _, r := range recs[:min(len(recs), want)] {
		snap := r.snapshot()
		snap.Cursor = "F" + strconv.FormatUint(r.order, 10)
		page.Jobs = append(page.Jobs, snap)
	}
	if len(recs) > want {
		if want == 0 {
			// The live jobs filled the page exactly: the ended ones
			// start the next.
			page.Next = "F" + strconv.FormatUint(^uint64(0), 10)
		} else {
			page.Next = "F" + strconv.FormatUint(recs[want-1].order, 10)
		}
	}
	return page, nil
}

// newestEndedLocked returns up to n records of ended jobs of q's
// function, state and batch that ended before order below, most recently
// ended first.
func (b *Broker) newestEndedLocked(q JobQuery, below uint64, n int) []*histRec {
	if n <= 0 {
		return nil
	}
	var out []*histRec
	collect := func(fh *fnHistory) {
		got := 0
		// Records are in the order their jobs ended: walk back from the
		// newest.
		i := len(fh.recs) - 1
		if below != ^uint64(0) {
			k, _ := slices.BinarySearchFunc(fh.recs[fh.head:], below, func(r *histRec, o uint64) int {
				switch {
				case r.order < o:
					return -1
				case r.order > o:
					return 1
				}
				return 0
			})
			i = fh.head + k - 1
		}
		for ; i >= fh.head && got < n; i-- {
			r := fh.recs[i]
			if r == nil || !q.matchesRecord(r) {
				continue
			}
			out = append(out, r)
			got++
		}
	}
	if q.Function != "" {
		if fh := b.hist.fns[q.Function]; fh != nil {
			collect(fh)
		}
		return out
	}
	for _, fh := range b.hist.fns {
		collect(fh)
	}
	slices.SortFunc(out, func(a, c *histRec) int { return cmp.Compare(c.order, a.order) }) // newest first
	return out[:min(len(out), n)]
}

// matchesRecord reports whether record r is of q's state and batch (its
// function is the caller's to check).
func (q JobQuery) matchesRecord(r *histRec) bool {
	return (q.State == "" || r.state.String() == q.State) && (q.Batch == 0 || (r.x != nil && r.x.batch == q.Batch))
}

// JobCounts is how many jobs of one function are in each state: the live
// ones now, and the ended ones whose records are kept.
type JobCounts struct {
	Function string
	// Live counts live jobs by state (LiveStates), Ended the kept records
	// by final state (FinalStates). States without jobs are absent.
	Live, Ended map[string]int
	// OldestQueued is when the job that has waited longest in the queue
	// became runnable; zero when none is queued.
	OldestQueued time.Time
}

// CountJobs returns the job counts of every function with live jobs or
// kept records, sorted by name. It costs one pass over the jobs waiting
// in timers (scheduled, retry-wait) and in ordered queues, not over every
// live job.
func (b *Broker) CountJobs(ctx context.Context) []JobCounts {
	stored := b.storedCounts(ctx)
	b.mu.Lock()
	defer b.mu.Unlock()
	by := make(map[string]*JobCounts)
	get := func(name string) *JobCounts {
		c := by[name]
		if c == nil {
			c = &JobCounts{Function: name, Live: make(map[string]int), Ended: make(map[string]int)}
			by[name] = c
		}
		return c
	}
	for _, f := range b.functions {
		if f.total == 0 {
			continue
		}
		c := get(f.name)
		queued := 0
		var oldest int64
		for p := range numPriorities {
			queued += f.queues[p].len()
			if j := f.queues[p].front(); j != nil {
				at := max(j.submitted, j.runAt()*1e9)
				if l := j.x; l != nil && l.life != nil && l.life.queuedAt != 0 {
					at = l.life.queuedAt
				}
				if at != 0 && (oldest == 0 || at < oldest) {
					oldest = at
				}
			}
		}
		if oldest != 0 {
			c.OldestQueued = time.Unix(0, oldest)
		}
		add(c.Live, "queued", queued)
		add(c.Live, "running", f.running)
		rest := f.total - queued - f.running
		if f.life != nil {
			for _, line := range f.life.lines {
				add(c.Live, "blocked", len(line.waiting))
				rest -= len(line.waiting)
			}
		}
		add(c.Live, "pending", rest) // the rest, less those in timers below
	}
	for _, j := range b.timers {
		var st string
		switch j.state {
		case stateScheduled:
			st = "scheduled"
		case stateRetryWait:
			st = "retry-wait"
		default:
			continue
		}
		if c := by[j.fn.name]; c != nil {
			add(c.Live, st, 1)
			add(c.Live, "pending", -1)
		}
	}
	// Jobs waiting for others (After) are in no queue or timer: they are
	// found through the jobs they wait for, once each.
	var seen map[uint64]bool
	for _, waiting := range b.dependents {
		for _, j := range waiting {
			if j.state != stateWaiting || seen[j.seq] {
				continue
			}
			if seen == nil {
				seen = make(map[uint64]bool)
			}
			seen[j.seq] = true
			if c := by[j.fn.name]; c != nil {
				add(c.Live, "waiting", 1)
				add(c.Live, "pending", -1)
			}
		}
	}
	for name, fh := range b.hist.fns {
		c := get(name)
		for st, n := range fh.counts {
			add(c.Ended, finalState(st).String(), n)
		}
	}
	b.recq.each(func(r *histRec) { add(get(r.fn.name).Ended, r.state.String(), 1) })
	for name, m := range stored {
		c := get(name)
		for st, n := range m {
			add(c.Ended, st, n)
		}
	}
	out := make([]JobCounts, 0, len(by))
	for _, c := range by {
		out = append(out, *c)
	}
	slices.SortFunc(out, func(a, c JobCounts) int {
		switch {
		case a.Function < c.Function:
			return -1
		case a.Function > c.Function:
			return 1
		}
		return 0
	})
	return out
}

func add(m map[string]int, k string, n int) {
	if v := m[k] + n; v > 0 {
		m[k] = v
	} else {
		delete(m, k)
	}
}

// liveLooked bounds the live jobs one page of ListJobs looks at: a
// filter that matches few of them (or none) ends the page there, shorter
// than its limit (empty, even), with a Next that goes on from where it
// stopped.
const liveLooked = 64 * listChunk

// livePage starts a page of ListJobs with the newest live jobs of q below
// liveBelow, limit at the most. It reports whether the page ends there:
// more live jobs follow (or may: it looked at liveLooked of them), and the
// page's Next points at them. It walks down the index from liveBelow in
// chunks of about listChunk jobs, each under one hold of the lock, so that
// a page costs about what it holds (and a filter that matches few jobs at
// most liveLooked), however many jobs are live, and no hold stalls the
// other clients and workers for long. b.mu must not be held.
func (b *Broker) livePage(q JobQuery, liveBelow uint64, limit int) (page JobPage, full bool) {
	if liveBelow == 0 {
		return page, false
	}
	// The pages of the index are found by probing their keys down from
	// the cursor, while they are dense (the jobs' numbers are, while most
	// are live); where a chunk's probes find them sparse, the rest of the
	// walk takes the keys of the pages below from a snapshot of them all
	// (one per page, taken under one hold).
	var keys []uint64
	probing := true
	snapshot := func(below uint64) {
		b.mu.Lock()
		keys = b.jobs.pageKeys()
		b.mu.Unlock()
		top := (below - 1) >> jobPageShift // the page of the newest job to look at
		keys = slices.DeleteFunc(keys, func(k uint64) bool { return k > top })
		slices.Sort(keys)
		probing = false
	}
	const chunkPages = listChunk >> jobPageShift
	const probes = 4 * chunkPages
	state := q.State
	match := func(j *job) bool {
		return (q.Function == "" || j.fn.name == q.Function) && j.state != stateGone &&
			(state == "" || j.state.String() == state) &&
			(q.Batch == 0 || (j.x != nil && j.x.batch != nil && j.x.batch.id == q.Batch))
	}
	fnOK := func(f *function) bool { return q.Function == "" || f.name == q.Function }
	frozenOK := (state == "" || state == stateQueued.String()) && q.Batch == 0 // a frozen job is a queued background job of no batch
	var cands []*job
	each := func(j *job) bool {
		if !match(j) {
			return false
		}
		cands = append(cands, j)
		return true
	}
	seqs := make([]uint64, 0, limit+1)
	looked := 0
	for hi := liveBelow; ; {
		// The chunk is [lo, hi): chunkPages pages of the index, or fewer
		// when a queue's frozen entries there are many.
		lo := uint64(0)
		cands = cands[:0]
		probed := 0
		b.mu.Lock()
		hi = min(hi, b.nextSeq) // no live job's number is above
		if probing {
			keys = keys[:0]
			for k := (hi - 1) >> jobPageShift; ; k-- {
				probed++
				if b.jobs.pages[k] != nil {
					keys = append(keys, k)
				}
				if len(keys) == chunkPages || probed == probes || k == 0 {
					lo = k << jobPageShift
					break
				}
			}
			slices.Reverse(keys)
		} else if len(keys) > chunkPages {
			lo = keys[len(keys)-chunkPages] << jobPageShift
		}
		lo, n := b.jobs.frozenRangeDown(lo, hi, listChunk, limit+1-len(seqs), fnOK, frozenOK, each)
		for i := len(keys) - 1; i >= 0 && (keys[i]+1)<<jobPageShift > lo; i-- {
			b.jobs.pageRange(keys[i], lo, hi, func(j *job) { n++; each(j) })
		}
		cands = slices.DeleteFunc(cands, func(j *job) bool { return j.seq < lo })
		slices.SortFunc(cands, func(x, y *job) int { return cmpSeq(y.seq, x.seq) }) // newest first
		// A thawed job may come from its page and its queue's entry.
		cands = slices.CompactFunc(cands, func(x, y *job) bool { return x.seq == y.seq })
		for _, j := range cands[:min(len(cands), limit+1-len(seqs))] {
			if len(seqs) < limit {
				snap := b.snapshotLocked(j)
				snap.Cursor = "L" + strconv.FormatUint(j.seq, 10)
				page.Jobs = append(page.Jobs, snap)
			}
			seqs = append(seqs, j.seq)
		}
		held := b.listHeld
		b.mu.Unlock()
		if held != nil {
			held(n)
		}
		looked += n + probed
		found := len(keys)
		for len(keys) > 0 && keys[len(keys)-1]<<jobPageShift >= lo {
			keys = keys[:len(keys)-1]
		}
		if probing && probed == probes && found < chunkPages/4 && lo > 0 {
			snapshot(lo)
		}
		hi = lo
		switch {
		case len(seqs) > limit:
			page.Next = "L" + strconv.FormatUint(seqs[limit-1], 10)
			return page, true
		case hi == 0:
			return page, false
		case looked >= liveLooked:
			page.Next = "L" + strconv.FormatUint(hi, 10)
			return page, true
		}
	}
}

// listStored is ListJobs with the records of ended jobs in the store: the
// live jobs under the lock, then the records without it.
func (b *Broker) listStored(ctx context.Context, q JobQuery, limit int, live, final bool, liveBelow uint64, after store.RecordPos) (JobPage, error) {
	var page JobPage
	if live {
		var full bool
		if page, full = b.livePage(q, liveBelow, limit); full {
			return page, nil
		}
	}
	if !final {
		return page, nil
	}
	want := limit - len(page.Jobs)
	if want == 0 {
		// The live jobs filled the page exactly: the ended ones start
		// the next, if there are any.
		recs, err := b.endedFromStore(ctx, q, after, 1)
		if err != nil {
			return JobPage{}, err
		}
		if len(recs) > 0 {
			page.Next = "R0.0"
		}
		return page, nil
	}
	recs, err := b.endedFromStore(ctx, q, after, want+1)
	if err != nil {
		return JobPage{}, err
	}
	for _, s := range recs[:min(len(recs), want)] {
		s.Cursor = recordCursor(store.RecordPos{Finished: s.Finished.UnixNano(), Seq: s.Seq})
		page.Jobs = append(page.Jobs, s)
	}
	if len(recs) > want {
		page.Next = page.Jobs[len(page.Jobs)-1].Cursor
	}
	return page, nil
}

// storedCounts returns the counts of the records in the store per
// function and state, or nil.
func (b *Broker) storedCounts(ctx context.Context) map[string]map[string]int {
	if b.records == nil {
		return nil
	}
	m, err := b.records.RecordCounts(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		b.log.Warn("broker: cannot count job records", "error", err.Error())
		return nil
	}
	return m
}
