package main

import (
	"context"
	"log/slog"
	"regexp"
	"runtime"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/internal/gearmantest"
	"github.com/gearwork/gearwork/internal/testserver"
	"github.com/gearwork/gearwork/internal/testwait"
)

// A server under a light load of requests moves to one processor to
// compare their CPU cost there (procpace). Not parallel: it clears
// GOMAXPROCS for the server.
func TestServeComparesOneProcessorUnderLightLoad(t *testing.T) {
	require.Greater(t, runtime.NumCPU(), 1, "the server needs more than one processor to lower its count")
	t.Setenv("GOMAXPROCS", "")
	srv := testserver.Start(t, "--store", "memory:", "--http", "127.0.0.1:0", "--log-level", "debug")
	c := gearmantest.NewClient(t, srv.Addr)
	ctx, cancel := context.WithCancel(testwait.Context(t))
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil { // one echo at a time: a light load, bounded by the test's deadline
			_, _ = c.Echo(ctx, []byte("light"))
		}
	}()
	defer func() { cancel(); <-done }()
	lowered := regexp.MustCompile(`msg="procpace: processors" from=\d+ to=1 cores_used=\S+ comparing=true`)
	testwait.Until(t, "one processor to compare", func() bool { return lowered.MatchString(srv.Log()) })
}

// Not parallel: it sets GOMAXPROCS, which the server process inherits and
// whose count it keeps.
func TestServeKeepsGOMAXPROCS(t *testing.T) {
	t.Setenv("GOMAXPROCS", "3")
	require.Nil(t, newProcPacer(slog.New(slog.DiscardHandler), nil), "no pacer")
	srv := testserver.Start(t, "--store", "memory:", "--http", "127.0.0.1:0")
	require.Contains(t, srv.Log(), `msg="serve: the processor count is GOMAXPROCS's" GOMAXPROCS=3`)
	require.Equal(t, 3, runtimeGauge(t, srv, "go_sched_gomaxprocs_threads"))
}
