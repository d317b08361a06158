package cluster

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/gearman"
	"github.com/gearwork/gearwork/internal/gearmantest/wire"
	"github.com/gearwork/gearwork/internal/store/postgres/pgtest"
)

// TestClusterCancelHeldJobsAcrossSIGKILL cancels jobs that the server
// asked holds (queued for its worker, and one running there), kills that
// server with SIGKILL right after the last OK, and checks that each job
// stays cancelled: its record says so on the other server and on the
// killed one restarted (a job whose row outlived the cancel would be
// queued or running there, and run again once the lease ran out).
func TestClusterCancelHeldJobsAcrossSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL and two servers")
	}
	url := pgtest.Schema(t)
	s := startCluster(t, url+"&lease_ttl=2s", 2)
	a, b := s[0], s[1]
	// A worker of f at a, so that a claims f's jobs as they are
	// inserted; it runs one of them.
	w := wire.Dial(t, a.addr)
	w.Send(gearman.CanDo, "f")
	var handles []string
	for range 8 {
		handles = append(handles, submitBg(t, a.addr, "f", "x"))
	}
	w.Send(gearman.GrabJobUniq)
	running := w.ExpectCmd(gearman.JobAssignUniq)[0]
	require.Contains(t, handles, running)
	for _, h := range handles {
		adminOK(t, a.addr, "cancel job "+h)
	}
	a.kill()
	w.NC.Close()

	for _, h := range handles {
		require.Equal(t, "cancelled", jobField(t, b.addr, h, "state"), "job %s, cancelled at the killed server", h)
	}
	a.start()
	for _, h := range handles {
		require.Equal(t, "cancelled", jobField(t, a.addr, h, "state"), "job %s after the restart", h)
	}
}
