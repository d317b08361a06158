package broker

import (
	"context"
	"encoding/json"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/internal/store"
	"github.com/gearwork/gearwork/internal/store/memory"
	"github.com/gearwork/gearwork/internal/testwait"
)

// batchOpts is a broker on a memory store whose worker runs "fn" and the
// two callback functions.
func batchOpts(cfg Config) lcOpts {
	return lcOpts{cfg: cfg, store: memory.New(), can: []string{"fn", "ok", "done"}}
}

func createBatch(t *testing.T, b *Broker) uint64 {
	t.Helper()
	id, err := b.CreateBatch(context.Background(), BatchParams{
		OnSuccess:  Callback{Function: "ok", Payload: []byte("report")},
		OnComplete: Callback{Function: "done"},
	})
	require.NoError(t, err)
	return id
}

func inBatch(id uint64, payload string) SubmitParams {
	p := lcBG("fn", "", payload)
	p.Batch = id
	return p
}

// grabCallback waits for the next job (a callback is runnable only once
// its write is done) and decodes its payload.
func (tb *lcBundle) grabCallback(t *testing.T) (Assignment, CallbackPayload) {
	t.Helper()
	var a Assignment
	testwait.Until(t, "a callback job", func() bool {
		var ok bool
		a, ok = tb.b.Grab(tb.worker)
		return ok
	})
	var p CallbackPayload
	require.NoError(t, json.Unmarshal(a.Payload, &p), "callback payload %q", a.Payload)
	return a, p
}

// noCallback checks that nothing is runnable once every pending write is
// done.
func (tb *lcBundle) noCallback(t *testing.T) {
	t.Helper()
	require.NoError(t, tb.b.Durable(context.Background()))
	tb.noJob(t)
}

func mustBatch(t *testing.T, b *Broker, id uint64) BatchStatus {
	t.Helper()
	s, err := b.Batch(context.Background(), id)
	require.NoError(t, err)
	return s
}

func TestBatchCallbacksFireOnceAfterTheLastJob(t *testing.T) {
	t.Parallel()
	tb := setupLC(t, batchOpts(Config{}))
	id := createBatch(t, tb.b)
	for _, p := range []string{"a", "b", "c"} {
		tb.submit(t, inBatch(id, p))
	}
	require.NoError(t, tb.b.CloseBatch(context.Background(), id))

	a := tb.grab(t)
	s := mustBatch(t, tb.b, id)
	require.Equal(t, BatchStatus{ID: id, Closed: true, Total: 3, Pending: 2, Running: 1},
		BatchStatus{ID: s.ID, Closed: s.Closed, Total: s.Total, Pending: s.Pending, Running: s.Running})
	require.NoError(t, tb.b.Finish(tb.worker, a.Seq, Complete, nil))
	for range 2 {
		require.NoError(t, tb.b.Finish(tb.worker, tb.grab(t).Seq, Complete, nil))
	}

	got := map[string]CallbackPayload{}
	for range 2 {
		a, p := tb.grabCallback(t)
		got[a.Function] = p
		require.NoError(t, tb.b.Finish(tb.worker, a.Seq, Complete, nil))
	}
	want := CallbackPayload{Batch: formatID(id), Total: 3, Succeeded: 3, Failures: []string{}}
	wantOK := want
	wantOK.Callback, wantOK.Payload = "on_success", "report"
	wantDone := want
	wantDone.Callback = "on_complete"
	require.Equal(t, map[string]CallbackPayload{"ok": wantOK, "done": wantDone}, got)
	tb.noCallback(t)

	s = mustBatch(t, tb.b, id)
	require.True(t, s.Complete)
	require.True(t, s.SuccessFired)
	require.True(t, s.CompleteFired)
	require.Equal(t, [6]uint64{3, 0, 0, 3, 0, 0}, [6]uint64{s.Total, s.Pending, s.Running, s.Succeeded, s.Failed, s.Dead})
}

