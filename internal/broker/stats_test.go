package broker

import (
	"sort"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// A histogram counts each observation in the bucket of the first bound
// (in seconds) at least as large: on each bound, a nanosecond either side
// of it, and far past the last.
func TestHistogramBuckets(t *testing.T) {
	t.Parallel()
	ds := []time.Duration{0, 1, time.Hour * 1000}
	for _, s := range HistogramBounds {
		d := time.Duration(s * float64(time.Second))
		ds = append(ds, d-1, d, d+1)
	}
	for _, d := range ds {
		var h Histogram
		h.observe(d)
		want := sort.SearchFloat64s(HistogramBounds, d.Seconds())
		require.Equal(t, uint64(1), h.Counts[want], "%v goes to bucket %d", d, want)
		require.Equal(t, uint64(1), h.Count)
		require.Equal(t, d.Seconds(), h.Sum)
	}
}
