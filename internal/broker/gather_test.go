package broker

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/internal/clocktest"
)

func TestGathererRecordsOnlyRoundsWithSubmits(t *testing.T) {
	t.Parallel()
	var g gatherer
	g.done(5, time.Millisecond)
	g.done(0, time.Hour) // a round of deletes only
	require.Equal(t, 5, g.last)
	require.Equal(t, time.Millisecond, g.took)
}

func TestGathererWaitEnds(t *testing.T) {
	t.Parallel()
	b := New(Config{Clock: clocktest.New(time.Unix(1_700_000_000, 0))})
	ctx := context.Background()
	jobs := func(n int) {
		b.mu.Lock()
		b.pendingSaves = make([]*job, n)
		b.mu.Unlock()
	}
	// Each of these returns: enough submits wait, none waits (a round of
	// deletes), the last round carried one, or the bound (at most
	// maxGather) passes while fewer wait.
	jobs(3)
	(&gatherer{last: 3, took: time.Hour}).wait(ctx, b)
	jobs(0)
	(&gatherer{last: 3, took: time.Hour}).wait(ctx, b)
	jobs(1)
	(&gatherer{last: 1, took: time.Hour}).wait(ctx, b)
	(&gatherer{last: 3, took: time.Hour}).wait(ctx, b)
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	(&gatherer{last: 3, took: time.Hour}).wait(cctx, b)
	jobs(0)
}
