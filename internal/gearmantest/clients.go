package gearmantest

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/gearwork/gearwork/client"
	"github.com/gearwork/gearwork/worker"
)

// quiet drops the log lines of the servers, clients and workers that
// tests start.
var quiet = slog.New(slog.DiscardHandler)

// Backoffs of the clients and workers that tests start: short, so that a
// test that stops or restarts a server sees them reconnect quickly.
const (
	minBackoff = 10 * time.Millisecond
	maxBackoff = 50 * time.Millisecond
)

// NewClient returns a Go client of the servers, with a silent logger and
// short backoffs, closed when the test ends.
func NewClient(tb testing.TB, servers ...string) *client.Client {
	tb.Helper()
	c, err := client.New(client.Config{Servers: servers, Logger: quiet, MinBackoff: minBackoff, MaxBackoff: maxBackoff})
	if err != nil {
		tb.Fatalf("gearmantest: %v", err)
	}
	tb.Cleanup(func() { c.Close() })
	return c
}

// NewWorker returns a Go worker for cfg, with a silent logger and short
// backoffs in place of cfg's, stopped when the test ends. It is not
// started: register functions, then Start it.
func NewWorker(tb testing.TB, cfg worker.Config) *worker.Worker {
	tb.Helper()
	cfg.Logger = quiet
	cfg.MinBackoff, cfg.MaxBackoff = minBackoff, maxBackoff
	w, err := worker.New(cfg)
	if err != nil {
		tb.Fatalf("gearmantest: %v", err)
	}
	tb.Cleanup(w.Stop)
	return w
}

// StartWorker starts a worker for cfg (as NewWorker) that serves fns until
// the test ends.
func StartWorker(tb testing.TB, cfg worker.Config, fns ...worker.Function) *worker.Worker {
	tb.Helper()
	w := NewWorker(tb, cfg)
	for _, f := range fns {
		w.Register(f)
	}
	if err := w.Start(context.Background()); err != nil {
		tb.Fatalf("gearmantest: %v", err)
	}
	return w
}
