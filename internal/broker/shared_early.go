package broker

import (
	"time"

	"github.com/gearwork/gearwork/internal/store"
)

// Dispatch before durable in shared mode.
//
// A new background job that this server's workers will run anyway (they
// serve its function, it is due, and the server holds less than its
// claim target of the function's jobs) is numbered at submit from
// sequence numbers the store reserved for this server, and queued here at
// once, as with a local store (commitLoop): only its submitters' answers
// wait for the insert, which writes it already claimed by this server. The
// committer takes such a job in its next round, or, for a function whose
// jobs the workers here have lately run in well under
// Config.EarlyInsertDelay, once it has waited that long or as long as it
// is expected to queue and run here (holdLocked): a row costs the database
// an insert and a delete, and a job that ends before the committer takes
// it is never inserted; its submitters are told when it ends. Every other
// new job waits for the insert (statePending), which numbers it and
// decides which server runs it.
//
// Uniques still coalesce in the store: when the insert finds a live job
// with the same function and unique, the submitters are given that job's
// handle and the copy here is dropped if no worker has taken it yet. One
// that a worker took already (or that a foreground client follows) runs
// to its end unstored; so two submits of one unique that reach two
// servers within one commit round may both run. A cron tick's job is
// never handed out early: each tick runs once across the servers.

// earlyJob is a job handed out before its insert, and when its insert is
// due.
type earlyJob struct {
	j   *job
	due time.Time
}

// holdEarlyLocked numbers j, a new background job, from the reserved
// sequence numbers and leaves its insert to the committer, when it may be
// handed to a worker here before it is inserted. The caller makes it
// runnable.
func (c *sharedMode) holdEarlyLocked(j *job) bool {
	b := c.b
	seq, ok := c.earlySeqLocked(j)
	if !ok {
		return false
	}
	b.jobs.delete(j.seq)
	j.seq = seq
	b.jobs.put(j.seq, j)
	hold, ok := c.holdLocked(j.fn)
	if !ok {
		b.queueSaveLocked(j) // inserted in the next round
		return true
	}
	c.early = append(c.early, earlyJob{j: j, due: c.now().Add(hold)})
	if len(c.early) == 1 {
		b.kickCommitter()
	}
	return true
}

// holdLocked reports whether, and how long, the insert of a job of f
// queued now should wait: when the workers here have lately run f's jobs
// in well under the insert delay, the delay, or as long as the job is
// expected to queue and run here, going by their recent rate, when that
// is longer (at most holdFactor times the delay). A job acknowledged by
// its insert brings its submitter's next job sooner, so inserting the
// jobs of a long queue early would only make it longer.
func (c *sharedMode) holdLocked(f *function) (time.Duration, bool) {
	if c.grace <= 0 {
		return 0, false
	}
	r := c.finishRateOfLocked(f)
	if r.run <= 0 || r.run > c.grace.Seconds()/2 {
		return 0, false
	}
	hold := c.grace
	if r.perSec > 0 {
		expect := time.Duration((float64(f.queued()+1)/r.perSec + r.run) * 1.5 * float64(time.Second))
		hold = min(max(hold, expect), holdFactor*c.grace)
	}
	return hold, true
}

// holdFactor bounds holdLocked: a job waits for its insert at most this
// many times the insert delay.
const holdFactor = 5

// takeEarlyLocked removes the held-out jobs that have waited grace, or all
// of them, up to max, and returns those not ended or taken yet, marked as
// being written.
func (c *sharedMode) takeEarlyLocked(all bool, max int) []*job {
	now := c.now()
	var out []*job
	n := 0
	for n < len(c.early) && len(out) < max && (all || !c.early[n].due.After(now)) {
		if j := c.early[n].j; j.saveState() == saveQueued {
			c.b.setSaveLocked(j, saveWriting)
			out = append(out, j)
		}
		n++
	}
	rest := copy(c.early, c.early[n:])
	clear(c.early[rest:])
	c.early = c.early[:rest]
	return out
}

// earlyDueLocked returns how long until the oldest held-out job is due for
// its insert, and false when none waits.
func (c *sharedMode) earlyDueLocked() (time.Duration, bool) {
	if len(c.early) == 0 {
		return 0, false
	}
	return max(c.early[0].due.Sub(c.now()), 0), true
}

// earlySeqLocked returns a reserved sequence number for j, a new
// background job, when it may be handed to a worker here before it is
// inserted.
func (c *sharedMode) earlySeqLocked(j *job) (uint64, bool) {
	b := c.b
	f := j.fn
	if j.x != nil && j.x.life != nil && j.x.life.schedule != "" {
		// A cron tick's job runs once across the servers: the insert
		// decides which server's job that is.
		return 0, false
	}
	now := c.now()
	if !claimOnInsert(j) || j.runAt() > now.Unix() || f.workers == 0 || b.draining ||
		(f.life != nil && f.life.paused) || f.queued() >= c.claimTargetLocked(f) || c.failing {
		return 0, false
	}
	c.seqsWanted++
	if len(c.seqs) == 0 || now.Sub(c.seqsAt) > seqFresh {
		return 0, false
	}
	seq := c.seqs[0]
	c.seqs = c.seqs[1:]
	return seq, true
}

