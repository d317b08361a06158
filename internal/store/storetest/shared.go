package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/internal/store"
)

// OpenSharedFunc opens one server's handle on the shared store under
// test. Within one test, every call opens the same shared data (empty at
// the first call), as server name; the suite closes the handles.
type OpenSharedFunc func(t *testing.T, name string) store.SharedStore

// RunShared runs the conformance suite of store.SharedStore against the
// stores that open returns. Each case is a parallel subtest with its own
// shared data.
func RunShared(t *testing.T, open OpenSharedFunc) {
	t.Helper()
	cases := []conformanceCase[OpenSharedFunc]{
		{name: "CommitNumbersAndCoalesces", fn: testSharedCommitNumbersAndCoalesces},
		{name: "ClaimIsExclusiveAndOrdered", fn: testSharedClaimIsExclusiveAndOrdered},
		{name: "ReleaseAndLeave", fn: testSharedReleaseAndLeave},
		{name: "Find", fn: testSharedFind},
		{name: "Reserve", fn: testSharedReserve},
		{name: "UpdateAndDelete", fn: testSharedUpdateAndDelete},
		{name: "Meta", fn: testSharedMeta},
		{name: "DeadLetters", fn: testSharedDeadLetters},
		{name: "Results", fn: testSharedResults},
		{name: "CancelQueued", fn: testSharedCancelQueued},
		{name: "BatchCountsEachEndOnce", fn: testBatchCountsEachEndOnce, needs: has[store.BatchStore]},
		{name: "BatchEmptyClosedCompletes", fn: testBatchEmptyClosedCompletes, needs: has[store.BatchStore]},
		{name: "BatchEndedOnTwoServersAtOnce", fn: testBatchEndedOnTwoServersAtOnce, needs: has[store.BatchStore]},
		{name: "BatchCancelledJobEnds", fn: testBatchCancelledJobEnds, needs: has[store.BatchStore]},
		{name: "BatchRoundsInOppositeOrders", fn: testBatchRoundsInOppositeOrders, needs: has[store.BatchStore]},
		{name: "BatchRunningAndExpiry", fn: testBatchRunningAndExpiry, needs: has[store.BatchStore]},
		{name: "Dependencies", fn: testDependencies, needs: has[store.RecordStore]},
		{name: "DependenciesEndedOnTwoServersAtOnce", fn: testDependenciesEndedOnTwoServersAtOnce, needs: has[store.RecordStore]},
		{name: "BatchDeadLetterQueuedAgain", fn: testBatchDeadLetterQueuedAgain, needs: has[store.BatchStore]},
		{name: "BatchJobsWait", fn: testBatchJobsWait, needs: has[store.BatchRecordStore]},
		{name: "BatchJobsCancelledOnTwoServersAtOnce", fn: testBatchJobsCancelledOnTwoServersAtOnce, needs: has[store.BatchRecordStore]},
	}
	runCases(t, open, openShared(t, open, "probe"), cases)
}

