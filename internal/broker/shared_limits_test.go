package broker_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/internal/broker"
	"github.com/gearwork/gearwork/internal/store/postgres"
	"github.com/gearwork/gearwork/internal/store/postgres/pgtest"
	"github.com/gearwork/gearwork/internal/testwait"
)

// These tests check that pauses, ordered queues and concurrency limits
// hold across several brokers in shared mode on one schema.

// openSharedPolicy is openShared with per-function policies.
func openSharedPolicy(t *testing.T, url, name string, ttl time.Duration, pol map[string]broker.Policy) (*broker.Broker, *postgres.Store) {
	t.Helper()
	return openSharedConfig(t, url, name, ttl, broker.Config{Policies: pol})
}

// runWorker registers a worker for fn on b and runs every job it is given
// through each until ctx ends. It returns when the worker has stopped.
func runWorker(ctx context.Context, t *testing.T, b *broker.Broker, name, fn string, each func(broker.Assignment)) {
	out := newOutbox()
	w := b.NewSession(name, out)
	defer b.CloseSession(w)
	if err := b.CanDo(w, []byte(fn), 0); err != nil {
		// Run in goroutines of its own: the test fails, the worker stops.
		t.Errorf("%s: CAN_DO %s: %v", name, fn, err)
		return
	}
	for ctx.Err() == nil {
		a, ok := b.Grab(w)
		if ok {
			each(a)
			if err := b.Finish(w, a.Seq, broker.Complete, nil); err != nil {
				t.Errorf("%s: finish: %v", name, err)
			}
			continue
		}
		b.PreSleep(w)
		select {
		case <-out.signal:
		case <-ctx.Done():
		}
	}
}

func paused(b *broker.Broker, fn string) bool {
	for _, p := range b.Policies() {
		if p.Name == fn {
			return p.Paused
		}
	}
	return false
}

func TestSharedPauseOnOneServerStopsTheOthers(t *testing.T) {
	t.Parallel()
	url, a, b := openPair(t)
	c, _ := openShared(t, url, "c", 0)

	// b's worker registers but does not grab: b claims the jobs and holds
	// them queued.
	w, out := newWorker(t, b, "wb", "f")
	client := c.NewSession("client", newOutbox())
	const n = 5
	for i := range n {
		require.NoError(t, submit(t, c, client, bgJob("f", "", fmt.Sprint(i))).err)
	}
	testwait.Until(t, "b holds the jobs", func() bool { return b.JobCount() == n })

	a.Pause("f", time.Time{})
	testwait.Until(t, "b applies a's pause", func() bool { return paused(b, "f") })
	testwait.Until(t, "c applies a's pause", func() bool { return paused(c, "f") })
	_, ok := b.Grab(w)
	require.False(t, ok, "a function paused on a is paused on b: its held jobs stay queued")

	// A job submitted while paused is not claimed either: once b has
	// claimed a job of g submitted after it, it has looked and left f's
	// job alone.
	require.NoError(t, submit(t, c, client, bgJob("f", "", "late")).err)
	wg := b.NewSession("wg", newOutbox())
	require.NoError(t, b.CanDo(wg, []byte("g"), 0))
	require.NoError(t, submit(t, c, client, bgJob("g", "", "marker")).err)
	testwait.Until(t, "b claims g's job", func() bool { return b.JobCount() == n+1 })
	_, ok = b.Grab(w)
	require.False(t, ok)
	var unclaimed int
	pgtest.QueryRow(t, url, `SELECT count(*) FROM gearwork_jobs WHERE function = 'f' AND owner IS NULL`, &unclaimed)
	require.Equal(t, 1, unclaimed, "the job submitted during the pause is not claimed")

	// Resuming on c lets b run everything.
	require.True(t, c.Resume("f"))
	testwait.Until(t, "b applies c's resume", func() bool { return !paused(b, "f") })
	got := drain(t, b, w, out, n+1)
	require.Len(t, got, n+1)
	testwait.Until(t, "a applies c's resume too", func() bool { return !paused(a, "f") })
	var stored int
	pgtest.QueryRow(t, url, `SELECT count(*) FROM gearwork_meta WHERE key LIKE 'pause/%'`, &stored)
	require.Zero(t, stored)
}

