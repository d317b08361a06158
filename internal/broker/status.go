package broker

import (
	"context"
	"errors"
	"fmt"
)

// JobStatus answers GET_STATUS and GET_STATUS_UNIQUE.
type JobStatus struct {
	Seq     uint64
	Known   bool
	Running bool
	// Numerator and Denominator are the last WORK_STATUS of the job.
	Numerator, Denominator uint32
	// Waiting counts clients attached to the job.
	Waiting int
}

func statusOf(j *job) JobStatus {
	st := JobStatus{Seq: j.seq, Known: true, Running: j.state == stateRunning}
	if j.x != nil {
		st.Numerator, st.Denominator = j.x.num, j.x.den
		st.Waiting = len(j.x.clients)
	}
	return st
}

// GetStatus reports on the job with the given handle.
func (b *Broker) GetStatus(handle []byte) JobStatus {
	seq, ok := b.ParseHandle(handle)
	if !ok {
		return JobStatus{}
	}
	b.mu.Lock()
	if j := b.jobs.get(seq); j != nil {
		defer b.mu.Unlock()
		return statusOf(j)
	}
	b.mu.Unlock()
	return b.mode.status(seq, "")
}

// GetStatusUnique reports on a live job with the given unique, of any
// function (as gearmand's GET_STATUS_UNIQUE, which carries no function).
func (b *Broker) GetStatusUnique(unique []byte) JobStatus {
	if len(unique) == 0 {
		return JobStatus{}
	}
	b.mu.Lock()
	if j := b.uniques.get(string(unique)); j != nil {
		defer b.mu.Unlock()
		return statusOf(j)
	}
	b.mu.Unlock()
	return b.mode.status(0, string(unique))
}

// FunctionStatus is one line of the "status" and "prioritystatus" admin
// commands.
type FunctionStatus struct {
	Name string
	// Total counts the function's jobs in every state (queued, scheduled,
	// running), as gearmand's TOTAL column.
	Total   int
	Running int
	Workers int
	// Queued counts runnable jobs per priority (high, normal, low).
	Queued [numPriorities]int
	// MaxQueue per priority; 0 means unlimited.
	MaxQueue [numPriorities]int
}

// Status returns every function's queue state, sorted by name. In shared
// mode with a store that counts (store.SharedLifecycle), Queued and Total also
// count the jobs that no server holds (read from the store at most once a
// second, never under the broker's lock); Running and Workers, and the
// jobs other servers hold, stay this server's own. When the store cannot
// be read, it shows this server's jobs only (and logs why). It is the
// FunctionStatus part of Stats.
func (b *Broker) Status(ctx context.Context) []FunctionStatus {
	fns := b.stats(ctx, false).Functions
	out := make([]FunctionStatus, len(fns))
	for i, f := range fns {
		out[i] = f.FunctionStatus
	}
	return out
}

// WorkerInfo is one line of the "workers" admin command.
type WorkerInfo struct {
	ID        uint64
	Addr      string
	ClientID  string
	Functions []string
}

// JobInfo is one line of the "show jobs" admin command.
type JobInfo struct {
	Seq      uint64
	Function string
	Unique   string
	Retries  uint32
	// Ignored is set for a running job whose result nobody will receive.
	Ignored bool
	// Queued is set for a stored background job.
	Queued   bool
	State    string
	Priority Priority
}

// CancelJob is CancelJobBy for an unnamed canceller ("admin").
func (b *Broker) CancelJob(ctx context.Context, handle []byte) error {
	return b.CancelJobBy(ctx, handle, "admin")
}

// CancelJobBy removes a live job (queued, scheduled, waiting to retry or
// running) and records it as cancelled by by, which names who asked;
// waiting clients receive WORK_FAIL, and the worker running it gets
// ErrJobCancelled for its next work update. It returns ErrJobNotFound for
// a handle that names no live job, and returns once the removal is durable
// (Durable).
func (b *Broker) CancelJobBy(ctx context.Context, handle []byte, by string) error {
	seq, ok := b.ParseHandle(handle)
	if !ok {
		return ErrJobNotFound
	}
	b.mu.Lock()
	j := b.jobs.get(seq)
	if j == nil {
		b.mu.Unlock()
		err := b.mode.cancelElsewhere(ctx, seq, by)
		if errors.Is(err, ErrJobNotFound) {
			if state, ended := b.endedState(ctx, seq); ended {
				return fmt.Errorf("%w (%s)", ErrJobEnded, state)
			}
		}
		return err
	}
	b.cancelLocked(j, by)
	b.mu.Unlock()
	return b.Durable(ctx)
}

// endedState returns the final state of job seq if it has ended and its
// record (or dead letter, or retained result) is kept, as Job and
// StoredJob read it.
func (b *Broker) endedState(ctx context.Context, seq uint64) (string, bool) {
	snap, ok := b.Job(ctx, seq)
	if !ok {
		var err error
		if snap, ok, err = b.StoredJob(ctx, seq); err != nil {
			return "", false
		}
	}
	switch snap.State {
	case FinalComplete, FinalFailed, FinalException, FinalCancelled, FinalDead:
		return snap.State, ok
	}
	return "", false
}

