package broker_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/internal/broker"
	"github.com/gearwork/gearwork/internal/store/postgres/pgtest"
	"github.com/gearwork/gearwork/internal/testwait"
)

// In shared mode a server without workers for a function holds none of
// its jobs, so the function holds nothing here and is forgotten when new
// names need its place at Config.MaxFunctions: its jobs stay in the
// store, "status" still counts them, and a worker that registers the name
// again gets them.
func TestSharedForgottenFunctionKeepsItsStoredJobs(t *testing.T) {
	t.Parallel()
	url := pgtest.Schema(t)
	a, _ := openSharedConfig(t, url, "a", 0, broker.Config{MaxFunctions: 2})
	ctx := context.Background()

	// A worker ran jobs of "kept" here and left (the claim loop measured
	// how fast it finished them).
	client := a.NewSession("client", newOutbox())
	w, out := newWorker(t, a, "w1", "kept")
	for i := range 3 {
		require.NoError(t, submit(t, a, client, bgJob("kept", "", fmt.Sprint("early-", i))).err)
	}
	drain(t, a, w, out, 3)
	a.CloseSession(w)
	// Jobs submitted with no worker here are left in the store.
	const n = 3
	for i := range n {
		require.NoError(t, submit(t, a, client, bgJob("kept", "", fmt.Sprint(i))).err)
	}
	testwait.Until(t, "a holds no job of kept", func() bool { return a.JobCount() == 0 })

	// Two new names: "kept" holds nothing here and is forgotten for one.
	require.NoError(t, a.CreateFunction("x"))
	require.NoError(t, a.CreateFunction("y"))
	testwait.Until(t, "status counts kept's jobs in the store", func() bool {
		for _, f := range a.Status(ctx) {
			if f.Name == "kept" {
				return f.Total == n && f.Workers == 0
			}
		}
		return false
	})

	// A worker registering it again ("x" is forgotten) gets its jobs.
	w2, out2 := newWorker(t, a, "w2", "kept")
	require.Len(t, drain(t, a, w2, out2, n), n)
	testwait.Until(t, "finished jobs are deleted", func() bool { return countRows(t, url) == 0 })
}
