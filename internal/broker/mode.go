package broker

import (
	"context"
	"fmt"
)

// mode is what a broker does differently when it shares its jobs with
// other servers. The broker alone (with a local store or none) is
// localMode; on a store.SharedStore it is sharedMode. The rest of the
// broker is the same in both modes and reaches the difference only through
// these hooks, chosen once by New. Methods ending in Locked are called
// with Broker.mu held and must not block.
type mode interface {
	// start loads the jobs a server starts with: a local store is
	// replayed; a shared store is joined. It runs before the lifecycle
	// state starts.
	start(ctx context.Context) error
	// run starts the mode's goroutines (the committer, and in shared mode
	// the claim loop and the lifecycle sweep), counted in Broker.wg and
	// stopped by ctx.
	run(ctx context.Context)
	// parseHandle returns the sequence number of a handle this broker
	// answers for.
	parseHandle(h []byte) (uint64, bool)

	// submitLocked queues the first write of a new background job (the
	// broker has a store) and reports whether the job is runnable at once
	// (dispatch before durable); if not, its insert decides.
	submitLocked(j *job) bool
	// watchesAfterInsert reports whether a watched submit is watched
	// again once the store's answer says which job it became.
	watchesAfterInsert() bool
	// savePendingInsertLocked is called when a job whose first write the
	// committer has not taken yet changes state.
	savePendingInsertLocked(j *job)
	// wantWorkLocked is called when a worker of s may run short of jobs.
	wantWorkLocked(s *Session)
	// progressLocked is called when a worker here reports j's progress,
	// and progressResetLocked when j's progress is forgotten after it was
	// reported.
	progressLocked(j *job)
	progressResetLocked(j *job)
	// slotFreedLocked is called when a background job of f freed a
	// concurrency slot or the head of an ordering key.
	slotFreedLocked(f *function)
	// functionGoneLocked is called when the broker forgets f ("drop
	// function", or an idle function forgotten at Config.MaxFunctions).
	functionGoneLocked(f *function)
	// retryDueLocked is called when a background job's backoff ended; it
	// reports whether it took the job (shared limits: back to the store).
	retryDueLocked(j *job) bool
	// metaWrittenLocked is called when a metadata entry is queued for the
	// committer.
	metaWrittenLocked(key string)
	// pendingLocked reports writes that wait for the committer beyond the
	// broker's own pending lists.
	pendingLocked() bool
	// status answers a status request for a job this server does not
	// hold.
	status(seq uint64, unique string) JobStatus
	// addCounts adds to a snapshot of this server's functions what only
	// the store knows (jobs no server holds, dead letters).
	addCounts(ctx context.Context, out []FunctionStats) []FunctionStats

	records
	batchKeeper
	dependencies
}

// dependencies is where jobs wait for others (SubmitParams.After): in this
// server's memory, written to its store (localMode), or in the shared
// store's rows, which checks, releases and cancels them (sharedMode).
type dependencies interface {
	// prepareAfter reads, before the broker's lock, what a submit that
	// names jobs to wait for (after, and by unique) needs from the
	// store.
	prepareAfter(after []uint64, unique []UniqueDep) afterRead
	// unreadAfterLocked returns the jobs of after (a submit's) whose
	// outcome only the store's records know and that known lacks:
	// Broker.lockSubmit reads them without the lock and looks again.
	unreadAfterLocked(after []uint64, known map[uint64]depOutcome) []uint64
	// afterLocked checks the dependencies of p, a background submit that
	// names some, and returns the live jobs the new job must wait for
	// here (none when the store keeps them).
	afterLocked(p SubmitParams) ([]*job, error)
	// waitLocked makes new job j wait for deps (afterLocked's answer) or
	// for the jobs after (anyway: AfterAnyway).
	waitLocked(j *job, deps []*job, after []uint64, anyway bool)
	// dependencyEndedLocked is called when job j, which other jobs may
	// wait for, ended in state (a final state of its record), after the
	// jobs waiting for it here were released or cancelled.
	dependencyEndedLocked(j *job, state string)
}

