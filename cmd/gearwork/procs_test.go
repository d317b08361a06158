package main

import (
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/internal/testserver"
	"github.com/gearwork/gearwork/internal/testwait"
)

// An idle server runs on one processor (procpace): its /metrics report the
// runtime's count. Not parallel: it clears GOMAXPROCS for the server.
func TestServeIdlesOnOneProcessor(t *testing.T) {
	t.Setenv("GOMAXPROCS", "")
	srv := testserver.Start(t, "--store", "memory:", "--http", "127.0.0.1:0")
	testwait.Until(t, "one processor while idle", func() bool {
		// Scraped now and then: a scrape is work, which the server counts.
		time.Sleep(200 * time.Millisecond)
		return runtimeGauge(t, srv, "go_sched_gomaxprocs_threads") == 1
	})
}

// Not parallel: it sets GOMAXPROCS, which the server process inherits and
// whose count it keeps.
func TestServeKeepsGOMAXPROCS(t *testing.T) {
	t.Setenv("GOMAXPROCS", "3")
	require.Nil(t, newProcPacer(slog.New(slog.DiscardHandler)), "no pacer")
	srv := testserver.Start(t, "--store", "memory:", "--http", "127.0.0.1:0")
	require.Contains(t, srv.Log(), `msg="serve: the processor count is GOMAXPROCS's" GOMAXPROCS=3`)
	require.Equal(t, 3, runtimeGauge(t, srv, "go_sched_gomaxprocs_threads"))
}
