package main

import (
	"context"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/internal/testserver"
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
