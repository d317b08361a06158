package pebble_test

import (
	"context"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/internal/broker"
	"github.com/gearwork/gearwork/internal/store/pebble"
)

type dropEvents struct{}

func (dropEvents) Send(broker.Event) {}

// TestBrokerRestartKeepsLifecycle runs the broker on the Pebble store,
// turns a job into a dead letter, and checks that a restarted broker finds
// it with its payload, attempts and error, with tiering on.
func TestBrokerRestartKeepsLifecycle(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "data")
	quiet := slog.New(slog.DiscardHandler)
	cfg := broker.Config{Logger: quiet, MemoryBudget: -1, DefaultPolicy: broker.Policy{MaxAttempts: 1}}
	open := func() (*broker.Broker, *pebble.Store) {
		st, err := pebble.Open(ctx, dir, pebble.Options{Logger: quiet})
		require.NoError(t, err)
		c := cfg
		c.Store = st
		b := broker.New(c)
		require.NoError(t, b.Start(ctx))
		return b, st
	}
	b, st := open()
	done := make(chan error, 1)
	b.Submit(b.NewSession("c", dropEvents{}), broker.SubmitParams{Function: []byte("f"), Unique: []byte("u"),
		Payload: []byte("keep me"), Background: true}, func(_ uint64, _ bool, err error) { done <- err })
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(time.Minute):
		t.Fatal("submit not acknowledged")
	}
	w := b.NewSession("w", dropEvents{})
	b.CanDo(w, []byte("f"), 0)
	a, ok := b.Grab(w)
	require.True(t, ok)
	require.Equal(t, "keep me", string(a.Payload))
	require.NoError(t, b.Finish(w, a.Seq, broker.Exception, []byte("it broke")))
	require.Len(t, mustDeadLetters(t, b, "f"), 1)
	b.Stop()
	require.NoError(t, st.Close())

	b, st = open()
	defer st.Close()
	defer b.Stop()
	dead := mustDeadLetters(t, b, "f")
	require.Len(t, dead, 1)
	require.Equal(t, a.Seq, dead[0].Seq)
	require.Equal(t, "keep me", string(dead[0].Payload))
	require.Equal(t, "u", dead[0].Unique)
	require.Equal(t, uint32(1), dead[0].Attempts)
	require.Equal(t, "it broke", dead[0].LastError)
	require.NotEmpty(t, dead[0].History)
}

func mustDeadLetters(t *testing.T, b *broker.Broker, function string) []broker.DeadLetter {
	t.Helper()
	dl, err := b.DeadLetters(context.Background(), function, 0)
	require.NoError(t, err)
	return dl
}

// TestReplayedJobKeepsSubmitTime: a job replayed from the store after a
// restart still says when it was submitted, both a plain job and one
// waiting on another (records of different layouts).
func TestReplayedJobKeepsSubmitTime(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "data")
	quiet := slog.New(slog.DiscardHandler)
	open := func() (*broker.Broker, *pebble.Store) {
		st, err := pebble.Open(ctx, dir, pebble.Options{Logger: quiet})
		require.NoError(t, err)
		b := broker.New(broker.Config{Logger: quiet, Store: st})
		require.NoError(t, b.Start(ctx))
		return b, st
	}
	b, st := open()
	c := b.NewSession("c", dropEvents{})
	first := submitAcked(t, b, c, broker.SubmitParams{Function: []byte("f"), Payload: []byte("one"), Background: true})
	second := submitAcked(t, b, c, broker.SubmitParams{Function: []byte("f"), Payload: []byte("two"), Background: true,
		After: []uint64{first}})
	want := map[uint64]time.Time{}
	for _, seq := range []uint64{first, second} {
		snap, ok := b.Job(context.Background(), seq)
		require.True(t, ok)
		require.False(t, snap.Submitted.IsZero())
		want[seq] = snap.Submitted
	}
	b.Stop()
	require.NoError(t, st.Close())

	b, st = open()
	defer st.Close()
	defer b.Stop()
	for seq, at := range want {
		snap, ok := b.Job(context.Background(), seq)
		require.True(t, ok, "job %d replayed", seq)
		require.True(t, at.Equal(snap.Submitted), "job %d: submitted %v, replayed as %v", seq, at, snap.Submitted)
	}
}

// TestTieredFailedJobRecordKeepsPayload: the record of a job whose payload
// was on disk only (beyond the memory budget) when it failed keeps its
// payload, read back before the job leaves the store, so that it shows a
// preview and runs again with the same payload.
func TestTieredFailedJobRecordKeepsPayload(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b, st := recordBroker(t, vfs.NewMem(), broker.Config{MemoryBudget: -1,
		Policies: map[string]broker.Policy{"f": {MaxDeadLetters: -1}}})
	defer st.Close()
	defer b.Stop()
	w := b.NewSession("w", dropEvents{})
	b.CanDo(w, []byte("f"), 0)
	seq := submitBG(t, b, b.NewSession("c", dropEvents{}), "f", "the payload")
	_, onDisk := b.TieringStats()
	require.Equal(t, 1, onDisk, "the payload is on disk only")
	a, ok := b.Grab(w)
	require.True(t, ok)
	require.NoError(t, b.Finish(w, a.Seq, broker.Fail, nil))
	waitStored(t, st, seq)

	rec, ok := b.Job(context.Background(), seq)
	require.True(t, ok)
	require.Equal(t, broker.FinalDead, rec.State)
	require.Equal(t, len("the payload"), rec.PayloadSize)
	require.Equal(t, "the payload", string(rec.PayloadPreview))

	again, created, err := b.RetryJob(ctx, []byte(b.Handle(seq)), "test")
	require.NoError(t, err)
	require.True(t, created)
	a, ok = b.Grab(w)
	require.True(t, ok)
	require.Equal(t, again, a.Seq)
	require.Equal(t, "the payload", string(a.Payload))
	require.NoError(t, b.Finish(w, a.Seq, broker.Complete, nil))

	// A job cancelled before it ran never had its payload read: its
	// record has the size and preview all the same.
	cancelled := submitBG(t, b, b.NewSession("c2", dropEvents{}), "f", "never ran")
	require.NoError(t, b.CancelJob(ctx, []byte(b.Handle(cancelled))))
	waitStored(t, st, again)
	waitStored(t, st, cancelled)
	for q, want := range map[uint64]string{again: "", cancelled: "never ran"} {
		rec, ok := b.Job(context.Background(), q)
		require.True(t, ok)
		if want == "" { // completed: the size, read when it ran
			require.Equal(t, broker.FinalComplete, rec.State)
			require.Equal(t, len("the payload"), rec.PayloadSize)
			continue
		}
		require.Equal(t, broker.FinalCancelled, rec.State)
		require.Equal(t, len(want), rec.PayloadSize)
		require.Equal(t, want, string(rec.PayloadPreview))
	}
}
