package main

import (
	"context"
	"log/slog"
	"regexp"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/gearman"
	"github.com/gearwork/gearwork/internal/gearmantest/wire"
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
	s, err := wire.DialStream(srv.Addr)
	require.NoError(t, err)
	defer s.Close()
	ctx, cancel := context.WithCancel(testwait.Context(t))
	done := make(chan struct{})
	go func() {
		defer close(done)
		// 20 echoes in one write every 10 ms: about 2,000 requests a
		// second (the pacer compares from 500 in half a second) at a few
		// hundredths of a core; bounded by the test's deadline.
		var burst []byte
		for range 20 {
			burst = append(burst, wire.Request(gearman.EchoReq, "light")...)
		}
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			if s.Write(burst) != nil {
				return
			}
			for range 20 {
				if _, err := s.Next(); err != nil {
					return
				}
			}
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
