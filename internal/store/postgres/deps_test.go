package postgres_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/internal/store"
	"github.com/gearwork/gearwork/internal/store/postgres/pgtest"
	"github.com/gearwork/gearwork/internal/testwait"
)

// blockedBy returns a condition for testwait.Until: at least n sessions
// wait, directly or through others, for the session pid. It asks on a
// connection of its own: inside a transaction pg_stat_activity answers
// from the snapshot of its first reading.
func blockedBy(t *testing.T, url string, pid int) func(n int) func() bool {
	return func(n int) func() bool {
		return func() bool {
			var got int
			pgtest.QueryRow(t, url, `WITH RECURSIVE b(pid) AS (
				SELECT pid FROM pg_stat_activity WHERE `+strconv.Itoa(pid)+` = ANY(pg_blocking_pids(pid))
				UNION SELECT s.pid FROM pg_stat_activity s JOIN b ON b.pid = ANY(pg_blocking_pids(s.pid)))
				SELECT count(*) FROM b`, &got)
			return got >= n
		}
	}
}

// endRound is a commit round of a server that ends job seq (its row
// deleted, its record written, the jobs waiting for it told) and inserts
// jobs.
func endRound(seq uint64, jobs ...store.Job) store.CommitParams {
	return store.CommitParams{Insert: store.InsertParams{HandlePrefix: "H:t:", Jobs: jobs},
		Delete:  []uint64{seq},
		Records: []store.Record{{Seq: seq, Function: "f", State: "complete", Finished: 1, Data: []byte("{}")}},
		DepEnds: []store.DepEnd{{Seq: seq, State: "complete"}}}
}

// Two servers end the two jobs a fan-in waits for while one of them
// submits again the unique of the job the other ends: the first round
// holds the fan-in's row and waits to insert that unique until the other
// round, which deleted its job, ends, and that round waits for the
// fan-in's row. PostgreSQL breaks the deadlock by failing one of them
// (its count of deadlocks grows: the test has a database of its own, so
// no other test's deadlock counts); the store writes that round again,
// and both succeed (the unique is a new job or coalesces with the job
// ended, by which round went first).
func TestEndingRoundsThatDeadlockAreWrittenAgain(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := pgtest.Database(t)
	// The deadlocks are read on a connection of the test's own.
	stats, err := pgx.Connect(ctx, url)
	require.NoError(t, err)
	defer stats.Close(ctx)
	deadlocks := func() int64 {
		var n int64
		require.NoError(t, stats.QueryRow(ctx, `SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()`).Scan(&n))
		return n
	}
	before := deadlocks()
	a, c := openStore(t, url, "a"), openStore(t, url, "c")
	for _, st := range []interface {
		Join(context.Context, func(string), func(string), func(error)) (time.Duration, error)
	}{a, c} {
		_, err := st.Join(ctx, func(string) {}, nil, nil)
		require.NoError(t, err)
	}
	deps, err := a.Insert(ctx, store.InsertParams{HandlePrefix: "H:t:", Jobs: []store.Job{newJob("x", "", "x"), newJob("y", "u", "y")}})
	require.NoError(t, err)
	x, y := deps[0].Seq, deps[1].Seq
	fanin := newJob("w", "", "w")
	fanin.After = []uint64{x, y}
	w, err := a.Insert(ctx, store.InsertParams{HandlePrefix: "H:t:", Jobs: []store.Job{fanin}})
	require.NoError(t, err)
	require.Nil(t, w[0].Refused)

	// A transaction of the test holds the fan-in's row, so that both
	// rounds queue for it in a known order: a's first, then c's, which
	// has deleted y by then.
	conn, err := pgx.Connect(ctx, url)
	require.NoError(t, err)
	defer conn.Close(ctx)
	holder, err := conn.Begin(ctx)
	require.NoError(t, err)
	_, err = holder.Exec(ctx, `SELECT seq FROM gearwork_jobs WHERE seq = $1 FOR UPDATE`, int64(w[0].Seq))
	require.NoError(t, err)
	var pid int
	require.NoError(t, holder.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&pid))
	blocked := blockedBy(t, url, pid)
	errs := make(chan error, 2)
	go func() {
		_, err := a.Commit(ctx, endRound(x, newJob("y", "u", "again")))
		errs <- err
	}()
	testwait.Until(t, "a's round to wait for the fan-in's row", blocked(1))
	go func() {
		_, err := c.Commit(ctx, endRound(y))
		errs <- err
	}()
	testwait.Until(t, "c's round to wait for the fan-in's row", blocked(2))
	require.NoError(t, holder.Rollback(ctx))
	require.NoError(t, <-errs)
	require.NoError(t, <-errs)

	got, err := c.Claim(ctx, []store.ClaimRequest{{Function: "w", Max: 10}})
	require.NoError(t, err)
	require.Len(t, got, 1, "the fan-in is released once")
	require.Equal(t, w[0].Seq, got[0].Seq)
	counts, err := c.Counts(ctx)
	require.NoError(t, err)
	for _, n := range counts {
		require.Zero(t, n.Waiting, "no job waits for a job that ended (%s)", n.Function)
	}
	// A backend reports its statistics when it goes idle (at most once a
	// second) or exits, so the count may lag: wait for it.
	testwait.Until(t, "PostgreSQL to count the deadlock it broke", func() bool { return deadlocks() > before })
}