func formatID(id uint64) string {
	b, _ := json.Marshal(id)
	return string(b)
}

func TestBatchEmptyClosedCompletesAtOnce(t *testing.T) {
	t.Parallel()
	tb := setupLC(t, batchOpts(Config{}))
	id := createBatch(t, tb.b)
	require.NoError(t, tb.b.CloseBatch(context.Background(), id))
	require.NoError(t, tb.b.CloseBatch(context.Background(), id), "closing twice is no error")
	fns := map[string]bool{}
	for range 2 {
		a, p := tb.grabCallback(t)
		fns[a.Function] = true
		require.Zero(t, p.Total)
	}
	require.Equal(t, map[string]bool{"ok": true, "done": true}, fns)
	tb.noCallback(t)

	_, err := tb.trySubmit(t, inBatch(id, "late"))
	require.ErrorIs(t, err, ErrBatchComplete)
	_, err = tb.trySubmit(t, inBatch(id+1000, "x"))
	require.ErrorIs(t, err, ErrBatchNotFound)
	p := inBatch(id, "fg")
	p.Background = false
	_, err = tb.trySubmit(t, p)
	require.ErrorIs(t, err, ErrBatchForeground)
}

// A job of the batch that fails is retried in its batch; one that dies
// counts as dead, on_success never fires, and on_complete names it.
func TestBatchRetryKeepsJobAndDeadCountsAsFinished(t *testing.T) {
	t.Parallel()
	pol := Policy{MaxAttempts: 2, Backoff: noJitter(time.Second)}
	tb := setupLC(t, batchOpts(Config{Policies: policies("fn", pol)}))
	id := createBatch(t, tb.b)
	good := tb.submit(t, inBatch(id, "good"))
	bad := tb.submit(t, inBatch(id, "bad"))
	require.NoError(t, tb.b.CloseBatch(context.Background(), id))

	for range 2 {
		a := tb.grab(t)
		o := Complete
		if a.Seq == bad {
			o = Exception
		}
		require.NoError(t, tb.b.Finish(tb.worker, a.Seq, o, []byte("boom")))
	}
	s := mustBatch(t, tb.b, id)
	require.Equal(t, [4]uint64{1, 0, 1, 0}, [4]uint64{s.Pending, s.Running, s.Succeeded, s.Dead},
		"the failed job waits for its retry, still in the batch")
	tb.advance(time.Second)
	a := tb.grab(t)
	require.Equal(t, bad, a.Seq)
	require.NoError(t, tb.b.Finish(tb.worker, a.Seq, Exception, []byte("boom")))

	cb, p := tb.grabCallback(t)
	require.Equal(t, "done", cb.Function)
	require.Equal(t, CallbackPayload{Batch: formatID(id), Callback: "on_complete", Total: 2, Succeeded: 1, Dead: 1,
		Failures: []string{tb.b.Handle(bad)}}, p)
	require.NoError(t, tb.b.Finish(tb.worker, cb.Seq, Complete, nil))
	tb.noCallback(t)
	s = mustBatch(t, tb.b, id)
	require.False(t, s.SuccessFired)
	require.True(t, s.CompleteFired)
	require.NotZero(t, good)
}

// A running job of a closed batch may add jobs to it (fan-out): the batch
// completes only after them.
func TestBatchFanOutFromARunningJob(t *testing.T) {
	t.Parallel()
	tb := setupLC(t, batchOpts(Config{}))
	id := createBatch(t, tb.b)
	root := tb.submit(t, inBatch(id, "root"))
	require.NoError(t, tb.b.CloseBatch(context.Background(), id))
	require.Equal(t, root, tb.grab(t).Seq)
	child := tb.submit(t, inBatch(id, "child"))
	require.NoError(t, tb.b.Finish(tb.worker, root, Complete, nil))
	require.NoError(t, tb.b.Durable(context.Background()))
	require.Equal(t, uint64(1), mustBatch(t, tb.b, id).Pending)
	require.Equal(t, child, tb.grab(t).Seq, "the child, not a callback")
	tb.noJob(t)
	require.NoError(t, tb.b.Finish(tb.worker, child, Complete, nil))
	_, p := tb.grabCallback(t)
	require.Equal(t, uint64(2), p.Succeeded)
}

