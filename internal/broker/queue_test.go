package broker

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/internal/clocktest"
	"github.com/gearwork/gearwork/internal/store"
	"github.com/gearwork/gearwork/internal/store/memory"
)

// startTiered starts a broker on st with payload tiering.
func startTiered(t *testing.T, st store.Store, budget int64) *Broker {
	t.Helper()
	b := New(Config{Store: st, MemoryBudget: budget})
	require.NoError(t, b.Start(context.Background()))
	t.Cleanup(b.Stop)
	return b
}

// submitTiered submits n background jobs of f whose payloads are
// "p<index>" and returns their sequence numbers in order.
func submitTiered(t *testing.T, b *Broker, f string, n int) []uint64 {
	t.Helper()
	s := b.NewSession("client", &recorder{})
	seqs := make([]uint64, n)
	for i := range n {
		r := submitAndWait(t, b, s, bg(f, "", fmt.Sprintf("p%d", i), Normal))
		require.NoError(t, r.err)
		seqs[i] = r.seq
	}
	return seqs
}

// requireDrained drains f (drainOrder) and requires the jobs want, in
// that order, with the payloads submitTiered gave them ("p0", "p1", ...).
func requireDrained(t *testing.T, b *Broker, f string, want []uint64) {
	t.Helper()
	got, payloads := drainOrder(t, b, f)
	require.Equal(t, want, got)
	for i := range payloads {
		require.Equal(t, fmt.Sprintf("p%d", i), payloads[i])
	}
}

// drainOrder grabs and completes the jobs of f until none is left and
// returns their sequence numbers and payloads in the order handed out.
func drainOrder(t *testing.T, b *Broker, f string) (seqs []uint64, payloads []string) {
	t.Helper()
	w := b.NewSession("worker", &recorder{})
	defer b.CloseSession(w)
	b.CanDo(w, []byte(f), 0)
	for {
		a, ok := b.Grab(w)
		if !ok {
			return seqs, payloads
		}
		seqs = append(seqs, a.Seq)
		payloads = append(payloads, string(a.Payload))
		require.NoError(t, b.Finish(w, a.Seq, Complete, nil))
	}
}

// frozenCounts returns the number of frozen jobs and of jobs in the index
// pages.
func frozenCounts(b *Broker) (frozen, inPages int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.jobs.frozen, b.jobs.seqIndex.len()
}

func TestQueuedJobsWithPayloadOnDiskAreFrozen(t *testing.T) {
	t.Parallel()
	b := startTiered(t, memory.New(), -1)
	seqs := submitTiered(t, b, "f", 20)

	frozen, inPages := frozenCounts(b)
	require.Equal(t, 20, frozen, "every acknowledged job whose payload is on disk is frozen")
	require.Equal(t, 0, inPages, "a frozen job has no job struct in the index")
	require.Equal(t, 20, b.JobCount())
	require.Equal(t, 20, b.Status(context.Background())[0].Queued[Normal])
	require.Len(t, b.Jobs(0), 20, "listing sees frozen jobs")
	frozen, _ = frozenCounts(b)
	require.Equal(t, 20, frozen, "listing does not thaw")

	// A lookup by handle thaws the job in its place; a cancel takes one
	// out of the middle.
	st := b.GetStatus([]byte(b.Handle(seqs[5])))
	require.True(t, st.Known)
	require.NoError(t, b.CancelJob(context.Background(), []byte(b.Handle(seqs[9]))))
	frozen, inPages = frozenCounts(b)
	require.Equal(t, 18, frozen)
	require.Equal(t, 1, inPages)
	require.False(t, b.GetStatus([]byte(b.Handle(seqs[9]))).Known)

	got, payloads := drainOrder(t, b, "f")
	want := append(append([]uint64{}, seqs[:9]...), seqs[10:]...)
	require.Equal(t, want, got, "frozen jobs run in the order they were queued")
	for i, seq := range got {
		k := i
		if seq > seqs[9] {
			k++
		}
		require.Equal(t, fmt.Sprintf("p%d", k), payloads[i])
	}
	frozen, inPages = frozenCounts(b)
	require.Zero(t, frozen)
	require.Zero(t, inPages)
	inMem, onDisk := b.TieringStats()
	require.Zero(t, inMem)
	require.Zero(t, onDisk)
}