// Ordered jobs on three servers with two workers each: no two jobs of one
// key ever run at once, and each key's jobs run in submit order.
func TestSharedOrderedKeysNeverOverlapAcrossServers(t *testing.T) {
	t.Parallel()
	url := pgtest.Schema(t)
	pol := map[string]broker.Policy{"ord": {Ordering: broker.OrderingUniquePrefix}}
	var brokers []*broker.Broker
	for _, name := range []string{"a", "b", "c"} {
		b, _ := openSharedPolicy(t, url, name, 0, pol)
		brokers = append(brokers, b)
	}
	const keys, perKey = 4, 12
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var (
		mu      sync.Mutex
		running = map[string]int{}
		order   = map[string][]int{}
		done    atomic.Int64
		wg      sync.WaitGroup
	)
	for i, b := range brokers {
		for k := range 2 {
			wg.Go(func() {
				runWorker(ctx, t, b, fmt.Sprintf("w%d.%d", i, k), "ord", func(a broker.Assignment) {
					key, num, _ := strings.Cut(string(a.Payload), "/")
					mu.Lock()
					running[key]++
					if running[key] > 1 {
						t.Errorf("two jobs of key %s run at once", key)
					}
					var n int
					_, _ = fmt.Sscan(num, &n)
					order[key] = append(order[key], n)
					mu.Unlock()
					time.Sleep(time.Millisecond) // the job's work
					mu.Lock()
					running[key]--
					mu.Unlock()
					done.Add(1)
				})
			})
		}
	}
	// Submitted one after another over the three servers: sequence
	// numbers, and so the order within each key, follow submit order.
	clients := []*broker.Session{}
	for _, b := range brokers {
		clients = append(clients, b.NewSession("client", newOutbox()))
	}
	for n := range perKey {
		for k := range keys {
			s := (n*keys + k) % 3
			key := fmt.Sprint("k", k)
			r := submit(t, brokers[s], clients[s], bgJob("ord", fmt.Sprintf("%s:%d", key, n), fmt.Sprintf("%s/%d", key, n)))
			require.NoError(t, r.err)
		}
	}
	testwait.Until(t, "every job ran", func() bool { return done.Load() == keys*perKey })
	cancel()
	wg.Wait()
	for k := range keys {
		key := fmt.Sprint("k", k)
		require.Equal(t, seqTo(perKey), order[key], "key %s runs in submit order", key)
	}
	testwait.Until(t, "every row is deleted", func() bool { return countRows(t, url) == 0 })
}

func seqTo(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i
	}
	return out
}

