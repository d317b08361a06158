package broker

import (
	"math"
	"slices"
	"sort"

	"github.com/gearwork/gearwork/internal/store"
)

// jobQueue is one priority queue of a function: a FIFO of queued jobs.
//
// A deep queue (payload tiering) is mostly stored background jobs that
// need nothing in memory but their sequence number, submit time and
// payload, and the payload only while it is kept within the budget. Such
// a job is kept frozen: a 16-byte entry without pointers in the queue's
// cold part (coldJob), with its payload, when kept in memory, beside it
// (coldJobs.payloads); no job struct and no slot in the index by sequence
// number, so that the collector need not scan it nor let the heap grow
// twice its size for it. A job with its payload on disk is frozen once it
// is stored; one with its payload in memory only behind the first
// coldDepth jobs of its queue. A frozen job is thawed (made a job again)
// when it reaches the front of its queue or is looked up by sequence
// number (jobIndex.get); all other code sees only jobs.
//
// The queue is, in order: a list of jobs (head to tail), the cold
// entries, and a second list of jobs (back) that could not join the cold
// entries because their sequence numbers are not above the last one's
// (a job queued at the back again). The cold entries' sequence numbers
// ascend, so that one is found by binary search; a job queued behind
// them joins them as a warm entry (a job, its entry pointing at it
// through the index), frozen once it qualifies (freezeLocked). back is
// empty while there are no cold entries. Guarded by Broker.mu.
type jobQueue struct {
	jobList
	cold coldJobs
	back jobList
	// fn and prio are the queue's function and priority, which frozen
	// entries do not keep; idx is the broker's index, where thawed jobs
	// go. Set when the queue first takes a cold entry.
	fn   *function
	prio Priority
	idx  *jobIndex
	// listed: the queue is in idx.cold, the queues a lookup of a frozen
	// job walks; it leaves it when its last cold entry goes.
	listed bool
}

// coldJob is a cold entry of a queue: what a queued background job whose
// payload is on disk only consists of (frozen), or the place of a job
// that is in the index (coldWarm) or has left the queue (coldRemoved).
type coldJob struct {
	seq uint64
	// submitted is the frozen job's job.submitted, or coldWarm or
	// coldRemoved.
	submitted int64
}

// The submitted of cold entries that are not frozen jobs (no submit time
// is negative).
const (
	coldWarm    = math.MinInt64
	coldRemoved = math.MinInt64 + 1
)

func (e *coldJob) frozen() bool { return e.submitted > coldRemoved }

// coldChunk is the number of entries of one chunk of coldJobs.
const coldChunk = 4096

// coldJobs is a FIFO of cold entries in chunks of coldChunk: at most one
// chunk of slack, and no copying as it grows.
type coldJobs struct {
	chunks [][]coldJob // each of length coldChunk
	// payloads are the payloads kept in memory of frozen entries, in
	// chunks like the entries' (a nil chunk: none); a frozen entry
	// without one has its payload on disk.
	payloads [][][]byte
	off      int // index of the first entry in chunks[0]
	n        int // entries, removed ones included
	live     int // entries that are not removed
	frozen   int // frozen entries
	onDisk   int // frozen entries whose payload is on disk
}

// coldDepth is how many jobs a queue keeps as jobs before it freezes
// those whose payload is in memory: a queue that is not deep does not
// make a job of each one twice.
const coldDepth = 1024

// payload returns the place of the i-th entry's payload kept in memory;
// nil when its chunk has none.
func (c *coldJobs) payload(i int) *[]byte {
	i += c.off
	if k := i / coldChunk; k < len(c.payloads) && c.payloads[k] != nil {
		return &c.payloads[k][i%coldChunk]
	}
	return nil
}

// setPayload keeps p as the payload of the i-th entry.
func (c *coldJobs) setPayload(i int, p []byte) {
	i += c.off
	k := i / coldChunk
	for len(c.payloads) <= k {
		c.payloads = append(c.payloads, nil)
	}
	if c.payloads[k] == nil {
		c.payloads[k] = make([][]byte, coldChunk)
	}
	c.payloads[k][i%coldChunk] = p
}

// takePayload returns the payload kept in memory of the i-th entry (nil
// when it is on disk) and forgets it.
func (c *coldJobs) takePayload(i int) []byte {
	p := c.payload(i)
	if p == nil {
		return nil
	}
	v := *p
	*p = nil
	return v
}

// at returns the i-th entry.
func (c *coldJobs) at(i int) *coldJob {
	i += c.off
	return &c.chunks[i/coldChunk][i%coldChunk]
}

