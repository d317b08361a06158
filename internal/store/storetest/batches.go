package storetest

import (
	"context"
	"encoding/json"
	"strconv"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/internal/store"
)

// The cases of store.BatchStore, run by RunShared for a shared store that
// keeps batches.

// insertAs commits new jobs with the handle prefix of the server that
// submits them.
func insertAs(t *testing.T, s store.SharedStore, prefix string, jobs []store.Job) []store.Inserted {
	t.Helper()
	res, err := s.Commit(context.Background(), store.CommitParams{Insert: store.InsertParams{HandlePrefix: prefix, Jobs: jobs}})
	require.NoError(t, err)
	return res.Inserted
}

// callbackJobs returns the stored jobs of function fn.
func callbackJobs(t *testing.T, st store.SharedStore, fn string) []store.Job {
	t.Helper()
	var out []store.Job
	require.NoError(t, st.Load(context.Background(), func(j store.Job) error {
		if j.Function == fn {
			out = append(out, j)
		}
		return nil
	}))
	return out
}

// newBatch creates an open batch in st with callbacks of the functions
// success and complete ("": none).
func newBatch(t *testing.T, st store.SharedStore, success, complete string) uint64 {
	t.Helper()
	id, err := st.(store.BatchStore).CreateBatch(context.Background(), store.NewBatch{Created: 1,
		OnSuccess: store.BatchCallback{Function: success}, OnComplete: store.BatchCallback{Function: complete}})
	require.NoError(t, err)
	return id
}

// batchJobs inserts n jobs of batch id and returns their numbers.
func batchJobs(t *testing.T, st store.SharedStore, id uint64, n int) []uint64 {
	t.Helper()
	jobs := make([]store.Job, n)
	for i := range jobs {
		jobs[i] = sharedJob("f", "", "x")
		jobs[i].Batch = id
	}
	res := insertAs(t, st, "H:a:", jobs)
	seqs := make([]uint64, n)
	for i, r := range res {
		seqs[i] = r.Seq
	}
	return seqs
}

// endJob writes the end of job seq of batch id as a commit round does.
func endJob(st store.SharedStore, prefix string, id, seq uint64, o store.BatchOutcome) error {
	_, err := st.Commit(context.Background(), store.CommitParams{Insert: store.InsertParams{HandlePrefix: prefix},
		Delete: []uint64{seq}, BatchEnds: []store.BatchEnd{{Seq: seq, Batch: id, Outcome: o}}})
	return err
}

func testBatchCountsEachEndOnce(t *testing.T, open OpenSharedFunc) {
	ctx := context.Background()
	st := openShared(t, open, "a")
	bs := st.(store.BatchStore)
	id, err := bs.CreateBatch(ctx, store.NewBatch{Created: 1,
		OnSuccess:  store.BatchCallback{Function: "report", PayloadJSON: []byte(`"import 42"`)},
		OnComplete: store.BatchCallback{Function: "done"}})
	require.NoError(t, err)
	seqs := batchJobs(t, st, id, 3)
	u := sharedJob("f", "k", "x")
	u.Batch = id
	insertAs(t, st, "H:a:", []store.Job{u, u})

	bt, err := bs.Batch(ctx, id)
	require.NoError(t, err)
	require.Equal(t, uint64(4), bt.Total, "a job that coalesced does not count")
	require.NoError(t, bs.CloseBatch(ctx, id, "H:a:"))
	require.Empty(t, callbackJobs(t, st, "done"))

	require.NoError(t, endJob(st, "H:a:", id, seqs[0], store.BatchFailed))
	require.NoError(t, endJob(st, "H:a:", id, seqs[0], store.BatchFailed), "a round written twice")
	require.NoError(t, endJob(st, "H:a:", id, seqs[1], store.BatchSucceeded))
	bt, err = bs.Batch(ctx, id)
	require.NoError(t, err)
	require.Equal(t, []uint64{1, 1, 0}, []uint64{bt.Succeeded, bt.Failed, bt.Dead})
	require.Equal(t, []string{"H:a:" + itoa(seqs[0])}, bt.Failures)
	require.Zero(t, bt.Completed)

	var uniq []store.Job
	require.NoError(t, st.Load(ctx, func(j store.Job) error {
		if j.Unique == "k" {
			uniq = append(uniq, j)
		}
		return nil
	}))
	require.Len(t, uniq, 1)
	require.Equal(t, id, uniq[0].Batch, "a stored job names its batch")
	require.NoError(t, endJob(st, "H:a:", id, uniq[0].Seq, store.BatchSucceeded))
	require.NoError(t, endJob(st, "H:b:", id, seqs[2], store.BatchDead))

	require.Empty(t, callbackJobs(t, st, "report"), "a batch with a failure submits no on_success")
	done := callbackJobs(t, st, "done")
	require.Len(t, done, 1)
	require.Equal(t, "H:b:"+itoa(done[0].Seq), done[0].Handle, "the server that completed it numbers the callback")
	require.JSONEq(t, `{"batch":"`+itoa(id)+`","callback":"on_complete","total":4,"succeeded":2,"failed":1,"dead":1,
		"failures":["H:a:`+itoa(seqs[0])+`","H:a:`+itoa(seqs[2])+`"]}`, string(done[0].Payload))

	require.NoError(t, bs.CloseBatch(ctx, id, "H:a:"), "closing twice changes nothing")
	require.Len(t, callbackJobs(t, st, "done"), 1)
	bt, err = bs.Batch(ctx, id)
	require.NoError(t, err)
	require.True(t, bt.CompleteFired)
	require.False(t, bt.SuccessFired)
	require.NotZero(t, bt.Completed)
	require.ErrorIs(t, bs.CloseBatch(ctx, id+1000, "H:a:"), store.ErrNotFound)
	_, err = bs.Batch(ctx, id+1000)
	require.ErrorIs(t, err, store.ErrNotFound)
}