// The batch and its jobs survive a restart; callbacks fire once, after
// it, and not again after a second one.
func TestBatchSurvivesRestart(t *testing.T) {
	t.Parallel()
	opts := batchOpts(Config{})
	tb := setupLC(t, opts)
	id := createBatch(t, tb.b)
	tb.submit(t, inBatch(id, "a"))
	b := tb.submit(t, inBatch(id, "b"))
	require.NoError(t, tb.b.Finish(tb.worker, tb.grab(t).Seq, Complete, nil))
	require.NoError(t, tb.b.Durable(context.Background()))

	tb = tb.restart(t, opts)
	s := mustBatch(t, tb.b, id)
	require.Equal(t, [4]uint64{2, 1, 1, 0}, [4]uint64{s.Total, s.Pending, s.Succeeded, s.Running})
	require.False(t, s.Closed)
	require.NoError(t, tb.b.CloseBatch(context.Background(), id))
	require.Equal(t, b, tb.grab(t).Seq)
	require.NoError(t, tb.b.Finish(tb.worker, b, Complete, nil))
	for range 2 {
		a, _ := tb.grabCallback(t)
		require.NoError(t, tb.b.Finish(tb.worker, a.Seq, Complete, nil))
	}
	require.NoError(t, tb.b.Durable(context.Background()))

	tb = tb.restart(t, opts)
	tb.noCallback(t)
	s = mustBatch(t, tb.b, id)
	require.True(t, s.Complete)
	require.Equal(t, uint64(2), s.Succeeded)
}

// snapStore is a memory store that keeps a copy of its contents after
// every write: each copy is what a crash right after that write leaves.
type snapStore struct {
	*memory.Store
	mu    sync.Mutex
	snaps []*memory.Store
}

func (s *snapStore) snap(err error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.snaps = append(s.snaps, s.Snapshot())
	return err
}

func (s *snapStore) Save(ctx context.Context, jobs []store.Job) error {
	return s.snap(s.Store.Save(ctx, jobs))
}

func (s *snapStore) Delete(ctx context.Context, seqs []uint64) error {
	return s.snap(s.Store.Delete(ctx, seqs))
}

func (s *snapStore) PutMeta(ctx context.Context, m []store.Meta) error {
	return s.snap(s.Store.PutMeta(ctx, m))
}

func (s *snapStore) Write(ctx context.Context, w store.Write) error {
	return s.snap(s.Store.Write(ctx, w))
}

func (s *snapStore) taken() []*memory.Store {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.snaps)
}

// A crash after any store write of a batch's life leaves a store on which
// a restarted server submits each callback exactly once: the end of the
// last job, the batch's counters and the callback job are written
// together.
func TestBatchCallbacksOnceAfterACrashAtAnyWrite(t *testing.T) {
	t.Parallel()
	ss := &snapStore{Store: memory.New()}
	tb := setupLC(t, lcOpts{cfg: Config{Store: ss, Logger: nil}, can: []string{"fn"}})
	id := createBatch(t, tb.b)
	for _, p := range []string{"a", "b", "c"} {
		tb.submit(t, inBatch(id, p))
	}
	require.NoError(t, tb.b.CloseBatch(context.Background(), id))
	for range 3 {
		require.NoError(t, tb.b.Finish(tb.worker, tb.grab(t).Seq, Complete, nil))
	}
	require.NoError(t, tb.b.Durable(context.Background()))
	tb.b.Stop()

	snaps := ss.taken()
	require.GreaterOrEqual(t, len(snaps), 4)
	for i, st := range snaps {
		r := setupLC(t, lcOpts{store: st, can: []string{"fn", "ok", "done"}})
		ran := map[string]int{}
		for {
			require.NoError(t, r.b.Durable(context.Background()))
			a, ok := r.b.Grab(r.worker)
			if !ok {
				break
			}
			ran[a.Function]++
			require.NoError(t, r.b.Finish(r.worker, a.Seq, Complete, nil))
		}
		s := mustBatch(t, r.b, id)
		if !s.Closed {
			continue // crashed before the close: nobody was told it closed
		}
		require.Equal(t, 1, ran["ok"], "on_success after a crash at write %d (ran %v)", i, ran)
		require.Equal(t, 1, ran["done"], "on_complete after a crash at write %d (ran %v)", i, ran)
		require.True(t, s.Complete)
		require.Equal(t, uint64(3), s.Succeeded, "after a crash at write %d", i)
		r.b.Stop()
	}
}

