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
	ok, err := b.CancelQueued(ctx, x[0].Seq)
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