func TestSharedConcurrencyLimitHoldsAcrossServers(t *testing.T) {
	t.Parallel()
	url := pgtest.Schema(t)
	const limit = 2
	pol := map[string]broker.Policy{"lim": {Concurrency: limit}}
	var brokers []*broker.Broker
	for _, name := range []string{"a", "b", "c"} {
		b, _ := openSharedPolicy(t, url, name, 0, pol)
		brokers = append(brokers, b)
	}
	// Submitted to a fourth server without workers before any worker
	// registers: each server would claim a batch of them at once.
	d, _ := openSharedPolicy(t, url, "d", 0, pol)
	client := d.NewSession("client", newOutbox())
	const jobs = 120
	for i := range jobs {
		require.NoError(t, submit(t, d, client, bgJob("lim", "", fmt.Sprint(i))).err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var running, most, done atomic.Int64
	var wg sync.WaitGroup
	perServer := make([]atomic.Int64, len(brokers))
	for i, b := range brokers {
		for k := range 3 {
			wg.Go(func() {
				runWorker(ctx, t, b, fmt.Sprintf("w%d.%d", i, k), "lim", func(broker.Assignment) {
					now := running.Add(1)
					for m := most.Load(); now > m && !most.CompareAndSwap(m, now); m = most.Load() {
					}
					perServer[i].Add(1)
					time.Sleep(time.Millisecond) // the job's work
					running.Add(-1)
					done.Add(1)
				})
			})
		}
	}
	testwait.Until(t, "every job ran", func() bool { return done.Load() == jobs })
	cancel()
	wg.Wait()
	require.LessOrEqual(t, most.Load(), int64(limit), "never more than the limit running across the servers")
	require.Positive(t, most.Load())
	testwait.Until(t, "every row is deleted", func() bool { return countRows(t, url) == 0 })
}

// TestSharedDeadServerFreesItsSlotAndKey: a server dies while its worker
// runs the head of an ordering key of a function limited to one job at a
// time. Until its lease expires no other server may run a job of the
// function; then the job runs again elsewhere, and the rest of the key
// follows in order.
func TestSharedDeadServerFreesItsSlotAndKey(t *testing.T) {
	t.Parallel()
	url := pgtest.Schema(t)
	const ttl = 600 * time.Millisecond
	pol := map[string]broker.Policy{"f": {Concurrency: 1, Ordering: broker.OrderingUniquePrefix}}
	a, stA := openSharedPolicy(t, url, "a", ttl, pol)
	wa, outA := newWorker(t, a, "wa", "f")
	const n = 4
	for i := range n {
		require.NoError(t, submit(t, a, wa, bgJob("f", fmt.Sprintf("k:%d", i), fmt.Sprint(i))).err)
	}
	as := grab(t, a, wa, outA) // the head of the key
	require.Equal(t, "0", string(as.Payload))
	var held int
	pgtest.QueryRow(t, url, `SELECT count(*) FROM gearwork_jobs WHERE owner IS NOT NULL`, &held)
	require.Equal(t, 1, held, "a holds only the job it runs")

	b, _ := openSharedPolicy(t, url, "b", 0, pol) // b stays up: the default lease, which no stall loses
	wb, outB := newWorker(t, b, "wb", "f")

	// a dies: no renewal, no release.
	require.NoError(t, stA.Close())
	a.Stop()

	got := drain(t, b, wb, outB, n)
	require.Equal(t, []string{"0", "1", "2", "3"}, got, "the dead server's job runs again, then the rest in order")
	testwait.Until(t, "all rows deleted", func() bool { return countRows(t, url) == 0 })
	require.True(t, slices.Contains(got, string(as.Payload)))
}

// A rate limit holds across servers: three servers with workers start no
// more jobs than one bucket of the function's rate and burst allows. Both
// bounds are ones a slow machine cannot break: no more starts than the
// bucket allows in the time they took, and so they take at least as long
// as the bucket needs to hand out that many tokens.
func TestSharedRateLimitHoldsAcrossServers(t *testing.T) {
	t.Parallel()
	url := pgtest.Schema(t)
	const rate, burst, jobs = 30.0, 3, 60
	pol := map[string]broker.Policy{"slow": {Rate: rate, Burst: burst}}
	d, _ := openSharedPolicy(t, url, "d", 0, pol)
	client := d.NewSession("client", newOutbox())
	for i := range jobs {
		require.NoError(t, submit(t, d, client, bgJob("slow", "", fmt.Sprint(i))).err)
	}
	var brokers []*broker.Broker
	for _, name := range []string{"a", "b", "c"} {
		b, _ := openSharedPolicy(t, url, name, 0, pol)
		brokers = append(brokers, b)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var (
		mu     sync.Mutex
		starts []time.Time
		wg     sync.WaitGroup
	)
	begin := time.Now()
	for i, b := range brokers {
		for k := range 2 {
			wg.Go(func() {
				runWorker(ctx, t, b, fmt.Sprintf("w%d.%d", i, k), "slow", func(broker.Assignment) {
					mu.Lock()
					starts = append(starts, time.Now())
					mu.Unlock()
				})
			})
		}
	}
	testwait.Until(t, "every job ran", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(starts) == jobs
	})
	cancel()
	wg.Wait()
	last := slices.MaxFunc(starts, func(a, b time.Time) int { return a.Compare(b) })
	first := slices.MinFunc(starts, func(a, b time.Time) int { return a.Compare(b) })
	// One token of slack: a start is timed when the worker sees its job,
	// so a first job delivered late on a busy machine shortens the span.
	least := time.Duration(jobs-burst-2) * time.Second / time.Duration(rate)
	require.GreaterOrEqual(t, last.Sub(first), least,
		"%d jobs started within %v of each other: a bucket of %v/s and burst %d needs at least %v", jobs, last.Sub(first), rate, burst, least)
	allowed := burst + rate*last.Sub(begin).Seconds()
	// One token of slack for the database's and the test's clocks.
	require.LessOrEqual(t, float64(jobs), allowed+1,
		"%d jobs started within %v: more than one bucket of %v/s allows", jobs, last.Sub(begin), rate)
}

func TestSharedPolicyChangeAppliesOnEveryServer(t *testing.T) {
	t.Parallel()
	_, a, b := openPair(t)
	a.SetPolicy("f", broker.Policy{Concurrency: 3, Rate: 5})
	testwait.Until(t, "b applies a's policy", func() bool {
		p := b.Policy("f")
		return p.Concurrency == 3 && p.Rate == 5
	})
	b.ResetPolicy("f")
	testwait.Until(t, "a applies b's reset", func() bool { return a.Policy("f").Concurrency == 0 })
}
