package broker

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"
)

// BenchmarkListingLockHold lists 500,000 queued jobs ("show jobs" gathers
// them through Jobs and EachJob) while another goroutine takes the lock
// as a submit would, and reports how long that goroutine waited for it:
// the longest wait and the 99th percentile, and the listing's time.
func BenchmarkListingLockHold(b *testing.B) {
	br := queuedBroker(b)
	report := watchLockWaits(br)
	b.ResetTimer()
	for range b.N {
		if n := len(br.Jobs(0)); n != 500_000 {
			b.Fatalf("listed %d jobs", n)
		}
	}
	b.StopTimer()
	report(b)
}

// queuedBroker returns a started broker holding 500,000 queued background
// jobs of 8 functions.
func queuedBroker(b *testing.B) *Broker {
	br := New(Config{})
	if err := br.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(br.Stop)
	c := br.NewSession("client", &recorder{})
	for i := range 500_000 {
		br.Submit(c, bg(fmt.Sprint("f", i%8), "", "payload", Normal), func(uint64, bool, error) {})
	}
	return br
}

// watchLockWaits starts a goroutine that takes br's lock every 100 µs, as
// a submit would, and records how long it waited each time. The function
// it returns stops it and reports the longest wait and the 99th
// percentile.
func watchLockWaits(br *Broker) func(*testing.B) {
	ctx, cancel := context.WithCancel(context.Background())
	var waits []time.Duration
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for { // one wait at least
			t0 := time.Now()
			br.mu.Lock()
			waits = append(waits, time.Since(t0))
			br.mu.Unlock()
			if ctx.Err() != nil {
				return
			}
			time.Sleep(100 * time.Microsecond)
		}
	}()
	return func(b *testing.B) {
		cancel()
		wg.Wait()
		slices.Sort(waits)
		b.ReportMetric(float64(waits[len(waits)-1].Microseconds()), "max-wait-µs")
		b.ReportMetric(float64(waits[len(waits)*99/100].Microseconds()), "p99-wait-µs")
	}
}

// BenchmarkEachJobChunk lists 500,000 queued jobs with EachJob and reports
// the longest time it took to gather a chunk (from the return of one
// callback to the next: one hold of the lock and the chunk's sort), and the
// time to the first chunk (the snapshot of the index's page keys, one
// hold, and its sort).
func BenchmarkEachJobChunk(b *testing.B) {
	br := queuedBroker(b)
	var gaps, firsts []time.Duration
	b.ResetTimer()
	for range b.N {
		t0 := time.Now()
		first := true
		n := 0
		br.EachJob(func(js []JobInfo) bool {
			if d := time.Since(t0); first {
				firsts = append(firsts, d)
				first = false
			} else {
				gaps = append(gaps, d)
			}
			n += len(js)
			t0 = time.Now()
			return true
		})
		if n != 500_000 {
			b.Fatalf("listed %d jobs", n)
		}
	}
	b.StopTimer()
	slices.Sort(gaps)
	slices.Sort(firsts)
	b.ReportMetric(float64(gaps[len(gaps)-1].Microseconds()), "max-chunk-µs")
	b.ReportMetric(float64(gaps[len(gaps)/2].Microseconds()), "median-chunk-µs")
	b.ReportMetric(float64(firsts[len(firsts)/2].Microseconds()), "first-chunk-µs")
}

// BenchmarkListJobsLockHold reads first pages of 50 of the job list
// (GET /v1/jobs) with 500,000 queued jobs, of 8 functions, while another
// goroutine takes the lock as a submit would, and reports how long that
// goroutine waited for it (the longest wait and the 99th percentile). The
// pages: of all jobs, of one function, and of a state no job is in
// (state=running).
func BenchmarkListJobsLockHold(b *testing.B) {
	br := queuedBroker(b)
	for _, bq := range []struct {
		name string
		q    JobQuery
	}{{"all", JobQuery{}}, {"function", JobQuery{Function: "f3"}}, {"none", JobQuery{State: "running"}}} {
		b.Run(bq.name, func(b *testing.B) {
			report := watchLockWaits(br)
			b.ResetTimer()
			for range b.N {
				if _, err := br.ListJobs(context.Background(), bq.q); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			report(b)
		})
	}
}
