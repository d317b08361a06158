package postgres_test

import (
	"context"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/internal/store"
	"github.com/gearwork/gearwork/internal/store/postgres/pgtest"
)

// The store contract as internal/store/storetest states it for every store
// (Save, Delete, Load, Close, Meta); that suite runs here too once it is
// part of the tree.

func fullJob(seq uint64) store.Job {
	return store.Job{Seq: seq, Handle: "H:t:1", Function: "f", Unique: "\x00-bin\xff" + strconv.FormatUint(seq, 10), Reducer: "r",
		Payload: []byte("payload"), Priority: 2, RunAt: -5, Retries: 1<<32 - 1,
		State: store.StateDone, Attempts: 3, NotBefore: 123, LastError: "boom\x00",
		History: []store.Attempt{{Start: 1, End: 2, Outcome: "failed", Error: "x"}},
		Result:  []byte("result"), FinishedAt: 99, OrderingKey: "k", MaxAttempts: -1,
		Timeout: 1e9, Schedule: "s", Tick: 1700000000}
}

func loadAll(t *testing.T, s interface {
	Load(context.Context, func(store.Job) error) error
}) []store.Job {
	t.Helper()
	var out []store.Job
	require.NoError(t, s.Load(context.Background(), func(j store.Job) error { out = append(out, j); return nil }))
	return out
}

func TestSaveLoadDeleteReopen(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := pgtest.Schema(t)
	st := openStore(t, url, "a")
	seqs := []uint64{1 << 63, 7, 1<<64 - 1, 2}
	for _, q := range seqs {
		require.NoError(t, st.Save(ctx, []store.Job{fullJob(q)}))
	}
	got := loadAll(t, st)
	require.Len(t, got, 4)
	require.Equal(t, []uint64{2, 7, 1 << 63, 1<<64 - 1}, []uint64{got[0].Seq, got[1].Seq, got[2].Seq, got[3].Seq},
		"Load gives ascending Seq order, also past 2^63")
	require.Equal(t, fullJob(7), got[1], "every field round-trips")

	v2 := fullJob(7)
	v2.Retries, v2.Unique, v2.Payload = 1, "", nil
	require.NoError(t, st.Save(ctx, []store.Job{fullJob(7), v2}), "the later record for a Seq wins")
	require.NoError(t, st.Delete(ctx, []uint64{2, 99}), "deleting an unknown Seq is not an error")
	require.NoError(t, st.Close())
	require.NoError(t, st.Close(), "Close is idempotent")
	require.ErrorIs(t, st.Save(ctx, []store.Job{fullJob(3)}), store.ErrClosed)

	again := openStore(t, url, "a")
	got = loadAll(t, again)
	require.Len(t, got, 3)
	require.Equal(t, uint32(1), got[0].Retries)
	require.Empty(t, got[0].Payload)
	require.Empty(t, got[0].Unique)

	require.NoError(t, again.PutMeta(ctx, []store.Meta{{Key: "cron/a", Value: []byte("1")},
		{Key: "pause/f", Value: []byte("0")}, {Key: "cron/a", Value: []byte("2")}, {Key: "pause/f"}}))
	var meta []store.Meta
	require.NoError(t, again.LoadMeta(ctx, func(m store.Meta) error { meta = append(meta, m); return nil }))
	require.Equal(t, []store.Meta{{Key: "cron/a", Value: []byte("2")}}, meta, "later entries win; nil deletes")
}
