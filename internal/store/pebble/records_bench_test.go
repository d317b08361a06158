package pebble_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/gearwork/gearwork/internal/broker"
	"github.com/gearwork/gearwork/internal/procstat"
	"github.com/gearwork/gearwork/internal/store/pebble"
)

// BenchmarkRecordsKept ends 1,000,000 background jobs through a broker on
// the Pebble store, with the history keeping every record (kept=1000000)
// or none (kept=0), and reports the heap and the process's RSS afterwards,
// then times listing two pages of 50 records (the second by its cursor)
// and reports how long a lookup of the oldest record kept took.
// The jobs end in steps of 10,000, each waiting for the committer to
// write their records. Run each case in its own process so that one's RSS
// does not carry over into the other (see BENCHMARKS.md, "Job records").
func BenchmarkRecordsKept(b *testing.B) {
	for _, kept := range []int{0, 100_000, 1_000_000} {
		b.Run(fmt.Sprintf("kept=%d", kept), func(b *testing.B) { benchRecordsKept(b, kept) })
	}
}

func benchRecordsKept(b *testing.B, kept int) {
	const jobs = 1_000_000
	ctx := context.Background()
	quiet := slog.New(slog.DiscardHandler)
	st, err := pebble.Open(ctx, b.TempDir(), pebble.Options{Sync: pebble.SyncNone, Logger: quiet})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	var p broker.Policy
	if err := p.Set("history_max", strconv.Itoa(max(kept, 1))); err != nil {
		b.Fatal(err)
	}
	if kept == 0 {
		if err := p.Set("history", "0"); err != nil {
			b.Fatal(err)
		}
	}
	br := broker.New(broker.Config{Store: st, Logger: quiet, DefaultPolicy: p})
	if err := br.Start(ctx); err != nil {
		b.Fatal(err)
	}
	defer br.Stop()
	client := br.NewSession("c", dropEvents{})
	worker := br.NewSession("w", dropEvents{})
	br.CanDo(worker, []byte("fn"), 0)
	done := func(uint64, bool, error) {}
	// stored waits until job seq's record is in the store.
	stored := func(seq uint64) {
		deadline := time.Now().Add(5 * time.Minute)
		for {
			if _, err := st.Record(ctx, seq); err == nil {
				return
			}
			if time.Now().After(deadline) {
				b.Fatalf("the record of job %d never reached the store", seq)
			}
			time.Sleep(time.Millisecond)
		}
	}
	var last, oldest uint64
	for i := range jobs {
		br.Submit(client, broker.SubmitParams{Function: []byte("fn"), Payload: []byte("p"), Background: true}, done)
		a, ok := br.Grab(worker)
		if !ok {
			b.Fatalf("job %d: nothing to grab", i)
		}
		if err := br.Finish(worker, a.Seq, broker.Complete, []byte("result")); err != nil {
			b.Fatal(err)
		}
		last = a.Seq
		if i == jobs-max(kept, 1) {
			oldest = a.Seq
		}
		if kept > 0 && i%10_000 == 9_999 {
			// A server's workers take time per job: let the committer
			// keep up, as it does there.
			stored(last)
		}
	}
	if kept > 0 {
		stored(last)
		if page, err := br.ListJobs(context.Background(), broker.JobQuery{Function: "fn", Limit: 1}); err != nil || len(page.Jobs) != 1 {
			b.Fatalf("%v %v", page, err)
		}
		br.ExpireHistory() // what the history goroutine does every second
		counts := br.CountJobs(context.Background())
		if len(counts) != 1 || counts[0].Ended[broker.FinalComplete] != kept {
			b.Fatalf("counts %+v, want %d complete", counts, kept)
		}
	}
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	b.ResetTimer()
	for b.Loop() {
		if kept == 0 {
			continue // nothing to list
		}
		page, err := br.ListJobs(context.Background(), broker.JobQuery{Function: "fn", State: broker.FinalComplete, Limit: 50})
		if err != nil || len(page.Jobs) != 50 {
			b.Fatalf("%d jobs, %v", len(page.Jobs), err)
		}
		page, err = br.ListJobs(context.Background(), broker.JobQuery{Function: "fn", State: broker.FinalComplete, Limit: 50, Cursor: page.Next})
		if err != nil || len(page.Jobs) != 50 {
			b.Fatalf("%d jobs, %v", len(page.Jobs), err)
		}
	}
	if kept > 0 {
		// A lookup by handle of the oldest record kept: the index is
		// searched by Seq from the newest.
		t0 := time.Now()
		if rec, ok := br.Job(context.Background(), oldest); !ok || rec.Seq != oldest {
			b.Fatalf("the record of job %d: %v %v", oldest, rec, ok)
		}
		b.ReportMetric(float64(time.Since(t0).Microseconds())/1000, "lookup-oldest-ms")
	}
	memtables, cache := pebble.PebbleMemory(st)
	b.ReportMetric(float64(memtables)/(1<<20), "memtables-MiB")
	b.ReportMetric(float64(cache)/(1<<20), "cache-MiB")
	b.ReportMetric(float64(ms.HeapAlloc)/(1<<20), "heap-MiB")
	b.ReportMetric(rssMiB(), "rss-MiB")
}