func (c *coldJobs) last() *coldJob { return c.at(c.n - 1) }

func (c *coldJobs) push(e coldJob) {
	if (c.off+c.n)%coldChunk == 0 && (c.off+c.n)/coldChunk == len(c.chunks) {
		c.chunks = append(c.chunks, make([]coldJob, coldChunk))
	}
	*c.at(c.n) = e
	c.n++
	c.live++
	if e.frozen() {
		c.frozen++
	}
}

// pop removes the first entry and returns it with its payload kept in
// memory, if any.
func (c *coldJobs) pop() (coldJob, []byte) {
	e, p := *c.at(0), c.takePayload(0)
	c.off++
	c.n--
	if c.off == coldChunk {
		c.chunks[0] = nil
		c.chunks = c.chunks[1:]
		if len(c.payloads) > 0 {
			c.payloads[0] = nil
			c.payloads = c.payloads[1:]
		}
		c.off = 0
	}
	if c.n == 0 {
		c.chunks, c.payloads, c.off = nil, nil, 0
	}
	return e, p
}

// find returns the index of the entry of seq, -1 when there is none.
func (c *coldJobs) find(seq uint64) int {
	if c.n == 0 || seq < c.at(0).seq || seq > c.last().seq {
		return -1
	}
	i := sort.Search(c.n, func(i int) bool { return c.at(i).seq >= seq })
	if i < c.n {
		if e := c.at(i); e.seq == seq && e.submitted != coldRemoved {
			return i
		}
	}
	return -1
}

// coldMark is the prev of a job that is a warm cold entry of its queue.
var coldMark = new(job)

// len returns the number of jobs in the queue.
func (q *jobQueue) len() int { return q.n + q.cold.live + q.back.n }

// front returns the first job, thawing it if it is frozen; nil when the
// queue is empty.
func (q *jobQueue) front() *job {
	if q.head == nil && q.cold.live > 0 {
		q.thawFront()
	}
	return q.head
}

func (q *jobQueue) popFront() *job {
	if q.head == nil && q.cold.live > 0 {
		q.thawFront()
	}
	return q.jobList.popFront()
}

// pushBack queues j last. It is small enough to be inlined: a queue
// without cold entries costs the hot path one comparison.
func (q *jobQueue) pushBack(j *job) {
	if q.cold.live == 0 {
		q.jobList.pushBack(j)
		return
	}
	q.pushBehindCold(j)
}

// pushBehindCold queues j behind the cold entries: as a warm cold entry
// when its sequence number comes after theirs, otherwise in back.
func (q *jobQueue) pushBehindCold(j *job) {
	switch {
	case q.back.n == 0 && j.seq > q.cold.last().seq:
		j.prev, j.next = coldMark, nil
		q.cold.push(coldJob{seq: j.seq, submitted: coldWarm})
	default:
		q.back.pushBack(j)
	}
}

// remove takes j, a job of q, out of it.
func (q *jobQueue) remove(j *job) {
	switch {
	case j.prev == coldMark:
		e := q.cold.at(q.cold.find(j.seq))
		e.submitted = coldRemoved
		j.prev = nil
		q.cold.live--
		q.settleCold()
	case q.inBack(j):
		q.back.remove(j)
	default:
		q.jobList.remove(j)
	}
}

// inBack reports whether j, a job of q in one of its lists, is in back.
func (q *jobQueue) inBack(j *job) bool {
	if q.back.n == 0 {
		return false
	}
	for ; j.prev != nil; j = j.prev {
	}
	return j == q.back.head
}

// settleCold drops the cold entries once none is left, and moves the
// jobs of back behind the list.
func (q *jobQueue) settleCold() {
	if q.cold.live > 0 {
		return
	}
	if q.cold.n > 0 {
		q.cold = coldJobs{}
	}
	if q.listed {
		q.idx.cold = slices.DeleteFunc(q.idx.cold, func(o *jobQueue) bool { return o == q })
		q.listed = false
	}
	for j := q.back.popFront(); j != nil; j = q.back.popFront() {
		q.jobList.pushBack(j)
	}
}

// thawFront moves the first live cold entry to the list, thawing it.
func (q *jobQueue) thawFront() {
	for q.cold.n > 0 {
		e, p := q.cold.pop()
		var j *job
		switch e.submitted {
		case coldRemoved:
			continue
		case coldWarm:
			j = q.idx.seqIndex.get(e.seq)
		default:
			j = q.thaw(e, p)
			q.idx.frozen--
			q.cold.frozen--
			if p == nil {
				q.cold.onDisk--
			}
		}
		q.cold.live--
		j.prev, j.next = nil, nil
		q.jobList.pushBack(j)
		break
	}
	q.settleCold()
}