func testBatchEmptyClosedCompletes(t *testing.T, open OpenSharedFunc) {
	ctx := context.Background()
	st := openShared(t, open, "a")
	bs := st.(store.BatchStore)
	id, err := bs.CreateBatch(ctx, store.NewBatch{Created: 1,
		OnSuccess: store.BatchCallback{Function: "report", PayloadJSON: []byte(`"a\u0000b"`)}})
	require.NoError(t, err)
	require.NoError(t, bs.CloseBatch(ctx, id, "H:a:"))
	got := callbackJobs(t, st, "report")
	require.Len(t, got, 1)
	var pl struct {
		Callback string `json:"callback"`
		Payload  string `json:"payload"`
	}
	require.NoError(t, json.Unmarshal(got[0].Payload, &pl))
	require.Equal(t, "on_success", pl.Callback)
	require.Equal(t, "a\x00b", pl.Payload)
	list, err := bs.Batches(ctx, 10)
	require.NoError(t, err)
	require.Len(t, list, 1)
	require.True(t, list[0].SuccessFired)
}

// Two servers end the last two jobs of one batch and close it at the same
// moment, many times: each callback is inserted exactly once.
func testBatchEndedOnTwoServersAtOnce(t *testing.T, open OpenSharedFunc) {
	ctx := context.Background()
	a, b := openShared(t, open, "a"), openShared(t, open, "b")
	const rounds = 40
	for range rounds {
		id := newBatch(t, a, "report", "done")
		seqs := batchJobs(t, a, id, 2)
		var calls []func() error
		for i, st := range []store.SharedStore{a, b} {
			calls = append(calls,
				func() error { return endJob(st, "H:x:", id, seqs[i], store.BatchSucceeded) },
				func() error { return st.(store.BatchStore).CloseBatch(ctx, id, "H:y:") })
		}
		AtOnce(t, calls...)
		bt, err := a.(store.BatchStore).Batch(ctx, id)
		require.NoError(t, err)
		require.True(t, bt.SuccessFired && bt.CompleteFired)
	}
	require.Equal(t, rounds, len(callbackJobs(t, a, "report")), "on_success callbacks")
	require.Equal(t, rounds, len(callbackJobs(t, a, "done")), "on_complete callbacks")
}

// AtOnce runs calls in goroutines released together (to make them race)
// and requires that none failed.
func AtOnce(t *testing.T, calls ...func() error) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make([]error, len(calls))
	start := make(chan struct{})
	for i, call := range calls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			errs[i] = call()
		}()
	}
	close(start)
	wg.Wait()
	for _, err := range errs {
		require.NoError(t, err)
	}
}

func itoa(n uint64) string { return strconv.FormatUint(n, 10) }

// A queued job of a batch that is cancelled where nobody holds it counts
// as failed, and completes its batch when it was the last.
func testBatchCancelledJobEnds(t *testing.T, open OpenSharedFunc) {
	ctx := context.Background()
	st := openShared(t, open, "a")
	bs := st.(store.BatchStore)
	id, err := bs.CreateBatch(ctx, store.NewBatch{Created: 1, OnComplete: store.BatchCallback{Function: "done"}})
	require.NoError(t, err)
	seqs := batchJobs(t, st, id, 1)
	require.NoError(t, bs.CloseBatch(ctx, id, "H:a:"))
	ok, err := st.CancelQueued(ctx, seqs[0], "test")
	require.NoError(t, err)
	require.True(t, ok)
	bt, err := bs.Batch(ctx, id)
	require.NoError(t, err)
	require.Equal(t, []uint64{1, 0, 1}, []uint64{bt.Total, bt.Succeeded, bt.Failed})
	require.True(t, bt.CompleteFired)
	done := callbackJobs(t, st, "done")
	require.Len(t, done, 1)
	require.Equal(t, "H:a:"+itoa(done[0].Seq), done[0].Handle)
	ok, err = st.CancelQueued(ctx, seqs[0], "test")
	require.NoError(t, err)
	require.False(t, ok)
	require.Len(t, callbackJobs(t, st, "done"), 1)
}

