package broker

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/internal/store/memory"
)

func TestGathererRecordsOnlyRoundsWithSubmits(t *testing.T) {
	t.Parallel()
	var g gatherer
	g.done(5, time.Millisecond)
	g.done(0, time.Hour) // a round of deletes only
	require.Equal(t, 5, g.last)
	require.Equal(t, time.Millisecond, g.took)
}

// TestGathererLimit: the wait is at most half the last write's duration
// and never more than maxGather (2 ms), and none after a round of one.
func TestGathererLimit(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		last int
		took time.Duration
		want time.Duration
	}{
		{last: 3, took: time.Millisecond, want: 500 * time.Microsecond},
		{last: 3, took: 3 * time.Millisecond, want: 1500 * time.Microsecond},
		{last: 3, took: time.Hour, want: 2 * time.Millisecond},
		{last: 1, took: time.Hour, want: 0},
		{last: 0, took: 0, want: 0},
	} {
		g := gatherer{last: tc.last, took: tc.took}
		require.Equal(t, tc.want, g.limit(), "last %d took %v", tc.last, tc.took)
	}
}

// TestGathererWaitEnds: while fewer submits wait than the last round
// carried, the round waits for its limit and then goes on, even after a
// write that took an hour.
func TestGathererWaitEnds(t *testing.T) {
	t.Parallel()
	b := New(Config{Clock: newTestClock()})
	ctx := context.Background()
	jobs := func(n int) {
		b.mu.Lock()
		b.pendingSaves = make([]*job, n)
		b.mu.Unlock()
	}
	// timed runs the wait, failing if it has not ended after a second
	// (the limit is 2 ms; an unbounded wait would take half an hour).
	timed := func(ctx context.Context, g *gatherer) time.Duration {
		t.Helper()
		start := time.Now()
		done := make(chan struct{})
		go func() { g.wait(ctx, b); close(done) }()
		select {
		case <-done:
		case <-time.After(time.Second):
			t.Fatalf("the wait (last %d, took %v) has not ended after a second", g.last, g.took)
		}
		return time.Since(start)
	}
	jobs(1)
	g := &gatherer{last: 3, took: time.Hour}
	require.GreaterOrEqual(t, timed(ctx, g), maxGather, "one submit of three waits for the others until the bound")
	g = &gatherer{last: 3, took: time.Millisecond}
	require.GreaterOrEqual(t, timed(ctx, g), 500*time.Microsecond, "half the last write")

	// These return without waiting for the bound: enough submits wait,
	// none waits (a round of deletes), the last round carried one, or ctx
	// ended. Only that they end is checked: how soon depends on the
	// machine.
	jobs(3)
	timed(ctx, &gatherer{last: 3, took: time.Hour})
	jobs(0)
	timed(ctx, &gatherer{last: 3, took: time.Hour})
	jobs(1)
	timed(ctx, &gatherer{last: 1, took: time.Hour})
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	timed(cctx, &gatherer{last: 3, took: time.Hour})
	jobs(0)
}

// TestGathererWaitsForJobsAboutToEnd: a round waits while a job it would
// write is about to be taken by a worker, and ends its wait as the job
// ends (its submitter answered then, without a write).
func TestGathererWaitsForJobsAboutToEnd(t *testing.T) {
	t.Parallel()
	b := New(Config{Store: memory.New()}) // not started: the test is the committer
	c := b.NewSession("client", discardOutbox{})
	w := b.NewSession("worker", discardOutbox{})
	b.CanDo(w, []byte("f"), 0)
	answered := make(chan error, 1)
	b.Submit(c, SubmitParams{Function: []byte("f"), Payload: []byte("p"), Background: true},
		func(_ uint64, _ bool, err error) { answered <- err })

	g := &gatherer{early: true, last: 1, took: time.Hour, bound: time.Hour}
	done := make(chan struct{})
	go func() { g.wait(context.Background(), b); close(done) }()
	select {
	case <-done:
		t.Fatal("the round did not wait for a job that a worker is about to take")
	case <-time.After(50 * time.Millisecond):
	}
	a, ok := b.Grab(w)
	require.True(t, ok)
	require.NoError(t, b.Finish(w, a.Seq, Complete, nil))
	select {
	case err := <-answered:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("the submitter was not answered as the job ended")
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the wait went on after the job ended")
	}
}

// requireUnsavedCounts checks the counts runningUnsavedLocked reads
// against a look through every job waiting for its first write.
// It returns the counts of jobs held and queued.
func requireUnsavedCounts(t *testing.T, b *Broker, step string) (held, queuedJobs int) {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	queued := map[*function]int{}
	for _, j := range b.pendingSaves {
		if j.saveState() != saveQueued {
			continue
		}
		switch j.state {
		case stateRunning:
			held++
		case stateQueued:
			queued[j.fn]++
			queuedJobs++
		}
	}
	require.Equal(t, held, b.unsaved.held, "held by workers, after %s", step)
	got := map[*function]int{}
	for i, f := range b.unsaved.fns {
		require.Equal(t, i+1, f.unsavedAt, "the place of %s, after %s", f.name, step)
		got[f] = f.unsavedQueued
	}
	require.Equal(t, queued, got, "queued per function, after %s", step)
	return held, queuedJobs
}

