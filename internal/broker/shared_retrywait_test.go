package broker_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/internal/broker"
	"github.com/gearwork/gearwork/internal/store/postgres/pgtest"
	"github.com/gearwork/gearwork/internal/testwait"
)

// A job waiting for its retry on one server is not running: another
// server must answer it as the holding server does (GET_STATUS known, not
// running; GET /v1/jobs/{handle} and "job" in retry-wait with the retry's
// time and when it was submitted), not as a job a worker runs.
func TestSharedRetryWaitIsNotRunningOnAnotherServer(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := pgtest.Schema(t)
	cfg := broker.Config{Policies: map[string]broker.Policy{"flaky": {MaxAttempts: 3,
		Backoff: broker.Backoff{Initial: time.Hour, Max: time.Hour, Jitter: -1}}}}
	a, _ := startShared(t, url, "a", cfg)
	b, _ := startShared(t, url, "b", cfg)

	w, out := newWorker(t, a, "wa", "flaky")
	r := submit(t, a, w, bgJob("flaky", "u-flaky", "payload"))
	require.NoError(t, r.err)
	as := grab(t, a, w, out)
	require.NoError(t, a.Finish(w, as.Seq, broker.Fail, nil))
	testwait.Until(t, "the failed attempt is stored", func() bool {
		var n int
		pgtest.QueryRow(t, url, fmt.Sprintf(`SELECT count(*) FROM gearwork_jobs WHERE seq = %d AND state = 1 AND attempts = 1`, as.Seq), &n)
		return n == 1
	})

	own := a.GetStatus([]byte(a.Handle(as.Seq)))
	require.True(t, own.Known)
	require.False(t, own.Running, "the holding server: waiting, not running")
	for _, st := range []broker.JobStatus{b.GetStatus([]byte(a.Handle(as.Seq))), b.GetStatusUnique([]byte("u-flaky"))} {
		require.True(t, st.Known)
		require.False(t, st.Running, "another server: waiting, not running")
	}

	snap, ok, err := b.StoredJob(ctx, as.Seq)
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, "retry-wait", snap.State)
	require.True(t, snap.RetryAt.After(time.Now().Add(30*time.Minute)), "retry at %v", snap.RetryAt)
	require.False(t, snap.Submitted.IsZero(), "the submit time is stored")
	require.Equal(t, uint32(1), snap.Attempts)
}