// Two servers end a job of one batch and add a job to another in the same
// round, each in the opposite order (a ends in A and adds to B, b ends in
// B and adds to A), many times: no round is refused (the batch rows a
// round touches are locked in one order).
func testBatchRoundsInOppositeOrders(t *testing.T, open OpenSharedFunc) {
	ctx := context.Background()
	a, b := openShared(t, open, "a"), openShared(t, open, "b")
	var ids [2]uint64
	for i := range ids {
		id, err := a.(store.BatchStore).CreateBatch(ctx, store.NewBatch{Created: 1})
		require.NoError(t, err)
		ids[i] = id
	}
	const rounds = 30
	for range rounds {
		ended := [2]uint64{batchJobs(t, a, ids[0], 1)[0], batchJobs(t, a, ids[1], 1)[0]}
		var calls []func() error
		for i, st := range []store.SharedStore{a, b} {
			added := sharedJob("f", "", "x")
			added.Batch = ids[1-i]
			calls = append(calls, func() error {
				_, err := st.Commit(ctx, store.CommitParams{
					Insert:    store.InsertParams{HandlePrefix: "H:x:", Jobs: []store.Job{added}},
					Delete:    []uint64{ended[i]},
					BatchEnds: []store.BatchEnd{{Seq: ended[i], Batch: ids[i], Outcome: store.BatchSucceeded}},
				})
				return err
			})
		}
		AtOnce(t, calls...)
	}
	for _, id := range ids {
		bt, err := a.(store.BatchStore).Batch(ctx, id)
		require.NoError(t, err)
		require.Equal(t, []uint64{2 * rounds, rounds}, []uint64{bt.Total, bt.Succeeded})
	}
}

// A batch counts as running the jobs its servers wrote as taken by a
// worker (Progress.Running), and a completed batch is deleted by
// ExpireBatches once it completed before the time given, whichever
// server expires it.
func testBatchRunningAndExpiry(t *testing.T, open OpenSharedFunc) {
	ctx := context.Background()
	a, b := joined(t, open, "a"), openShared(t, open, "b")
	bs := a.(store.BatchStore)
	id, err := bs.CreateBatch(ctx, store.NewBatch{Created: 1})
	require.NoError(t, err)
	jobs := []store.Job{sharedJob("f", "", "1"), sharedJob("f", "", "2")}
	for i := range jobs {
		jobs[i].Batch = id
	}
	res := insert(t, a, jobs, true, true)
	require.True(t, res[0].Claimed && res[1].Claimed)
	running := func(want uint64) {
		t.Helper()
		bt, err := b.(store.BatchStore).Batch(ctx, id)
		require.NoError(t, err)
		require.Equal(t, want, bt.Running)
	}
	running(0) // held, not taken by a worker
	progress := func(seq uint64, run bool) {
		t.Helper()
		_, err := a.Commit(ctx, store.CommitParams{Progress: []store.Progress{{Seq: seq, Running: run}}})
		require.NoError(t, err)
	}
	progress(res[0].Seq, true)
	running(1)
	progress(res[0].Seq, false)
	running(0)
	progress(res[1].Seq, true)
	running(1)
	require.NoError(t, endJob(a, "H:a:", id, res[1].Seq, store.BatchSucceeded))
	require.NoError(t, endJob(a, "H:a:", id, res[0].Seq, store.BatchSucceeded))
	running(0)

	require.NoError(t, bs.CloseBatch(ctx, id, "H:a:"))
	bt, err := bs.Batch(ctx, id)
	require.NoError(t, err)
	require.NotZero(t, bt.Completed)
	open2, err := bs.CreateBatch(ctx, store.NewBatch{Created: 1})
	require.NoError(t, err)
	n, err := b.(store.BatchStore).ExpireBatches(ctx, bt.Completed, 10)
	require.NoError(t, err)
	require.Zero(t, n, "completed at that time, not before it")
	n, err = b.(store.BatchStore).ExpireBatches(ctx, bt.Completed+1, 10)
	require.NoError(t, err)
	require.Equal(t, 1, n)
	_, err = bs.Batch(ctx, id)
	require.ErrorIs(t, err, store.ErrNotFound)
	_, err = bs.Batch(ctx, open2)
	require.NoError(t, err, "an open batch stays")
	n, err = bs.ExpireBatches(ctx, bt.Completed+1, 10)
	require.NoError(t, err)
	require.Zero(t, n, "idempotent")
}