func TestFrozenJobsAfterJobsKeptInMemory(t *testing.T) {
	t.Parallel()
	// Payloads are 2 bytes ("p0" ...): a budget of 6 keeps three.
	b := startTiered(t, memory.New(), 6)
	seqs := submitTiered(t, b, "f", 8)
	frozen, inPages := frozenCounts(b)
	require.Equal(t, 5, frozen)
	require.Equal(t, 3, inPages)

	// Taking the first job frees budget, but a new job is queued behind
	// jobs whose payload is on disk: its payload goes to disk as well.
	w := b.NewSession("worker", &recorder{})
	b.CanDo(w, []byte("f"), 0)
	a, ok := b.Grab(w)
	require.True(t, ok)
	require.Equal(t, seqs[0], a.Seq)
	require.NoError(t, b.Finish(w, a.Seq, Complete, nil))
	b.CloseSession(w)
	seqs = append(seqs[1:], submitTiered(t, b, "f", 1)...)
	inMem, onDisk := b.TieringStats()
	require.Equal(t, int64(4), inMem)
	require.Equal(t, 6, onDisk)
	frozen, _ = frozenCounts(b)
	require.Equal(t, 6, frozen)

	got, payloads := drainOrder(t, b, "f")
	require.Equal(t, seqs, got)
	require.Equal(t, []string{"p1", "p2", "p3", "p4", "p5", "p6", "p7", "p0"}, payloads)

	// With the queue empty, new payloads are kept in memory again.
	submitTiered(t, b, "f", 2)
	inMem, onDisk = b.TieringStats()
	require.Equal(t, int64(4), inMem)
	require.Zero(t, onDisk)
}

func TestReplayFreezesQueuedJobs(t *testing.T) {
	t.Parallel()
	st := memory.New()
	b := startTiered(t, st, -1)
	seqs := submitTiered(t, b, "f", 10)
	b.Stop()

	// A stored job's submit time survives freezing; a job that was
	// retried is not frozen.
	var stored []store.Job
	require.NoError(t, st.Load(context.Background(), func(j store.Job) error {
		stored = append(stored, j)
		return nil
	}))
	stored[3].Retries = 2
	require.NoError(t, st.Save(context.Background(), stored[3:4]))

	b2 := startTiered(t, st.Reopen(), -1)
	frozen, inPages := frozenCounts(b2)
	require.Equal(t, 9, frozen)
	require.Equal(t, 1, inPages)
	for _, info := range b2.Jobs(0) {
		if info.Seq == stored[3].Seq {
			require.Equal(t, uint32(2), info.Retries)
		}
	}
	snap, ok := b2.Job(context.Background(), stored[5].Seq)
	require.True(t, ok)
	require.Equal(t, stored[5].Submitted, snap.Submitted.UnixNano())
	require.Equal(t, "queued", snap.State)

	requireDrained(t, b2, "f", seqs)
}

func TestDropFunctionWithFrozenJobs(t *testing.T) {
	t.Parallel()
	b := startTiered(t, memory.New(), -1)
	submitTiered(t, b, "f", 5)
	require.NoError(t, b.DropFunction(context.Background(), "f"))
	frozen, inPages := frozenCounts(b)
	require.Zero(t, frozen)
	require.Zero(t, inPages)
	require.Zero(t, b.JobCount())
}