// afterRead is what prepareAfter read for a submit: the jobs it waits for
// by number (SubmitParams.After and, in shared mode, those it names by
// unique), and why it cannot wait (shared mode).
type afterRead struct {
	after []uint64
	err   error
}

// batchKeeper is where batches live: in this server's memory, written to
// its store (localMode), or in the rows of the shared store (sharedMode),
// which counts their jobs and submits their callbacks.
type batchKeeper interface {
	createBatch(ctx context.Context, p BatchParams) (uint64, error)
	closeBatch(ctx context.Context, id uint64) error
	batch(ctx context.Context, id uint64) (BatchStatus, error)
	batches(ctx context.Context, limit int) ([]BatchStatus, error)
	// joinableBatchLocked returns batch id, which a new background job
	// asks to join, or why it cannot. In shared mode the store decides
	// as it inserts the job (store.Inserted.BatchRefused).
	joinableBatchLocked(id uint64) (*batch, error)
	// prepareBatch reads, before the broker's lock, whether batch id may
	// be joined by a submit with a unique, which may coalesce in memory
	// with a job of no batch or another one instead of being inserted: nil
	// when it may, or when joinableBatchLocked decides.
	prepareBatch(id uint64) error
	// batchEndedLocked counts the end of j, a job of a batch, whose final
	// state is state.
	batchEndedLocked(j *job, state string)
	// expireBatches forgets at most expireBatchesMax batches that
	// completed before completedBefore (Unix nanoseconds) and whose
	// callbacks were all submitted, and returns how many.
	expireBatches(completedBefore int64) int
}

// records is where dead letters and retained results live and how a job
// this server does not hold is cancelled: in this server's memory
// (localMode) or in the shared store's rows (sharedMode).
type records interface {
	// deadLocked keeps j, which ran out of attempts, as a dead letter. j
	// is in stateGone, outside every index.
	deadLocked(j *job)
	// deadLetters lists the dead letters of function ("" for all), by
	// function name, then in the order they died, at most limit (≤ 0:
	// all).
	deadLetters(ctx context.Context, function string, limit int) ([]DeadLetter, error)
	// deadLetter returns the dead letter seq; ok is false when there is
	// none.
	deadLetter(ctx context.Context, seq uint64) (dl DeadLetter, ok bool, err error)
	// retryDead queues the selected dead letters again (seq when not 0,
	// else those of function) and returns how many.
	retryDead(ctx context.Context, seq uint64, function string) (int, error)
	// purgeDead deletes the selected dead letters (seq when not 0, else
	// those of function, or all when function is "") and returns how
	// many.
	purgeDead(ctx context.Context, seq uint64, function string) (int, error)
	// storedResult returns a retained result that is not in memory here:
	// by unique when unique is not "", else by seq.
	storedResult(ctx context.Context, seq uint64, function, unique string) (Result, bool, error)
	// storedJob returns a snapshot of job seq, a dead letter, a retained
	// result or a job waiting for others, that is not in memory here.
	storedJob(ctx context.Context, seq uint64) (JobSnapshot, bool, error)
	// liveElsewhere reports whether job seq, which this server does not
	// hold, is live (queued or running) at another server.
	liveElsewhere(ctx context.Context, seq uint64) (bool, error)
	// cancelElsewhere cancels job seq, which this server does not hold,
	// on behalf of by.
	cancelElsewhere(ctx context.Context, seq uint64, by string) error
	// dropUnheld cancels the stored jobs of the dropped function that no
	// server holds, each cancelled by why, and returns how many.
	dropUnheld(ctx context.Context, function, why string) (int, error)
	// storeAnswers reports, while the store's error is set, whether the
	// store answers again (and then clears the error); a store that
	// refused a write for good (a failed fsync) never does.
	storeAnswers(ctx context.Context) bool
}

// localMode is a broker alone: its jobs, dead letters and retained results
// are in its memory, written to its own store (if any).
type localMode struct{ b *Broker }

func (m localMode) start(ctx context.Context) error {
	if m.b.store == nil {
		return nil
	}
	return m.b.replay(ctx)
}

func (m localMode) run(ctx context.Context) {
	if m.b.store == nil {
		return
	}
	m.b.wg.Add(1)
	go m.b.commitLoop(ctx)
}

