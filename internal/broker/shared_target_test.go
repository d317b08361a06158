package broker

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestClaimTargetFollowsTheFinishRate(t *testing.T) {
	t.Parallel()
	clock := newTestClock()
	c := &sharedMode{rates: make(map[*function]*finishRate), now: clock.Now}
	f := &function{workers: 16}
	require.Equal(t, 128, c.claimTargetLocked(f), "8 jobs per worker before any job finished")

	// Slow jobs (a second each): 8 per worker is more than the horizon.
	clock.Add(time.Second)
	f.counters.Completed += 16
	require.Equal(t, 128, c.claimTargetLocked(f))

	// Fast jobs: a quarter of a second of work, at most claimMax.
	clock.Add(rateWindow)
	f.counters.Completed += 400 // 4000 jobs/s: the rate becomes (16+4000)/2
	require.Equal(t, int(2008*claimHorizon.Seconds()), c.claimTargetLocked(f))
	clock.Add(rateWindow / 2)
	f.counters.Failed += 10000
	require.Equal(t, int(2008*claimHorizon.Seconds()), c.claimTargetLocked(f), "measured again only after a window")
	clock.Add(rateWindow / 2)
	require.Equal(t, claimMax, c.claimTargetLocked(f))

	// Idle for a while: the rate starts again.
	clock.Add(time.Minute)
	require.Equal(t, 128, c.claimTargetLocked(f))

	// Few workers: at least 32.
	require.Equal(t, 32, c.claimTargetLocked(&function{workers: 1}))
}
