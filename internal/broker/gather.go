package broker

import (
	"context"
	"time"
)

// gatherer holds a commit round back briefly when fewer submits wait than
// the last round carried. The submitters that round answered are about to
// send their next jobs; waiting for them lets one write carry them all
// instead of splitting them over alternating half-full rounds, which halves
// the rate of clients that wait for each acknowledgement (the idea behind
// PostgreSQL's commit_delay). Only the committer goroutine uses it.
type gatherer struct {
	// last is the number of submits the last round carried, took how long
	// its write lasted.
	last int
	took time.Duration
}

// maxGather bounds the wait: at most half the last write's duration and
// never more than this.
const maxGather = 2 * time.Millisecond

// gatherPoll is how often the wait looks at the number of waiting submits.
const gatherPoll = 50 * time.Microsecond

// done records a round that carried n submits and whose write took d.
func (g *gatherer) done(n int, d time.Duration) {
	if n > 0 {
		g.last, g.took = n, d
	}
}

// limit is the longest the next round may wait: half the last write's
// duration, at most maxGather, and nothing when the last round carried at
// most one submit.
func (g *gatherer) limit() time.Duration {
	if g.last <= 1 {
		return 0
	}
	return min(g.took/2, maxGather)
}

// wait returns once as many submits wait as the last round carried, or
// after half the last write's duration (at most maxGather), or when ctx
// ends.
func (g *gatherer) wait(ctx context.Context, b *Broker) {
	limit := g.limit()
	if limit <= 0 {
		return
	}
	deadline := time.Now().Add(limit)
	for {
		b.mu.Lock()
		n := len(b.pendingSaves)
		b.mu.Unlock()
		if n >= g.last || n == 0 || ctx.Err() != nil || !time.Now().Before(deadline) {
			return
		}
		time.Sleep(gatherPoll)
	}
}