// thaw returns the job of a frozen entry with its payload kept in memory
// (nil: on disk), put in the index.
func (q *jobQueue) thaw(e coldJob, payload []byte) *job {
	j := q.view(e, payload)
	if x := q.idx; x.listings > 0 && x.pages[j.seq>>jobPageShift] == nil {
		x.added = append(x.added, j.seq>>jobPageShift)
	}
	q.idx.seqIndex.put(j.seq, j)
	return j
}

// view returns the job of a frozen entry without putting it anywhere.
func (q *jobQueue) view(e coldJob, payload []byte) *job {
	return &job{seq: e.seq, fn: q.fn, submitted: e.submitted, payload: payload, priority: q.prio,
		state: stateQueued, background: true, flags: jobTiered}
}

// frozenQualifies reports whether j can be frozen: a stored, queued
// background job with nothing in memory but its payload (no unique, no
// extra, no flag but jobTiered, never retried).
func frozenQualifies(j *job) bool {
	return j.state == stateQueued && j.background && j.flags == jobTiered &&
		j.unique == "" && j.x == nil && j.retries == 0 && j.submitted >= 0
}

// diskAhead reports whether j, a job of q, is queued behind frozen jobs
// whose payload is on disk.
func (q *jobQueue) diskAhead(j *job) bool {
	return j.prev == coldMark && q.cold.onDisk > 0
}

// freezeLocked freezes j when it qualifies. It is called once j is stored
// and tiering has decided where its payload stays (tierAdmitLocked).
func (b *Broker) freezeLocked(j *job) {
	if !b.tier.freeze || !frozenQualifies(j) {
		return
	}
	q := &j.fn.queues[j.priority]
	if q.idx == nil {
		q.fn, q.prio, q.idx = j.fn, j.priority, &b.jobs
	}
	if !q.listed {
		q.listed = true
		b.jobs.cold = append(b.jobs.cold, q)
	}
	switch {
	case j.prev == coldMark:
		q.freezeWarm(j)
	case q.cold.live == 0:
		// j is in the list, and back is empty: j and the jobs behind it
		// become cold entries, as far as their sequence numbers ascend,
		// and the rest goes to back. A payload in memory waits until the
		// queue is deep.
		if j.payload != nil && q.n <= coldDepth {
			return
		}
		for k := j; k != nil; {
			next := k.next
			q.jobList.remove(k)
			if q.cold.n == 0 || k.seq > q.cold.last().seq && q.back.n == 0 {
				k.prev, k.next = coldMark, nil
				q.cold.push(coldJob{seq: k.seq, submitted: coldWarm})
				q.freezeWarm(k)
			} else {
				q.back.pushBack(k)
			}
			k = next
		}
	}
}

// freezeWarm freezes j, a warm cold entry, when it qualifies.
func (q *jobQueue) freezeWarm(j *job) {
	if !frozenQualifies(j) {
		return
	}
	i := q.cold.find(j.seq)
	q.cold.at(i).submitted = j.submitted
	if j.payload != nil {
		q.cold.setPayload(i, j.payload)
	} else {
		q.cold.onDisk++
	}
	q.cold.frozen++
	q.idx.frozen++
	q.idx.seqIndex.delete(j.seq)
	j.prev = nil
}

// replayFrozenLocked queues the stored job r, which replayLifeLocked found
// plain, as a frozen entry of its queue when it would be frozen anyway
// (tierAdmitLocked, makeRunnableLocked, freezeLocked) and its queue has
// cold entries already, without making it a job first. It reports whether
// it did.
func (b *Broker) replayFrozenLocked(r store.Job) bool {
	t := &b.tier
	if !t.freeze || r.Unique != "" || r.Reducer != "" || r.RunAt != 0 || len(r.After) > 0 || r.Batch != 0 ||
		r.Retries != 0 || r.Submitted < 0 || t.budget > 0 && t.inMemory.Load()+int64(len(r.Payload)) <= t.budget {
		return false
	}
	f := b.functions[r.Function]
	if f == nil {
		return false
	}
	q := &f.queues[min(r.Priority, numPriorities-1)]
	if q.cold.live == 0 || q.back.n > 0 || r.Seq <= q.cold.last().seq {
		return false
	}
	q.cold.push(coldJob{seq: r.Seq, submitted: r.Submitted})
	q.cold.onDisk++
	b.jobs.frozen++
	f.total++
	t.onDisk++
	return true
}
