package broker

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/internal/store"
	"github.com/gearwork/gearwork/internal/store/memory"
	"github.com/gearwork/gearwork/internal/store/pebble"
)

func after(payload string, anyway bool, deps ...uint64) SubmitParams {
	p := lcBG("fn", "", payload)
	p.After, p.AfterAnyway = deps, anyway
	return p
}

func (tb *lcBundle) state(t *testing.T, seq uint64) string {
	t.Helper()
	s, ok := tb.b.Job(context.Background(), seq)
	require.True(t, ok, "job %d", seq)
	return s.State
}

// finishNext grabs the next job, checks it is want, and ends it with o.
func (tb *lcBundle) finishNext(t *testing.T, want uint64, o Outcome) {
	t.Helper()
	a := tb.grab(t)
	require.Equal(t, want, a.Seq, "the job handed out")
	require.NoError(t, tb.b.Finish(tb.worker, a.Seq, o, nil))
}

// A chain (a, then b, then c) and a fan-in (d after a and c) run in order.
func TestAfterChainAndFanIn(t *testing.T) {
	t.Parallel()
	tb := setupLC(t, lcOpts{store: memory.New(), can: []string{"fn"}})
	a := tb.submit(t, lcBG("fn", "", "a"))
	b := tb.submit(t, after("b", false, a))
	c := tb.submit(t, after("c", false, b))
	d := tb.submit(t, after("d", false, a, c))
	require.Equal(t, "waiting", tb.state(t, b))
	page, err := tb.b.ListJobs(context.Background(), JobQuery{State: "waiting"})
	require.NoError(t, err)
	var listed []uint64
	for _, s := range page.Jobs {
		listed = append(listed, s.Seq)
	}
	require.ElementsMatch(t, []uint64{b, c, d}, listed, "the waiting jobs, listed by their state")
	counts := tb.b.CountJobs(context.Background())
	require.Len(t, counts, 1)
	require.Equal(t, map[string]int{"queued": 1, "waiting": 3}, counts[0].Live, "counted by the same state (d waits for two jobs)")
	tb.finishNext(t, a, Complete)
	require.Equal(t, "waiting", tb.state(t, d), "d still waits for c")
	tb.finishNext(t, b, Complete)
	tb.finishNext(t, c, Complete)
	tb.finishNext(t, d, Complete)
	tb.noJob(t)
}

// A job whose dependency dies is cancelled with the reason, and so are
// the jobs that wait for it; one submitted to run anyway runs.
func TestAfterCancelledWhenADependencyDies(t *testing.T) {
	t.Parallel()
	tb := setupLC(t, lcOpts{store: memory.New(), can: []string{"fn"},
		cfg: Config{Policies: policies("fn", Policy{MaxAttempts: 1})}})
	a := tb.submit(t, lcBG("fn", "", "a"))
	b := tb.submit(t, after("b", false, a))
	c := tb.submit(t, after("c", false, b))
	anyway := tb.submit(t, after("anyway", true, a))
	tb.finishNext(t, a, Exception)
	for _, q := range []uint64{b, c} {
		s, ok := tb.b.Job(context.Background(), q)
		require.True(t, ok)
		require.Equal(t, FinalCancelled, s.State)
		require.Contains(t, s.CancelledBy, "dependency ")
	}
	tb.finishNext(t, anyway, Complete)
	tb.noJob(t)

	_, err := tb.trySubmit(t, after("late", false, a))
	require.ErrorIs(t, err, ErrDependency, "a dead dependency refuses the submit")
	require.Contains(t, err.Error(), "ended without success")
	_, err = tb.trySubmit(t, after("late", true, a))
	require.NoError(t, err, "unless it runs anyway")
}

func TestAfterRefusesUnknownAndForeground(t *testing.T) {
	t.Parallel()
	tb := setupLC(t, lcOpts{store: memory.New(), can: []string{"fn"}})
	_, err := tb.trySubmit(t, after("x", false, 12345))
	require.ErrorIs(t, err, ErrDependency)
	require.Contains(t, err.Error(), "no job "+tb.b.Handle(12345))
	a := tb.submit(t, lcBG("fn", "", "a"))
	p := after("fg", false, a)
	p.Background = false
	_, err = tb.trySubmit(t, p)
	require.ErrorIs(t, err, ErrDependency)
	// A dependency that completed is satisfied: the job runs at once.
	tb.finishNext(t, a, Complete)
	b := tb.submit(t, after("b", false, a))
	tb.finishNext(t, b, Complete)
}

// A waiting job survives a restart, still waiting; once released it is
// stored without its dependencies.
func TestAfterSurvivesRestart(t *testing.T) {
	t.Parallel()
	opts := lcOpts{store: memory.New(), can: []string{"fn"}}
	tb := setupLC(t, opts)
	a := tb.submit(t, lcBG("fn", "", "a"))
	b := tb.submit(t, after("b", false, a))
	c := tb.submit(t, after("c", false, b))
	tb = tb.restart(t, opts)
	require.Equal(t, "waiting", tb.state(t, b))
	tb.finishNext(t, a, Complete)
	require.NoError(t, tb.b.Durable(context.Background()))

	tb = tb.restart(t, opts)
	require.Equal(t, "waiting", tb.state(t, c))
	tb.finishNext(t, b, Complete)
	tb.finishNext(t, c, Complete)
	tb.noJob(t)
}