func TestJobQueuedBehindFrozenOnesOutOfOrder(t *testing.T) {
	t.Parallel()
	clock := clocktest.New(testStart)
	b := New(Config{Store: memory.New(), MemoryBudget: -1, Clock: clock})
	require.NoError(t, b.Start(context.Background()))
	t.Cleanup(b.Stop)
	s := b.NewSession("client", &recorder{})
	later := bg("f", "", "later", Normal)
	later.RunAt = clock.Now().Add(time.Minute).Unix()
	r := submitAndWait(t, b, s, later)
	require.NoError(t, r.err)
	seqs := submitTiered(t, b, "f", 5)
	frozen, _ := frozenCounts(b)
	require.Equal(t, 5, frozen)

	// The scheduled job comes due after the frozen jobs were queued: its
	// sequence number is below theirs, so it waits behind them apart
	// (jobQueue.back), and so do the jobs queued after it.
	clock.Add(time.Minute)
	b.RunTimers()
	after := submitTiered(t, b, "f", 2)
	b.mu.Lock()
	require.Equal(t, 3, b.functions["f"].queues[Normal].back.n)
	b.mu.Unlock()
	require.NoError(t, b.CancelJob(context.Background(), []byte(b.Handle(after[0]))))
	require.Equal(t, 7, b.Status(context.Background())[0].Queued[Normal])

	got, payloads := drainOrder(t, b, "f")
	require.Equal(t, append(append(seqs, r.seq), after[1]), got)
	require.Equal(t, []string{"p0", "p1", "p2", "p3", "p4", "later", "p1"}, payloads)
	frozen, inPages := frozenCounts(b)
	require.Zero(t, frozen)
	require.Zero(t, inPages)
}

func TestJobsQueuedBeforeTheirWriteAreFrozenInOrder(t *testing.T) {
	t.Parallel()
	st := newMapStore()
	st.gate = make(chan struct{})
	b := startTiered(t, st, -1)
	s := b.NewSession("client", &recorder{})
	// All twenty are queued (dispatch before durable) before the first
	// write is done: the first job to be frozen takes the ones behind it
	// along as warm entries, frozen as their writes are done.
	acks := make(chan result, 20)
	for i := range 20 {
		b.Submit(s, bg("f", "", fmt.Sprintf("p%d", i), Normal), func(seq uint64, created bool, err error) {
			acks <- result{seq, created, err}
		})
	}
	close(st.gate)
	seqs := make([]uint64, 0, 20)
	for range 20 {
		r := <-acks
		require.NoError(t, r.err)
		seqs = append(seqs, r.seq)
	}
	slices.Sort(seqs)
	frozen, inPages := frozenCounts(b)
	require.Equal(t, 20, frozen)
	require.Zero(t, inPages)

	requireDrained(t, b, "f", seqs)
}

func TestDeepQueueFreezesPayloadsKeptInMemory(t *testing.T) {
	t.Parallel()
	st := newMapStore()
	st.gate = make(chan struct{})
	b := startTiered(t, st, 1<<20)
	s := b.NewSession("client", &recorder{})
	n := coldDepth + 100
	acks := make(chan result, n)
	size := int64(0)
	for i := range n {
		p := fmt.Sprintf("p%d", i)
		size += int64(len(p))
		b.Submit(s, bg("f", "", p, Normal), func(seq uint64, created bool, err error) {
			acks <- result{seq, created, err}
		})
	}
	close(st.gate)
	seqs := make([]uint64, 0, n)
	for range n {
		r := <-acks
		require.NoError(t, r.err)
		seqs = append(seqs, r.seq)
	}
	slices.Sort(seqs)
	frozen, inPages := frozenCounts(b)
	require.Greater(t, frozen, n-coldDepth-1, "the jobs beyond the queue's depth are frozen with their payload")
	require.Equal(t, n, frozen+inPages)
	inMem, onDisk := b.TieringStats()
	require.Equal(t, size, inMem, "every payload is in memory: the budget allows")
	require.Zero(t, onDisk)

	// A lookup thaws one with its payload; a cancel gives its payload's
	// bytes back to the budget.
	last := seqs[n-1]
	snap, ok := b.Job(context.Background(), seqs[n-2])
	require.True(t, ok)
	require.Equal(t, "queued", snap.State)
	frozen, _ = frozenCounts(b)
	require.Equal(t, n-1-inPages, frozen)
	require.NoError(t, b.CancelJob(context.Background(), []byte(b.Handle(last))))
	inMem, _ = b.TieringStats()
	require.Equal(t, size-int64(len(fmt.Sprintf("p%d", n-1))), inMem)

	requireDrained(t, b, "f", seqs[:n-1])
	inMem, onDisk = b.TieringStats()
	require.Zero(t, inMem)
	require.Zero(t, onDisk)
}

