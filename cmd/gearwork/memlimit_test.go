package main

import (
	"bytes"
	"context"
	"io"
	"math"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/client"
	"github.com/gearwork/gearwork/internal/gearmantest"
	"github.com/gearwork/gearwork/internal/testserver"
	"github.com/gearwork/gearwork/internal/testwait"
)

func TestMemoryLimitFlag(t *testing.T) {
	t.Parallel()
	const gib = 1 << 30
	for _, tc := range []struct {
		flag, env string
		total     int64
		want      int64
		source    string
	}{
		{flag: "", env: "", total: 24 * gib, want: 18 * gib, source: "three quarters of the memory"},
		{flag: "", env: "", total: 0, want: -1, source: "none (the machine's memory is unknown)"},
		{flag: "", env: "300MiB", total: 24 * gib, want: -1, source: "GOMEMLIMIT"},
		{flag: "1536MiB", env: "300MiB", total: 24 * gib, want: 1536 << 20, source: "--memory-limit"},
		{flag: "2GB", total: 24 * gib, want: 2e9, source: "--memory-limit"},
		{flag: "OFF", env: "300MiB", total: 24 * gib, want: math.MaxInt64, source: "off"},
	} {
		got, source, err := memoryLimit(tc.flag, tc.env, tc.total)
		require.NoError(t, err, "flag %q env %q", tc.flag, tc.env)
		require.Equal(t, tc.want, got, "flag %q env %q", tc.flag, tc.env)
		require.Equal(t, tc.source, source, "flag %q env %q", tc.flag, tc.env)
	}
	for _, bad := range []string{"lots", "1.5XB", "-1GiB", "1MiB"} {
		_, _, err := memoryLimit(bad, "", 24*gib)
		require.ErrorContains(t, err, "invalid --memory-limit", bad)
	}
}

func TestMemTotal(t *testing.T) {
	t.Parallel()
	require.Equal(t, int64(24591216*1024), memTotal(strings.NewReader("MemTotal:       24591216 kB\nMemFree:         1000 kB\n")))
	require.Zero(t, memTotal(strings.NewReader("MemFree: 1000 kB\n")))
}

func TestMemoryBudgetFlag(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]int64{"256MiB": 256 << 20, "unlimited": 0, "0": -1, "1GB": 1e9} {
		got, err := parseMemoryBudget(in)
		require.NoError(t, err, in)
		require.Equal(t, want, got, in)
	}
	got, err := parseMemoryBudget("")
	require.NoError(t, err)
	require.Positive(t, got, "the default is a share of the memory")
	_, err = parseMemoryBudget("much")
	require.ErrorContains(t, err, "invalid --memory-budget")
}

// The limit is read back from the runtime of the real server process, which
// logs it at start.
func TestServeAppliesMemoryLimit(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, "--memory-limit", "512MiB")
	require.Contains(t, srv.Log(), `msg="serve: soft memory limit" bytes=536870912 source=--memory-limit`)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, code := testserver.Run(ctx, t, "serve", "--listen", "127.0.0.1:0", "--http", "off", "--memory-limit", "10KiB")
	require.NotZero(t, code, out)
	require.Contains(t, out, "invalid --memory-limit")
}

// Not parallel: it sets GOMEMLIMIT, which the server process inherits.
func TestServeKeepsGOMEMLIMIT(t *testing.T) {
	t.Setenv("GOMEMLIMIT", "300MiB")
	srv := testserver.Start(t)
	require.Contains(t, srv.Log(), `msg="serve: soft memory limit" bytes=314572800 source=GOMEMLIMIT`)
}

// gcTarget makes srv collect garbage (through the heap profile of its
// --pprof endpoints, which collects first when asked with gc=1) and returns
// the collector's target that its /metrics report afterwards.
func gcTarget(t *testing.T, srv *testserver.Server) int {
	t.Helper()
	m := regexp.MustCompile(`msg="serve: profiling endpoints" addr=(\S+)`).FindStringSubmatch(srv.Log())
	require.NotNil(t, m, "started with --pprof")
	httpGet(t, "http://"+m[1]+"/debug/pprof/heap?gc=1")
	return runtimeGauge(t, srv, "go_gc_gogc_percent")
}

// runtimeGauge returns the whole-number value of the gauge name in srv's
// /metrics.
func runtimeGauge(t *testing.T, srv *testserver.Server, name string) int {
	t.Helper()
	g := regexp.MustCompile(`(?m)^` + name + ` (\d+)$`).FindStringSubmatch(httpGet(t, "http://"+srv.HTTPAddr(t)+"/metrics"))
	require.NotNil(t, g, "%s in /metrics", name)
	n, err := strconv.Atoi(g[1])
	require.NoError(t, err)
	return n
}

// httpGet returns the body of a successful GET of url.
func httpGet(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode, url)
	return string(body)
}

// fillBudget queues n background jobs of 8 MiB on srv, whose payloads stay
// within its --memory-budget.
func fillBudget(t *testing.T, srv *testserver.Server, n int) {
	t.Helper()
	c := gearmantest.NewClient(t, srv.Addr)
	for i := range n {
		_, err := c.SubmitBackground(testwait.Context(t), client.Request{Function: "big", Payload: bytes.Repeat([]byte{byte(i)}, 8<<20)})
		require.NoError(t, err)
	}
}

// The payloads kept within --memory-budget get no room of their own above
// the live heap: with 72 MiB of them and little else, the collector's
// target falls below Go's default of 100 (the heap may then grow by about
// 64 MiB before the next collection instead of by all it holds).
func TestServeGCTargetLeavesOutBudgetPayloads(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, "--store", "pebble:"+t.TempDir(), "--memory-budget", "80MiB",
		"--http", "127.0.0.1:0", "--pprof", "127.0.0.1:0")
	require.Equal(t, 100, gcTarget(t, srv), "nothing queued: Go's default")
	fillBudget(t, srv, 9)
	var got int
	testwait.Until(t, "a target below 100", func() bool {
		got = gcTarget(t, srv)
		return got < 100
	})
	require.GreaterOrEqual(t, got, 10, "at least gcpace.DefaultMinPercent")
}

// Not parallel: it sets GOGC, which the server process inherits and whose
// target it keeps, budget or not.
func TestServeKeepsGOGC(t *testing.T) {
	t.Setenv("GOGC", "150")
	srv := testserver.Start(t, "--store", "pebble:"+t.TempDir(), "--memory-budget", "80MiB",
		"--http", "127.0.0.1:0", "--pprof", "127.0.0.1:0")
	require.Contains(t, srv.Log(), `msg="serve: the collector's target is GOGC's" GOGC=150`)
	fillBudget(t, srv, 9)
	require.Equal(t, 150, gcTarget(t, srv))
	require.Equal(t, 150, gcTarget(t, srv), "after a collection with the budget full")
}
