package broker

import (
	"context"
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
