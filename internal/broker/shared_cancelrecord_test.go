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

// A job that failed once and waits for its retry, cancelled on another
// server once its own has stopped, has the record a server alone writes:
// its attempt, the attempt's history, its last error and who cancelled it.
func TestSharedCancelledRecordKeepsTheAttempts(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := pgtest.Schema(t)
	cfg := broker.Config{Policies: map[string]broker.Policy{
		"flaky": {MaxAttempts: 3, Backoff: broker.Backoff{Initial: time.Hour, Max: time.Hour}},
	}}
	a, _ := startShared(t, url, "a", cfg)
	b, _ := startShared(t, url, "b", cfg)
	client := a.NewSession("client", newOutbox())
	job := submit(t, a, client, bgJob("flaky", "", "p"))
	require.NoError(t, job.err)
	w, out := newWorker(t, a, "w", "flaky")
	require.Equal(t, job.seq, grab(t, a, w, out).Seq)
	require.NoError(t, a.Finish(w, job.seq, broker.Exception, []byte("boom")))
	testwait.Until(t, "the retry-wait stored", func() bool { return rowsIn(t, url, 1) == 1 })
	a.Stop()

	handle := []byte(fmt.Sprintf("H:a:%d", job.seq))
	require.NoError(t, b.CancelJobBy(ctx, handle, "operator"))
	snap, ok := b.Job(ctx, job.seq)
	require.True(t, ok)
	require.True(t, snap.Final)
	require.Equal(t, broker.FinalCancelled, snap.State)
	require.Equal(t, uint32(1), snap.Attempts)
	require.Len(t, snap.History, 1)
	require.Equal(t, "boom", snap.History[0].Error)
	require.Equal(t, "boom", snap.LastError)
	require.Equal(t, "operator", snap.CancelledBy)
}

// A job another live server holds, cancelled on this one, is cancelled
// there as if asked directly: its record names who asked (the admin
// connection or HTTP client), on both servers, not merely that some server
// did.
func TestSharedCancelOfAJobHeldElsewhereNamesWhoAsked(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url, a, b := openPair(t)
	client := a.NewSession("client", newOutbox())
	job := submit(t, a, client, bgJob("held", "", "p"))
	require.NoError(t, job.err)
	w, out := newWorker(t, a, "w", "held")
	require.Equal(t, job.seq, grab(t, a, w, out).Seq)
	testwait.Until(t, "the row is stored", func() bool { return countRows(t, url) == 1 })

	const by = "admin 192.0.2.7:4242/x"
	require.NoError(t, b.CancelJobBy(ctx, []byte(fmt.Sprintf("H:a:%d", job.seq)), by))
	for _, srv := range []*broker.Broker{a, b} {
		rec := waitRecord(t, srv, job.seq)
		require.Equal(t, broker.FinalCancelled, rec.State)
		require.Equal(t, by, rec.CancelledBy)
	}
}
