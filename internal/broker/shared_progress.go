package broker

import "github.com/gearwork/gearwork/internal/store"

// Progress across servers: the last WORK_STATUS of a stored background job
// is written to its row in the next commit round, so that GET_STATUS asked
// of another server reports it. Within a round only the last value of a
// job is written. With it goes whether a worker runs the job, which a job
// of a batch also writes when a worker takes it, for its batch's running
// count (Broker.batchStartedLocked).

// progressLocked queues the progress of j, which a worker here reported.
func (c *sharedMode) progressLocked(j *job) {
	if !j.background || j.seq&localSeqBit != 0 || j.saveState() == saveQueued {
		// Not stored (yet): settleEarlyLocked writes what it has then.
		return
	}
	c.queueProgressLocked(j.seq, j.x.num, j.x.den, j.state == stateRunning)
	j.flags |= jobProgress
}

func (c *sharedMode) queueProgressLocked(seq uint64, num, den uint32, running bool) {
	b := c.b
	if c.progress == nil {
		c.progress = make(map[uint64]store.Progress)
	}
	c.progress[seq] = store.Progress{Seq: seq, Numerator: num, Denominator: den, Running: running}
	if len(c.progress) == 1 {
		b.kickCommitter()
	}
}

// progressResetLocked forgets in the store the progress of j that was
// written there (jobProgress).
func (c *sharedMode) progressResetLocked(j *job) {
	j.flags &^= jobProgress
	c.queueProgressLocked(j.seq, 0, 0, false)
}

// takeProgressLocked returns the progress to write in this round.
func (c *sharedMode) takeProgressLocked() []store.Progress {
	if len(c.progress) == 0 {
		return nil
	}
	out := make([]store.Progress, 0, len(c.progress))
	for _, p := range c.progress {
		out = append(out, p)
	}
	clear(c.progress)
	return out
}

// progressFailedLocked puts back what a failed round did not write, unless
// newer progress of the job was queued meanwhile.
func (c *sharedMode) progressFailedLocked(ps []store.Progress) {
	for _, p := range ps {
		if _, newer := c.progress[p.Seq]; !newer {
			if c.progress == nil {
				c.progress = make(map[uint64]store.Progress)
			}
			c.progress[p.Seq] = p
		}
	}
}
