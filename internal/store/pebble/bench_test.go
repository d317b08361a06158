package pebble_test

import (
	"context"
	"fmt"
	"log/slog"
	"testing"

	"github.com/gearwork/gearwork/internal/store"
	"github.com/gearwork/gearwork/internal/store/pebble"
)

// BenchmarkSave measures durable submits: one Save of a batch of jobs (as
// the broker's group committer issues them) in each sync mode. jobs/s is
// the figure to compare; with SyncAlways each Save waits for one fsync.
func BenchmarkSave(b *testing.B) {
	for _, mode := range []pebble.SyncMode{pebble.SyncAlways, pebble.SyncNone} {
		for _, batch := range []int{1, 64, 1024} {
			b.Run(fmt.Sprintf("sync=%s/batch=%d", mode, batch), func(b *testing.B) {
				benchSave(b, mode, batch, 100)
			})
		}
	}
}

func benchSave(b *testing.B, mode pebble.SyncMode, batch, payload int) {
	ctx := context.Background()
	s, err := pebble.Open(ctx, b.TempDir(), pebble.Options{Sync: mode, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	jobs := make([]store.Job, batch)
	body := make([]byte, payload)
	seq := uint64(0)
	b.SetBytes(int64(batch * payload))
	b.ResetTimer()
	for range b.N {
		for i := range jobs {
			seq++
			jobs[i] = store.Job{Seq: seq, Handle: "H:bench:" + fmt.Sprint(seq), Function: "bench", Payload: body, Priority: 1}
		}
		if err := s.Save(ctx, jobs); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "jobs/s")
}

// BenchmarkChurn measures the queue's steady state: each round saves a
// batch of new jobs (synced) and deletes the batch saved before it, so the
// store stays small while tombstones pile up behind it.
func BenchmarkChurn(b *testing.B) {
	const batch = 256
	ctx := context.Background()
	s, err := pebble.Open(ctx, b.TempDir(), pebble.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	jobs := make([]store.Job, batch)
	dels := make([]uint64, batch)
	body := make([]byte, 1024)
	seq := uint64(0)
	b.ResetTimer()
	for range b.N {
		for i := range jobs {
			seq++
			jobs[i] = store.Job{Seq: seq, Function: "bench", Payload: body}
			if seq > batch {
				dels[i] = seq - batch
			}
		}
		if err := s.Save(ctx, jobs); err != nil {
			b.Fatal(err)
		}
		if err := s.Delete(ctx, dels); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "jobs/s")
}
