package main

import (
	"context"
	"encoding/json"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/client"
	"github.com/gearwork/gearwork/internal/gearmantest"
	"github.com/gearwork/gearwork/internal/testwait"
	"github.com/gearwork/gearwork/worker"
)

func testAdminCommand(t *testing.T, kind cliServerKind) {
	srv := kind.start(t)
	s := "--servers=" + srv.addr
	c := gearmantest.NewClient(t, srv.addr)
	ctx := context.Background()
	j1, err := c.SubmitBackground(ctx, client.Request{Function: "adm_fn", Unique: "u1"})
	require.NoError(t, err)
	_, err = c.SubmitBackground(ctx, client.Request{Function: "adm_fn", Unique: "u2"})
	require.NoError(t, err)
	cliWorker(t, srv.addr, "adm-client", map[string]worker.HandlerFunc{
		"adm_worker": func(context.Context, *worker.Job) ([]byte, error) { return nil, nil },
	})

	type row = map[string]any
	jsonRows := func(args ...string) []row {
		t.Helper()
		// Flags may follow the command words.
		out, errOut, code := gw(t, append(append([]string{"admin", s}, args...), "--json")...)
		require.Equal(t, 0, code, errOut)
		var rows []row
		require.NoError(t, json.Unmarshal([]byte(out), &rows), out)
		return rows
	}
	var st []row
	testwait.Until(t, "the worker to register", func() bool {
		st = jsonRows("status")
		for _, r := range st {
			if r["function"] == "adm_worker" && r["workers"] == 1.0 {
				return true
			}
		}
		return false
	})
	require.Contains(t, st, row{"server": srv.addr, "function": "adm_fn", "total": 2.0, "running": 0.0, "workers": 0.0})

	out, _, code := gw(t, "admin", s, "status")
	require.Equal(t, 0, code)
	lines := strings.Split(out, "\n")
	require.Equal(t, "FUNCTION    TOTAL  RUNNING  WORKERS", lines[0])
	require.Contains(t, lines, "adm_fn      2      0        0")

	var workers []row
	for _, r := range jsonRows("workers") {
		if r["client_id"] == "adm-client" {
			workers = append(workers, r)
		}
	}
	require.Len(t, workers, 1)
	require.Equal(t, []any{"adm_worker"}, workers[0]["functions"])

	var handles []any
	for _, r := range jsonRows("show-jobs") {
		handles = append(handles, r["handle"])
	}
	require.Contains(t, handles, j1.Handle)
	var uniques []any
	for _, r := range jsonRows("uniques") {
		uniques = append(uniques, r["unique"])
	}
	require.Subset(t, uniques, []any{"u1", "u2"})

	for _, args := range [][]string{{"maxqueue", "adm_fn", "10"}, {"maxqueue", "adm_fn", "1", "2", "3"},
		{"create", "newfn"}, {"drop", "newfn"}, {"cancel", j1.Handle}} {
		out, errOut, code := gw(t, append([]string{"admin", s}, args...)...)
		require.Equal(t, 0, code, "%v: %s", args, errOut)
		require.Equal(t, "OK\n", out, args)
	}
	if srv.ours != nil {
		st2, err := c.Status(ctx, j1)
		require.NoError(t, err)
		require.False(t, st2.Known, "the cancelled job is gone")
		// Its record is kept: the job is there, and it has ended.
		_, errOut, code := gw(t, "admin", s, "cancel", j1.Handle)
		require.Equal(t, 1, code)
		require.Contains(t, errOut, "JOB_ENDED")
		require.Contains(t, errOut, "already ended (cancelled)")
	} else {
		// gearmand keeps a cancelled job, marked ignored, until a worker
		// would have taken it.
		require.Contains(t, jsonRows("show-jobs"), row{"server": srv.addr, "handle": j1.Handle, "retries": 0.0, "ignored": 1.0, "queued": 0.0})
	}
	_, errOut, code := gw(t, "admin", s, "cancel", "H:nosuch:1")
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "UNKNOWN_JOB")
	_, errOut, code = gw(t, "admin", s, "drop", "nosuch")
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "function not found")

	out, _, code = gw(t, "admin", s, "getpid")
	require.Equal(t, 0, code)
	require.Equal(t, strconv.Itoa(srv.pid)+"\n", out)
	for _, cmd := range []string{"version", "verbose"} {
		out, _, code = gw(t, "admin", s, cmd)
		require.Equal(t, 0, code)
		require.NotEmpty(t, strings.TrimSpace(out), cmd)
	}
	require.Equal(t, []row{{"server": srv.addr, "result": strconv.Itoa(srv.pid)}}, jsonRows("getpid"))

	if srv.ours == nil {
		// gearmand 1.1.15+ has no shutdown command.
		_, errOut, code = gw(t, "admin", s, "shutdown")
		require.Equal(t, 1, code)
		require.Contains(t, errOut, "UNKNOWN_COMMAND")
	}

	_, _, code = gw(t, "admin", s, "frobnicate")
	require.Equal(t, exitUsage, code)

	// Several servers: a SERVER column, and an unreachable one is an error.
	out, errOut, code = gw(t, "admin", s+",127.0.0.1:1", "status")
	require.Equal(t, exitUnreachable, code)
	require.Contains(t, errOut, "127.0.0.1:1")
	require.True(t, strings.HasPrefix(out, "SERVER"), out)
	require.Contains(t, out, srv.addr)
}

func testAdminShutdown(t *testing.T, bin string) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	ln.Close()
	serve := exec.Command(bin, "serve", "--listen="+addr, "--log-level=error", "--store=memory:")
	require.NoError(t, serve.Start())
	exited := make(chan error, 1)
	go func() { exited <- serve.Wait() }()
	t.Cleanup(func() { _ = serve.Process.Kill() })
	testwait.Until(t, "the server to listen", func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	out, errOut, code := gw(t, "admin", "--servers="+addr, "shutdown", "--graceful")
	require.Equal(t, 0, code, errOut)
	require.Equal(t, "OK\n", out)
	require.NoError(t, <-exited)
}

// TestAdminJobsLimitChecked: a --limit outside 1-1000 is a usage error
// (exit 2, the message names the range) and nothing is sent to the server.
func TestAdminJobsLimitChecked(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var accepted atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close() })
	for _, limit := range []string{"0", "-3", "1001", "5000"} {
		out, errOut, code := gw(t, "admin", "--servers", ln.Addr().String(), "--timeout", "2s", "jobs", "--limit", limit)
		require.Equal(t, exitUsage, code, "--limit %s: %s", limit, errOut)
		require.Empty(t, out)
		require.Contains(t, errOut, "gearwork admin: invalid --limit "+limit+": use 1 to 1000", limit)
	}
	require.Zero(t, accepted.Load(), "nothing is sent for an invalid --limit")
}
