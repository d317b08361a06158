package storetest

import (
	"context"
	"encoding/json"
	"slices"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/internal/store"
)

// The cases of jobs that wait for other jobs in a shared store (Job.After,
// CommitParams.DepEnds), run by RunShared.

// after returns a job of function fn that waits for deps.
func after(fn string, anyway bool, deps ...uint64) store.Job {
	j := sharedJob(fn, "", fn)
	j.After, j.AfterAnyway = deps, anyway
	return j
}

// endAs writes the end of job seq in state as server st's commit round
// does: the job's row is deleted and its record written.
func endAs(st store.SharedStore, seq uint64, state string) error {
	_, err := st.Commit(context.Background(), store.CommitParams{Insert: store.InsertParams{HandlePrefix: "H:t:"},
		Delete:  []uint64{seq},
		Records: []store.Record{{Seq: seq, Function: "f", State: state, Finished: 1, Data: []byte("{}")}},
		DepEnds: []store.DepEnd{{Seq: seq, State: state}}})
	return err
}

// claimedFunctions claims what st can of fns and returns the functions of
// the jobs it got, sorted.
func claimedFunctions(t *testing.T, st store.SharedStore, fns ...string) []string {
	t.Helper()
	var req []store.ClaimRequest
	for _, f := range fns {
		req = append(req, store.ClaimRequest{Function: f, Max: 10})
	}
	got, err := st.Claim(context.Background(), req)
	require.NoError(t, err)
	var out []string
	for _, j := range got {
		out = append(out, j.Function)
	}
	slices.Sort(out)
	return out
}

// cancelReason returns the state of job seq's record and, for a
// cancelled one, who cancelled it.
func cancelReason(t *testing.T, st store.SharedStore, seq uint64) (string, string) {
	t.Helper()
	r, err := st.(store.RecordStore).Record(context.Background(), seq)
	require.NoError(t, err, "job %d has a record", seq)
	var data struct{ CancelledBy string }
	require.NoError(t, json.Unmarshal(r.Data, &data))
	return r.State, data.CancelledBy
}

