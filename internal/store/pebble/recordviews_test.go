package pebble_test

import (
	"context"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/internal/broker"
	"github.com/gearwork/gearwork/internal/store/pebble"
)

// endJob runs one job of p through a worker that ends it with o and data,
// and waits for its record to be in the store. It returns the job's seq
// and the worker's session.
func endJob(t *testing.T, b *broker.Broker, st *pebble.Store, p broker.SubmitParams, o broker.Outcome, data string) (uint64, *broker.Session) {
	t.Helper()
	w := b.NewSession("w", dropEvents{})
	b.CanDo(w, p.Function, 0)
	ch := make(chan uint64, 1)
	b.Submit(b.NewSession("c", dropEvents{}), p, func(seq uint64, _ bool, err error) {
		require.NoError(t, err)
		ch <- seq
	})
	a, ok := b.Grab(w)
	require.True(t, ok)
	require.NoError(t, b.Finish(w, a.Seq, o, []byte(data)))
	seq := <-ch
	require.Equal(t, seq, a.Seq)
	waitStored(t, st, seq)
	return seq, w
}

// A dead job's lookup answers its record, as the job list does, not the
// dead letter kept beside it: the same attempts, error, start and payload
// preview wherever it is read.
func TestDeadJobAnswersItsRecord(t *testing.T) {
	t.Parallel()
	b, st := recordBroker(t, vfs.NewMem(), broker.Config{Policies: map[string]broker.Policy{"f": {MaxAttempts: 1}}})
	defer st.Close()
	defer b.Stop()
	seq, _ := endJob(t, b, st, broker.SubmitParams{Function: []byte("f"), Payload: []byte("img-42"), Background: true},
		broker.Exception, "disk full")

	_, ok, err := b.DeadLetterByHandle(context.Background(), []byte(b.Handle(seq)))
	require.NoError(t, err)
	require.True(t, ok, "the dead letter is kept")
	got, ok := b.Job(context.Background(), seq)
	require.True(t, ok)
	page, err := b.ListJobs(context.Background(), broker.JobQuery{Function: "f"})
	require.NoError(t, err)
	require.Len(t, page.Jobs, 1)
	listed := page.Jobs[0]
	listed.Cursor = ""
	require.Equal(t, listed, got)
	require.Equal(t, broker.FinalDead, got.State)
	require.Equal(t, []byte("img-42"), got.PayloadPreview)
	require.False(t, got.Started.IsZero())
}

// A foreground job that failed runs again from its record on disk: the
// record kept its whole payload.
func TestRetryJobFromStoredRecord(t *testing.T) {
	t.Parallel()
	b, st := recordBroker(t, vfs.NewMem(), broker.Config{})
	defer st.Close()
	defer b.Stop()
	seq, w := endJob(t, b, st, broker.SubmitParams{Function: []byte("f"), Unique: []byte("u-1"), Payload: []byte("the payload")},
		broker.Fail, "")

	again, created, err := b.RetryJob(context.Background(), []byte(b.Handle(seq)), "test")
	require.NoError(t, err)
	require.True(t, created)
	a, ok := b.Grab(w)
	require.True(t, ok)
	require.Equal(t, again, a.Seq)
	require.Equal(t, []byte("the payload"), a.Payload)
	require.Equal(t, "u-1", a.Unique)
}
