package pebble

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestLogLimiter(t *testing.T) {
	t.Parallel()
	now := time.Unix(1_700_000_000, 0)
	l := logLimiter{period: 10 * time.Second, now: func() time.Time { return now }}
	n, ok := l.allow("a")
	require.True(t, ok)
	require.Zero(t, n)
	for range 999 {
		_, ok := l.allow("a")
		require.False(t, ok)
	}
	_, ok = l.allow("b")
	require.True(t, ok, "each kind has its own period")
	now = now.Add(10 * time.Second)
	n, ok = l.allow("a")
	require.True(t, ok)
	require.Equal(t, 999, n, "the next line counts the suppressed ones")
	_, ok = l.allow("a")
	require.False(t, ok)
}