// A chain and a fan-in wait, unclaimable, until their jobs complete, on
// whichever server they end; a failure cancels the jobs down the chain
// with a record and the reason, except one that runs anyway; unknown and
// failed jobs are refused at insert, completed ones count as done.
func testDependencies(t *testing.T, open OpenSharedFunc) {
	ctx := context.Background()
	a, b := joined(t, open, "a"), joined(t, open, "b")
	d := insert(t, a, []store.Job{sharedJob("d", "", "1"), sharedJob("d", "", "2"), sharedJob("d", "", "3")})
	d1, d2, d3 := d[0].Seq, d[1].Seq, d[2].Seq
	w := insert(t, b, []store.Job{after("fanin", false, d1, d2)}, true)
	require.NotZero(t, w[0].Seq)
	require.Nil(t, w[0].Refused)
	c := insert(t, b, []store.Job{after("chain", false, w[0].Seq)})
	require.Nil(t, c[0].Refused)
	require.Empty(t, claimedFunctions(t, a, "fanin", "chain"), "waiting jobs are not claimable")
	f, found, err := a.Find(ctx, w[0].Seq, "")
	require.NoError(t, err)
	require.True(t, found, "a waiting job is live")
	require.False(t, f.Claimed, "no server holds a waiting job, also when its insert asked to claim it")

	require.NoError(t, endAs(a, d1, "complete"))
	require.Empty(t, claimedFunctions(t, a, "fanin", "chain"), "one of two is not enough")
	require.NoError(t, endAs(b, d2, "complete"))
	require.Equal(t, []string{"fanin"}, claimedFunctions(t, a, "fanin", "chain"), "released on the other server's end")
	require.NoError(t, endAs(a, w[0].Seq, "complete"))
	require.Equal(t, []string{"chain"}, claimedFunctions(t, b, "fanin", "chain"))

	// A failure cancels down the chain; a job that runs anyway runs.
	g := insert(t, a, []store.Job{after("g", false, d3), after("anyway", true, d3)})
	h := insert(t, b, []store.Job{after("h", false, g[0].Seq)})
	require.NoError(t, endAs(b, d3, "failed"))
	require.Equal(t, []string{"anyway"}, claimedFunctions(t, a, "g", "h", "anyway"))
	state, by := cancelReason(t, a, g[0].Seq)
	require.Equal(t, "cancelled", state)
	require.Equal(t, "dependency H:t:"+itoa(d3)+" failed", by)
	state, by = cancelReason(t, a, h[0].Seq)
	require.Equal(t, "cancelled", state)
	require.Equal(t, "dependency H:t:"+itoa(g[0].Seq)+" cancelled", by)
	for _, q := range []uint64{g[0].Seq, h[0].Seq} {
		_, found, err := a.Find(ctx, q, "")
		require.NoError(t, err)
		require.False(t, found, "a cancelled waiting job is gone")
	}

	// At insert: completed counts as done; failed and unknown refuse.
	res := insert(t, a, []store.Job{after("done", false, d1), after("failed", false, d3),
		after("unknown", false, d1, 1<<40), after("runs", true, d3)})
	require.Nil(t, res[0].Refused)
	require.Equal(t, &store.DependencyRefused{Dep: d3}, res[1].Refused)
	require.Equal(t, &store.DependencyRefused{Dep: 1 << 40, Unknown: true}, res[2].Refused)
	require.Nil(t, res[3].Refused)
	require.Equal(t, []string{"done", "runs"}, claimedFunctions(t, b, "done", "failed", "unknown", "runs"))

	// Cancelling a waiting job where nobody holds it cancels the jobs
	// that wait for it.
	d = insert(t, a, []store.Job{sharedJob("d", "", "4")})
	x := insert(t, a, []store.Job{after("x", false, d[0].Seq)})
	y := insert(t, b, []store.Job{after("y", false, x[0].Seq)})
	ok, err := b.CancelQueued(ctx, x[0].Seq, "test")
	require.NoError(t, err)
	require.True(t, ok)
	state, by = cancelReason(t, a, y[0].Seq)
	require.Equal(t, "cancelled", state)
	require.Equal(t, "dependency H:t:"+itoa(x[0].Seq)+" cancelled", by)
}

// Two servers ending the two jobs a fan-in waits for at the same moment
// release it once, and neither round fails (no deadlock); two servers
// ending the jobs that waiting jobs wait for while a third links new
// waiting jobs to them leave none waiting for a job that is gone.
func testDependenciesEndedOnTwoServersAtOnce(t *testing.T, open OpenSharedFunc) {
	a, b, c := joined(t, open, "a"), joined(t, open, "b"), joined(t, open, "c")
	const rounds = 30
	for i := range rounds {
		d := insert(t, a, []store.Job{sharedJob("d", "", "1"), sharedJob("d", "", "2")})
		insert(t, a, []store.Job{after("w", false, d[0].Seq, d[1].Seq), after("v", false, d[1].Seq, d[0].Seq)})
		var wg sync.WaitGroup
		errs := make([]error, 3)
		var linked []store.Inserted
		start := make(chan struct{})
		for k, st := range []store.SharedStore{a, b} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				state := "complete"
				if i%3 == 2 && k == 1 {
					state = "failed"
				}
				errs[k] = endAs(st, d[k].Seq, state)
			}()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			var res store.Committed
			res, errs[2] = c.Commit(context.Background(), store.CommitParams{Insert: store.InsertParams{
				HandlePrefix: "H:c:", Jobs: []store.Job{after("late", true, d[0].Seq, d[1].Seq)}}})
			linked = res.Inserted
		}()
		close(start)
		wg.Wait()
		for _, err := range errs {
			require.NoError(t, err)
		}
		require.Len(t, linked, 1)
		require.Nil(t, linked[0].Refused, "both ended with records: a late job is never refused")
		want := []string{"late", "v", "w"}
		if i%3 == 2 {
			want = []string{"late"}
		}
		require.Equal(t, want, claimedFunctions(t, c, "w", "v", "late"), "round %d", i)
	}
	counts, err := a.Counts(context.Background())
	require.NoError(t, err)
	for _, n := range counts {
		require.Zero(t, n.Waiting, "no job is left waiting for a job that is gone (%s)", n.Function)
	}
}

