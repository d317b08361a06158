package broker_test

import (
	"context"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/internal/broker"
	"github.com/gearwork/gearwork/internal/store"
	"github.com/gearwork/gearwork/internal/store/postgres"
	"github.com/gearwork/gearwork/internal/store/postgres/pgtest"
	"github.com/gearwork/gearwork/internal/testwait"
)

// gatedCommitStore holds the first commit round that inserts jobs until
// gate is closed, after closing entered.
type gatedCommitStore struct {
	*postgres.Store
	once          sync.Once
	entered, gate chan struct{}
}

func (s *gatedCommitStore) Commit(ctx context.Context, p store.CommitParams) (store.Committed, error) {
	if len(p.Insert.Jobs) > 0 {
		s.once.Do(func() {
			close(s.entered)
			<-s.gate
		})
	}
	return s.Store.Commit(ctx, p)
}

// A job whose insert claimed it for this server's workers while its
// function was dropped (its last worker gone, then "drop function") is
// dropped with the function's other jobs, and its record says who dropped
// it as theirs do. It was queued in the function
// dropped, where no worker here ever took it, and held by this server, so
// that no other server ran it either, until this one stopped.
func TestSharedDropFunctionDuringTheInsertOfItsJob(t *testing.T) {
	t.Parallel()
	url := pgtest.Schema(t)
	st, err := postgres.Open(context.Background(), postgres.Config{URL: url, Name: "a", Logger: quiet})
	require.NoError(t, err)
	gs := &gatedCommitStore{Store: st, entered: make(chan struct{}), gate: make(chan struct{})}
	b := broker.New(broker.Config{Shared: gs, HandlePrefix: "H:a:", Logger: quiet})
	require.NoError(t, b.Start(context.Background()))
	t.Cleanup(func() {
		b.Stop()
		_ = st.Close()
	})

	w1, _ := newWorker(t, b, "w1", "f") // the insert claims the job for it
	ch := submitAsync(b, b.NewSession("client", newOutbox()), bgJob("f", "u", "p"))
	<-gs.entered
	b.CloseSession(w1)
	require.NoError(t, b.DropFunctionBy(context.Background(), "f", "admin 127.0.0.1:40000"))
	close(gs.gate)
	r := answer(t, ch)
	require.NoError(t, r.err)
	require.True(t, r.created)

	require.Zero(t, b.JobCount(), "the job is not held")
	testwait.Until(t, "the job's row is deleted", func() bool { return countRows(t, url) == 0 })
	require.False(t, b.GetStatusUnique([]byte("u")).Known)
	rec, ok := b.Job(context.Background(), r.seq)
	require.True(t, ok)
	require.True(t, rec.Final)
	require.Equal(t, "cancelled", rec.State)
	require.Equal(t, "function dropped by admin 127.0.0.1:40000", rec.CancelledBy,
		"who dropped it, as for the function's other jobs")
}

// "drop function" matches the function's name exactly, in the store as in
// memory: a server that does not know the function drops the rows nobody
// holds of the function so named, and none of a function whose name
// differs only in case.
func TestSharedDropFunctionMatchesTheExactName(t *testing.T) {
	t.Parallel()
	url := pgtest.Schema(t)
	a, _ := openShared(t, url, "a", 0)
	other, _ := openShared(t, url, "other", 0)
	client := other.NewSession("client", newOutbox())
	for _, fn := range []string{"Fn", "Fn", "fN", "FN2"} {
		require.NoError(t, submit(t, other, client, bgJob(fn, "", "nobody runs it")).err)
	}

	require.ErrorIs(t, a.DropFunction(context.Background(), "fn"), broker.ErrFunctionNotFound,
		"no function is named fn")
	require.Equal(t, 4, countRows(t, url))
	require.NoError(t, a.DropFunction(context.Background(), "Fn"))
	require.NoError(t, a.Durable(context.Background()))
	require.Equal(t, 2, countRows(t, url), "the jobs of fN and FN2 stay")
	require.ErrorIs(t, a.DropFunction(context.Background(), "Fn"), broker.ErrFunctionNotFound)
}

// In memory, functions whose names differ only in case are distinct:
// dropping one leaves the others and their jobs, and a name that matches
// none exactly is not found.
func TestDropFunctionMatchesTheExactName(t *testing.T) {
	t.Parallel()
	b := broker.New(broker.Config{Logger: quiet})
	require.NoError(t, b.Start(context.Background()))
	t.Cleanup(b.Stop)
	client := b.NewSession("client", newOutbox())
	for _, fn := range []string{"Resize", "resize", "RESIZE"} {
		require.NoError(t, submit(t, b, client, bgJob(fn, "", "p")).err)
	}
	require.ErrorIs(t, b.DropFunction(context.Background(), "rESIZE"), broker.ErrFunctionNotFound)
	for i := range 20 {
		// Every time the same function, however the map is ordered.
		require.NoError(t, b.DropFunction(context.Background(), "resize"), i)
		st := b.Status(context.Background())
		names := make([]string, 0, len(st))
		for _, fs := range st {
			names = append(names, fs.Name)
		}
		require.ElementsMatch(t, []string{"Resize", "RESIZE"}, names)
		require.Equal(t, 2, b.JobCount())
		require.NoError(t, submit(t, b, client, bgJob("resize", "", "p")).err)
	}
}