func (m localMode) parseHandle(h []byte) (uint64, bool) { return m.b.parseOwnHandle(h) }

func (m localMode) submitLocked(j *job) bool {
	m.b.queueSaveLocked(j)
	return true
}

func (localMode) watchesAfterInsert() bool                                         { return false }
func (localMode) savePendingInsertLocked(*job)                                     {}
func (localMode) wantWorkLocked(*Session)                                          {}
func (localMode) progressLocked(*job)                                              {}
func (localMode) progressResetLocked(*job)                                         {}
func (localMode) slotFreedLocked(*function)                                        {}
func (localMode) functionGoneLocked(*function)                                     {}
func (localMode) retryDueLocked(*job) bool                                         { return false }
func (localMode) metaWrittenLocked(string)                                         {}
func (localMode) pendingLocked() bool                                              { return false }
func (localMode) status(uint64, string) JobStatus                                  { return JobStatus{} }
func (localMode) cancelElsewhere(context.Context, uint64, string) error            { return ErrJobNotFound }
func (localMode) dropUnheld(context.Context, string, string) (int, error)          { return 0, nil }
func (localMode) storeAnswers(context.Context) bool                                { return false }
func (localMode) addCounts(_ context.Context, out []FunctionStats) []FunctionStats { return out }

func (localMode) storedJob(context.Context, uint64) (JobSnapshot, bool, error) {
	return JobSnapshot{}, false, nil
}

func (m localMode) joinableBatchLocked(id uint64) (*batch, error) {
	bt := m.b.batches.byID[id]
	switch {
	case bt == nil:
		return nil, fmt.Errorf("%w: %d", ErrBatchNotFound, id)
	case bt.Completed != 0:
		return nil, fmt.Errorf("%w: %d", ErrBatchComplete, id)
	}
	return bt, nil
}

func (localMode) prepareBatch(uint64) error { return nil }

func (m localMode) batchEndedLocked(j *job, state string) { m.b.batchEndLocked(j, state) }

func (localMode) liveElsewhere(context.Context, uint64) (bool, error) { return false, nil }

func (localMode) storedResult(context.Context, uint64, string, string) (Result, bool, error) {
	return Result{}, false, nil
}

func (m localMode) deadLocked(j *job) {
	m.b.addDeadLocked(j)
	m.b.saveLocked(j)
}

func (m localMode) deadLetters(ctx context.Context, function string, limit int) ([]DeadLetter, error) {
	out := m.b.deadLetters(function)
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	if len(out) > 0 {
		m.b.readDurable(ctx) // as a retained result: a dead letter read stays
	}
	return m.b.tierFillDeadLetters(out), nil
}

func (m localMode) deadLetter(ctx context.Context, seq uint64) (dl DeadLetter, ok bool, err error) {
	ok = m.b.withDeadLetter(seq, func(j *job) { dl = deadLetterOf(j, m.b.Handle(j.seq)) })
	if ok {
		m.b.readDurable(ctx)
		dl = m.b.tierFillDeadLetters([]DeadLetter{dl})[0]
	}
	return dl, ok, nil
}

func (m localMode) retryDead(_ context.Context, seq uint64, function string) (int, error) {
	if seq != 0 {
		if !m.b.withDeadLetter(seq, m.b.retryDeadLocked) {
			return 0, nil
		}
		return 1, nil
	}
	return m.b.takeDeadLetters(function, m.b.retryDeadLocked), nil
}

func (m localMode) purgeDead(_ context.Context, seq uint64, function string) (int, error) {
	b := m.b
	if seq != 0 {
		if !b.withDeadLetter(seq, b.purgeDeadLocked) {
			return 0, nil
		}
		return 1, nil
	}
	if function != "" {
		return b.takeDeadLetters(function, b.purgeDeadLocked), nil
	}
	b.mu.Lock()
	names := make([]string, 0, len(b.life.deadLists))
	for name := range b.life.deadLists {
		names = append(names, name)
	}
	b.mu.Unlock()
	n := 0
	for _, name := range names {
		n += b.takeDeadLetters(name, b.purgeDeadLocked)
	}
	return n, nil
}