// endInBatch writes the end of job seq of batch id in state as server
// st's commit round does: deleted, recorded, counted in its batch, and
// reported to the jobs that wait for it.
func endInBatch(st store.SharedStore, id, seq uint64, state string, o store.BatchOutcome) error {
	_, err := st.Commit(context.Background(), store.CommitParams{Insert: store.InsertParams{HandlePrefix: "H:t:"},
		Delete:    []uint64{seq},
		Records:   []store.Record{{Seq: seq, Function: "f", State: state, Finished: 1, Batch: id, Data: []byte("{}")}},
		BatchEnds: []store.BatchEnd{{Seq: seq, Batch: id, Outcome: o}},
		DepEnds:   []store.DepEnd{{Seq: seq, State: state}}})
	return err
}

// inBatch puts job j in batch id.
func inBatch(j store.Job, id uint64) store.Job {
	j.Batch = id
	return j
}

// Jobs of a batch wait for others like any job: a waiting job counts in
// its batch's total when it is inserted (not when it is refused), a
// chain of them completes the batch once its last job ended, and a job
// cancelled because a job it waited for failed counts as failed in its
// batch in the transaction that cancels it (on the server that ended
// that job, or the one that cancelled it where nobody held it), which
// completes the batch and submits its callbacks once.
func testBatchJobsWait(t *testing.T, open OpenSharedFunc) {
	ctx := context.Background()
	a, b := joined(t, open, "a"), joined(t, open, "b")
	bs := a.(store.BatchStore)
	counts := func(id uint64) []uint64 {
		t.Helper()
		bt, err := b.(store.BatchStore).Batch(ctx, id)
		require.NoError(t, err)
		return []uint64{bt.Total, bt.Succeeded, bt.Failed, bt.Dead}
	}

	// A chain of a batch: the batch completes with its last job.
	ok := newBatch(t, a, "report", "done")
	d := insert(t, a, []store.Job{inBatch(sharedJob("d", "", "1"), ok)})
	w := insert(t, b, []store.Job{inBatch(after("w", false, d[0].Seq), ok),
		inBatch(after("refused", false, 1<<40), ok)})
	require.Nil(t, w[0].Refused)
	require.NotNil(t, w[1].Refused)
	require.Equal(t, []uint64{2, 0, 0, 0}, counts(ok), "a waiting job counts in total, a refused one does not")
	require.NoError(t, bs.CloseBatch(ctx, ok, "H:t:"))
	require.NoError(t, endInBatch(a, ok, d[0].Seq, "complete", store.BatchSucceeded))
	require.Equal(t, []uint64{2, 1, 0, 0}, counts(ok))
	require.Empty(t, callbackJobs(t, a, "report"), "the batch waits for its waiting job")
	require.Equal(t, []string{"w"}, claimedFunctions(t, b, "w"))
	require.NoError(t, endInBatch(b, ok, w[0].Seq, "complete", store.BatchSucceeded))
	require.Equal(t, []uint64{2, 2, 0, 0}, counts(ok))
	require.Len(t, callbackJobs(t, a, "report"), 1)
	require.Len(t, callbackJobs(t, a, "done"), 1)

	// A failure cancels a chain and a fan-in of the batch; they count as
	// failed, and the batch completes in that round.
	bad := newBatch(t, a, "report", "done")
	d = insert(t, a, []store.Job{inBatch(sharedJob("d", "", "2"), bad), inBatch(sharedJob("d", "", "3"), bad)})
	x := insert(t, b, []store.Job{inBatch(after("x", false, d[0].Seq), bad)})
	y := insert(t, b, []store.Job{inBatch(after("y", false, x[0].Seq, d[1].Seq), bad)})
	require.NoError(t, bs.CloseBatch(ctx, bad, "H:t:"))
	require.NoError(t, endInBatch(a, bad, d[1].Seq, "complete", store.BatchSucceeded))
	require.NoError(t, endInBatch(a, bad, d[0].Seq, "dead", store.BatchDead))
	require.Equal(t, []uint64{4, 1, 2, 1}, counts(bad))
	bt, err := bs.Batch(ctx, bad)
	require.NoError(t, err)
	require.NotZero(t, bt.Completed)
	require.Equal(t, []string{"H:t:" + itoa(d[0].Seq), "H:t:" + itoa(x[0].Seq), "H:t:" + itoa(y[0].Seq)}, bt.Failures)
	require.Len(t, callbackJobs(t, a, "done"), 2)
	require.Len(t, callbackJobs(t, a, "report"), 1, "no on_success for a batch with failures")
	recs, err := a.(store.BatchRecordStore).BatchRecords(ctx, bad, store.RecordQuery{State: "cancelled", Limit: 10})
	require.NoError(t, err)
	require.Len(t, recs, 2, "the records of the cancelled jobs name their batch")
	state, _ := cancelReason(t, a, y[0].Seq)
	require.Equal(t, "cancelled", state)

	// Cancelled where nobody holds it: the jobs waiting for it, in
	// another batch, count there, and that batch completes.
	other := newBatch(t, a, "report", "done")
	d = insert(t, a, []store.Job{sharedJob("d", "", "4")})
	q := insert(t, a, []store.Job{after("q", false, d[0].Seq)})
	r := insert(t, b, []store.Job{inBatch(after("r", false, q[0].Seq), other)})
	require.Nil(t, r[0].Refused)
	require.NoError(t, bs.CloseBatch(ctx, other, "H:t:"))
	cancelled, err := b.CancelQueued(ctx, q[0].Seq, "test")
	require.NoError(t, err)
	require.True(t, cancelled)
	require.Equal(t, []uint64{1, 0, 1, 0}, counts(other))
	require.Len(t, callbackJobs(t, a, "done"), 3)
	cancelled, err = a.CancelQueued(ctx, r[0].Seq, "test")
	require.NoError(t, err)
	require.False(t, cancelled, "gone with its dependency")
	require.Equal(t, []uint64{1, 0, 1, 0}, counts(other), "counted once")

	// A job outside any batch fails in a commit round: the job of a batch
	// that waited for it counts there, and that batch completes.
	last := newBatch(t, a, "report", "done")
	d = insert(t, a, []store.Job{sharedJob("d", "", "5")})
	s := insert(t, b, []store.Job{inBatch(after("s", false, d[0].Seq), last)})
	require.NoError(t, bs.CloseBatch(ctx, last, "H:t:"))
	require.NoError(t, endAs(a, d[0].Seq, "failed"))
	require.Equal(t, []uint64{1, 0, 1, 0}, counts(last))
	bt, err = bs.Batch(ctx, last)
	require.NoError(t, err)
	require.Equal(t, []string{"H:t:" + itoa(s[0].Seq)}, bt.Failures)
	require.Len(t, callbackJobs(t, a, "done"), 4)
}