// A callback job is handed to a worker only once the write that records
// it as submitted is done: a crash can never leave a callback that ran
// but is not recorded.
func TestBatchCallbackRunsOnlyOnceStored(t *testing.T) {
	t.Parallel()
	tb := setupLC(t, batchOpts(Config{}))
	id := createBatch(t, tb.b)
	tb.submit(t, inBatch(id, "only"))
	require.NoError(t, tb.b.CloseBatch(context.Background(), id))
	only := tb.grab(t)
	stored := func() bool {
		fired := false
		require.NoError(t, tb.store.LoadMeta(context.Background(), func(m store.Meta) error {
			if m.Key == metaKey(metaBatch, formatID(id)) {
				var sb storedBatch
				require.NoError(t, json.Unmarshal(m.Value, &sb))
				fired = sb.Fired == firedSuccess|firedComplete
			}
			return nil
		}))
		return fired
	}
	require.NoError(t, tb.b.Finish(tb.worker, only.Seq, Complete, nil))
	a, ok := tb.b.Grab(tb.worker)
	if !ok {
		a, _ = tb.grabCallback(t)
	}
	require.True(t, stored(), "callback %s handed out before it was stored", a.Function)
}

// A completed batch is forgotten, in memory and in the store, once its
// retention has passed; an open one is kept.
func TestBatchForgottenAfterItsRetention(t *testing.T) {
	t.Parallel()
	opts := batchOpts(Config{BatchRetention: time.Hour})
	tb := setupLC(t, opts)
	done := createBatch(t, tb.b)
	open := createBatch(t, tb.b)
	require.NoError(t, tb.b.CloseBatch(context.Background(), done))
	for range 2 {
		a, _ := tb.grabCallback(t)
		require.NoError(t, tb.b.Finish(tb.worker, a.Seq, Complete, nil))
	}
	tb.clock.Add(59 * time.Minute)
	require.Zero(t, tb.b.ExpireBatches())
	mustBatch(t, tb.b, done)
	tb.clock.Add(2 * time.Minute)
	require.Equal(t, 1, tb.b.ExpireBatches())
	_, err := tb.b.Batch(context.Background(), done)
	require.ErrorIs(t, err, ErrBatchNotFound)
	mustBatch(t, tb.b, open)
	require.NoError(t, tb.b.Durable(context.Background()))

	tb = tb.restart(t, opts)
	_, err = tb.b.Batch(context.Background(), done)
	require.ErrorIs(t, err, ErrBatchNotFound, "forgotten in the store too")
	mustBatch(t, tb.b, open)
	tb.noCallback(t)
}