// A queue leaves the list of queues with frozen entries once its last
// one is gone (drained or dropped), so that a lookup of a job that is not
// live does not walk queues that hold none; ending a job looks only at the
// index of jobs in memory and thaws nothing.
func TestQueuesWithoutFrozenJobsAreNotWalked(t *testing.T) {
	t.Parallel()
	b := startTiered(t, memory.New(), -1)
	submitTiered(t, b, "a", 5)
	submitTiered(t, b, "b", 5)
	submitTiered(t, b, "c", 5)
	listed := func() int {
		b.mu.Lock()
		defer b.mu.Unlock()
		return len(b.jobs.cold)
	}
	require.Equal(t, 3, listed())
	drainOrder(t, b, "a")
	require.Equal(t, 2, listed(), "a's queue holds no frozen job any more")
	require.NoError(t, b.DropFunction(context.Background(), "b"))
	require.Equal(t, 1, listed(), "b's queue was dropped")
	frozen, _ := frozenCounts(b)
	require.Equal(t, 5, frozen, "c's jobs stay frozen")
	drainOrder(t, b, "c")
	require.Zero(t, listed())
	submitTiered(t, b, "a", 3)
	require.Equal(t, 1, listed(), "a's queue is listed again with new frozen jobs")
}

// A listing of live jobs reads frozen jobs without making a job of each:
// only those of the page are made, newest first, and the next page goes
// on where the cursor says.
func TestListingFrozenJobsMakesOnlyThePage(t *testing.T) { // not parallel: AllocsPerRun
	b := startTiered(t, memory.New(), -1)
	seqs := submitTiered(t, b, "f", 600)
	other := submitTiered(t, b, "g", 10)
	frozen, _ := frozenCounts(b)
	require.Equal(t, 610, frozen)
	ctx := context.Background()
	page, err := b.ListJobs(ctx, JobQuery{Function: "f", Limit: 10})
	require.NoError(t, err)
	var got []uint64
	for _, j := range page.Jobs {
		got = append(got, j.Seq)
		require.Equal(t, "queued", j.State)
	}
	want := slices.Clone(seqs[590:])
	slices.Reverse(want)
	require.Equal(t, want, got)
	next, err := b.ListJobs(ctx, JobQuery{Function: "f", Limit: 10, Cursor: page.Next})
	require.NoError(t, err)
	require.Equal(t, seqs[589], next.Jobs[0].Seq)
	all, err := b.ListJobs(ctx, JobQuery{Limit: 5})
	require.NoError(t, err)
	require.Equal(t, other[9], all.Jobs[0].Seq, "the newest of every function first")
	none, err := b.ListJobs(ctx, JobQuery{Function: "f", State: "running"})
	require.NoError(t, err)
	require.Empty(t, none.Jobs)
	allocs := testing.AllocsPerRun(5, func() {
		if _, err := b.ListJobs(ctx, JobQuery{Function: "f", Limit: 10}); err != nil {
			t.Fatal(err)
		}
	})
	require.Less(t, allocs, 200.0, "a page of 10 must not make a job of each of 600 frozen ones")
	frozen, _ = frozenCounts(b)
	require.Equal(t, 610, frozen, "listing thaws nothing")
}