// dieInBatch saves job seq of batch id as a dead letter, counted dead in
// its batch, as a commit round does.
func dieInBatch(t *testing.T, s store.SharedStore, j store.Job, seq uint64) {
	t.Helper()
	dieCounted(t, s, j, seq, []store.BatchEnd{{Seq: seq, Batch: j.Batch, Outcome: store.BatchDead}})
}

// A dead letter of a batch queued again counts as pending again and its
// new end is counted, as on a single server: a batch not yet complete
// then completes as if the job had not died; a completed batch stays
// complete, submits on_success once every job succeeded (it had not),
// and does not submit on_complete again.
func testBatchDeadLetterQueuedAgain(t *testing.T, open OpenSharedFunc) {
	ctx := context.Background()
	a, b := joined(t, open, "a"), joined(t, open, "b")
	counts := func(id uint64) []uint64 {
		t.Helper()
		bt, err := b.(store.BatchStore).Batch(ctx, id)
		require.NoError(t, err)
		return []uint64{bt.Total, bt.Succeeded, bt.Failed, bt.Dead}
	}
	// runs dies job j of batch id on a, queues it again (by retry),
	// and returns it as server b claims it.
	runs := func(id uint64, fn string, retry store.DeadSelector) store.Job {
		t.Helper()
		j := sharedJob(fn, "", "x")
		j.Batch = id
		res := insert(t, a, []store.Job{j}, true)
		dieInBatch(t, a, j, res[0].Seq)
		require.Equal(t, []uint64{1, 0, 0, 1}, counts(id))
		if retry.Seq == 0 && retry.Function == "" {
			retry.Seq = res[0].Seq
		}
		n, err := b.RetryDead(ctx, retry)
		require.NoError(t, err)
		require.Equal(t, 1, n)
		require.Equal(t, []uint64{1, 0, 0, 0}, counts(id), "pending again")
		got := claimAll(t, b, fn)
		require.Len(t, got, 1)
		require.Equal(t, id, got[0].Batch)
		return got[0]
	}

	first := newBatch(t, a, "report", "done")
	j := runs(first, "f", store.DeadSelector{})
	require.NoError(t, a.(store.BatchStore).CloseBatch(ctx, first, "H:a:"))
	require.Empty(t, callbackJobs(t, a, "done"), "it waits for its job queued again")
	require.NoError(t, endJob(b, "H:b:", first, j.Seq, store.BatchSucceeded))
	require.Equal(t, []uint64{1, 1, 0, 0}, counts(first), "its new end counts")
	require.Len(t, callbackJobs(t, a, "report"), 1)
	require.Len(t, callbackJobs(t, a, "done"), 1)

	done := newBatch(t, a, "report", "done")
	k := sharedJob("g", "", "x")
	k.Batch = done
	res := insert(t, a, []store.Job{k}, true)
	require.NoError(t, a.(store.BatchStore).CloseBatch(ctx, done, "H:a:"))
	dieInBatch(t, a, k, res[0].Seq)
	bt, err := a.(store.BatchStore).Batch(ctx, done)
	require.NoError(t, err)
	require.NotZero(t, bt.Completed)
	require.Len(t, callbackJobs(t, a, "done"), 2)
	n, err := b.RetryDead(ctx, store.DeadSelector{Function: "g"})
	require.NoError(t, err)
	require.Equal(t, 1, n)
	require.Equal(t, []uint64{1, 0, 0, 0}, counts(done))
	bt, err = a.(store.BatchStore).Batch(ctx, done)
	require.NoError(t, err)
	require.NotZero(t, bt.Completed, "a completed batch stays complete")
	got := claimAll(t, b, "g")
	require.Len(t, got, 1)
	require.NoError(t, endJob(b, "H:b:", done, got[0].Seq, store.BatchSucceeded))
	require.Equal(t, []uint64{1, 1, 0, 0}, counts(done))
	require.Len(t, callbackJobs(t, a, "report"), 2, "on_success, now that every job succeeded")
	require.Len(t, callbackJobs(t, a, "done"), 2, "on_complete is not submitted again")
	n, err = a.RetryDead(ctx, store.DeadSelector{Seq: got[0].Seq})
	require.NoError(t, err)
	require.Zero(t, n, "no longer a dead letter")
	require.Equal(t, []uint64{1, 1, 0, 0}, counts(done))
}
