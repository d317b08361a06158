package broker

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"time"
)

// This file keeps batches: durable groups of background jobs with
// callbacks (docs/batches.md). A batch costs a constant amount of memory:
// its counters, its callbacks and at most maxBatchFailures handles of
// failed jobs; its jobs point to it (jobExtra.batch), it keeps no list of
// them.
//
// # Exactly once
//
// A batch is stored as one metadata entry ("batch/<id>") holding its
// counters and which callbacks were submitted. Every change marks the
// batch dirty; the committer writes the batches that are dirty when it
// takes a round, in that same round, and such a round goes to the store
// as one atomic write (store.Writer): the end of a job (its delete, or its
// save as a dead letter or retained result), the batch's counters that
// count it, and the callback job its completion submitted reach the disk
// together or not at all. A callback job is not runnable until that write
// is done (jobHeld): it never runs before the record that it was
// submitted, and a crash before the write leaves the last job of the
// batch stored, to run again and complete the batch again.
//
// What the counters cannot know after a crash is a job that was counted
// in total but whose first write had not happened (nobody was told it was
// accepted): at replay a batch's total is recounted as its finished jobs
// plus its jobs found in the store.

// Callback is a job a batch submits when it completes.
type Callback struct {
	Function string `json:"function"`
	// Payload is the caller's data, carried in the callback job's payload
	// (see CallbackPayload).
	Payload []byte `json:"payload,omitempty"`
}

// BatchParams describes a new batch.
type BatchParams struct {
	// OnSuccess, when its Function is set, is submitted once when every
	// job of the batch completed successfully.
	OnSuccess Callback
	// OnComplete, when its Function is set, is submitted once when every
	// job of the batch has finished, whatever the outcome.
	OnComplete Callback
}

// BatchStatus describes a batch.
type BatchStatus struct {
	ID uint64
	// Closed: no more jobs are expected (jobs of the batch still running
	// may add more). Complete: closed and every job finished.
	Closed, Complete bool
	// Total counts the jobs added; Pending those waiting to run (queued,
	// scheduled or waiting for a retry), Running those held by a worker;
	// Succeeded, Failed and Dead those finished: completed, ended without
	// success (cancelled, dropped), or kept as dead letters.
	Total, Pending, Running, Succeeded, Failed, Dead uint64
	OnSuccess, OnComplete                            Callback
	// SuccessFired and CompleteFired report that the callback job was
	// submitted.
	SuccessFired, CompleteFired bool
	// Failures holds the handles of the first failed or dead jobs (at
	// most maxBatchFailures).
	Failures  []string
	Created   time.Time
	Completed time.Time
}

// What became of a batch's callback, as every view names it
// (BatchStatus.SuccessState, CompleteState).
const (
	// CallbackFired: the callback job was submitted.
	CallbackFired = "fired"
	// CallbackWaiting: it will be once the batch's jobs have ended (for
	// on_success, ended well; a dead letter retried may still succeed).
	CallbackWaiting = "waiting"
	// CallbackSkipped: an on_success that never will be, as a job of the
	// batch ended without success and not as a dead letter (cancelled,
	// dropped).
	CallbackSkipped = "skipped"
)

// SuccessState says what became of OnSuccess (CallbackFired, ...).
func (s BatchStatus) SuccessState() string {
	switch {
	case s.SuccessFired:
		return CallbackFired
	case s.Failed > 0:
		return CallbackSkipped
	}
	return CallbackWaiting
}

// CompleteState says what became of OnComplete (CallbackFired or
// CallbackWaiting).
func (s BatchStatus) CompleteState() string {
	if s.CompleteFired {
		return CallbackFired
	}
	return CallbackWaiting
}

// CallbackPayload is the JSON payload of a callback job.
type CallbackPayload struct {
	Batch string `json:"batch"`
	// Callback is "on_success" or "on_complete".
	Callback  string `json:"callback"`
	Total     uint64 `json:"total"`
	Succeeded uint64 `json:"succeeded"`
	Failed    uint64 `json:"failed"`
	Dead      uint64 `json:"dead"`
	// Failures are the handles of the first failed or dead jobs;
	// FailuresTruncated is set when there were more.
	Failures          []string `json:"failures"`
	FailuresTruncated bool     `json:"failures_truncated,omitempty"`
	// Payload is the callback's data as the batch's creator gave it.
	Payload string `json:"payload,omitempty"`
}

