package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/internal/testserver"
	"github.com/gearwork/gearwork/worker"
)

// TestStopDoesNotUseAttemptsOfRunningJobs: a job running when the server
// stops (SIGTERM, as a restart or a deploy sends) runs again after the
// restart, as after a crash: the interrupted run is no failure of its
// worker and uses none of the job's attempts, so a job allowed one attempt
// is not made a dead letter by the restart.
func TestStopDoesNotUseAttemptsOfRunningJobs(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "gearwork.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte("functions:\n  once:\n    max_attempts: 1\n  twice:\n    max_attempts: 2\n"), 0o600))
	args := []string{"--store", "pebble:" + filepath.Join(dir, "data"), "--config", cfg}
	srv := testserver.Start(t, args...)
	started := make(chan string, 2)
	hold := func(ctx context.Context, j *worker.Job) ([]byte, error) {
		started <- j.Handle
		<-ctx.Done()
		return nil, ctx.Err()
	}
	cliWorker(t, srv.Addr, "", map[string]worker.HandlerFunc{"once": hold, "twice": hold})
	var handles []string
	for _, fn := range []string{"once", "twice"} {
		out, errOut, code := gw(t, "submit", "--servers", srv.Addr, "--background", fn, "x")
		require.Equal(t, 0, code, errOut)
		handles = append(handles, strings.TrimSpace(out))
	}
	for range handles {
		select {
		case <-started:
		case <-time.After(30 * time.Second):
			t.Fatal("the worker did not start both jobs")
		}
	}
	srv.Stop()
	require.NotContains(t, srv.Log(), "dead letters", "a stop makes no dead letter")

	srv = testserver.Start(t, args...)
	for _, h := range handles {
		out, errOut, code := gw(t, "admin", "--servers", srv.Addr, "--json", "job", h)
		require.Equal(t, 0, code, errOut)
		var rec []map[string]any
		require.NoError(t, json.Unmarshal([]byte(out), &rec), out)
		require.Len(t, rec, 1, out)
		require.Equal(t, "queued", rec[0]["state"], out)
		require.Contains(t, []any{nil, "", "0", float64(0)}, rec[0]["attempts"], "the interrupted run is no attempt: %s", out)
	}
	out, errOut, code := gw(t, "admin", "--servers", srv.Addr, "--json", "deadletters")
	require.Equal(t, 0, code, errOut)
	require.NotContains(t, out, handles[0])
}
