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
// once (a job that ends while the list is paged may be missed). Live jobs
// are found by a scan of this server's live jobs; ended ones from their
// function's history, so a page costs about Limit records there, however
// many are kept. Safe for concurrent use.
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
	b.mu.Lock()
	defer b.mu.Unlock()
	var page JobPage
	if live {
		var full bool
		if page, full = b.livePageLocked(q, liveBelow, limit); full {
			return page, nil
		}
	}
	if !final {
		return page, nil
	}
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

// newestLiveLocked returns up to n live jobs of q's function, state and
// batch with a seq below below, newest first.
func (b *Broker) newestLiveLocked(q JobQuery, below uint64, n int) []*job {
	if n <= 0 {
		return nil
	}
	var f *function
	if q.Function != "" {
		if f = b.functions[q.Function]; f == nil {
			return nil
		}
	}
	state := q.State
	// Keep the n newest in a min-heap by seq: one pass over the live
	// jobs in memory, then over the frozen ones.
	h := make([]*job, 0, n)
	// take offers the job of seq to the heap, made by mk only if it goes
	// in; it reports whether it went in.
	take := func(seq uint64, mk func() *job) bool {
		switch {
		case len(h) < n:
			h = append(h, mk())
			siftUp(h, len(h)-1)
		case seq > h[0].seq:
			h[0] = mk()
			siftDown(h, 0)
		default:
			return false
		}
		return true
	}
	for seq, j := range b.jobs.seqIndex.all() {
		if seq >= below || (f != nil && j.fn != f) || j.state == stateGone || (state != "" && j.state.String() != state) ||
			(q.Batch != 0 && (j.x == nil || j.x.batch == nil || j.x.batch.id != q.Batch)) {
			continue
		}
		take(seq, func() *job { return j })
	}
	if (state == "" || state == stateQueued.String()) && q.Batch == 0 {
		// A frozen job is a queued background job of no batch. A queue's
		// cold entries ascend by seq: walked from the newest, a queue is
		// done at the first that the heap does not take, and a job is
		// made (a copy, q.view) only for one that goes in.
		for _, cq := range b.jobs.cold {
			if f != nil && cq.fn != f {
				continue
			}
			for i := cq.cold.n - 1; i >= 0; i-- {
				e := cq.cold.at(i)
				if !e.frozen() || e.seq >= below {
					continue
				}
				if !take(e.seq, func() *job {
					var p []byte
					if pp := cq.cold.payload(i); pp != nil {
						p = *pp
					}
					return cq.view(*e, p)
				}) {
					break
				}
			}
		}
	}
	slices.SortFunc(h, func(a, c *job) int { return cmp.Compare(c.seq, a.seq) }) // newest first
	return h
}

func siftUp(h []*job, i int) {
	for i > 0 {
		p := (i - 1) / 2
		if h[p].seq <= h[i].seq {
			return
		}
		h[p], h[i] = h[i], h[p]
		i = p
	}
}

func siftDown(h []*job, i int) {
	for {
		l := 2*i + 1
		if l >= len(h) {
			return
		}
		m := l
		if r := l + 1; r < len(h) && h[r].seq < h[l].seq {
			m = r
		}
		if h[i].seq <= h[m].seq {
			return
		}
		h[i], h[m] = h[m], h[i]
		i = m
	}
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

// livePageLocked starts a page of ListJobs with the newest live jobs of q
// below liveBelow, limit at the most. It reports whether they fill the
// page: more live jobs follow, and the page's Next points at them. b.mu
// must be held.
func (b *Broker) livePageLocked(q JobQuery, liveBelow uint64, limit int) (page JobPage, full bool) {
	jobs := b.newestLiveLocked(q, liveBelow, limit+1)
	for _, j := range jobs[:min(len(jobs), limit)] {
		snap := b.snapshotLocked(j)
		snap.Cursor = "L" + strconv.FormatUint(j.seq, 10)
		page.Jobs = append(page.Jobs, snap)
	}
	if len(jobs) > limit {
		page.Next = "L" + strconv.FormatUint(jobs[limit-1].seq, 10)
		return page, true
	}
	return page, false
}

// listStored is ListJobs with the records of ended jobs in the store: the
// live jobs under the lock, then the records without it.
func (b *Broker) listStored(ctx context.Context, q JobQuery, limit int, live, final bool, liveBelow uint64, after store.RecordPos) (JobPage, error) {
	var page JobPage
	if live {
		var full bool
		b.mu.Lock()
		page, full = b.livePageLocked(q, liveBelow, limit)
		b.mu.Unlock()
		if full {
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