// openShared opens a handle and closes it when the test ends.
func openShared(t *testing.T, open OpenSharedFunc, name string) store.SharedStore {
	t.Helper()
	s := open(t, name)
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// joined opens a handle of a server that has joined the shared store.
func joined(t *testing.T, open OpenSharedFunc, name string) store.SharedStore {
	t.Helper()
	s := openShared(t, open, name)
	every, err := s.Join(context.Background(), func(string) {}, func(string) {}, func(error) {})
	require.NoError(t, err)
	require.Positive(t, every, "Join says how often to renew")
	return s
}

func sharedJob(fn, unique, payload string) store.Job {
	return store.Job{Function: fn, Unique: unique, Payload: []byte(payload), Priority: 1}
}

// PriorityJobs returns n jobs of function f, with the payloads "0" to
// n-1 and the priorities 0, 1 and 2 in turn, and then one more job of f
// that is due an hour from now, which no claim may take yet.
func PriorityJobs(n int) []store.Job {
	jobs := make([]store.Job, 0, n+1)
	for i := range n {
		j := sharedJob("f", "", fmt.Sprint(i))
		j.Priority = uint8(i % 3)
		jobs = append(jobs, j)
	}
	later := sharedJob("f", "", "later")
	later.RunAt = time.Now().Add(time.Hour).Unix()
	return append(jobs, later)
}

// insert commits new jobs (claimed by this server where claim says so).
func insert(t *testing.T, s store.SharedStore, jobs []store.Job, claim ...bool) []store.Inserted {
	t.Helper()
	p := store.CommitParams{Insert: store.InsertParams{HandlePrefix: "H:t:", Jobs: jobs}}
	if len(claim) > 0 {
		p.Insert.Claim = claim
	}
	res, err := s.Commit(context.Background(), p)
	require.NoError(t, err)
	require.Len(t, res.Inserted, len(jobs), "one outcome per new job")
	return res.Inserted
}

func claimAll(t *testing.T, s store.SharedStore, fn string) []store.Job {
	t.Helper()
	got, err := s.Claim(context.Background(), []store.ClaimRequest{{Function: fn, Max: 100}})
	require.NoError(t, err)
	return got
}

func testSharedCommitNumbersAndCoalesces(t *testing.T, open OpenSharedFunc) {
	ctx := context.Background()
	a, b := joined(t, open, "a"), joined(t, open, "b")
	res := insert(t, a, []store.Job{sharedJob("f", "", "1"), sharedJob("f", "u", "2"), sharedJob("f", "u", "3"), sharedJob("g", "u", "4")})
	require.True(t, res[0].Created)
	require.True(t, res[1].Created)
	require.Equal(t, store.Inserted{Seq: res[1].Seq}, res[2], "a repeated unique in one round coalesces")
	require.True(t, res[3].Created, "uniques are per function")
	require.Less(t, res[0].Seq, res[1].Seq, "numbers follow the round's order")

	again := insert(t, b, []store.Job{sharedJob("f", "u", "5")}, true)
	require.Equal(t, []store.Inserted{{Seq: res[1].Seq, Claimed: true}}, again,
		"another server coalesces with the live job, and claims it when nobody holds it")

	var got []store.Job
	require.NoError(t, a.Load(ctx, func(j store.Job) error { got = append(got, j); return nil }))
	require.Len(t, got, 3)
	require.Equal(t, "2", string(got[1].Payload), "the first submit's payload is kept")
	require.Equal(t, fmt.Sprintf("H:t:%d", res[1].Seq), got[1].Handle, "the handle is the prefix and the number")
}

func testSharedClaimIsExclusiveAndOrdered(t *testing.T, open OpenSharedFunc) {
	a, b := joined(t, open, "a"), joined(t, open, "b")
	insert(t, a, PriorityJobs(30))

	first, err := a.Claim(context.Background(), []store.ClaimRequest{{Function: "f", Max: 12}, {Function: "none", Max: 5}})
	require.NoError(t, err)
	require.Len(t, first, 12, "Max bounds a claim")
	require.True(t, slices.IsSortedFunc(first, func(x, y store.Job) int {
		if x.Priority != y.Priority {
			return int(x.Priority) - int(y.Priority)
		}
		return int(x.Seq - y.Seq)
	}), "claimed by priority, then sequence")
	for _, j := range first[:10] {
		require.Zero(t, j.Priority, "the ten high-priority jobs first")
	}
	rest := claimAll(t, b, "f")
	require.Len(t, rest, 18, "the other server gets the rest; the scheduled job is not due")
	for _, j := range rest {
		require.False(t, slices.ContainsFunc(first, func(x store.Job) bool { return x.Seq == j.Seq }), "job %d claimed twice", j.Seq)
	}
	require.Empty(t, claimAll(t, a, "f"), "held jobs are not claimed again")
}

func testSharedReleaseAndLeave(t *testing.T, open OpenSharedFunc) {
	ctx := context.Background()
	a, b := joined(t, open, "a"), joined(t, open, "b")
	res := insert(t, a, []store.Job{sharedJob("f", "", "1"), sharedJob("f", "", "2")}, true, true)
	require.True(t, res[0].Claimed && res[1].Claimed, "inserted claimed")
	require.Empty(t, claimAll(t, b, "f"))

	require.NoError(t, a.Release(ctx, []uint64{res[0].Seq}))
	got := claimAll(t, b, "f")
	require.Len(t, got, 1)
	require.Equal(t, res[0].Seq, got[0].Seq, "a released job can be claimed")

	require.NoError(t, a.Leave(ctx))
	got = claimAll(t, b, "f")
	require.Len(t, got, 1, "leaving releases every job the server held")
	require.Equal(t, res[1].Seq, got[0].Seq)
	lost, err := b.Renew(ctx)
	require.NoError(t, err)
	require.False(t, lost, "a live server keeps its lease")
}

func testSharedFind(t *testing.T, open OpenSharedFunc) {
	ctx := context.Background()
	a := joined(t, open, "a")
	res := insert(t, a, []store.Job{sharedJob("f", "u", "1"), sharedJob("f", "", "2")}, true, false)
	f, ok, err := a.Find(ctx, res[0].Seq, "")
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, store.Found{Seq: res[0].Seq, Claimed: true}, f)
	f, ok, err = a.Find(ctx, 0, "u")
	require.NoError(t, err)
	require.True(t, ok, "found by unique")
	require.Equal(t, res[0].Seq, f.Seq)
	f, ok, err = a.Find(ctx, res[1].Seq, "")
	require.NoError(t, err)
	require.True(t, ok)
	require.False(t, f.Claimed, "nobody holds it")
	_, ok, err = a.Find(ctx, res[1].Seq+1000, "")
	require.NoError(t, err)
	require.False(t, ok, "an unknown job is not an error")
	require.NoError(t, a.Ping(ctx))
}