// A job cancelled while it waits leaves its dependency's list: the
// dependency's end changes nothing for it.
func TestAfterCancelWhileWaiting(t *testing.T) {
	t.Parallel()
	tb := setupLC(t, lcOpts{store: memory.New(), can: []string{"fn"}})
	a := tb.submit(t, lcBG("fn", "", "a"))
	b := tb.submit(t, after("b", false, a))
	require.NoError(t, tb.b.CancelJob(context.Background(), []byte(tb.b.Handle(b))))
	require.Empty(t, tb.b.dependents[a])
	tb.finishNext(t, a, Complete)
	tb.noJob(t)
}

// A crash after any store write of a chain's life leaves a store on which
// a restarted server runs what is left of the chain: no job waits for
// ever.
func TestAfterChainAfterACrashAtAnyWrite(t *testing.T) {
	t.Parallel()
	ss := &snapStore{Store: memory.New()}
	tb := setupLC(t, lcOpts{cfg: Config{Store: ss}, can: []string{"fn"}})
	a := tb.submit(t, lcBG("fn", "", "a"))
	b := tb.submit(t, after("b", false, a))
	c := tb.submit(t, after("c", false, a, b))
	for _, q := range []uint64{a, b, c} {
		tb.finishNext(t, q, Complete)
		require.NoError(t, tb.b.Durable(context.Background()))
	}
	tb.b.Stop()

	snaps := ss.taken()
	for i, st := range snaps {
		r := setupLC(t, lcOpts{store: st, can: []string{"fn"}})
		for {
			require.NoError(t, r.b.Durable(context.Background()))
			got, ok := r.b.Grab(r.worker)
			if !ok {
				break
			}
			require.NoError(t, r.b.Finish(r.worker, got.Seq, Complete, nil))
		}
		for _, q := range []uint64{a, b, c} {
			if s, ok := r.b.Job(context.Background(), q); ok {
				require.NotEqual(t, "waiting", s.State, "job %d still waits after a crash at write %d", q, i)
			}
		}
		r.b.Stop()
	}
	require.GreaterOrEqual(t, len(snaps), 3)
}

// Dropping a function drops its jobs that wait for others, as it drops its
// queued ones, and the jobs that waited for those are cancelled: none is
// left waiting under a function that no longer exists.
func TestDropFunctionDropsWaitingJobs(t *testing.T) {
	t.Parallel()
	tb := setupLC(t, lcOpts{store: memory.New(), can: []string{"fn"}})
	a := tb.submit(t, lcBG("fn", "", "a"))
	p := lcBG("other", "", "b")
	p.After = []uint64{a}
	b := tb.submit(t, p)
	c := tb.submit(t, after("c", false, b))
	require.Equal(t, "waiting", tb.state(t, b))

	require.NoError(t, tb.b.DropFunction(context.Background(), "other"))
	s, ok := tb.b.Job(context.Background(), b)
	require.True(t, ok)
	require.Equal(t, FinalCancelled, s.State)
	require.Equal(t, "function dropped", s.CancelledBy)
	s, ok = tb.b.Job(context.Background(), c)
	require.True(t, ok)
	require.Equal(t, FinalCancelled, s.State)
	require.Contains(t, s.CancelledBy, "dependency ")

	tb.finishNext(t, a, Complete)
	tb.noJob(t)
	require.Zero(t, tb.b.JobCount())
	tb.b.Stop() // flush the committer
	require.NoError(t, tb.store.Load(context.Background(), func(j store.Job) error {
		require.NotContains(t, []uint64{b, c}, j.Seq, "a dropped job stays stored")
		return nil
	}))
}

// A job names the jobs it waits for by function and unique: the live job
// with the unique, or a retained result with it, which counts as
// completed; a unique neither has is refused.
func TestAfterUnique(t *testing.T) {
	t.Parallel()
	tb := setupLC(t, lcOpts{store: memory.New(), can: []string{"fn"},
		cfg: Config{Policies: policies("fn", Policy{ResultRetention: time.Hour})}})
	kept := tb.submit(t, lcBG("fn", "kept", "k"))
	tb.finishNext(t, kept, Complete)
	live := tb.submit(t, lcBG("fn", "live", "l"))
	p := lcBG("fn", "", "w")
	p.AfterUnique = []UniqueDep{{Function: "fn", Unique: "live"}, {Function: "fn", Unique: "kept"}}
	w := tb.submit(t, p)
	require.Equal(t, "waiting", tb.state(t, w), "it waits for the live one only")
	tb.finishNext(t, live, Complete)
	tb.finishNext(t, w, Complete)

	for _, u := range []UniqueDep{{Function: "fn", Unique: "gone"}, {Function: "nofn", Unique: "live"}} {
		p.AfterUnique = []UniqueDep{u}
		_, err := tb.trySubmit(t, p)
		require.ErrorIs(t, err, ErrDependency)
		require.ErrorContains(t, err, "no live job of")
	}
}

