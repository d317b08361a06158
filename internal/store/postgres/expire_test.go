package postgres_test

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/internal/store"
	"github.com/gearwork/gearwork/internal/store/postgres/pgtest"
)

// A retained result stored without an expiry time (an older row) expires
// at its finish time plus its function's retention; a retention that
// takes that past the last Unix nanosecond (2262) means never, as for
// the broker's deadlines, instead of an out-of-range error at every
// expiry pass.
func TestExpireUntimedResultWithRetentionPast2262(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := openStore(t, pgtest.Schema(t), "a")
	_, err := s.Join(ctx, func(string) {}, func(string) {}, func(error) {})
	require.NoError(t, err)
	now := time.Now().UnixNano()
	var seqs []uint64
	for _, fn := range []string{"long", "short"} {
		res, err := s.Commit(ctx, store.CommitParams{Insert: store.InsertParams{HandlePrefix: "H:t:",
			Jobs: []store.Job{newJob(fn, "u", "p")}, Claim: []bool{true}}})
		require.NoError(t, err)
		j := newJob(fn, "u", "p")
		j.Seq, j.State, j.Result, j.FinishedAt = res.Inserted[0].Seq, store.StateDone, []byte("r"), now
		_, err = s.Commit(ctx, store.CommitParams{Update: []store.Job{j}, Release: []uint64{j.Seq}})
		require.NoError(t, err)
		seqs = append(seqs, j.Seq)
	}
	p := store.ExpireParams{Now: now + int64(time.Hour),
		Retention: map[string]int64{"long": math.MaxInt64, "short": int64(time.Minute)}, DefaultRetention: math.MaxInt64 - 1}
	n, err := s.Expire(ctx, p)
	require.NoError(t, err)
	require.Equal(t, 1, n, "the short retention ran out; the long one never does")
	_, err = s.StoredJob(ctx, seqs[0], store.StateDone)
	require.NoError(t, err, "kept")
	p.Retention = nil
	n, err = s.Expire(ctx, p)
	require.NoError(t, err, "the default retention too")
	require.Zero(t, n)
}