// A completed batch whose callback was refused (its function's queue was
// full) stays past its retention, and ExpireBatches returns: it used to
// put such a batch back at the end of the list it was walking, holding the
// broker's lock, for ever.
func TestBatchWithARefusedCallbackOutlivesItsRetention(t *testing.T) {
	t.Parallel()
	tb := setupLC(t, batchOpts(Config{BatchRetention: time.Hour}))
	var limits [numPriorities]int
	for i := range limits {
		limits[i] = 1
	}
	tb.b.SetMaxQueue("done", limits)
	c := tb.b.NewSession("c", benchOutbox{})
	p := lcBG("done", "", "fills the queue")
	var created sync.WaitGroup
	created.Add(1)
	tb.b.Submit(c, p, func(_ uint64, _ bool, err error) {
		require.NoError(t, err)
		created.Done()
	})
	created.Wait()
	id, err := tb.b.CreateBatch(context.Background(), BatchParams{OnComplete: Callback{Function: "done"}})
	require.NoError(t, err)
	require.NoError(t, tb.b.CloseBatch(context.Background(), id))
	bt := mustBatch(t, tb.b, id)
	require.True(t, bt.Complete)

	tb.clock.Add(2 * time.Hour)
	expired := make(chan int, 1)
	go func() { expired <- tb.b.ExpireBatches() }()
	select {
	case n := <-expired:
		require.Zero(t, n)
	case <-time.After(time.Minute):
		t.Fatal("ExpireBatches did not return")
	}
	mustBatch(t, tb.b, id)
}

// The expiry pass walks a completed batch whose callback was refused once:
// it then leaves its list of completed batches (a pass used to put it back
// in front and walk it again every second). Should its callback be
// submitted later (a job of it queued again ends), it is back in the list
// and goes once its retention has passed.
func TestBatchExpiryLeavesARefusedCallbackBehind(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tb := setupLC(t, lcOpts{cfg: Config{BatchRetention: time.Hour, Policies: policies("fn", Policy{MaxAttempts: 1})},
		store: memory.New(), can: []string{"fn"}})
	var limits [numPriorities]int
	for i := range limits {
		limits[i] = 1
	}
	tb.b.SetMaxQueue("done", limits)
	filler := tb.submit(t, lcBG("done", "", "fills the queue"))
	id, err := tb.b.CreateBatch(ctx, BatchParams{OnComplete: Callback{Function: "done"}})
	require.NoError(t, err)
	bad := tb.submit(t, inBatch(id, "bad"))
	require.NoError(t, tb.b.CloseBatch(ctx, id))
	tb.finishNext(t, bad, Exception)
	require.True(t, mustBatch(t, tb.b, id).Complete)
	require.False(t, mustBatch(t, tb.b, id).CompleteFired, "on_complete was refused")
	inPass := func() bool {
		tb.b.mu.Lock()
		defer tb.b.mu.Unlock()
		return slices.Contains(tb.b.batches.done, tb.b.batches.byID[id])
	}
	require.True(t, inPass())

	tb.clock.Add(2 * time.Hour)
	require.Zero(t, tb.b.ExpireBatches())
	require.False(t, inPass(), "the next passes do not walk it again")
	require.Zero(t, tb.b.ExpireBatches())
	mustBatch(t, tb.b, id)

	w := tb.b.NewSession("w2", benchOutbox{})
	tb.b.CanDo(w, []byte("done"), 0)
	a, ok := tb.b.Grab(w)
	require.True(t, ok)
	require.Equal(t, filler, a.Seq)
	require.NoError(t, tb.b.Finish(w, a.Seq, Complete, nil))
	require.NoError(t, tb.b.RetryDeadLetter(ctx, []byte(tb.b.Handle(bad))))
	tb.finishNext(t, bad, Complete)
	require.True(t, mustBatch(t, tb.b, id).CompleteFired, "on_complete submitted now")
	require.True(t, inPass())
	require.Equal(t, 1, tb.b.ExpireBatches())
	_, err = tb.b.Batch(ctx, id)
	require.ErrorIs(t, err, ErrBatchNotFound)
}

