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
	srv := gearmantest.Start(b)
	c, err := client.New(client.Config{Servers: []string{srv.Addr()}, Logger: quiet})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	payload := make([]byte, 64)
	ctx := context.Background()
	b.SetParallelism(32)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := c.SubmitBackground(ctx, client.Request{Function: "bench", Payload: payload}); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkDo measures foreground round trips through a worker, one at a
// time.
func BenchmarkDo(b *testing.B) {
	srv := gearmantest.Start(b)
	w, err := worker.New(worker.Config{Servers: []string{srv.Addr()}, Logger: quiet})
	if err != nil {
		b.Fatal(err)
	}
	w.HandleFunc("echo", func(_ context.Context, j *worker.Job) ([]byte, error) { return j.Payload, nil })
	if err := w.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	defer w.Stop()
	c, err := client.New(client.Config{Servers: []string{srv.Addr()}, Logger: quiet})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	payload := make([]byte, 64)
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := c.Do(ctx, client.Request{Function: "echo", Payload: payload}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDoParallel measures foreground round trips with 64 in flight
// over one client connection and 64 worker slots.
func BenchmarkDoParallel(b *testing.B) {
	srv := gearmantest.Start(b)
	w, err := worker.New(worker.Config{Servers: []string{srv.Addr()}, Concurrency: 64, Logger: quiet})
	if err != nil {
		b.Fatal(err)
	}
	w.HandleFunc("echo", func(_ context.Context, j *worker.Job) ([]byte, error) { return j.Payload, nil })
	if err := w.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	defer w.Stop()
	c, err := client.New(client.Config{Servers: []string{srv.Addr()}, Logger: quiet})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	payload := make([]byte, 64)
	ctx := context.Background()
	b.SetParallelism(32)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := c.Do(ctx, client.Request{Function: "echo", Payload: payload}); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