func testSharedReserve(t *testing.T, open OpenSharedFunc) {
	ctx := context.Background()
	a, b := openShared(t, open, "a"), openShared(t, open, "b")
	ra, err := a.Commit(ctx, store.CommitParams{Reserve: 5})
	require.NoError(t, err)
	rb, err := b.Commit(ctx, store.CommitParams{Reserve: 5})
	require.NoError(t, err)
	require.Len(t, ra.Reserved, 5)
	require.Len(t, rb.Reserved, 5)
	seen := map[uint64]bool{}
	for _, s := range append(ra.Reserved, rb.Reserved...) {
		require.False(t, seen[s], "a number is reserved once across servers")
		seen[s] = true
	}
	j := sharedJob("f", "", "own number")
	j.Seq = ra.Reserved[2]
	res := insert(t, a, []store.Job{j, sharedJob("f", "", "numbered")})
	require.Equal(t, store.Inserted{Seq: ra.Reserved[2], Created: true}, res[0], "a job carrying a reserved number keeps it")
	require.True(t, res[1].Created)
	require.False(t, seen[res[1].Seq], "the store's own numbers are not reserved ones")
}

func testSharedUpdateAndDelete(t *testing.T, open OpenSharedFunc) {
	ctx := context.Background()
	a := joined(t, open, "a")
	res := insert(t, a, []store.Job{sharedJob("f", "", "1"), sharedJob("f", "", "2")})
	upd := sharedJob("f", "", "1")
	upd.Seq, upd.Retries, upd.Priority = res[0].Seq, 2, 0
	gone := sharedJob("f", "", "2")
	gone.Seq, gone.Retries = res[1].Seq, 9
	_, err := a.Commit(ctx, store.CommitParams{Delete: []uint64{res[1].Seq}})
	require.NoError(t, err)
	_, err = a.Commit(ctx, store.CommitParams{Update: []store.Job{upd, gone}})
	require.NoError(t, err)
	var got []store.Job
	require.NoError(t, a.Load(ctx, func(j store.Job) error { got = append(got, j); return nil }))
	require.Len(t, got, 1, "an update never stores a deleted job again")
	require.Equal(t, uint32(2), got[0].Retries)
	require.Equal(t, uint8(0), got[0].Priority)
}

func testSharedMeta(t *testing.T, open OpenSharedFunc) {
	ctx := context.Background()
	a, b := openShared(t, open, "a"), openShared(t, open, "b")
	_, err := a.Commit(ctx, store.CommitParams{Meta: []store.Meta{
		{Key: "pause/f", Value: []byte("1")}, {Key: "pause/f", Value: []byte("2")}, {Key: "cron/c", Value: []byte("7")},
	}})
	require.NoError(t, err)
	v, ok, err := b.GetMeta(ctx, "pause/f")
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, "2", string(v), "another server reads the last entry for a key")
	_, err = b.Commit(ctx, store.CommitParams{Meta: []store.Meta{{Key: "pause/f"}}})
	require.NoError(t, err)
	_, ok, err = a.GetMeta(ctx, "pause/f")
	require.NoError(t, err)
	require.False(t, ok, "a nil value deletes the key")
	got := map[string]string{}
	require.NoError(t, a.LoadMeta(ctx, func(m store.Meta) error { got[m.Key] = string(m.Value); return nil }))
	require.Equal(t, map[string]string{"cron/c": "7"}, got)
}

// die turns job seq into a dead letter, as the committer writes it.
func die(t *testing.T, s store.SharedStore, j store.Job, seq uint64) {
	t.Helper()
	dieCounted(t, s, j, seq, nil)
}

// dieCounted saves job seq as a dead letter in a commit round that counts
// ends (of jobs of batches).
func dieCounted(t *testing.T, s store.SharedStore, j store.Job, seq uint64, ends []store.BatchEnd) {
	t.Helper()
	j.Seq, j.State, j.Attempts, j.LastError, j.FinishedAt = seq, store.StateDead, 1, "failed", time.Now().UnixNano()
	_, err := s.Commit(context.Background(), store.CommitParams{Update: []store.Job{j}, Release: []uint64{seq}, BatchEnds: ends})
	require.NoError(t, err)
}

