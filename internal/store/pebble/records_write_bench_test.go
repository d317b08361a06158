package pebble_test

import (
	"context"
	"encoding/binary"
	"log/slog"
	"testing"
	"time"

	"github.com/gearwork/gearwork/internal/store"
	"github.com/gearwork/gearwork/internal/store/pebble"
)

// BenchmarkEndJobsRecords writes rounds of 500 records of one function
// (as a committer round of drain8 does, the jobs' removals aside) and,
// every 500 rounds, expires all but the newest 10,000 (the default
// history_max, as a server's expiry each second does at 250,000 ended
// jobs a second), and reports the store's cost per record.
func BenchmarkEndJobsRecords(b *testing.B) {
	ctx := context.Background()
	st, err := pebble.Open(ctx, b.TempDir(), pebble.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	const n = 500
	// 500 records of 141 bytes like a drain8 record (the payload's
	// preview, times, the worker), each a little different.
	recs := make([]store.Record, n)
	for i := range recs {
		d := make([]byte, 141)
		for k := range d {
			d[k] = 'x'
		}
		binary.LittleEndian.PutUint64(d[8:], uint64(1796624774464587630+i*1000))
		binary.LittleEndian.PutUint64(d[100:], uint64(i*7))
		recs[i] = store.Record{Function: "fn", State: "complete", Data: d}
	}
	seq, fin := uint64(1), int64(1796624774464587630)
	rounds := 0
	for b.Loop() {
		for i := range recs {
			recs[i].Seq, recs[i].Finished = seq, fin
			seq, fin = seq+1, fin+1000
		}
		if err := st.EndJobs(ctx, nil, recs, nil); err != nil {
			b.Fatal(err)
		}
		if rounds++; rounds%500 == 0 {
			if _, err := st.ExpireRecords(ctx, fin, func(string) (time.Duration, int) { return 24 * time.Hour, 10_000 }); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/record")
}
