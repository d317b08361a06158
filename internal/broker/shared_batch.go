package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/gearwork/gearwork/internal/store"
)

// In shared mode a batch is a row of the shared store (store.BatchStore)
// that every server updates: the store counts a new job of the batch as
// it inserts it, and each end of a job in the committer round that writes
// that end (CommitParams.BatchEnds, beside the job's delete or its save as
// a dead letter or retained result). The round that completes a batch
// inserts its callbacks in the same transaction, under the batch's row
// lock, so that each callback is submitted exactly once, also when two
// servers end the last jobs of a batch at the same moment. A job of a
// batch points to a batch value that holds only the id (batch.shared).

// batchStore returns the shared store's batches, or ErrBatchUnsupported.
func (c *sharedMode) batchStore() (store.BatchStore, error) {
	bs, ok := c.store.(store.BatchStore)
	if !ok {
		return nil, ErrBatchUnsupported
	}
	return bs, nil
}

// storedCallback is a batch's callback as the shared store keeps it: the
// payload as the JSON string the callback job carries.
func storedCallback(cb Callback) store.BatchCallback {
	out := store.BatchCallback{Function: cb.Function}
	if cb.Function != "" && len(cb.Payload) > 0 {
		v, err := json.Marshal(string(cb.Payload))
		if err != nil {
			panic(err) // a string always marshals
		}
		out.PayloadJSON = v
	}
	return out
}

func callbackOfStored(cb store.BatchCallback) Callback {
	out := Callback{Function: cb.Function}
	if len(cb.PayloadJSON) > 0 {
		var s string
		if json.Unmarshal(cb.PayloadJSON, &s) == nil {
			out.Payload = []byte(s)
		}
	}
	return out
}

// batchErr turns a store error into the broker's.
func batchErr(id uint64, err error) error {
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("%w: %d", ErrBatchNotFound, id)
	}
	return &StoreError{err}
}

func (c *sharedMode) createBatch(ctx context.Context, p BatchParams) (uint64, error) {
	bs, err := c.batchStore()
	if err != nil {
		return 0, err
	}
	c.b.mu.Lock()
	stopped, now := c.b.stopped, c.b.nowNanos()
	c.b.mu.Unlock()
	if stopped {
		return 0, ErrStopped
	}
	id, err := bs.CreateBatch(ctx, store.NewBatch{OnSuccess: storedCallback(p.OnSuccess),
		OnComplete: storedCallback(p.OnComplete), Created: now})
	if err != nil {
		return 0, &StoreError{err}
	}
	return id, nil
}

func (c *sharedMode) closeBatch(ctx context.Context, id uint64) error {
	bs, err := c.batchStore()
	if err != nil {
		return err
	}
	if err := bs.CloseBatch(ctx, id, c.b.prefix); err != nil {
		return batchErr(id, err)
	}
	return nil
}

func (c *sharedMode) batch(ctx context.Context, id uint64) (BatchStatus, error) {
	bs, err := c.batchStore()
	if err != nil {
		return BatchStatus{}, err
	}
	bt, err := bs.Batch(ctx, id)
	if err != nil {
		return BatchStatus{}, batchErr(id, err)
	}
	return statusOfStored(bt), nil
}

func (c *sharedMode) batches(ctx context.Context, limit int) ([]BatchStatus, error) {
	bs, err := c.batchStore()
	if err != nil {
		return nil, err
	}
	list, err := bs.Batches(ctx, limit)
	if err != nil {
		return nil, &StoreError{err}
	}
	out := make([]BatchStatus, len(list))
	for i, bt := range list {
		out[i] = statusOfStored(bt)
	}
	return out, nil
}