// A dead letter of a batch queued again counts as pending again, and its
// new end is counted: in a batch not yet complete, the batch then
// completes as if the job had not died; in a completed batch, which stays
// complete, a callback not yet submitted whose condition now holds
// (on_success, once no job failed or died) is submitted then, and
// on_complete is not submitted again.
func TestBatchDeadLetterQueuedAgainCountsAgain(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tb := setupLC(t, batchOpts(Config{Policies: policies("fn", Policy{MaxAttempts: 1})}))
	counts := func(id uint64) [5]uint64 {
		s := mustBatch(t, tb.b, id)
		return [5]uint64{s.Total, s.Pending, s.Succeeded, s.Failed, s.Dead}
	}

	open := createBatch(t, tb.b)
	bad := tb.submit(t, inBatch(open, "bad"))
	tb.finishNext(t, bad, Exception)
	require.Equal(t, [5]uint64{1, 0, 0, 0, 1}, counts(open))
	require.NoError(t, tb.b.RetryDeadLetter(ctx, []byte(tb.b.Handle(bad))))
	require.Equal(t, [5]uint64{1, 1, 0, 0, 0}, counts(open), "pending again")
	require.NoError(t, tb.b.CloseBatch(ctx, open))
	require.False(t, mustBatch(t, tb.b, open).Complete, "it waits for its job queued again")
	tb.finishNext(t, bad, Complete)
	require.Equal(t, [5]uint64{1, 0, 1, 0, 0}, counts(open), "its new end counts")
	for _, fn := range []string{"ok", "done"} {
		cb, p := tb.grabCallback(t)
		require.Equal(t, fn, cb.Function)
		require.Equal(t, []uint64{1, 1, 0}, []uint64{p.Total, p.Succeeded, p.Dead})
		require.NoError(t, tb.b.Finish(tb.worker, cb.Seq, Complete, nil))
	}

	done := createBatch(t, tb.b)
	bad = tb.submit(t, inBatch(done, "bad"))
	require.NoError(t, tb.b.CloseBatch(ctx, done))
	tb.finishNext(t, bad, Exception)
	cb, p := tb.grabCallback(t)
	require.Equal(t, "done", cb.Function)
	require.Equal(t, uint64(1), p.Dead)
	require.NoError(t, tb.b.Finish(tb.worker, cb.Seq, Complete, nil))
	require.NoError(t, tb.b.RetryDeadLetter(ctx, []byte(tb.b.Handle(bad))))
	s := mustBatch(t, tb.b, done)
	require.True(t, s.Complete, "a completed batch stays complete")
	require.Equal(t, [5]uint64{1, 1, 0, 0, 0}, counts(done))
	tb.finishNext(t, bad, Complete)
	require.Equal(t, [5]uint64{1, 0, 1, 0, 0}, counts(done))
	cb, p = tb.grabCallback(t)
	require.Equal(t, "ok", cb.Function, "on_success, now that every job succeeded")
	require.Equal(t, []uint64{1, 1, 0}, []uint64{p.Total, p.Succeeded, p.Dead})
	require.NoError(t, tb.b.Finish(tb.worker, cb.Seq, Complete, nil))
	tb.noCallback(t)
}

// A batch's callbacks are the server's own submits: --max-functions never
// refuses them, also when their functions are not known yet.
func TestBatchCallbacksAreNotRefusedForTheFunctionLimit(t *testing.T) {
	t.Parallel()
	tb := setupLC(t, lcOpts{cfg: Config{MaxFunctions: 1}, store: memory.New(), can: []string{"fn"}})
	id := createBatch(t, tb.b)
	tb.submit(t, inBatch(id, "a"))
	require.NoError(t, tb.b.CloseBatch(context.Background(), id))
	require.NoError(t, tb.b.Finish(tb.worker, tb.grab(t).Seq, Complete, nil))
	require.NoError(t, tb.b.Durable(context.Background()))
	s := mustBatch(t, tb.b, id)
	require.True(t, s.Complete)
	require.True(t, s.SuccessFired, "on_success was submitted")
	require.True(t, s.CompleteFired, "on_complete was submitted")
}