// rssMiB returns the process's resident set in MiB (Linux), or 0.
func rssMiB() float64 {
	st, err := procstat.Status(os.Getpid(), "VmRSS")
	if err != nil {
		return 0
	}
	return float64(st["VmRSS"]) / 1024
}

// BenchmarkDrainRecords drains 100,000 background jobs queued on a Pebble
// store (SyncAlways, the server's default) through a broker, as `gearwork
// bench --scenario drain8` does over sockets: 8 workers, each taking up
// to 8 jobs before it completes them, with the history at its default
// (history=default: 24 h, 10,000 records, expired every second as a
// server does) or off (history=off). The clock runs from the first grab
// until the broker stopped (its committer wrote every end). It reports
// the process's CPU time and allocations per job, Pebble's background
// work included: the cost of the records without the sockets' noise.
func BenchmarkDrainRecords(b *testing.B) {
	for _, h := range []string{"default", "off"} {
		b.Run("history="+h, func(b *testing.B) { benchDrain(b, h == "default") })
	}
}

func benchDrain(b *testing.B, history bool) {
	const jobs, workers, grabs = 100_000, 8, 8
	ctx := context.Background()
	quiet := slog.New(slog.DiscardHandler)
	var p broker.Policy
	if !history {
		if err := p.Set("history", "0"); err != nil {
			b.Fatal(err)
		}
	}
	payload := make([]byte, 64)
	var cpu time.Duration
	var mallocs uint64
	var ms runtime.MemStats
	b.StopTimer()
	for range b.N {
		st, err := pebble.Open(ctx, b.TempDir(), pebble.Options{Logger: quiet})
		if err != nil {
			b.Fatal(err)
		}
		br := broker.New(broker.Config{Store: st, Logger: quiet, DefaultPolicy: p})
		if err := br.Start(ctx); err != nil {
			b.Fatal(err)
		}
		client := br.NewSession("c", dropEvents{})
		acked := make(chan struct{}, jobs)
		for range jobs {
			br.Submit(client, broker.SubmitParams{Function: []byte("fn"), Payload: payload, Background: true},
				func(uint64, bool, error) { acked <- struct{}{} })
		}
		for range jobs {
			<-acked
		}
		ws := make([]*broker.Session, workers)
		for i := range ws {
			ws[i] = br.NewSession(fmt.Sprintf("w%d", i), dropEvents{})
			br.CanDo(ws[i], []byte("fn"), 0)
		}
		held := make([][]uint64, workers)
		runtime.ReadMemStats(&ms)
		m0 := ms.Mallocs
		c0 := processCPU()
		b.StartTimer()
		for done := 0; done < jobs; {
			for i, w := range ws {
				for len(held[i]) < grabs {
					a, ok := br.Grab(w)
					if !ok {
						break
					}
					held[i] = append(held[i], a.Seq)
				}
			}
			for i, w := range ws {
				for _, seq := range held[i] {
					if err := br.Finish(w, seq, broker.Complete, nil); err != nil {
						b.Fatal(err)
					}
					done++
				}
				held[i] = held[i][:0]
			}
		}
		br.Stop()
		b.StopTimer()
		cpu += processCPU() - c0
		runtime.ReadMemStats(&ms)
		mallocs += ms.Mallocs - m0
		if err := st.Close(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N*jobs), "cpu-ns/job")
	b.ReportMetric(float64(mallocs)/float64(b.N*jobs), "allocs/job")
	b.ReportMetric(float64(b.N*jobs)/b.Elapsed().Seconds(), "jobs/s")
}

// processCPU returns the CPU time (user and system) the process used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
