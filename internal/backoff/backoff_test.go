package backoff

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestNext(t *testing.T) {
	t.Parallel()
	const lo, hi = 100 * time.Millisecond, time.Second
	got := []time.Duration{}
	d := time.Duration(0)
	for range 6 {
		d = Next(d, lo, hi)
		got = append(got, d)
	}
	want := []time.Duration{lo, 2 * lo, 4 * lo, 8 * lo, hi, hi}
	require.Equal(t, want, got)
}

func TestJitter(t *testing.T) {
	t.Parallel()
	for _, d := range []time.Duration{0, 1, 2, 3, 101 * time.Millisecond, 10 * time.Second} {
		for range 200 {
			w := Jitter(d)
			require.GreaterOrEqual(t, w, d/2, "Jitter(%v)", d)
			require.LessOrEqual(t, w, d, "Jitter(%v)", d)
		}
	}
}