// cancelLocked fails a live job for its clients, records it as cancelled
// by by, and removes it. A running job is taken from its worker too: the
// worker's next work update for it gets ErrJobCancelled.
func (b *Broker) cancelLocked(j *job, by string) {
	j.failClients()
	if j.state == stateRunning {
		// The run ends here: its record keeps it as an attempt. A cancel
		// is no error (the record says who cancelled the job).
		lastErr := ""
		if j.x.life != nil {
			lastErr = j.x.life.lastErr
		}
		b.endAttemptLocked(j, outcomeCancelled, "", b.nowNanos()).lastErr = lastErr
	}
	b.recordEndLocked(j, jobEnd{state: FinalCancelled, cancelledBy: by})
	if j.state == stateRunning {
		w := j.x.worker
		if w.cancelled == nil {
			w.cancelled = make(map[uint64]struct{})
		}
		w.cancelled[j.seq] = struct{}{}
	}
	b.removeLocked(j)
}

// SetMaxQueue sets a function's queue limit per priority (0: unlimited),
// creating the function if needed: gearmand's "maxqueue", a change of the
// max_queue key of its policy, stored like SetPolicy (call Durable before
// acknowledging it).
//
// It fails, changing nothing, for a new function beyond
// Config.MaxFunctions (ErrTooManyFunctions).
func (b *Broker) SetMaxQueue(name string, limits [numPriorities]int) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, err := b.admitFunctionLocked([]byte(name)); err != nil {
		return err
	}
	p := b.policyOf(name)
	p.MaxQueue = limits
	b.setPolicyLocked(name, p)
	return nil
}

// CreateFunction makes a function known (it shows in "status"). It fails
// for a new function beyond Config.MaxFunctions (ErrTooManyFunctions).
func (b *Broker) CreateFunction(name string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	_, err := b.admitFunctionLocked([]byte(name))
	return err
}

// DropFunction forgets a function that has no workers and no running
// jobs; its queued jobs are dropped, as gearmand does, and so are its jobs
// that wait for others (SubmitParams.After), cancelling the jobs that wait
// for those. A pause of the function ends, in the store too. In shared
// mode the jobs of the function that no server holds are cancelled in the
// store as well (those other live servers hold stay theirs), also when
// this server does not know the function, which is then not found only if
// the store had none of its jobs either. The name is matched exactly, as
// every other command matches a function's name: "resize" and "Resize"
// are two functions, and dropping one must not drop the other's jobs
// (gearmand matches it regardless of case and drops every function so
// named). It returns before the removals of the jobs this server held are
// on disk: call Durable before acknowledging it. The records of the
// dropped jobs say cancelled by "function dropped".
func (b *Broker) DropFunction(ctx context.Context, name string) error {
	return b.DropFunctionBy(ctx, name, "")
}

// DropFunctionBy is DropFunction on behalf of by, who asked (such as
// "admin 127.0.0.1:40000", as CancelJobBy takes it): the records of the
// jobs it drops say cancelled by "function dropped by " and by.
func (b *Broker) DropFunctionBy(ctx context.Context, name, by string) error {
	why := "function dropped"
	if by != "" {
		why += " by " + by
	}
	err := b.dropFunction(name, why)
	switch {
	case errors.Is(err, ErrFunctionNotFound):
		if n, serr := b.mode.dropUnheld(ctx, name, why); serr != nil || n > 0 {
			return serr
		}
		return err
	case err != nil:
		return err
	}
	_, err = b.mode.dropUnheld(ctx, name, why)
	return err
}

// dropFunction is DropFunction's part in memory; the jobs it drops are
// cancelled by why.
func (b *Broker) dropFunction(name, why string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	f := b.functions[name]
	if f == nil {
		return ErrFunctionNotFound
	}
	if f.workers > 0 || f.running > 0 {
		return ErrFunctionBusy
	}
	b.dropWaitingLocked(f, why)
	if f.life != nil && f.life.paused {
		b.queueMetaLocked(metaKey(metaPause, f.name), nil)
	}
	b.dropFunctionLifeLocked(f, why)
	for p := range numPriorities {
		for j := f.queues[p].front(); j != nil; j = f.queues[p].front() {
			j.failClients()
			b.dropLocked(j, why)
		}
	}
	for _, j := range b.timers {
		if j.fn == f {
			defer b.dropIfScheduled(j, why)
		}
	}
	f.droppedBy = why
	b.unknowFunctionLocked(f)
	return nil
}

func (b *Broker) dropIfScheduled(j *job, why string) {
	if j.state == stateScheduled || j.state == stateRetryWait {
		b.dropLocked(j, why)
	}
}

// JobCount returns the number of live jobs.
func (b *Broker) JobCount() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.jobs.len()
}