// Two servers fail the two jobs a fan-in of a batch waits for at the
// same moment, many times: the fan-in is cancelled and counted once, and
// its batch submits its callback once.
func testBatchJobsCancelledOnTwoServersAtOnce(t *testing.T, open OpenSharedFunc) {
	a, b := joined(t, open, "a"), joined(t, open, "b")
	const rounds = 20
	for range rounds {
		id := newBatch(t, a, "", "done")
		d := insert(t, a, []store.Job{inBatch(sharedJob("d", "", "1"), id), sharedJob("d", "", "2")})
		insert(t, b, []store.Job{inBatch(after("w", false, d[0].Seq, d[1].Seq), id)})
		require.NoError(t, a.(store.BatchStore).CloseBatch(context.Background(), id, "H:t:"))
		AtOnce(t,
			func() error { return endInBatch(a, id, d[0].Seq, "failed", store.BatchFailed) },
			func() error { return endAs(b, d[1].Seq, "failed") })
		bt, err := b.(store.BatchStore).Batch(context.Background(), id)
		require.NoError(t, err)
		require.Equal(t, []uint64{2, 2}, []uint64{bt.Total, bt.Failed})
		require.True(t, bt.CompleteFired)
	}
	require.Len(t, callbackJobs(t, a, "done"), rounds)
}
