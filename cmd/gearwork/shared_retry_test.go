package main

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/internal/store/postgres/pgtest"
	"github.com/gearwork/gearwork/internal/testserver"
	"github.com/gearwork/gearwork/internal/testwait"
	"github.com/gearwork/gearwork/worker"
)

// Two servers on one PostgreSQL store: "gearwork admin retry" of a dead
// letter that one server stored, asked of the other, queues that dead
// letter again under its own handle, and says so (not that the job runs
// again as a new one under another name).
func TestSharedRetryOfADeadLetterOnAnotherServerNamesIt(t *testing.T) {
	t.Parallel()
	store := pgtest.Schema(t)
	a := testserver.Start(t, "--store", store, "--handle-prefix", "H:a:", "--http", "off")
	b := testserver.Start(t, "--store", store, "--handle-prefix", "H:b:", "--http", "off")
	cliWorker(t, a.Addr, "sr-worker", map[string]worker.HandlerFunc{
		"sr_fail": func(context.Context, *worker.Job) ([]byte, error) { return nil, errors.New("nope") },
	})
	handle := strings.TrimSpace(gwOK(t, "submit", "--servers="+a.Addr, "--background", "sr_fail", "p"))
	dead := func() bool {
		var rows []map[string]any
		out := gwOK(t, "admin", "--servers="+b.Addr, "--json", "job", handle)
		require.NoError(t, json.Unmarshal([]byte(out), &rows), out)
		return len(rows) == 1 && rows[0]["state"] == "dead"
	}
	testwait.Until(t, "the job is a dead letter", dead)
	require.Equal(t, "dead letter "+handle+" queued again\n", gwOK(t, "admin", "--servers="+b.Addr, "retry", handle))
}