// maxBatchFailures bounds the handles of failed jobs a batch keeps.
const maxBatchFailures = 100

const metaBatch = "batch"

// Which callbacks were submitted (storedBatch.Fired).
const (
	firedSuccess uint8 = 1 << iota
	firedComplete
)

// batch is a batch's state. Guarded by Broker.mu.
type batch struct {
	id uint64
	storedBatch
	// running counts the jobs of the batch held by a worker (not stored:
	// a running job is stored as queued).
	running uint64
	// dirty: changed since the committer last took it (in
	// Broker.dirtyBatches).
	dirty bool
	// live counts, during replay, the stored jobs of the batch that have
	// not finished.
	live uint64
	// forgotten: its retention ended (ExpireBatches); its entry is deleted
	// from the store.
	forgotten bool
	// held: its retention ended while a callback was refused; it is out
	// of batchState.done, so that expiry passes do not walk it again,
	// until the callback is submitted (fireCallbackLocked) or a restart.
	held bool
	// shared: only the id of a batch kept by the shared store
	// (sharedMode), which counts its jobs; nothing else is used.
	shared bool
}

// storedBatch is what the store keeps of a batch, as JSON.
type storedBatch struct {
	OnSuccess  *Callback `json:"on_success,omitempty"`
	OnComplete *Callback `json:"on_complete,omitempty"`
	Closed     bool      `json:"closed,omitempty"`
	Total      uint64    `json:"total"`
	Succeeded  uint64    `json:"succeeded"`
	Failed     uint64    `json:"failed"`
	Dead       uint64    `json:"dead"`
	Fired      uint8     `json:"fired,omitempty"`
	Failures   []string  `json:"failures,omitempty"`
	// Truncated: more jobs failed than Failures holds.
	Truncated bool  `json:"truncated,omitempty"`
	Created   int64 `json:"created"`
	Completed int64 `json:"completed,omitempty"`
}

func (bt *batch) finished() uint64 { return bt.Succeeded + bt.Failed + bt.Dead }

// batchState is the broker's batches. Guarded by Broker.mu.
type batchState struct {
	byID map[uint64]*batch
	// incomplete counts the batches of byID that have not completed (open,
	// or closed with jobs to finish), for Config.MaxOpenBatches.
	incomplete int
	dirty      []*batch
	// done holds the completed batches in the order they completed, for
	// ExpireBatches, except those held (batch.held).
	done []*batch
}

// DefaultBatchRetention is how long a completed batch is kept when
// Config.BatchRetention is 0.
const DefaultBatchRetention = 24 * time.Hour

// expireBatchesMax bounds the batches one ExpireBatches forgets.
const expireBatchesMax = 1024

// ExpireBatches forgets the completed batches whose retention has ended
// (Config.BatchRetention) and whose callbacks were all submitted, at most
// expireBatchesMax of them, and returns how many: in this server's memory
// and store, or in shared mode in the shared store (whichever server
// completed them). The broker's history goroutine calls it every second.
func (b *Broker) ExpireBatches() int {
	ret := b.cfg.BatchRetention
	if ret == 0 {
		ret = DefaultBatchRetention
	}
	if ret < 0 {
		return 0
	}
	b.mu.Lock()
	now := b.nowNanos()
	b.mu.Unlock()
	return b.mode.expireBatches(now - int64(ret))
}

func (m localMode) expireBatches(completedBefore int64) int {
	b := m.b
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for n < expireBatchesMax && len(b.batches.done) > 0 {
		bt := b.batches.done[0]
		if bt.Completed > completedBefore {
			break
		}
		b.batches.done[0] = nil
		b.batches.done = b.batches.done[1:]
		if bt.callbacksDue() {
			// Its callback was refused: it stays, held out of the
			// list, until the callback is submitted (at the latest by
			// the replay after a restart).
			bt.held = true
			continue
		}
		delete(b.batches.byID, bt.id)
		b.liveBytes -= bt.callbackBytes()
		bt.forgotten = true
		b.batchChangedLocked(bt)
		n++
	}
	return n
}

// unholdBatchLocked puts a held batch whose callbacks were all submitted
// back in the list of completed batches, in its place, for the next pass.
func (b *Broker) unholdBatchLocked(bt *batch) {
	if !bt.held || bt.callbacksDue() {
		return
	}
	bt.held = false
	i, _ := slices.BinarySearchFunc(b.batches.done, bt.Completed, func(x *batch, c int64) int { return cmp.Compare(x.Completed, c) })
	b.batches.done = slices.Insert(b.batches.done, i, bt)
}

