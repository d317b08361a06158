// Package backoff computes how long the client and worker libraries wait
// before they try again to reach a job server that could not be reached.
//
// API is not stable: this package is internal to Gearwork.
package backoff

import (
	"math/rand/v2"
	"time"
)

// Next returns the backoff after one more failed attempt: twice prev,
// but at least lo and at most hi. A prev of 0 (no failure yet) gives lo.
// It requires 0 < lo <= hi.
func Next(prev, lo, hi time.Duration) time.Duration {
	return min(max(2*prev, lo), hi)
}

// Jitter returns a random wait between half of d and d, both included, so
// that processes that lost a server together do not come back together.
// It is safe for concurrent use; d must not be negative.
func Jitter(d time.Duration) time.Duration {
	return d/2 + rand.N(d/2+1)
}
