package pebble

import (
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"testing"
	"time"

	"github.com/gearwork/gearwork/internal/store"
)

// BenchmarkExpireRecords writes records as a drain does (EndJobs rounds of
// 64 to 512 records of one function, finish times increasing, a few jobs
// of a round ending out of Seq order) and expires them to the default
// count of 10,000 after every 50,000 (what a second of a drain leaves to
// the history goroutine). Each iteration is one such second; only the
// expiry is timed. It reports the time, the allocations and the bytes
// allocated per record expired and how long expiry held the index's lock
// per chunk (each expireChunk call holds it throughout), on average and
// at most. With late=1/1000 one job in a thousand ends 20,000 jobs after
// its neighbours, so that a block that starts at its Seq is kept while
// the records around it expire.
func BenchmarkExpireRecords(b *testing.B) {
	b.Run("late=0", func(b *testing.B) { benchExpireRecords(b, false) })
	b.Run("late=1/1000", func(b *testing.B) { benchExpireRecords(b, true) })
}

func benchExpireRecords(b *testing.B, late bool) {
	const (
		keep    = 10_000
		perCall = 50_000
		lateBy  = 20_000
	)
	ctx := context.Background()
	st, err := Open(ctx, b.TempDir(), Options{Sync: SyncNone, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	limits := func(string) (time.Duration, int) { return 24 * time.Hour, keep }
	seq, fin, round := uint64(1), int64(time.Hour), 0
	data := make([]byte, 120)
	var recs []store.Record
	var held []uint64 // late jobs, each ending at Seq lateBy after its own
	write := func(n int) {
		for n > 0 {
			size := min(n, 64+(round*97)%449) // 64 to 512
			round++
			recs = recs[:0]
			end := func(q uint64) {
				fin += 1000
				copy(data, fmt.Sprint(q))
				recs = append(recs, store.Record{Seq: q, Function: "fn", State: "complete", Finished: fin, Data: data})
			}
			for i := range size {
				q := seq + uint64(i)
				if i%16 == 5 && i+1 < size {
					q++ // this one and the next end in the other order
				} else if i%16 == 6 {
					q--
				}
				if late && q%1000 == 999 {
					held = append(held, q)
				} else {
					end(q)
				}
				for len(held) > 0 && held[0]+lateBy <= q {
					end(held[0])
					held = held[1:]
				}
			}
			seq += uint64(size)
			n -= size
			if err := st.EndJobs(ctx, nil, recs, nil); err != nil {
				b.Fatal(err)
			}
		}
	}
	write(keep)
	var spent, most time.Duration
	var expired, chunks int
	var mallocs, bytes uint64
	var ms runtime.MemStats
	for b.Loop() {
		b.StopTimer()
		write(perCall)
		runtime.ReadMemStats(&ms)
		m0, b0 := ms.Mallocs, ms.TotalAlloc
		b.StartTimer()
		for more := true; more; {
			t0 := time.Now()
			n, m, err := st.expireChunk(ctx, "fn", fin, 24*time.Hour, keep)
			d := time.Since(t0)
			if err != nil {
				b.Fatal(err)
			}
			spent += d
			most = max(most, d)
			expired += n
			chunks++
			more = m
		}
		b.StopTimer()
		runtime.ReadMemStats(&ms)
		mallocs, bytes = mallocs+ms.Mallocs-m0, bytes+ms.TotalAlloc-b0
		b.StartTimer()
	}
	counts, err := st.RecordCounts(ctx)
	if err != nil || counts["fn"]["complete"] != keep {
		b.Fatalf("kept %v (%v), want %d", counts, err, keep)
	}
	if n, err := st.ExpireRecords(ctx, fin, limits); err != nil || n != 0 {
		b.Fatalf("expired %d more (%v)", n, err)
	}
	b.ReportMetric(float64(spent.Nanoseconds())/float64(expired), "ns/expired")
	b.ReportMetric(float64(mallocs)/float64(expired), "allocs/expired")
	b.ReportMetric(float64(bytes)/float64(expired), "B/expired")
	b.ReportMetric(float64(spent.Microseconds())/float64(chunks), "µs-held/chunk")
	b.ReportMetric(float64(most.Microseconds()), "max-µs-held")
}
