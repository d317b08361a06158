package broker

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/internal/store"
	"github.com/gearwork/gearwork/internal/store/pebble"
)

// heldRecordWrites is a Pebble store whose first write of job records
// waits until release is closed (entered is closed when it starts), and
// then fails with fail when set.
type heldRecordWrites struct {
	*pebble.Store
	entered, release chan struct{}
	fail             error
	held             bool
	releaseOnce      sync.Once
}

// let lets the held write go on.
func (s *heldRecordWrites) let() { s.releaseOnce.Do(func() { close(s.release) }) }

func (s *heldRecordWrites) EndJobs(ctx context.Context, dels []uint64, recs []store.Record, forget []uint64) error {
	if len(recs) > 0 && !s.held {
		s.held = true // only the committer writes records
		close(s.entered)
		<-s.release
		if s.fail != nil {
			return s.fail
		}
	}
	return s.Store.EndJobs(ctx, dels, recs, forget)
}

func setupHeldRecordWrites(t *testing.T, fail error) (*lcBundle, *heldRecordWrites) {
	t.Helper()
	ps, err := pebble.Open(context.Background(), t.TempDir(), pebble.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = ps.Close() }) // after the broker's stop
	st := &heldRecordWrites{Store: ps, entered: make(chan struct{}), release: make(chan struct{}), fail: fail}
	tb := setupLC(t, lcOpts{cfg: Config{Store: st}, can: []string{"fn"}})
	t.Cleanup(st.let) // before the broker's stop, should the test fail first
	return tb, st
}

// endedCount returns how many records of fn CountJobs counts in state.
func endedCount(tb *lcBundle, fn, state string) int {
	for _, c := range tb.b.CountJobs(context.Background()) {
		if c.Function == fn {
			return c.Ended[state]
		}
	}
	return 0
}

// listed returns the Seqs of the ended jobs ListJobs lists, newest first.
func listed(t *testing.T, tb *lcBundle) []uint64 {
	t.Helper()
	page, err := tb.b.ListJobs(context.Background(), JobQuery{Function: "fn", State: FinalComplete})
	require.NoError(t, err)
	var seqs []uint64
	for _, s := range page.Jobs {
		seqs = append(seqs, s.Seq)
	}
	return seqs
}

// A record is read from the broker's memory until the store has it, and
// from the store after: while the committer writes it, and while the next
// waits for the committer, lookups, listings and counts see each record
// once; one forgotten while it is written is gone from the store after.
func TestRecordReadableWhileWritten(t *testing.T) {
	t.Parallel()
	tb, st := setupHeldRecordWrites(t, nil)
	ctx := context.Background()
	a := tb.submit(t, lcBG("fn", "", "a"))
	b := tb.submit(t, lcBG("fn", "", "b"))
	c := tb.submit(t, lcBG("fn", "", "c"))
	tb.finishNext(t, a, Complete)
	<-st.entered                  // the committer writes a's record
	tb.finishNext(t, b, Complete) // b's record waits for the committer
	tb.finishNext(t, c, Complete)
	for _, seq := range []uint64{a, b, c} {
		s, ok := tb.b.Job(ctx, seq)
		require.True(t, ok, "job %d", seq)
		require.True(t, s.Final)
		require.Equal(t, FinalComplete, s.State)
	}
	require.Equal(t, 3, endedCount(tb, "fn", FinalComplete))
	require.Equal(t, []uint64{c, b, a}, listed(t, tb))

	require.True(t, tb.b.ForgetRecord(ctx, a), "a's record, being written")
	require.True(t, tb.b.ForgetRecord(ctx, c), "c's record, waiting")
	_, ok := tb.b.Job(ctx, a)
	require.False(t, ok, "a forgotten")
	require.Equal(t, 1, endedCount(tb, "fn", FinalComplete))
	require.Equal(t, []uint64{b}, listed(t, tb))

	st.let()
	require.NoError(t, tb.b.Durable(ctx))
	require.NoError(t, tb.b.Durable(ctx)) // the forget of a, after its write
	tb.b.mu.Lock()
	for _, seq := range []uint64{a, b, c} {
		require.Nil(t, tb.b.keptRecordLocked(seq), "job %d's record left memory", seq)
	}
	tb.b.mu.Unlock()
	_, err := st.Record(ctx, a)
	require.ErrorIs(t, err, store.ErrNotFound, "a forgotten in the store after its write")
	_, err = st.Record(ctx, c)
	require.ErrorIs(t, err, store.ErrNotFound, "c never written")
	s, ok := tb.b.Job(ctx, b)
	require.True(t, ok)
	require.Equal(t, FinalComplete, s.State)
	require.Equal(t, 1, endedCount(tb, "fn", FinalComplete))
	require.Equal(t, []uint64{b}, listed(t, tb))
}

// After a failed write of records, they are still read from memory (the
// store refuses writes from then on), each once.
func TestRecordsReadableAfterFailedWrite(t *testing.T) {
	t.Parallel()
	tb, st := setupHeldRecordWrites(t, errors.New("disk gone"))
	ctx := context.Background()
	a := tb.submit(t, lcBG("fn", "", "a"))
	tb.finishNext(t, a, Complete)
	<-st.entered
	st.let()
	_ = tb.b.Durable(ctx) // after the failed write
	s, ok := tb.b.Job(ctx, a)
	require.True(t, ok)
	require.Equal(t, FinalComplete, s.State)
	require.Equal(t, 1, endedCount(tb, "fn", FinalComplete))
}