// recordReads is a Pebble store that counts the lookups of job records
// and, when set, runs onRead before each.
type recordReads struct {
	*pebble.Store
	n      atomic.Int64
	onRead func(seq uint64)
	fail   error // when set, every read fails with it
}

func (s *recordReads) Record(ctx context.Context, seq uint64) (store.Record, error) {
	s.n.Add(1)
	if s.onRead != nil {
		s.onRead(seq)
	}
	if s.fail != nil {
		return store.Record{}, s.fail
	}
	return s.Store.Record(ctx, seq)
}

func setupRecordReads(t *testing.T) (*lcBundle, *recordReads) {
	t.Helper()
	ps, err := pebble.Open(context.Background(), t.TempDir(), pebble.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = ps.Close() }) // after the broker's stop
	st := &recordReads{Store: ps}
	return setupLC(t, lcOpts{cfg: Config{Store: st}, can: []string{"fn"}}), st
}

// A submit that waits for live jobs reads no stored record (a lookup in
// the store's index and a block read each); only a job that is not live,
// nor ended in memory, is looked up in the store.
func TestAfterLiveJobsReadNoStoredRecord(t *testing.T) {
	t.Parallel()
	tb, st := setupRecordReads(t)
	a := tb.submit(t, lcBG("fn", "", "a"))
	b := tb.submit(t, after("b", false, a))
	tb.submit(t, after("c", false, a, b))
	require.Zero(t, st.n.Load(), "stored records read for live dependencies")

	_, err := tb.trySubmit(t, after("d", false, a, 1<<40))
	require.ErrorIs(t, err, ErrDependency)
	require.Equal(t, int64(1), st.n.Load(), "the unknown job is looked up in the store")
}

// storedEnded submits a job named name, completes it and waits until its
// record is written to the store.
func storedEnded(t *testing.T, tb *lcBundle, name string) uint64 {
	t.Helper()
	seq := tb.submit(t, lcBG("fn", "", name))
	tb.finishNext(t, seq, Complete)
	require.NoError(t, tb.b.Durable(context.Background()))
	return seq
}

// A submit whose dependency's record cannot be read fails with the store's
// error, not as if the job were unknown: the dependency may well have
// completed, and the client may try again.
func TestAfterRecordReadErrorIsAStoreError(t *testing.T) {
	t.Parallel()
	tb, st := setupRecordReads(t)
	ended := storedEnded(t, tb, "ended")
	st.fail = errors.New("disk on fire")
	_, err := tb.trySubmit(t, after("w", false, ended))
	var se *StoreError
	require.ErrorAs(t, err, &se, "%v", err)
	require.ErrorContains(t, err, "disk on fire")
	require.NotErrorIs(t, err, ErrDependency)
}

// A submit that names many jobs nobody knows reads the store until the
// first of them (it is refused there), and a job named twice is read once:
// a long list of made-up handles costs one read, not one per handle.
func TestAfterUnknownJobsStopTheReads(t *testing.T) {
	t.Parallel()
	tb, st := setupRecordReads(t)
	ended := storedEnded(t, tb, "ended")

	w := tb.submit(t, after("w", false, ended, ended, ended))
	require.Equal(t, int64(1), st.n.Load(), "a job named three times is read once")
	tb.finishNext(t, w, Complete)

	made := []uint64{ended}
	for i := range 1000 {
		made = append(made, 1<<40+uint64(i))
	}
	before := st.n.Load()
	_, err := tb.trySubmit(t, after("x", false, made...))
	require.ErrorIs(t, err, ErrDependency)
	require.ErrorContains(t, err, tb.b.Handle(1<<40), "refused for the first unknown job")
	require.LessOrEqual(t, st.n.Load()-before, int64(2), "reads for one refused submit")
}

// A dependency that is live when a submit first looks, and completes and
// leaves the broker's memory for the store while the submit reads the
// record of another dependency, counts as completed: the submit reads its
// record too instead of refusing it as unknown.
func TestAfterDependencyStoredDuringTheSubmit(t *testing.T) {
	t.Parallel()
	tb, st := setupRecordReads(t)
	ended := storedEnded(t, tb, "ended")
	live := tb.submit(t, lcBG("fn", "", "live"))

	var once sync.Once
	st.onRead = func(seq uint64) {
		once.Do(func() {
			// The submit reads ended's record, without the broker's lock,
			// after it saw live live: live completes and is written now.
			require.Equal(t, ended, seq, "the first record read")
			tb.finishNext(t, live, Complete)
			require.NoError(t, tb.b.Durable(context.Background()))
			tb.b.mu.Lock()
			inMemory := tb.b.keptRecordLocked(live) != nil
			tb.b.mu.Unlock()
			require.False(t, inMemory, "the record of live left the broker's memory")
		})
	}
	w, err := tb.trySubmit(t, after("w", false, live, ended))
	require.NoError(t, err, "both dependencies completed")
	tb.finishNext(t, w, Complete)
	tb.noJob(t)
}
