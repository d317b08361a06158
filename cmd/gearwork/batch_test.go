package main

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/internal/testserver"
	"github.com/gearwork/gearwork/internal/testwait"
	"github.com/gearwork/gearwork/worker"
)

// TestBatchCommands runs "gearwork admin batch create/close/ID" and
// "gearwork submit --batch" against a real "gearwork serve" on a Pebble
// store, with a Go worker that runs the jobs and the callback.
func TestBatchCommands(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, "--store", "pebble:"+t.TempDir())
	s := "--servers=" + srv.Addr
	run := func(args ...string) string {
		t.Helper()
		out, errOut, code := gw(t, args...)
		require.Equal(t, 0, code, "%v: %s", args, errOut)
		return out
	}

	var mu sync.Mutex
	var callbacks []string
	cliWorker(t, srv.Addr, "batch-worker", map[string]worker.HandlerFunc{
		"b_row": func(context.Context, *worker.Job) ([]byte, error) { return nil, nil },
		"b_done": func(_ context.Context, j *worker.Job) ([]byte, error) {
			mu.Lock()
			defer mu.Unlock()
			callbacks = append(callbacks, string(j.Payload))
			return nil, nil
		},
	})

	created := run("admin", s, "batch", "create", "on_complete=b_done")
	require.Regexp(t, `^batch \d+\n$`, created)
	id := strings.TrimSpace(strings.TrimPrefix(created, "batch "))
	for _, p := range []string{"1", "2"} {
		require.Regexp(t, `^H:\S+\n$`, run("submit", s, "--batch", id, "b_row", p))
	}
	require.Regexp(t, `^H:\S+\n$`, run("submit", s, "--batch", id, "--unique", "row-3", "b_row", "3"))
	run("admin", s, "batch", "close", id)

	testwait.Until(t, "the on_complete callback", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(callbacks) > 0
	})
	var rows []map[string]any
	require.NoError(t, json.Unmarshal([]byte(run("admin", s, "batch", id, "--json")), &rows))
	require.Len(t, rows, 1)
	for k, v := range map[string]any{"batch": id, "closed": true, "complete": true, "total": 3.0, "succeeded": 3.0,
		"failed": 0.0, "dead": 0.0, "on_complete": "b_done (fired)"} {
		require.Equal(t, v, rows[0][k], k)
	}
	mu.Lock()
	require.Len(t, callbacks, 1)
	require.Contains(t, callbacks[0], `"total":3,"succeeded":3`)
	mu.Unlock()
	require.Contains(t, run("admin", s, "batch", id), "ON_COMPLETE  b_done (fired)")

	_, errOut, code := gw(t, "submit", s, "--batch", id, "b_row", "late")
	require.NotEqual(t, 0, code)
	require.Contains(t, errOut, "batch has completed")
	_, errOut, code = gw(t, "submit", s, "--batch", "x", "b_row")
	require.Equal(t, exitUsage, code)
	require.Contains(t, errOut, "--batch")
	_, errOut, code = gw(t, "admin", s, "batch", "99")
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "UNKNOWN_BATCH")
}

// --batch-retention: a completed batch is forgotten once it has passed.
func TestBatchRetentionFlag(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, "--batch-retention", "1s")
	s := "--servers=" + srv.Addr
	out, errOut, code := gw(t, "admin", s, "batch", "create")
	require.Equal(t, 0, code, errOut)
	id := strings.TrimSpace(strings.TrimPrefix(out, "batch "))
	_, errOut, code = gw(t, "admin", s, "batch", "close", id)
	require.Equal(t, 0, code, errOut)
	out, errOut, code = gw(t, "admin", s, "batch", id)
	require.Equal(t, 0, code, errOut)
	require.Regexp(t, `COMPLETE +true`, out)
	testwait.Until(t, "the batch to be forgotten", func() bool {
		_, errOut, code := gw(t, "admin", s, "batch", id)
		return code == 1 && strings.Contains(errOut, "UNKNOWN_BATCH")
	})
}
