package broker

import (
	"bytes"
	"context"
	"log/slog"
	"sync/atomic"
	"testing"

	"github.com/gearwork/gearwork/internal/store"
)

// nullStore accepts every write and keeps nothing: it measures the
// broker's durable path (committer, acknowledgements) without a disk.
type nullStore struct{}

func (nullStore) Save(context.Context, []store.Job) error           { return nil }
func (nullStore) Delete(context.Context, []uint64) error            { return nil }
func (nullStore) Load(context.Context, func(store.Job) error) error { return nil }
func (nullStore) Close() error                                      { return nil }

// BenchmarkSubmitBackgroundStored submits background jobs through the
// committer and waits for every acknowledgement; the jobs stay queued.
func BenchmarkSubmitBackgroundStored(b *testing.B) {
	br := New(Config{Logger: slog.New(slog.DiscardHandler), Store: nullStore{}})
	if err := br.Start(b.Context()); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(br.Stop)
	c := br.NewSession("client", benchOutbox{})
	p := SubmitParams{Function: []byte("bench"), Payload: bytes.Repeat([]byte{'x'}, 64), Priority: Normal, Background: true}
	var acked atomic.Int64
	all := make(chan struct{})
	n := int64(b.N)
	done := func(uint64, bool, error) {
		if acked.Add(1) == n {
			close(all)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		br.Submit(c, p, done)
	}
	<-all
}
