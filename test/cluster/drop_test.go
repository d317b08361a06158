package cluster

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/gearman"
	"github.com/gearwork/gearwork/internal/gearmantest/wire"
	"github.com/gearwork/gearwork/internal/store/postgres/pgtest"
)

// TestClusterDropFunctionAcrossSIGKILL drops a function whose jobs are
// rows nobody holds (queued, unique, scheduled, waiting for another job),
// submitted to either of two servers, on one of them, kills that server
// with SIGKILL right after the OK, and checks on the other that the drop
// happened: every job is recorded cancelled, none is counted or handed
// out. (The drop used to forget only the jobs the server held: it
// answered OK and every row stayed, to run later.)
func TestClusterDropFunctionAcrossSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL and two servers")
	}
	url := pgtest.Schema(t)
	s := startCluster(t, url+"&lease_ttl=2s", 2)
	a, b := s[0], s[1]
	var handles []string
	for i := range 10 {
		handles = append(handles, submitBg(t, a.addr, "dropped", "a"+strconv.Itoa(i)), submitBg(t, b.addr, "dropped", "b"+strconv.Itoa(i)))
	}
	other := submitBg(t, b.addr, "other", "x")
	c := wire.Dial(t, b.addr)
	submit := func(cmd gearman.Command, args ...string) string {
		t.Helper()
		c.Send(cmd, args...)
		return c.ExpectCmd(gearman.JobCreated)[0]
	}
	handles = append(handles,
		submit(gearman.SubmitJobBg, "dropped", "u1", "x"),
		submit(gearman.SubmitJobEpoch, "dropped", "", strconv.FormatInt(time.Now().Add(time.Hour).Unix(), 10), "x"),
		submit(gearman.SubmitJobBg, "dropped", "after:"+other[strings.LastIndex(other, ":")+1:]+":w", "x"))
	adminOK(t, a.addr, "drop function dropped")
	a.kill()

	for _, h := range handles {
		require.Equal(t, "cancelled", jobField(t, b.addr, h, "state"), "job %s of the dropped function", h)
	}
	for _, l := range adminCall(t, b.addr, "status", true) {
		require.False(t, strings.HasPrefix(l, "dropped\t") && !strings.HasPrefix(l, "dropped\t0\t"),
			"the dropped function's jobs: %q", l)
	}
	require.NotEqual(t, "cancelled", jobField(t, b.addr, other, "state"))
	w := wire.Dial(t, b.addr)
	w.Send(gearman.CanDo, "dropped")
	w.Send(gearman.GrabJobUniq)
	p, _ := w.Next()
	require.Equal(t, gearman.NoJob, p.Command, "a job of the dropped function handed out: %q", p.Args)
}