// reserveLocked returns how many sequence numbers the next commit round
// should reserve: about twice what the jobs wanted since the last
// reservation, once fewer than half of that are left.
func (c *sharedMode) reserveLocked() int {
	if c.seqsWanted == 0 {
		return 0
	}
	want := min(max(2*c.seqsWanted, seqReserveMin), seqReserveMax)
	left := len(c.seqs)
	if c.now().Sub(c.seqsAt) > seqFresh {
		left = 0
	}
	if left >= want/2 {
		return 0
	}
	return want - left
}

// reservedLocked adds the numbers a commit round reserved.
func (c *sharedMode) reservedLocked(seqs []uint64) {
	if len(seqs) == 0 {
		return
	}
	if c.now().Sub(c.seqsAt) > seqFresh {
		c.seqs = c.seqs[:0]
	}
	c.seqs = append(c.seqs, seqs...)
	c.seqsAt = c.now()
	c.seqsWanted = 0
}

// settleEarlyLocked acknowledges the submitters of a job that was handed
// out before its insert, once the insert is done (or failed).
func (c *sharedMode) settleEarlyLocked(j *job, r store.Inserted, err error) {
	b := c.b
	if j.saveState() != saveWriting {
		// It ended while the insert ran: its submitters were answered and
		// its delete is queued behind this round. A job it coalesced with
		// and claimed goes back to the other servers.
		if err == nil && r.Seq != j.seq && r.Claimed && b.jobs.get(r.Seq) == nil {
			c.meta.release = append(c.meta.release, r.Seq)
			c.notifyLocked(j.fn)
		}
		return
	}
	if j.state == stateDead {
		// A dead letter in shared mode lives in the store only
		// (deadSharedLocked).
		c.b.setStateLocked(j, stateGone)
	}
	if err == nil {
		err = r.Err // the round was written, this job was not
	}
	if err != nil {
		c.failEarlyLocked(j, err)
		return
	}
	c.b.setSaveLocked(j, saveNone)
	waiters := j.x.waiters
	j.x.waiters = nil
	answer := func(seq uint64, created bool) {
		for i, w := range waiters {
			w(seq, created && i == 0, nil)
		}
	}
	movable := j.state == stateQueued && len(j.x.clients) == 0
	switch other := b.jobs.get(r.Seq); {
	case r.Seq == j.seq:
		answer(j.seq, true)
		if j.x.num != 0 || j.x.den != 0 {
			c.progressLocked(j) // reported before the insert
		}
		if !r.Claimed && movable {
			// Inserted unclaimed (this server's lease was lost): the
			// server that claims it runs it.
			c.forgetLocked(j)
			return
		}
		j.releaseExtra()
	case movable && other != nil:
		// Coalesced with a job held here.
		b.moveWatchersLocked(j.seq, other.seq)
		c.attachCoalescedLocked(j, other, waiters)
	case movable && r.Claimed:
		// Coalesced with a job nobody held, which this insert claimed.
		// That job, with its own payload and state, is claimed again the
		// usual way: it goes back to the store, and this copy goes.
		c.meta.release = append(c.meta.release, r.Seq)
		c.notifyLocked(j.fn)
		answer(r.Seq, false)
		c.forgetLocked(j)
	case movable:
		// Coalesced with a job another server holds, or will claim.
		answer(r.Seq, r.Created)
		c.forgetLocked(j)
	default:
		// Coalesced, but a worker here has it already (or a foreground
		// client follows it): it runs on, unstored, and the job it
		// coalesced with stays with the other servers.
		if r.Claimed && other == nil {
			c.meta.release = append(c.meta.release, r.Seq)
			c.notifyLocked(j.fn)
		}
		answer(r.Seq, false)
	}
}

// failEarlyLocked tells the submitters of a job handed out before its
// insert that the insert failed, and drops the job as a local store's
// committer does (refuseLocked).
func (c *sharedMode) failEarlyLocked(j *job, err error) {
	b := c.b
	c.b.setSaveLocked(j, saveNone)
	waiters := j.x.waiters
	j.x.waiters = nil
	for _, w := range waiters {
		w(0, false, &StoreError{err})
	}
	switch j.state {
	case stateDead:
		c.b.setStateLocked(j, stateGone) // its dead letter is lost with the write
	case stateDone, stateGone:
	default:
		b.refuseLocked(j)
	}
}
