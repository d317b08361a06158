package broker_test

import (
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gearwork/gearwork/internal/broker"
	"github.com/gearwork/gearwork/internal/store/postgres/pgtest"
)

// BenchmarkSharedUnknownStatus: 16 clients ask a server in shared mode for
// the status of handles no job has, in a loop, while b.N background jobs
// are submitted one after the other. It reports the lookups answered and
// the database's transactions (each query outside a round is one) per
// second, and the submits' median and 99th percentile latency.
func BenchmarkSharedUnknownStatus(b *testing.B) {
	url := pgtest.Database(b)
	a, _ := openSharedConfig(b, url, "a", 0, broker.Config{})
	client := a.NewSession("client", newOutbox())
	xacts := func() int64 {
		var n int64
		pgtest.QueryRow(b, url, `SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()`, &n)
		return n
	}
	var stop atomic.Bool
	var lookups atomic.Int64
	var wg sync.WaitGroup
	x0, t0 := xacts(), time.Now()
	for c := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; !stop.Load(); i++ {
				a.GetStatus(fmt.Appendf(nil, "H:x:%d", 1<<40+c<<20+i))
				lookups.Add(1)
			}
		}()
	}
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		s := time.Now()
		r := <-submitAsync(a, client, bgJob("f", "", fmt.Sprint(i)))
		if r.err != nil {
			b.Fatal(r.err)
		}
		lat = append(lat, time.Since(s))
	}
	b.StopTimer()
	stop.Store(true)
	wg.Wait()
	el := time.Since(t0)
	time.Sleep(1500 * time.Millisecond) // the statistics are flushed once a second
	x1 := xacts()
	slices.Sort(lat)
	b.ReportMetric(float64(lookups.Load())/el.Seconds(), "lookups/s")
	b.ReportMetric(float64(x1-x0)/el.Seconds(), "db-xacts/s")
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "submit-p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "submit-p99-µs")
}
