//go:build unix

package broker

import (
	"bytes"
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gearwork/gearwork/internal/store/pebble"
)

// batchBenchJobs is how many jobs one iteration of BenchmarkBatchDrain
// submits and drains.
const batchBenchJobs = 100_000

// wakeOutbox signals a worker session's wake-ups (NOOP) on a channel.
type wakeOutbox chan struct{}

func (w wakeOutbox) Send(Event) {
	select {
	case w <- struct{}{}:
	default:
	}
}

// BenchmarkBatchDrain submits 100,000 background jobs to a broker on a
// Pebble store (synced writes) while a worker completes them, without a
// batch and in one batch with an on_complete callback; an iteration ends
// when every job was acknowledged and completed (and, in a batch, when the
// callback was handed to the worker). It reports the time per 100,000
// jobs, the CPU time the process spent on them (less sensitive to other
// load on the machine than the time) and, for the batch, callback-ms: from the return of the last job's
// WORK_COMPLETE (or from the call of CloseBatch, when the worker finished
// the jobs before the batch was closed) to the callback job in the
// worker's hands. docs/batches.md
// and BENCHMARKS.md ("Batches") give results.
func BenchmarkBatchDrain(b *testing.B) {
	for _, inBatch := range []bool{false, true} {
		name := "plain"
		if inBatch {
			name = "batch"
		}
		b.Run(name, func(b *testing.B) {
			var total, callback, cpu time.Duration
			for range b.N {
				before := cpuTime(b)
				d, cb := batchDrainOnce(b, inBatch)
				cpu += cpuTime(b) - before
				total += d
				callback += cb
			}
			b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "ms/100k-jobs")
			b.ReportMetric(float64(cpu.Milliseconds())/float64(b.N), "cpu-ms/100k-jobs")
			if inBatch {
				b.ReportMetric(float64(callback.Microseconds())/1e3/float64(b.N), "callback-ms")
			}
		})
	}
}

// cpuTime returns the CPU time (user and system) the process used so far.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// batchDrainOnce runs one iteration of BenchmarkBatchDrain on a fresh
// broker and store.
func batchDrainOnce(b *testing.B, inBatch bool) (total, callback time.Duration) {
	b.StopTimer()
	ctx := context.Background()
	st, err := pebble.Open(ctx, b.TempDir(), pebble.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	br := New(Config{Logger: slog.New(slog.DiscardHandler), Store: st})
	if err := br.Start(ctx); err != nil {
		b.Fatal(err)
	}
	defer br.Stop()
	client := br.NewSession("client", benchOutbox{})
	wake := make(wakeOutbox, 1)
	worker := br.NewSession("worker", wake)
	br.CanDo(worker, []byte("bench"), 0)
	br.CanDo(worker, []byte("bench_done"), 0)
	p := SubmitParams{Function: []byte("bench"), Payload: bytes.Repeat([]byte{'x'}, 64), Priority: Normal, Background: true}
	var acked sync.WaitGroup
	acked.Add(batchBenchJobs)
	var refused atomic.Int64
	done := func(_ uint64, _ bool, err error) {
		if err != nil {
			refused.Add(1)
		}
		acked.Done()
	}
	b.StartTimer()
	began := time.Now()
	if inBatch {
		if p.Batch, err = br.CreateBatch(ctx, BatchParams{OnComplete: Callback{Function: "bench_done"}}); err != nil {
			b.Fatal(err)
		}
	}
	// closing is when CloseBatch was called (Unix nanoseconds): when the
	// worker drained the jobs before it, the batch completes only then.
	var closing atomic.Int64
	go func() {
		for range batchBenchJobs {
			br.Submit(client, p, done)
		}
		if inBatch {
			closing.Store(time.Now().UnixNano())
			if err := br.CloseBatch(ctx, p.Batch); err != nil {
				b.Error(err)
			}
		}
	}()
	var lastEnd time.Time
	for finished := 0; finished < batchBenchJobs || inBatch; {
		a, ok := br.Grab(worker)
		if !ok {
			br.PreSleep(worker)
			select {
			case <-wake:
			case <-time.After(5 * time.Millisecond):
			}
			continue
		}
		if a.Function == "bench_done" {
			callback = time.Since(lastEnd)
			if closed := time.Unix(0, closing.Load()); closed.After(lastEnd) {
				callback = time.Since(closed)
			}
			if err := br.Finish(worker, a.Seq, Complete, nil); err != nil {
				b.Fatal(err)
			}
			break
		}
		if err := br.Finish(worker, a.Seq, Complete, nil); err != nil {
			b.Fatal(err)
		}
		lastEnd = time.Now()
		finished++
	}
	acked.Wait()
	total = time.Since(began)
	b.StopTimer()
	if n := refused.Load(); n > 0 {
		b.Fatalf("%d submits refused", n)
	}
	return total, callback
}