// callbacksDue reports whether a callback of the completed batch is still
// to be submitted.
func (bt *batch) callbacksDue() bool {
	return (bt.OnSuccess != nil && bt.Fired&firedSuccess == 0 && bt.Failed == 0 && bt.Dead == 0) ||
		(bt.OnComplete != nil && bt.Fired&firedComplete == 0)
}

// CreateBatch creates an open batch and returns its id once it is stored.
func (b *Broker) CreateBatch(ctx context.Context, p BatchParams) (uint64, error) {
	for _, cb := range []Callback{p.OnSuccess, p.OnComplete} {
		if len(cb.Payload) > MaxCallbackPayload {
			return 0, fmt.Errorf("%w: %d bytes for %s, at most %d", ErrCallbackTooLarge, len(cb.Payload), cb.Function,
				MaxCallbackPayload)
		}
	}
	return b.mode.createBatch(ctx, p)
}

// MaxCallbackPayload is the most bytes of a batch callback's payload. A
// batch keeps its callbacks until it is forgotten, and stores them anew
// with every change of its counts, outside Config.MaxQueuedBytes.
const MaxCallbackPayload = 64 << 10

// CloseBatch closes a batch: once every job of it has finished, it
// completes and submits its callbacks; an empty batch completes at once.
// Closing a closed batch changes nothing. It returns once the change is
// stored, or ErrBatchNotFound.
func (b *Broker) CloseBatch(ctx context.Context, id uint64) error {
	return b.mode.closeBatch(ctx, id)
}

// Batch returns the status of batch id, or ErrBatchNotFound.
func (b *Broker) Batch(ctx context.Context, id uint64) (BatchStatus, error) {
	return b.mode.batch(ctx, id)
}

// Batches returns the status of every batch the broker keeps, the newest
// first, at most limit of them (≤ 0: all).
func (b *Broker) Batches(ctx context.Context, limit int) ([]BatchStatus, error) {
	return b.mode.batches(ctx, limit)
}

func (m localMode) createBatch(ctx context.Context, p BatchParams) (uint64, error) {
	b := m.b
	b.mu.Lock()
	if b.stopped {
		b.mu.Unlock()
		return 0, ErrStopped
	}
	if limit := b.cfg.MaxOpenBatches; limit > 0 && b.batches.incomplete >= limit {
		b.mu.Unlock()
		return 0, fmt.Errorf("%w: %d batches have not completed, the limit (--max-open-batches); close them", ErrTooManyBatches, limit)
	}
	bt := &batch{}
	if p.OnSuccess.Function != "" {
		bt.OnSuccess = &Callback{Function: p.OnSuccess.Function, Payload: slices.Clone(p.OnSuccess.Payload)}
	}
	if p.OnComplete.Function != "" {
		bt.OnComplete = &Callback{Function: p.OnComplete.Function, Payload: slices.Clone(p.OnComplete.Payload)}
	}
	// The callbacks' payloads are kept in memory until the batch is
	// forgotten: they count against the budget of live jobs.
	if budget := b.cfg.MaxQueuedBytes; budget > 0 && b.liveBytes+bt.callbackBytes() > budget {
		b.mu.Unlock()
		return 0, fmt.Errorf("%w: no room for the callbacks' payloads (--max-queued-bytes)", ErrQueueFull)
	}
	b.liveBytes += bt.callbackBytes()
	b.batches.incomplete++
	bt.id = b.nextSeq
	b.nextSeq++
	bt.Created = b.nowNanos()
	if b.batches.byID == nil {
		b.batches.byID = make(map[uint64]*batch)
	}
	b.batches.byID[bt.id] = bt
	b.batchChangedLocked(bt)
	b.mu.Unlock()
	if err := b.Durable(ctx); err != nil {
		return 0, err
	}
	return bt.id, nil
}

func (m localMode) closeBatch(ctx context.Context, id uint64) error {
	b := m.b
	b.mu.Lock()
	bt := b.batches.byID[id]
	if bt == nil {
		b.mu.Unlock()
		return ErrBatchNotFound
	}
	if !bt.Closed {
		bt.Closed = true
		b.batchChangedLocked(bt)
		b.checkBatchLocked(bt)
	}
	b.mu.Unlock()
	return b.Durable(ctx)
}

