package postgres_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/internal/broker"
	"github.com/gearwork/gearwork/internal/store"
	"github.com/gearwork/gearwork/internal/store/postgres/pgtest"
)

// readRecord reads the record of job seq as the broker reads it.
func readRecord(t *testing.T, st store.RecordStore, seq uint64) broker.JobSnapshot {
	t.Helper()
	rec, err := st.Record(context.Background(), seq)
	require.NoError(t, err)
	require.Equal(t, "cancelled", rec.State)
	var snap broker.JobSnapshot
	require.NoError(t, json.Unmarshal(rec.Data, &snap), "record %s", rec.Data)
	return snap
}

// TestCancelledRecordKeepsTheJobsLifecycle: the record the database writes
// for a job it cancels keeps what the job's row holds of its lifecycle
// (attempts, history, last error, limit of attempts, ordering key), as a
// server's own record of a cancelled job does, whether the job was
// cancelled while nobody held it or because a job it waited for ended.
func TestCancelledRecordKeepsTheJobsLifecycle(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := pgtest.Schema(t)
	a, b := openStore(t, url, "a"), openStore(t, url, "b")
	_, err := a.Join(ctx, func(string) {}, nil, nil)
	require.NoError(t, err)
	_, err = b.Join(ctx, func(string) {}, nil, nil)
	require.NoError(t, err)

	history := []store.Attempt{{Start: 10, End: 20, Outcome: "exception", Error: "boom", Worker: "w1"}}
	failed := store.Job{Function: "f", Unique: "u\\1 é", Payload: []byte("p"), Priority: 1,
		State: store.StateRetryWait, NotBefore: time.Now().Add(time.Hour).UnixNano(),
		Attempts: 1, LastError: "boom é", History: history, MaxAttempts: 5, OrderingKey: "k\\1"}
	res, err := a.Insert(ctx, store.InsertParams{HandlePrefix: "H:a:", Jobs: []store.Job{failed}})
	require.NoError(t, err)
	seq := res[0].Seq

	ok, err := b.CancelQueued(ctx, seq, "test")
	require.NoError(t, err)
	require.True(t, ok)
	snap := readRecord(t, b, seq)
	require.Equal(t, uint32(1), snap.Attempts)
	require.Equal(t, "boom é", snap.LastError)
	require.Equal(t, history, snap.History)
	require.Equal(t, 5, snap.MaxAttempts)
	require.Equal(t, "k\\1", snap.OrderingKey)
	require.Equal(t, "u\\1 é", snap.Unique)
	require.Equal(t, 1, snap.PayloadSize)
	require.Equal(t, "p", string(snap.PayloadPreview))
	require.Equal(t, "test", snap.CancelledBy, "who asked")

	// A waiting job, with an attempt behind it (it was queued again to
	// wait), cancelled because the job it waits for was cancelled.
	res, err = a.Insert(ctx, store.InsertParams{HandlePrefix: "H:a:", Jobs: []store.Job{newJob("f", "", "first")}})
	require.NoError(t, err)
	first := res[0].Seq
	waiting := store.Job{Function: "f", Payload: []byte("second"), Priority: 1, After: []uint64{first},
		Attempts: 2, LastError: "bang", History: history, MaxAttempts: -1, OrderingKey: "o"}
	res, err = a.Insert(ctx, store.InsertParams{HandlePrefix: "H:a:", Jobs: []store.Job{waiting}})
	require.NoError(t, err)
	require.Nil(t, res[0].Refused)
	second := res[0].Seq

	ok, err = b.CancelQueued(ctx, first, "test")
	require.NoError(t, err)
	require.True(t, ok)
	snap = readRecord(t, a, second)
	require.Equal(t, uint32(2), snap.Attempts)
	require.Equal(t, "bang", snap.LastError)
	require.Equal(t, history, snap.History)
	require.Equal(t, -1, snap.MaxAttempts)
	require.Equal(t, "o", snap.OrderingKey)
	require.Contains(t, snap.CancelledBy, "cancelled")

	// Bytes that are not UTF-8 read as octal escapes rather than failing
	// the cancel.
	odd := store.Job{Function: "f", Payload: []byte("x"), Priority: 1, LastError: "a\xffb"}
	res, err = a.Insert(ctx, store.InsertParams{HandlePrefix: "H:a:", Jobs: []store.Job{odd}})
	require.NoError(t, err)
	ok, err = b.CancelQueued(ctx, res[0].Seq, "test")
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, `a\377b`, readRecord(t, b, res[0].Seq).LastError)
}
