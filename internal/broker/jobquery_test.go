package broker

import (
	"context"
	"fmt"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/internal/store/memory"
)

// Paging with the cursor visits every record once, newest first: the live
// jobs, then the ended ones.
func TestListJobsCursorPaging(t *testing.T) {
	t.Parallel()
	tb, client, _, ended := setupEnded(t, 23)
	var live []uint64
	for range 7 {
		live = append(live, tb.submit(t, client, bg("f", "", "x", Normal)).seq)
	}
	tb.submit(t, client, bg("other", "", "x", Normal))

	var got []uint64
	var states []string
	cursor := ""
	for pages := 0; ; pages++ {
		require.Less(t, pages, 20)
		page, err := tb.b.ListJobs(context.Background(), JobQuery{Function: "f", Limit: 5, Cursor: cursor})
		require.NoError(t, err)
		require.LessOrEqual(t, len(page.Jobs), 5)
		for _, j := range page.Jobs {
			got = append(got, j.Seq)
			states = append(states, j.State)
		}
		if page.Next == "" {
			break
		}
		cursor = page.Next
	}
	var want []uint64
	for i := len(live) - 1; i >= 0; i-- {
		want = append(want, live[i])
	}
	for i := len(ended) - 1; i >= 0; i-- {
		want = append(want, ended[i])
	}
	require.Equal(t, want, got)
	require.Equal(t, "queued", states[0])
	require.Equal(t, FinalComplete, states[len(states)-1])

	page, err := tb.b.ListJobs(context.Background(), JobQuery{State: "queued"})
	require.NoError(t, err)
	require.Len(t, page.Jobs, 8, "every function")
	page, err = tb.b.ListJobs(context.Background(), JobQuery{Function: "f", State: FinalComplete, Limit: 1000})
	require.NoError(t, err)
	require.Len(t, page.Jobs, 23)
	require.Empty(t, page.Next)

	_, err = tb.b.ListJobs(context.Background(), JobQuery{State: "sleeping"})
	require.ErrorIs(t, err, ErrBadQuery)
	_, err = tb.b.ListJobs(context.Background(), JobQuery{Cursor: "X12"})
	require.ErrorIs(t, err, ErrBadQuery)
}

func TestCountJobs(t *testing.T) {
	t.Parallel()
	tb := setup(t, Config{DefaultPolicy: Policy{MaxAttempts: 3, Backoff: Backoff{Initial: time.Hour, Max: time.Hour}}})
	client, worker := tb.clientAndWorker("f")
	tb.completeOne(t, client, worker, "f")
	// One failing (retry-wait), one running, one scheduled, two queued.
	seq := tb.submit(t, client, bg("f", "", "a", Normal)).seq
	a := tb.grab(t, worker)
	require.Equal(t, seq, a.Seq)
	require.NoError(t, tb.b.Finish(worker, seq, Fail, nil))
	tb.submit(t, client, bg("f", "", "b", Normal))
	tb.grab(t, worker)
	sched := bg("f", "", "c", Normal)
	sched.RunAt = tb.clock.Now().Add(time.Hour).Unix()
	tb.submit(t, client, sched)
	tb.clock.Add(3 * time.Second)
	tb.submit(t, client, bg("f", "", "d", Normal))
	tb.submit(t, client, bg("f", "", "e", Low))

	counts := tb.b.CountJobs(context.Background())
	require.Len(t, counts, 1)
	c := counts[0]
	require.Equal(t, map[string]int{"queued": 2, "running": 1, "scheduled": 1, "retry-wait": 1}, c.Live)
	require.Equal(t, map[string]int{FinalComplete: 1}, c.Ended)
	require.Equal(t, tb.clock.Now(), c.OldestQueued)
}

// BenchmarkListJobs lists a page of 50 records of one function while the
// history keeps 1M records of ended jobs (and 10k live jobs are queued):
// the cost of a page must not grow with what is kept.
func BenchmarkListJobs(b *testing.B) {
	for _, kept := range []int{10_000, 1_000_000} {
		b.Run(fmt.Sprintf("records=%d", kept), func(b *testing.B) {
			var p Policy
			if err := p.Set("history_max", strconv.Itoa(kept)); err != nil {
				b.Fatal(err)
			}
			br := New(Config{DefaultPolicy: p})
			client := br.NewSession("c", discardOutbox{})
			worker := br.NewSession("w", discardOutbox{})
			br.CanDo(worker, []byte("fn"), 0)
			done := func(uint64, bool, error) {}
			for range kept {
				br.Submit(client, SubmitParams{Function: []byte("fn"), Payload: []byte("p"), Background: true}, done)
				a, _ := br.Grab(worker)
				if err := br.Finish(worker, a.Seq, Complete, nil); err != nil {
					b.Fatal(err)
				}
			}
			for range 10_000 {
				br.Submit(client, SubmitParams{Function: []byte("other"), Payload: []byte("p"), Background: true}, done)
			}
			runtime.GC()
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			heap := float64(ms.HeapAlloc) / float64(1<<20)
			b.ResetTimer()
			for b.Loop() {
				page, err := br.ListJobs(context.Background(), JobQuery{Function: "fn", State: FinalComplete, Limit: 50})
				if err != nil || len(page.Jobs) != 50 {
					b.Fatalf("%d jobs, %v", len(page.Jobs), err)
				}
				page, err = br.ListJobs(context.Background(), JobQuery{Function: "fn", State: FinalComplete, Limit: 50, Cursor: page.Next})
				if err != nil || len(page.Jobs) != 50 {
					b.Fatalf("%d jobs, %v", len(page.Jobs), err)
				}
			}
			b.ReportMetric(heap, "heap-MiB")
		})
	}
}

