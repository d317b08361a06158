package cluster

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/gearman"
	"github.com/gearwork/gearwork/internal/gearmantest/wire"
	"github.com/gearwork/gearwork/internal/store/postgres/pgtest"
	"github.com/gearwork/gearwork/internal/testwait"
)

// TestClusterAdminChangeDuringOutage pauses a function while PostgreSQL is
// down and the server knows it (it refuses background submits): the pause
// cannot be stored, so the answer is an error at once, not an OK (the
// change would be lost if the server died before the database came back)
// and not a wait for the database. Once the database is back, the
// pause, which the server kept, is stored with the next commit round.
func TestClusterAdminChangeDuringOutage(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL and a server")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	pg, err := pgtest.Start(ctx, pgtest.Options{Settings: []string{"synchronous_commit=on"}})
	require.NoError(t, err)
	defer pg.Stop()
	a := startCluster(t, pg.URL+"&lease_ttl=2s", 1)[0]
	adminOK(t, a.addr, "create function f")

	restarted := make(chan error, 1)
	go func() { restarted <- pg.Restart(ctx, false, 6*time.Second) }()
	c := wire.Dial(t, a.addr)
	testwait.Until(t, "the server to refuse background submits", func() bool {
		cmd, _ := c.Call(gearman.SubmitJobBg, "g", "", "x")
		return cmd == gearman.Error
	})
	answer := adminCall(t, a.addr, "pause f", false)[0]
	select {
	case err := <-restarted:
		require.NoError(t, err)
		t.Fatalf("the pause was answered (%q) only once the database was back", answer)
	default:
	}
	require.True(t, strings.HasPrefix(answer, "ERR"), "pause while the database is down: %q", answer)
	require.NoError(t, <-restarted)
	// Back: the pause the server kept goes with its next round, which
	// an acknowledged submit shows has committed.
	testwait.Until(t, "the server to accept background submits again", func() bool {
		cmd, _ := c.Call(gearman.SubmitJobBg, "g", "", "x")
		return cmd == gearman.JobCreated
	})
	a.kill()
	a.start()
	require.Regexp(t, `^f\t\w+\tpaused\t`, adminCall(t, a.addr, "show policy f", true)[0])
}
