package bench

import (
	"context"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/gearwork/gearwork/internal/broker"
	"github.com/gearwork/gearwork/internal/gearmantest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// startGearwork runs an in-process Gearwork server on a free loopback port.
func startGearwork(t *testing.T) (string, *broker.Broker) {
	t.Helper()
	s := gearmantest.Start(t)
	return s.Addr(), s.Broker()
}

// tinyConfig keeps every scenario small: correctness, not speed.
func tinyConfig(addr string, pid int) Config {
	return Config{Addr: addr, Jobs: 500, Connections: 2, Inflight: 8, Workers: 3,
		IdleConns: 40, IdleSettle: 10 * time.Millisecond, PID: pid, Timeout: time.Minute}
}

// checkResult checks what every successful result must satisfy.
func checkResult(t *testing.T, cfg Config, res Result) {
	t.Helper()
	want := cfg.Jobs
	if res.Scenario == "idle" {
		want = cfg.IdleConns
	}
	require.Equal(t, want, res.Jobs)
	require.Equal(t, cfg.Addr, res.Server)
	require.Positive(t, res.Elapsed)
	require.Positive(t, res.Rate)
	if res.LatencyOf != "" {
		require.Positive(t, res.P50)
		require.LessOrEqual(t, res.P50, res.P99)
	}
	if cfg.PID != 0 {
		require.Positive(t, res.RSS)
		require.GreaterOrEqual(t, res.CPUPerJob, time.Duration(0))
	}
	if res.Scenario == "memory" || res.Scenario == "idle" {
		require.Positive(t, res.RSSBefore)
	}
	if res.Scenario == "idle" {
		require.Equal(t, cfg.IdleSettle, res.IdleSettle)
		require.Positive(t, res.RSSFile, "the executable's pages are resident")
		require.Less(t, res.RSSFile, res.RSS)
	}
	line := res.Line()
	require.True(t, strings.HasPrefix(line, "scenario="+res.Scenario+" server="+cfg.Addr+" jobs="+strconv.Itoa(want)+" "), line)
	require.NotContains(t, line, "\n")
}

// prepare returns the configuration of scenario name: for verify, a queue
// that memory has just filled with cfg.Jobs checkable jobs (verify then
// takes them all).
func prepare(t *testing.T, cfg Config, name string) Config {
	t.Helper()
	if name != "verify" {
		return cfg
	}
	fill := cfg
	fill.Queue, fill.NoCleanup, fill.Payload = "bench-e2e-verify."+strconv.Itoa(os.Getpid()), true, 100
	_, err := Run(t.Context(), fill, "memory")
	require.NoError(t, err)
	cfg.Queue, cfg.Payload = fill.Queue, fill.Payload
	return cfg
}

func TestScenariosAgainstGearwork(t *testing.T) {
	t.Parallel()
	addr, b := startGearwork(t)
	for _, name := range Scenarios() {
		t.Run(name, func(t *testing.T) {
			// Our own pid stands in for the server's: it is in-process.
			cfg := prepare(t, tinyConfig(addr, os.Getpid()), name)
			res, err := Run(t.Context(), cfg, name)
			require.NoError(t, err)
			checkResult(t, cfg, res)
		})
	}
	// Every scenario cleaned up after itself.
	require.Equal(t, 0, b.JobCount())
}

// TestSteadyWithPipelinedGrabs: steady workers with several grabs in
// flight complete every job once, and the result says how they worked.
func TestSteadyWithPipelinedGrabs(t *testing.T) {
	t.Parallel()
	res := runSteadyWith(t, func(cfg *Config) { cfg.Workers, cfg.Grabs = 3, 4 })
	require.Equal(t, 3, res.Workers)
	require.Equal(t, 4, res.Grabs)
}

// runSteadyWith runs steady, its tiny configuration changed by mod,
// against a fresh server, checks the result and that no job is left, and
// returns the result.
func runSteadyWith(t *testing.T, mod func(*Config)) Result {
	t.Helper()
	addr, b := startGearwork(t)
	cfg := tinyConfig(addr, 0)
	mod(&cfg)
	res, err := Run(t.Context(), cfg, "steady")
	require.NoError(t, err)
	checkResult(t, cfg, res)
	require.Equal(t, 0, b.JobCount())
	return res
}

func TestBacklogAndNoCleanup(t *testing.T) {
	t.Parallel()
	addr, b := startGearwork(t)
	cfg := tinyConfig(addr, 0)
	cfg.Backlog = 300
	res, err := Run(t.Context(), cfg, "submit")
	require.NoError(t, err)
	require.Equal(t, 300, res.Backlog)
	require.Equal(t, 0, b.JobCount(), "backlog and measured jobs were completed")

	cfg.NoCleanup = true
	_, err = Run(t.Context(), cfg, "submit")
	require.NoError(t, err)
	require.Equal(t, 800, b.JobCount(), "NoCleanup leaves the jobs queued")
	var total int
	for _, f := range b.Status(context.Background()) {
		total += f.Total
	}
	require.Equal(t, 800, total)
}

// TestScenariosAgainstGearmand runs every scenario against the C gearmand,
// which the project's test dependencies install.
func TestScenariosAgainstGearmand(t *testing.T) {
	t.Parallel()
	g := gearmantest.StartGearmand(t)
	for _, name := range Scenarios() {
		t.Run(name, func(t *testing.T) {
			cfg := prepare(t, tinyConfig(g.Addr, g.Pid()), name)
			res, err := Run(t.Context(), cfg, name)
			require.NoError(t, err)
			checkResult(t, cfg, res)
		})
	}
}

// TestBeginFuncAfterLoading checks that BeginFunc runs once per measured
// part, after drain1's untimed loading: the whole backlog is queued then.
func TestBeginFuncAfterLoading(t *testing.T) {
	t.Parallel()
	addr, b := startGearwork(t)
	cfg := tinyConfig(addr, 0)
	var calls int
	var queued int
	cfg.BeginFunc = func() {
		calls++
		for _, f := range b.Status(t.Context()) {
			queued += f.Total
		}
	}
	res, err := Run(t.Context(), cfg, "drain1")
	require.NoError(t, err)
	checkResult(t, cfg, res)
	require.Equal(t, 1, calls)
	require.Equal(t, cfg.Jobs, queued)
}

// TestPacedSteady paces steady's submitters: 20 jobs over 2 connections
// at 10 jobs per second, one every 200 ms on each connection, the second
// starting 100 ms after the first: the last job is due at 1.9 s (timers
// do not fire early), where an unpaced run takes milliseconds; and the
// result says which rate it was paced to.
func TestPacedSteady(t *testing.T) {
	t.Parallel()
	res := runSteadyWith(t, func(cfg *Config) { cfg.Jobs, cfg.Rate = 20, 10 })
	require.GreaterOrEqual(t, res.Elapsed, 1900*time.Millisecond)
	require.Equal(t, 10.0, res.Paced)
	require.Contains(t, res.Line(), " paced=10.0 ")
}
