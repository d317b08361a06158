package gearmanapi

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestReturnMemory: memory released by idle connections is returned to
// the system once releases settle: a large amount at once, the small tail
// of a burst too, but that at most every returnMemorySmallEvery.
func TestReturnMemory(t *testing.T) {
	t.Parallel()
	now := int64(time.Hour)
	s := &Server{lastReturn: now}
	tick := func(add int64) (returned bool) {
		s.releasedBytes.Add(add)
		before := s.lastReturn
		now += int64(500 * time.Millisecond)
		s.returnMemory(now)
		return s.lastReturn != before
	}
	require.False(t, tick(32<<20), "releases still coming")
	require.True(t, tick(0), "settled: 32 MiB returned")
	require.False(t, tick(2<<20))
	require.False(t, tick(0), "a small tail waits for returnMemorySmallEvery")
	for range int(returnMemorySmallEvery/(500*time.Millisecond)) - 3 {
		require.False(t, tick(0))
	}
	require.True(t, tick(0), "then it is returned")
	require.False(t, tick(0), "nothing left")
	require.False(t, tick(100<<10))
	for range 100 {
		require.False(t, tick(0), "less than returnMemorySmall stays")
	}
}