// TestUnsavedCountsFollowJobs: the counts of jobs waiting for their first
// write that are held by workers or queued stay those a look through the
// waiting jobs finds, through submits, grabs, completions, failures with
// and without attempts left, workers that leave (their jobs taken back),
// ordered jobs and rounds the committer takes and settles.
func TestUnsavedCountsFollowJobs(t *testing.T) {
	t.Parallel()
	b := New(Config{Store: memory.New(), Clock: newTestClock()}) // not started: the test is the committer
	b.SetPolicy("p", Policy{MaxAttempts: 2})
	c := b.NewSession("client", discardOutbox{})
	fns := []string{"f", "p", "g"}
	var workers []*Session
	newWorker := func() {
		w := b.NewSession("worker", discardOutbox{})
		for _, f := range fns[:1+len(workers)%len(fns)] {
			b.CanDo(w, []byte(f), 0)
		}
		workers = append(workers, w)
	}
	for range 4 {
		newWorker()
	}
	held := map[*Session][]uint64{}
	rnd := rand.New(rand.NewPCG(1, 2))
	var buf commitBuffers
	var sawHeld, sawQueued bool
	for i := range 3000 {
		var step string
		switch op := rnd.IntN(10); {
		case op < 4:
			p := SubmitParams{Function: []byte(fns[rnd.IntN(len(fns))]), Payload: []byte("x"), Background: true}
			if rnd.IntN(4) == 0 {
				p.OrderingKey = "k"
			}
			b.Submit(c, p, func(uint64, bool, error) {})
			step = "a submit"
		case op < 6:
			w := workers[rnd.IntN(len(workers))]
			if a, ok := b.Grab(w); ok {
				held[w] = append(held[w], a.Seq)
			}
			step = "a grab"
		case op < 8:
			w := workers[rnd.IntN(len(workers))]
			if n := len(held[w]); n > 0 {
				seq := held[w][n-1]
				held[w] = held[w][:n-1]
				o := Complete
				if rnd.IntN(3) == 0 {
					o = Fail
				}
				require.NoError(t, b.Finish(w, seq, o, nil))
			}
			step = "a job's end"
		case op < 9:
			k := rnd.IntN(len(workers))
			b.CloseSession(workers[k])
			delete(held, workers[k])
			workers = append(workers[:k], workers[k+1:]...)
			newWorker()
			step = "a worker leaving"
		default:
			b.takeBatch(&buf)
			b.mu.Lock()
			b.settleBatchLocked(buf.saves, nil)
			b.mu.Unlock()
			clear(buf.saves)
			step = "a round"
		}
		h, q := requireUnsavedCounts(t, b, fmt.Sprintf("%s (step %d)", step, i))
		sawHeld, sawQueued = sawHeld || h > 0, sawQueued || q > 0
	}
	require.True(t, sawHeld && sawQueued, "the steps made jobs waiting for their write held and queued")
}

// BenchmarkJobEndsDuringGather: jobs of one round end one by one while the
// committer waits for them. Each end asks whether a job of the round is
// still held by a worker; the ns per job end must not grow with the
// round's size.
func BenchmarkJobEndsDuringGather(bb *testing.B) {
	for _, n := range []int{100, 1000, 10000} {
		bb.Run(fmt.Sprintf("jobs=%d", n), func(bb *testing.B) {
			for range bb.N {
				bb.StopTimer()
				b := New(Config{Store: memory.New()}) // not started: nothing is written
				c := b.NewSession("client", discardOutbox{})
				ws := make([]*Session, n)
				seqs := make([]uint64, n)
				for i := range ws {
					ws[i] = b.NewSession("worker", discardOutbox{})
					b.CanDo(ws[i], []byte("f"), 0)
				}
				for range n {
					b.Submit(c, SubmitParams{Function: []byte("f"), Payload: []byte("x"), Background: true},
						func(uint64, bool, error) {})
				}
				for i, w := range ws {
					a, ok := b.Grab(w)
					if !ok {
						bb.Fatal("no job to grab")
					}
					seqs[i] = a.Seq
				}
				b.mu.Lock()
				b.gatherRunning = true // the committer waits for these jobs
				b.mu.Unlock()
				bb.StartTimer()
				for i, w := range ws {
					if err := b.Finish(w, seqs[i], Complete, nil); err != nil {
						bb.Fatal(err)
					}
				}
			}
			bb.ReportMetric(float64(bb.Elapsed().Nanoseconds())/float64(bb.N*n), "ns/end")
		})
	}
}