// batch and batches answer what they read once it is on disk
// (readDurable): a batch read complete, its callback submitted, stays so.
func (m localMode) batch(ctx context.Context, id uint64) (BatchStatus, error) {
	b := m.b
	b.mu.Lock()
	bt := b.batches.byID[id]
	if bt == nil {
		b.mu.Unlock()
		return BatchStatus{}, ErrBatchNotFound
	}
	s := bt.status()
	b.mu.Unlock()
	b.readDurable(ctx)
	return s, nil
}

func (m localMode) batches(ctx context.Context, limit int) ([]BatchStatus, error) {
	b := m.b
	b.mu.Lock()
	out := make([]BatchStatus, 0, len(b.batches.byID))
	for _, bt := range b.batches.byID {
		out = append(out, bt.status())
	}
	b.mu.Unlock()
	if len(out) > 0 {
		b.readDurable(ctx)
	}
	slices.SortFunc(out, func(a, c BatchStatus) int { return -cmpUint(a.ID, c.ID) })
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

func cmpUint(a, c uint64) int {
	switch {
	case a < c:
		return -1
	case a > c:
		return 1
	}
	return 0
}

func (bt *batch) status() BatchStatus {
	s := BatchStatus{ID: bt.id, Closed: bt.Closed, Complete: bt.Completed != 0, Total: bt.Total,
		Running: bt.running, Succeeded: bt.Succeeded, Failed: bt.Failed, Dead: bt.Dead,
		SuccessFired: bt.Fired&firedSuccess != 0, CompleteFired: bt.Fired&firedComplete != 0,
		Failures: slices.Clone(bt.Failures), Created: time.Unix(0, bt.Created)}
	if live := bt.Total - bt.finished(); live > bt.running {
		s.Pending = live - bt.running
	}
	if bt.OnSuccess != nil {
		s.OnSuccess = *bt.OnSuccess
	}
	if bt.OnComplete != nil {
		s.OnComplete = *bt.OnComplete
	}
	if bt.Completed != 0 {
		s.Completed = time.Unix(0, bt.Completed)
	}
	return s
}

// submitBatchLocked returns the batch a submit names, or why the job
// cannot join it.
func (b *Broker) submitBatchLocked(p *SubmitParams) (*batch, error) {
	if p.Batch == 0 {
		return nil, nil
	}
	if !p.Background {
		return nil, ErrBatchForeground
	}
	if p.batchErr != nil {
		return nil, p.batchErr
	}
	return b.mode.joinableBatchLocked(p.Batch)
}

// joinBatchLocked adds a new job to its batch.
func (b *Broker) joinBatchLocked(j *job, bt *batch) {
	j.extra().batch = bt
	if bt.shared {
		return // counted by the store as it inserts the job
	}
	bt.Total++
	b.batchChangedLocked(bt)
}

// batchStartedLocked counts a job of a batch that a worker took; in
// shared mode the store counts it, as the job's progress says
// (sharedMode.progressLocked; batchStoppedLocked's job has its progress
// reset).
func (b *Broker) batchStartedLocked(j *job) {
	if bt := j.x.batch; bt != nil {
		bt.running++
		b.mode.progressLocked(j)
	}
}

// batchStoppedLocked counts a job of a batch that left its worker.
func batchStoppedLocked(x *jobExtra) {
	if x.batch != nil && x.batch.running > 0 {
		x.batch.running--
	}
}

// batchEndLocked counts the end of a job of a batch (its final record's
// state) and completes the batch when it was the last.
func (b *Broker) batchEndLocked(j *job, state string) {
	bt := j.x.batch
	switch state {
	case FinalComplete:
		bt.Succeeded++
	case FinalDead:
		bt.Dead++
	default:
		bt.Failed++
	}
	if state != FinalComplete {
		if len(bt.Failures) < maxBatchFailures {
			bt.Failures = append(bt.Failures, b.Handle(j.seq))
		} else {
			bt.Truncated = true
		}
	}
	b.batchChangedLocked(bt)
	b.checkBatchLocked(bt)
}

// batchReviveLocked un-counts a dead letter of a batch that is queued
// again. A batch that completed stays complete: its callbacks were
// submitted.
func (b *Broker) batchReviveLocked(j *job) {
	bt := j.x.batch
	if bt.Dead > 0 {
		bt.Dead--
		b.batchChangedLocked(bt)
	}
}

// batchChangedLocked queues a batch's new state for the committer.
func (b *Broker) batchChangedLocked(bt *batch) {
	if b.store == nil || bt.dirty {
		return
	}
	bt.dirty = true
	b.batches.dirty = append(b.batches.dirty, bt)
	b.kickCommitter()
}

// checkBatchLocked completes a closed batch whose jobs have all finished:
// it submits the callbacks that are due and not yet submitted.
func (b *Broker) checkBatchLocked(bt *batch) {
	if !bt.Closed || bt.finished() < bt.Total {
		return
	}
	if bt.Completed == 0 {
		bt.Completed = b.nowNanos()
		b.batches.incomplete--
		b.batches.done = append(b.batches.done, bt)
		b.batchChangedLocked(bt)
		b.log.Info("broker: batch complete", slog.Uint64("batch", bt.id), slog.Uint64("total", bt.Total),
			slog.Uint64("succeeded", bt.Succeeded), slog.Uint64("failed", bt.Failed), slog.Uint64("dead", bt.Dead))
	}
	if bt.OnSuccess != nil && bt.Fired&firedSuccess == 0 && bt.Failed == 0 && bt.Dead == 0 {
		b.fireCallbackLocked(bt, bt.OnSuccess, "on_success", firedSuccess)
	}
	if bt.OnComplete != nil && bt.Fired&firedComplete == 0 {
		b.fireCallbackLocked(bt, bt.OnComplete, "on_complete", firedComplete)
	}
}

// fireCallbackLocked submits one callback of a batch and marks it submitted, in
// the same committer round (see the file comment).
func (b *Broker) fireCallbackLocked(bt *batch, cb *Callback, kind string, bit uint8) {
	payload, err := json.Marshal(CallbackPayload{Batch: strconv.FormatUint(bt.id, 10), Callback: kind,
		Total: bt.Total, Succeeded: bt.Succeeded, Failed: bt.Failed, Dead: bt.Dead,
		Failures: nonNilStrings(bt.Failures), FailuresTruncated: bt.Truncated, Payload: string(cb.Payload)})
	if err != nil {
		panic(err) // plain data always marshals
	}
	var refused error
	// The budget of live jobs counts the callback's payload with its batch
	// (callbackBytes): the callback's job may have that room, so that a
	// batch never keeps its own callback from being submitted.
	b.liveBytes -= int64(len(cb.Payload))
	b.submitLocked(nil, SubmitParams{Function: []byte(cb.Function), Payload: payload, Priority: Normal,
		Background: true, hold: true, own: true}, func(_ uint64, _ bool, err error) {
		if err != nil {
			refused = err
		}
	})
	b.liveBytes += int64(len(cb.Payload))
	if refused != nil {
		// Not marked: the next completion check (at the latest the
		// replay after a restart) tries again.
		b.log.Error("broker: batch callback refused", slog.Uint64("batch", bt.id),
			slog.String("callback", kind), slog.String("function", cb.Function),
			slog.String("error", refused.Error()))
		return
	}
	bt.Fired |= bit
	b.batchChangedLocked(bt)
	b.unholdBatchLocked(bt)
}

// callbackBytes returns the payload bytes of bt's callbacks, which count
// in Broker.liveBytes while bt is in memory.
func (bt *batch) callbackBytes() int64 {
	var n int
	if cb := bt.OnSuccess; cb != nil {
		n += len(cb.Payload)
	}
	if cb := bt.OnComplete; cb != nil {
		n += len(cb.Payload)
	}
	return int64(n)
}

func nonNilStrings(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// holdLocked keeps a new callback job j, whose first write was just
// queued, out of the queues until that write is done, and moves the write
// to the front of the committer's queue, so that it is taken in the same
// round as the batch state that records it as submitted.
func (b *Broker) holdLocked(j *job) {
	j.flags |= jobHeld
	if n := len(b.pendingSaves); n > 1 && b.pendingSaves[n-1] == j {
		copy(b.pendingSaves[1:], b.pendingSaves[:n-1])
		b.pendingSaves[0] = j
	}
}

// releaseHeldLocked makes a held callback job runnable once its first
// write is done.
func (b *Broker) releaseHeldLocked(j *job) {
	if j.has(jobHeld) {
		j.flags &^= jobHeld
		b.makeRunnableLocked(j, true)
	}
}
