package client_test

import (
	"context"
	"testing"

	"github.com/gearwork/gearwork/client"
	"github.com/gearwork/gearwork/internal/gearmantest"
	"github.com/gearwork/gearwork/worker"
)

// BenchmarkSubmitBackground measures background submits over one
// connection with many requests in flight.
func BenchmarkSubmitBackground(b *testing.B) {
	c := gearmantest.NewClient(b, gearmantest.Start(b).Addr())
	runParallel(b, func(ctx context.Context, payload []byte) error {
		_, err := c.SubmitBackground(ctx, client.Request{Function: "bench", Payload: payload})
		return err
	})
}

// BenchmarkDo measures foreground round trips through a worker, one at a
// time.
func BenchmarkDo(b *testing.B) {
	c := echoClient(b, 1)
	payload := make([]byte, 64)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Do(ctx, client.Request{Function: "echo", Payload: payload}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDoParallel measures foreground round trips with 64 in flight
// over one client connection and 64 worker slots.
func BenchmarkDoParallel(b *testing.B) {
	c := echoClient(b, 64)
	runParallel(b, func(ctx context.Context, payload []byte) error {
		_, err := c.Do(ctx, client.Request{Function: "echo", Payload: payload})
		return err
	})
}

// echoClient starts a server and a worker with the given number of slots
// that answers "echo" with its payload, and returns a client of the
// server.
func echoClient(b *testing.B, slots int) *client.Client {
	addr := gearmantest.Start(b).Addr()
	gearmantest.StartWorker(b, worker.Config{Servers: []string{addr}, Concurrency: slots},
		worker.Function{Name: "echo", Handler: worker.HandlerFunc(func(_ context.Context, j *worker.Job) ([]byte, error) {
			return j.Payload, nil
		})})
	return gearmantest.NewClient(b, addr)
}

// runParallel calls request with a 64-byte payload b.N times from 32
// goroutines per CPU, so that many requests are in flight on one
// connection.
func runParallel(b *testing.B, request func(ctx context.Context, payload []byte) error) {
	payload := make([]byte, 64)
	ctx := context.Background()
	b.SetParallelism(32)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := request(ctx, payload); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
