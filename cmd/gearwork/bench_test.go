package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/internal/gearmantest"
)

func startTestServer(t *testing.T) string {
	t.Helper()
	return gearmantest.Start(t).Addr()
}

func TestBenchCommand(t *testing.T) {
	t.Parallel()
	addr := startTestServer(t)
	var stdout, stderr bytes.Buffer
	err := run(t.Context(), []string{"bench", "--servers", addr, "--scenario", "echo,drain8",
		"--jobs", "300", "--workers", "2"}, nil, &stdout, &stderr)
	require.NoError(t, err, stderr.String())
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	require.Len(t, lines, 2)
	require.True(t, strings.HasPrefix(lines[0], "scenario=echo server="+addr+" jobs=300 payload=64 connections=4 inflight=64 "), lines[0])
	require.True(t, strings.HasPrefix(lines[1], "scenario=drain8 server="+addr+" jobs=300 payload=64 connections=0 inflight=0 workers=2 grabs=8 backlog=300 "), lines[1])
	require.Contains(t, stderr.String(), "echo    300 echoes in")
	require.Contains(t, stderr.String(), "drain8  300 jobs in")
	require.NotContains(t, stderr.String(), "\r", "no progress bar when stderr is not a terminal")
	status := func() string {
		t.Helper()
		var out, errOut bytes.Buffer
		require.NoError(t, run(t.Context(), []string{"admin", "--servers", addr, "status"}, nil, &out, &errOut), errOut.String())
		return out.String()
	}
	require.NotContains(t, status(), "gearwork-bench", "the scenarios dropped the functions they created")

	stdout.Reset()
	// --server is the old name of --servers, kept as a hidden alias.
	err = run(t.Context(), []string{"bench", "--server", addr, "--scenario", "fg1", "--jobs", "50", "--json"}, nil, &stdout, &stderr)
	require.NoError(t, err)
	var res map[string]any
	require.NoError(t, json.Unmarshal(stdout.Bytes(), &res))
	require.Equal(t, "fg1", res["scenario"])
	require.EqualValues(t, 50, res["jobs"])
	require.Contains(t, res, "p99_us")
	require.NotContains(t, status(), "gearwork-bench")

	stdout.Reset()
	require.NoError(t, run(t.Context(), []string{"bench", "--servers", addr, "--scenario", "fg1", "--jobs", "10", "--no-cleanup"}, nil, &stdout, &stderr))
	require.Contains(t, status(), "gearwork-bench.fg1.", "--no-cleanup leaves the function")
}

func TestBenchCommandRejectsBadArguments(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--jobs", "0"}, "invalid --jobs 0: must be at least 1"},
		{[]string{"--workers", "-3"}, "invalid --workers -3"},
		{[]string{"--timeout", "0s"}, "invalid --timeout 0s"},
		{[]string{"--idle-settle", "0s"}, "invalid --idle-settle 0s"},
		{[]string{"--payload", "4"}, "payload must be 8 to"},
		{[]string{"--scenario", "memory"}, "scenario memory needs the server's pid"},
		{[]string{"--scenario", "nope"}, `unknown scenario "nope"`},
		{[]string{"--servers", ""}, "no server address"},
		{[]string{"--servers", "127.0.0.1:1,127.0.0.1:2"}, "bench measures one server"},
	} {
		var stdout, stderr bytes.Buffer
		err := run(t.Context(), append([]string{"bench"}, tc.args...), nil, &stdout, &stderr)
		var ex exitError
		require.ErrorAs(t, err, &ex, "args %q", tc.args)
		require.Equal(t, exitUsage, ex.code, "args %q", tc.args)
		require.Contains(t, stderr.String(), tc.want, "args %q", tc.args)
		require.Empty(t, stdout.String())
	}
	var stdout, stderr bytes.Buffer
	var ex exitError
	require.ErrorAs(t, run(t.Context(), []string{"bench", "extra"}, nil, &stdout, &stderr), &ex)
	require.Equal(t, exitUsage, ex.code)
	require.ErrorIs(t, run(t.Context(), []string{"bench", "--bogus"}, nil, &stdout, &stderr), errUsage)
}

func TestBenchCommandReportsFailures(t *testing.T) {
	t.Parallel()
	// Nothing listens on port 1 of loopback.
	var stdout, stderr bytes.Buffer
	err := run(t.Context(), []string{"bench", "--servers", "127.0.0.1:1", "--scenario", "echo,submit", "--jobs", "10"}, nil, &stdout, &stderr)
	var ex exitError
	require.ErrorAs(t, err, &ex)
	require.Equal(t, exitUnreachable, ex.code, "no server: the exit code of every command for it")
	require.Equal(t, "bench: 2 of 2 scenarios failed", ex.msg)
	require.Contains(t, stderr.String(), "gearwork: bench echo: connect to 127.0.0.1:1")
	require.Empty(t, stdout.String())
}