// statusOfStored describes a stored batch. Its running jobs are those
// the servers holding them wrote as taken by a worker, in the commit
// round after the worker took them (progressLocked).
func statusOfStored(bt store.Batch) BatchStatus {
	s := BatchStatus{ID: bt.ID, Closed: bt.Closed, Complete: bt.Completed != 0, Total: bt.Total,
		Succeeded: bt.Succeeded, Failed: bt.Failed, Dead: bt.Dead,
		OnSuccess: callbackOfStored(bt.OnSuccess), OnComplete: callbackOfStored(bt.OnComplete),
		SuccessFired: bt.SuccessFired, CompleteFired: bt.CompleteFired,
		Failures: bt.Failures, Created: time.Unix(0, bt.Created)}
	if fin := bt.Succeeded + bt.Failed + bt.Dead; bt.Total > fin {
		s.Running = min(bt.Running, bt.Total-fin)
		s.Pending = bt.Total - fin - s.Running
	}
	if bt.Completed != 0 {
		s.Completed = time.Unix(0, bt.Completed)
	}
	return s
}

// joinableBatchLocked: the store decides whether the job joins its
// batch, under the batch's row lock in the round that inserts it, and
// counts it there.
func (c *sharedMode) joinableBatchLocked(id uint64) (*batch, error) {
	if _, err := c.batchStore(); err != nil {
		return nil, err
	}
	return &batch{id: id, shared: true}, nil
}

// prepareBatchTimeout bounds prepareBatch's read.
const prepareBatchTimeout = 10 * time.Second

// prepareBatch: the store checks the batch of a new job as it inserts it,
// but a submit with a unique may instead attach to the job of its unique
// held here, or to a retained result, without an insert. Its batch is
// read first, so that such a submit is refused as on a server alone. A
// batch that completes after the read may take it still: a submit that
// coalesces is not counted in its batch.
func (c *sharedMode) prepareBatch(id uint64) error {
	bs, err := c.batchStore()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), prepareBatchTimeout)
	defer cancel()
	bt, err := bs.Batch(ctx, id)
	switch {
	case err != nil:
		return batchErr(id, err)
	case bt.Completed != 0:
		return fmt.Errorf("%w: %d", ErrBatchComplete, id)
	}
	return nil
}

// ownBatchDone returns the DoneFunc of submit p, which attaches to job j
// of its function and unique. When j waits for its insert and names
// another batch than p (or p none), the store may refuse j for its batch:
// then j never was, and p is submitted again rather than refused for a
// batch it did not name, as on a server alone, which refuses j's submit
// before p comes.
func (b *Broker) ownBatchDone(s *Session, j *job, p SubmitParams, done DoneFunc) DoneFunc {
	if j.state != statePending || j.x == nil || j.x.batch == nil || !j.x.batch.shared || j.x.batch.id == p.Batch {
		return done
	}
	return func(seq uint64, created bool, err error) {
		if (errors.Is(err, ErrBatchNotFound) || errors.Is(err, ErrBatchComplete)) && (p.Background || !s.closed) {
			b.submitLocked(s, p, done)
			return
		}
		done(seq, created, err)
	}
}

// batchRefusedErr is the error of a submit whose job the store refused to
// add to its batch.
func batchRefusedErr(r *store.BatchRefused) error {
	if r.Unknown {
		return fmt.Errorf("%w: %d", ErrBatchNotFound, r.Batch)
	}
	return fmt.Errorf("%w: %d", ErrBatchComplete, r.Batch)
}

func (c *sharedMode) batchEndedLocked(j *job, state string) {
	o := store.BatchFailed
	switch state {
	case FinalComplete:
		o = store.BatchSucceeded
	case FinalDead:
		o = store.BatchDead
	}
	c.batchEnds = append(c.batchEnds, store.BatchEnd{Seq: j.seq, Batch: j.x.batch.id, Outcome: o})
	c.b.kickCommitter()
}

// expireBatchesTimeout bounds one expiry of batches in the shared store.
const expireBatchesTimeout = 10 * time.Second

func (c *sharedMode) expireBatches(completedBefore int64) int {
	bs, err := c.batchStore()
	if err != nil {
		return 0
	}
	ctx, cancel := context.WithTimeout(context.Background(), expireBatchesTimeout)
	defer cancel()
	n, err := bs.ExpireBatches(ctx, completedBefore, expireBatchesMax)
	if err != nil {
		c.b.log.Warn("broker: expiring batches failed", slog.String("error", err.Error()))
	}
	return n
}
