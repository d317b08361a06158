package bench

import (
	"math"
	"math/bits"
	"time"
)

// subBits sets the histogram's precision: every power of two is split into
// 2^subBits linear buckets, so a recorded value is known to within 1/64 of
// itself. Values below 2^(subBits+1) nanoseconds are exact.
const subBits = 6

const (
	linearMax = 1 << (subBits + 1) // values below this have their own bucket
	// numBuckets covers every non-negative int64.
	numBuckets = linearMax + (63-subBits-1)*(1<<subBits)
)

// Histogram records durations with a bounded relative error (1/64) in a
// fixed amount of memory, like an HDR histogram. The zero value is empty and
// ready to use. It is not safe for concurrent use: give each goroutine its
// own and Merge them at the end.
type Histogram struct {
	counts   [numBuckets]uint64
	n        uint64
	min, max int64
}

// bucketOf returns the bucket of a non-negative value.
func bucketOf(v uint64) int {
	if v < linearMax {
		return int(v)
	}
	s := bits.Len64(v) - subBits - 1 // >= 1
	m := v >> s                      // in [2^subBits, 2^(subBits+1))
	return linearMax + (s-1)<<subBits + int(m-1<<subBits)
}

// bucketBounds returns the smallest and largest value of bucket i.
func bucketBounds(i int) (lo, hi uint64) {
	if i < linearMax {
		return uint64(i), uint64(i)
	}
	i -= linearMax
	s := i>>subBits + 1
	m := uint64(i&(1<<subBits-1)) + 1<<subBits
	lo = m << s
	hi = lo + (1 << s) - 1
	return lo, hi
}

// Record adds one duration. Negative durations count as zero.
func (h *Histogram) Record(d time.Duration) {
	v := max(int64(d), 0)
	h.counts[bucketOf(uint64(v))]++
	if h.n == 0 || v < h.min {
		h.min = v
	}
	if v > h.max {
		h.max = v
	}
	h.n++
}

// Merge adds every value recorded in o to h.
func (h *Histogram) Merge(o *Histogram) {
	if o.n == 0 {
		return
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	if h.n == 0 || o.min < h.min {
		h.min = o.min
	}
	h.max = max(h.max, o.max)
	h.n += o.n
}

// Count returns the number of recorded values.
func (h *Histogram) Count() uint64 { return h.n }

// Max returns the largest recorded value, or 0 when empty.
func (h *Histogram) Max() time.Duration { return time.Duration(h.max) }

// Quantile returns the value below or at which a fraction q (0 ≤ q ≤ 1) of
// the recorded values lie: the smallest bucket holding the ceil(q·n)-th
// value, reported as that bucket's midpoint and clamped to the recorded
// minimum and maximum. The result is within 1/64 of the exact order
// statistic. It returns 0 when the histogram is empty.
func (h *Histogram) Quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	q = min(max(q, 0), 1)
	rank := max(uint64(math.Ceil(q*float64(h.n))), 1)
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			lo, hi := bucketBounds(i)
			v := int64(lo + (hi-lo)/2)
			return time.Duration(min(max(v, h.min), h.max))
		}
	}
	return time.Duration(h.max)
}