// A page of live jobs looks at a bounded number of them under each hold of
// the lock, however many there are, and releases it between holds; a
// filter that matches few jobs still finds them, page after page, in
// order.
func TestListJobsLiveInShortHolds(t *testing.T) {
	t.Parallel()
	tb := setup(t, Config{})
	c, _ := tb.session()
	const n = 6 * listChunk
	var rare []uint64 // of function "rare": the oldest three and one in the middle
	for i := range n {
		fn := "f"
		if i < 3 || i == n/2 {
			fn = "rare"
		}
		r := tb.submit(t, c, bg(fn, "", "p", Normal))
		require.NoError(t, r.err)
		if fn == "rare" {
			rare = append([]uint64{r.seq}, rare...)
		}
	}
	var holds, most int
	tb.b.listHeld = func(looked int) {
		holds++
		most = max(most, looked)
	}
	page, err := tb.b.ListJobs(context.Background(), JobQuery{Limit: 10})
	require.NoError(t, err)
	require.Len(t, page.Jobs, 10)
	require.NotEmpty(t, page.Next)
	require.LessOrEqual(t, most, 2*listChunk, "the first page looks at a bounded number of jobs")

	holds, most = 0, 0
	var got []uint64
	cursor := ""
	for pages := 0; ; pages++ {
		require.Less(t, pages, 10)
		page, err := tb.b.ListJobs(context.Background(), JobQuery{Function: "rare", Limit: 2, Cursor: cursor})
		require.NoError(t, err)
		for _, j := range page.Jobs {
			got = append(got, j.Seq)
		}
		if page.Next == "" {
			break
		}
		cursor = page.Next
	}
	require.Equal(t, rare, got, "every job of the filter once, newest first")
	require.LessOrEqual(t, most, 2*listChunk, "each hold of the lock looks at a bounded number of jobs")
	require.Greater(t, holds, 3, "the walk over all jobs took several holds")
}

// Frozen jobs are listed with the others, newest first, also those thawed
// (a lookup by handle) while the page is gathered.
func TestListJobsFrozenInShortHolds(t *testing.T) {
	t.Parallel()
	b := startTiered(t, memory.New(), -1)
	s := b.NewSession("client", &recorder{})
	const n = 3 * listChunk
	// The oldest three of function "rare" and jobsPageSize more of "f",
	// frozen, then jobs of "f" with a unique (never frozen: they are in
	// the index's pages).
	var seqs, rare []uint64 // newest first
	frozenN := 0
	for i := range n {
		fn, unique := "f", ""
		switch {
		case i < 3:
			fn = "rare"
		case i >= 3+jobPageSize:
			unique = fmt.Sprint("u", i)
		}
		r := submitAndWait(t, b, s, bg(fn, unique, "p", Normal))
		require.NoError(t, r.err)
		seqs = append([]uint64{r.seq}, seqs...)
		if fn == "rare" {
			rare = append([]uint64{r.seq}, rare...)
		}
		if unique == "" {
			frozenN++
		}
	}
	frozen, _ := frozenCounts(b)
	require.Equal(t, frozenN, frozen)
	holds := 0
	b.listHeld = func(looked int) {
		require.LessOrEqual(t, looked, 2*listChunk)
		if holds++; holds == 1 {
			// Between holds, a lookup by handle thaws a job ahead.
			require.True(t, b.GetStatus([]byte(b.Handle(rare[1]))).Known)
		}
	}
	page, err := b.ListJobs(context.Background(), JobQuery{Function: "rare", Limit: 10})
	require.NoError(t, err)
	var got []uint64
	for _, j := range page.Jobs {
		got = append(got, j.Seq)
		require.Equal(t, "queued", j.State)
	}
	require.Equal(t, rare, got, "every job once, frozen or thawed meanwhile, newest first")
	require.Greater(t, holds, 2)
	frozen, _ = frozenCounts(b)
	require.Equal(t, frozenN-1, frozen)

	b.listHeld = nil
	got = got[:0]
	for cursor := ""; ; {
		page, err := b.ListJobs(context.Background(), JobQuery{Limit: 700, Cursor: cursor})
		require.NoError(t, err)
		for _, j := range page.Jobs {
			got = append(got, j.Seq)
		}
		if cursor = page.Next; cursor == "" {
			break
		}
	}
	require.Equal(t, seqs, got, "paging lists every job once, newest first")
}

// Paging finds the live jobs below a wide gap of ended ones, and ends.
func TestListJobsAcrossAGap(t *testing.T) {
	t.Parallel()
	tb := setup(t, Config{})
	c, _ := tb.session()
	var want []uint64 // newest first
	submit := func(keep bool) {
		r := tb.submit(t, c, bg("f", "", "p", Normal))
		require.NoError(t, r.err)
		if keep {
			want = append([]uint64{r.seq}, want...)
		} else {
			require.NoError(t, tb.b.CancelJob(context.Background(), []byte(tb.b.Handle(r.seq))))
		}
	}
	for i := range 3*listChunk + 10*listChunk + 3*listChunk {
		submit(i < 3*listChunk || i >= 13*listChunk)
	}
	var got []uint64
	for cursor, pages := "", 0; ; pages++ {
		require.Less(t, pages, 100)
		page, err := tb.b.ListJobs(context.Background(), JobQuery{Limit: 700, Cursor: cursor, State: "queued"})
		require.NoError(t, err)
		for _, j := range page.Jobs {
			got = append(got, j.Seq)
		}
		if cursor = page.Next; cursor == "" {
			break
		}
	}
	require.Equal(t, want, got)
}