func testSharedDeadLetters(t *testing.T, open OpenSharedFunc) {
	ctx := context.Background()
	a, b := joined(t, open, "a"), joined(t, open, "b")
	jobs := []store.Job{sharedJob("f", "", "1"), sharedJob("f", "", "2"), sharedJob("g", "", "3")}
	res := insert(t, a, jobs, true, true, true)
	for i, r := range res {
		die(t, a, jobs[i], r.Seq)
	}
	dead, err := b.DeadJobs(ctx, "", 0)
	require.NoError(t, err)
	require.Equal(t, []uint64{res[0].Seq, res[1].Seq, res[2].Seq}, seqsOf(dead), "every server lists every dead letter")
	dead, err = b.DeadJobs(ctx, "f", 1)
	require.NoError(t, err)
	require.Equal(t, []uint64{res[0].Seq}, seqsOf(dead), "by function, at most limit")
	j, err := b.StoredJob(ctx, res[2].Seq, store.StateDead)
	require.NoError(t, err)
	require.Equal(t, "failed", j.LastError)
	_, err = b.StoredJob(ctx, res[2].Seq, store.StateDone)
	require.True(t, errors.Is(err, store.ErrNotFound), "a job in another state is not found: %v", err)

	counts, err := b.Counts(ctx)
	require.NoError(t, err)
	require.Equal(t, []store.FunctionCount{{Function: "f", Dead: 2}, {Function: "g", Dead: 1}}, counts)

	n, err := b.RetryDead(ctx, store.DeadSelector{Seq: res[0].Seq})
	require.NoError(t, err)
	require.Equal(t, 1, n)
	got := claimAll(t, b, "f")
	require.Equal(t, []uint64{res[0].Seq}, seqsOf(got), "a retried dead letter is claimable")
	require.Zero(t, got[0].Attempts, "with a fresh count of attempts")

	n, err = a.PurgeDead(ctx, store.DeadSelector{})
	require.NoError(t, err)
	require.Equal(t, 2, n)
	dead, err = b.DeadJobs(ctx, "", 0)
	require.NoError(t, err)
	require.Empty(t, dead)
}

func testSharedResults(t *testing.T, open OpenSharedFunc) {
	ctx := context.Background()
	a, b := joined(t, open, "a"), joined(t, open, "b")
	j := sharedJob("f", "u", "1")
	res := insert(t, a, []store.Job{j}, true)
	now := time.Now().UnixNano()
	j.Seq, j.State, j.Result, j.FinishedAt, j.NotBefore = res[0].Seq, store.StateDone, []byte("r"), now, now+int64(time.Hour)
	_, err := a.Commit(ctx, store.CommitParams{Update: []store.Job{j}, Release: []uint64{j.Seq}})
	require.NoError(t, err)

	got, err := b.DoneByUnique(ctx, "", "u")
	require.NoError(t, err)
	require.Equal(t, "r", string(got.Result), "another server reads the retained result")
	got, err = b.StoredJob(ctx, j.Seq, store.StateDone)
	require.NoError(t, err)
	require.Equal(t, "r", string(got.Result))
	_, err = b.DoneByUnique(ctx, "g", "u")
	require.True(t, errors.Is(err, store.ErrNotFound), "uniques are per function: %v", err)

	n, err := b.Expire(ctx, store.ExpireParams{Now: now})
	require.NoError(t, err)
	require.Zero(t, n, "a result is kept until its time")
	n, err = b.Expire(ctx, store.ExpireParams{Now: now + int64(2*time.Hour)})
	require.NoError(t, err)
	require.Equal(t, 1, n)
	_, err = a.DoneByUnique(ctx, "f", "u")
	require.True(t, errors.Is(err, store.ErrNotFound), "expired: %v", err)
}

func testSharedCancelQueued(t *testing.T, open OpenSharedFunc) {
	ctx := context.Background()
	a, b := joined(t, open, "a"), joined(t, open, "b")
	res := insert(t, a, []store.Job{sharedJob("f", "", "held"), sharedJob("f", "", "free")}, true, false)
	ok, err := b.CancelQueued(ctx, res[0].Seq, "test")
	require.NoError(t, err)
	require.False(t, ok, "a job a live server holds is not cancelled")
	ok, err = b.CancelQueued(ctx, res[1].Seq, "test")
	require.NoError(t, err)
	require.True(t, ok)
	_, found, err := a.Find(ctx, res[1].Seq, "")
	require.NoError(t, err)
	require.False(t, found, "a cancelled job is gone")
	require.NoError(t, a.Signal(ctx, "pause/f"))
}
