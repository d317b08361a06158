package bench

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestBucketsCoverEveryValue(t *testing.T) {
	t.Parallel()
	// Bucket bounds are contiguous, and bucketOf inverts bucketBounds.
	var next uint64
	for i := range numBuckets {
		lo, hi := bucketBounds(i)
		require.Equal(t, next, lo, "bucket %d starts where %d ended", i, i-1)
		require.GreaterOrEqual(t, hi, lo)
		require.Equal(t, i, bucketOf(lo), "bucketOf(lo of %d)", i)
		require.Equal(t, i, bucketOf(hi), "bucketOf(hi of %d)", i)
		if i >= linearMax {
			require.LessOrEqual(t, float64(hi-lo+1)/float64(lo), 1.0/(1<<subBits), "bucket %d too wide", i)
		}
		next = hi + 1
	}
	require.Equal(t, uint64(1)<<63, next, "the last bucket ends at the largest int64")
}

func TestQuantileMatchesSortedValues(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(1, 2))
	var h Histogram
	var vals []time.Duration
	for range 100000 {
		// Log-uniform from 100ns to 100ms, like real latencies.
		d := time.Duration(100 * math.Pow(10, rng.Float64()*6))
		vals = append(vals, d)
		h.Record(d)
	}
	slices.Sort(vals)
	require.Equal(t, uint64(len(vals)), h.Count())
	for _, q := range []float64{0, 0.01, 0.5, 0.9, 0.99, 0.999, 1} {
		rank := max(int(math.Ceil(q*float64(len(vals)))), 1)
		want := vals[rank-1]
		got := h.Quantile(q)
		require.InEpsilon(t, float64(want), float64(got), 1.0/(1<<subBits), "q=%v", q)
	}
	require.Equal(t, vals[len(vals)-1], h.Quantile(1), "p100 is the exact maximum")
	require.Equal(t, vals[0], h.Quantile(0), "p0 is the exact minimum")
	require.Equal(t, vals[len(vals)-1], h.Max())
}

func TestQuantileSmallValuesExact(t *testing.T) {
	t.Parallel()
	var h Histogram
	for v := range 100 {
		h.Record(time.Duration(v + 1))
	}
	require.Equal(t, time.Duration(50), h.Quantile(0.5))
	require.Equal(t, time.Duration(99), h.Quantile(0.99))
	require.Equal(t, time.Duration(1), h.Quantile(0.001))
}

func TestHistogramEmptyAndNegative(t *testing.T) {
	t.Parallel()
	var h Histogram
	require.Equal(t, time.Duration(0), h.Quantile(0.5))
	h.Record(-5)
	require.Equal(t, uint64(1), h.Count())
	require.Equal(t, time.Duration(0), h.Quantile(0.99))
}

func TestHistogramMerge(t *testing.T) {
	t.Parallel()
	var a, b, all Histogram
	for i := range 1000 {
		d := time.Duration(i) * time.Microsecond
		all.Record(d)
		if i%3 == 0 {
			a.Record(d)
		} else {
			b.Record(d)
		}
	}
	var empty Histogram
	a.Merge(&empty)
	a.Merge(&b)
	require.Equal(t, all, a)
	empty.Merge(&all)
	require.Equal(t, all, empty, "merging into an empty histogram copies it")
}
