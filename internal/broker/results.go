package broker

import (
	"context"
	"time"
)

// retainLocked keeps a completed background job's result: the job leaves
// the live indexes (its ordering key lets the next job run) and answers
// Result and repeated submits of its unique until the retention ends.
func (b *Broker) retainLocked(j *job, data []byte, now int64) {
	l := j.x.life
	l.result = data
	l.finishedAt = now
	b.releaseWorkerLocked(j)
	b.unlinkLocked(j)
	b.addResultLocked(j, nanosAfter(now, j.fn.life.pol.ResultRetention))
	b.saveLocked(j)
}

// addResultLocked indexes a done job until expiry (Unix ns).
func (b *Broker) addResultLocked(j *job, expiry int64) {
	b.setStateLocked(j, stateDone)
	b.life.done[j.seq] = j
	if j.unique != "" {
		fl := b.fnLifeLocked(j.fn)
		if fl.done == nil {
			fl.done = make(map[string]*job)
		}
		fl.done[j.unique] = j
	}
	b.addTimerLocked(j, expiry)
}

// expireResultLocked forgets a retained result.
func (b *Broker) expireResultLocked(j *job) {
	delete(b.life.done, j.seq)
	if fl := j.fn.life; fl != nil && j.unique != "" && fl.done[j.unique] == j {
		if delete(fl.done, j.unique); len(fl.done) == 0 {
			b.mayIdleLocked(j.fn)
		}
	}
	b.setStateLocked(j, stateGone)
	b.deleteStoredLocked(j)
}

// attachDoneLocked answers a submit whose unique matches a retained
// result: the submitter gets the finished job's handle (and a foreground
// submitter its WORK_COMPLETE) and nothing runs again.
func (b *Broker) attachDoneLocked(s *Session, f *function, key string, background bool, done DoneFunc) bool {
	j := f.life.done[key]
	if j == nil {
		return false
	}
	if background && j.saveState() != saveNone {
		// The result is not stored yet: wait for it as the job's own
		// submitters do (commitLoop).
		j.x.waiters = append(j.x.waiters, done)
	} else {
		done(j.seq, false, nil)
	}
	if !background && s != nil {
		s.out.Send(Event{Kind: EventComplete, Seq: j.seq, Data: j.x.life.result})
	}
	return true
}

// Result is the retained outcome of a completed background job.
type Result struct {
	Seq      uint64
	Function string
	// Unique is the unique as the client sent it.
	Unique string
	// Data is the WORK_COMPLETE data; it must not be modified.
	Data       []byte
	FinishedAt time.Time
	// Expires is when the result will be forgotten.
	Expires time.Time
}

func (b *Broker) resultOf(j *job) Result {
	return Result{Seq: j.seq, Function: j.fn.name, Unique: j.displayUnique(), Data: j.x.life.result,
		FinishedAt: time.Unix(0, j.x.life.finishedAt), Expires: time.Unix(0, j.x.timer.at)}
}

// Result returns the retained result of the job with the given handle;
// ok is false when none is kept. In shared mode a result that another
// server sharing the store stored is read from the store. A result kept
// in memory is made durable before it is answered (readDurable).
func (b *Broker) Result(ctx context.Context, handle []byte) (r Result, ok bool, err error) {
	seq, ok := b.ParseHandle(handle)
	if !ok {
		return Result{}, false, nil
	}
	b.mu.Lock()
	if j := b.life.done[seq]; j != nil {
		r = b.resultOf(j)
		b.mu.Unlock()
		b.readDurable(ctx)
		return r, true, nil
	}
	b.mu.Unlock()
	return b.mode.storedResult(ctx, seq, "", "")
}

// readDurable waits until what a read is about to answer from memory (a
// retained result, a dead letter, a batch's state) is on disk (Durable),
// so that a crash does not take back what was read: a worker's
// WORK_COMPLETE or WORK_FAIL makes it readable at once, before the commit
// round that stores it, and a crash before that round queues the job
// again (and the batch it ended is open again). While the store refuses
// writes, or when the round does not end within Config.RecordReadWait (a
// disk or database that hangs), it is answered all the same, as it is
// kept in memory: a read must not hang while the store does.
func (b *Broker) readDurable(ctx context.Context) {
	if b.store != nil {
		b.recordsDurable(ctx)
	}
}

// ResultByUnique returns a retained result by unique id. With function ""
// every function is searched (the first match by name wins). In shared
// mode a result that another server sharing the store stored is read from
// the store.
func (b *Broker) ResultByUnique(ctx context.Context, function, unique string) (Result, bool, error) {
	b.mu.Lock()
	var found *job
	for _, f := range b.functions {
		if f.life == nil || (function != "" && f.name != function) {
			continue
		}
		if j := f.life.done[unique]; j != nil && (found == nil || f.name < found.fn.name) {
			found = j
		}
	}
	if found != nil {
		r := b.resultOf(found)
		b.mu.Unlock()
		b.readDurable(ctx)
		return r, true, nil
	}
	b.mu.Unlock()
	if unique == "" {
		return Result{}, false, nil
	}
	return b.mode.storedResult(ctx, 0, function, unique)
}

// StoredJob returns, in shared mode, a snapshot of job seq when the store
// holds it as a dead letter, a retained result, a job that waits for
// others, or a live job this server does not hold (queued, scheduled or
// waiting for its retry, or running on another server), whichever server
// stored it (Job only sees this server's memory). It reports false
// otherwise, and always outside shared mode.
func (b *Broker) StoredJob(ctx context.Context, seq uint64) (JobSnapshot, bool, error) {
	return b.mode.storedJob(ctx, seq)
}
