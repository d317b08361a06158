package main

import (
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/internal/testserver"
	"github.com/gearwork/gearwork/internal/testwait"
)

// An idle server runs on one processor (procpace): its /metrics report the
// runtime's count.
func TestServeIdlesOnOneProcessor(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, "--store", "memory:", "--http", "127.0.0.1:0")
	if runtime.NumCPU() > 1 {
		require.Equal(t, runtime.NumCPU(), runtimeGauge(t, srv, "go_sched_gomaxprocs_threads"), "every processor at the start")
	}
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
	srv := testserver.Start(t, "--store", "memory:", "--http", "127.0.0.1:0")
	require.Contains(t, srv.Log(), `msg="serve: the processor count is GOMAXPROCS's" GOMAXPROCS=3`)
	time.Sleep(1500 * time.Millisecond) // longer than an idle server takes to fall to one
	require.Equal(t, 3, runtimeGauge(t, srv, "go_sched_gomaxprocs_threads"))
}
