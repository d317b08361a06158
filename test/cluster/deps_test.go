package cluster

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/gearman"
	"github.com/gearwork/gearwork/internal/gearmantest/wire"
	"github.com/gearwork/gearwork/internal/store/postgres/pgtest"
)

// seqOf returns the number that ends a handle.
func seqOf(handle string) string { return handle[strings.LastIndexByte(handle, ':')+1:] }

// rowState returns the state of job handle's row, or -1 when it has none.
func rowState(t *testing.T, url, handle string) int {
	t.Helper()
	n := -1
	pgtest.QueryRow(t, url, `SELECT coalesce((SELECT state::int FROM gearwork_jobs WHERE seq = `+seqOf(handle)+`), -1)`, &n)
	return n
}

// TestClusterDependencies runs two servers on one PostgreSQL: jobs
// submitted over server b's Gearman port wait for jobs that workers of
// server a run (a fan-in, then a chain after it), and a failure there
// cancels, with the reason, the jobs waiting on b down a chain, except
// one that runs anyway; a job naming one that failed, or one that never
// existed, is refused with an ERROR packet.
func TestClusterDependencies(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL and two servers")
	}
	url, a, b := startPair(t)
	require.Equal(t, []string{"OK"}, adminCall(t, a.addr, "create function fails", false))
	require.Equal(t, []string{"OK"}, adminCall(t, a.addr, "policy fails max_attempts=1", false))
	d1, d2 := submitBg(t, a.addr, "dep", "1"), submitBg(t, a.addr, "dep", "2")
	fanin := submitBgUnique(t, b.addr, "fanin", "after:"+seqOf(d1)+","+seqOf(d2), "w")
	chain := submitBgUnique(t, b.addr, "chain", "after:"+seqOf(fanin), "c")
	f := submitBg(t, a.addr, "fails", "f")
	g := submitBgUnique(t, b.addr, "g", "after:"+seqOf(f), "g")
	h := submitBgUnique(t, b.addr, "h", "after:"+seqOf(g), "h")
	anyway := submitBgUnique(t, b.addr, "anyway", "after-anyway:"+seqOf(f), "k")
	for _, w := range []string{fanin, chain, g, h, anyway} {
		require.Equal(t, 4, rowState(t, url, w), "%s waits in the database", w)
	}

	require.Equal(t, d1, workOne(t, a.addr, "dep", gearman.WorkComplete, ""))
	require.Equal(t, 4, rowState(t, url, fanin), "one of two is not enough")
	require.Equal(t, d2, workOne(t, a.addr, "dep", gearman.WorkComplete, ""))
	require.Equal(t, seqOf(fanin), seqOf(workOne(t, b.addr, "fanin", gearman.WorkComplete, "")),
		"the fan-in runs once both ended on the other server")
	require.Equal(t, seqOf(chain), seqOf(workOne(t, b.addr, "chain", gearman.WorkComplete, "")))

	require.Equal(t, f, workOne(t, a.addr, "fails", gearman.WorkFail, ""))
	require.Equal(t, seqOf(anyway), seqOf(workOne(t, b.addr, "anyway", gearman.WorkComplete, "")))
	for _, c := range []struct{ handle, reason string }{
		{g, "dependency " + f + " dead"},
		{h, "dependency " + g + " cancelled"},
	} {
		var state, by string
		deadline := time.Now().Add(time.Minute)
		for state == "" {
			pgtest.QueryRow(t, url, `SELECT coalesce((SELECT state || ' ' || (convert_from(data, 'UTF8')::jsonb->>'CancelledBy')
				FROM gearwork_records WHERE seq = `+seqOf(c.handle)+`), '')`, &state)
			require.True(t, time.Now().Before(deadline), "%s has no record", c.handle)
		}
		state, by, _ = strings.Cut(state, " ")
		require.Equal(t, "cancelled", state, c.handle)
		require.Equal(t, c.reason, by, c.handle)
		require.Equal(t, -1, rowState(t, url, c.handle), "a cancelled job is gone")
	}

	for _, unique := range []string{"after:" + seqOf(f), "after:" + seqOf(d1) + ",999999999"} {
		c := wire.Dial(t, b.addr)
		c.Send(gearman.SubmitJobBg, "late", unique, "x")
		e := c.ExpectCmd(gearman.Error)
		require.Contains(t, e[1], "dependency refused", fmt.Sprint(e))
		c.NC.Close()
	}
	late := submitBgUnique(t, a.addr, "late", "after:"+seqOf(d1), "x")
	require.Equal(t, seqOf(late), seqOf(workOne(t, b.addr, "late", gearman.WorkComplete, "")),
		"a job after one that completed runs at once")
}
