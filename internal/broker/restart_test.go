package broker

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/internal/store"
	"github.com/gearwork/gearwork/internal/store/memory"
	"github.com/gearwork/gearwork/internal/testlog"
)

// Everything the lifecycle keeps survives a restart on the same store:
// retry-wait jobs with their attempts and backoff, ordered keys blocked
// behind their head, dead letters with their history, retained results
// that still answer re-submits, and pauses.
func TestRestartKeepsLifecycleState(t *testing.T) {
	t.Parallel()
	pol := Policy{MaxAttempts: 3, Backoff: noJitter(10 * time.Second), Ordering: OrderingUniquePrefix,
		ResultRetention: time.Hour}
	opts := lcOpts{cfg: Config{Policies: policies("fn", pol)}, can: []string{"fn", "dl"}}
	opts.store = memory.New()
	tb := setupLC(t, opts)

	a := tb.submit(t, lcBG("fn", "k:1", "a"))
	b := tb.submit(t, lcBG("fn", "k:2", "b"))
	r := tb.submit(t, lcBG("fn", "res", "r"))
	d := tb.submit(t, lcBG("dl", "", "d"))
	outcomes := map[uint64]func() error{
		a: func() error { return tb.b.Finish(tb.worker, a, Exception, []byte("first try")) },
		r: func() error { return tb.b.Finish(tb.worker, r, Complete, []byte("kept")) },
		d: func() error { return tb.b.Finish(tb.worker, d, Exception, []byte("dead")) },
	}
	for range 3 {
		g := tb.grab(t)
		finish := outcomes[g.Seq]
		require.NotNil(t, finish, "unexpected job %d", g.Seq)
		delete(outcomes, g.Seq)
		require.NoError(t, finish())
	}
	tb.noJob(t) // b is blocked behind a
	tb.b.Pause("paused", time.Time{})
	tb.b.Pause("later", tb.clock.Now().Add(time.Hour))

	tb.clock.Add(5 * time.Second)
	logs := &testlog.Buffer{}
	opts.cfg.Logger = slog.New(slog.NewTextHandler(logs, nil))
	tb = tb.restart(t, opts)
	// The replay line counts live jobs as JobCount (and the server's
	// listening line) does, and the dead letters and results apart.
	require.Equal(t, 2, tb.b.JobCount())
	require.Contains(t, logs.String(), `msg="broker: replayed stored jobs" jobs=2 dead_letters=1 results=1 records=4`)
	opts.cfg.Logger = nil

	// a waits out the rest of its backoff; b is still behind it.
	tb.noJob(t)
	tb.advance(5 * time.Second)
	require.Equal(t, a, tb.grab(t).Seq)
	tb.noJob(t)
	require.NoError(t, tb.b.Finish(tb.worker, a, Complete, []byte("done")))
	require.Equal(t, b, tb.grab(t).Seq)
	require.NoError(t, tb.b.Finish(tb.worker, b, Complete, nil))

	// The dead letter kept its error, payload and history.
	dl, ok := mustDeadLetterByHandle(t, tb.b, []byte(tb.b.Handle(d)))
	require.True(t, ok)
	require.Equal(t, "dead", dl.LastError)
	require.Equal(t, []byte("d"), dl.Payload)
	require.Len(t, dl.History, 1)

	// The retained result still answers, by handle and by re-submit.
	res, ok := mustResult(t, tb.b, []byte(tb.b.Handle(r)))
	require.True(t, ok)
	require.Equal(t, []byte("kept"), res.Data)
	require.Equal(t, r, tb.submit(t, lcBG("fn", "res", "r")))
	tb.noJob(t)

	// Pauses survive.
	fp := tb.b.Policies()
	paused := map[string]bool{}
	for _, p := range fp {
		paused[p.Name] = p.Paused
	}
	require.True(t, paused["paused"])
	require.True(t, paused["later"])

	// A second restart after the retention and the pause end: the result
	// is gone from memory and store.
	tb.clock.Add(2 * time.Hour)
	tb = tb.restart(t, opts)
	_, ok = mustResult(t, tb.b, []byte(tb.b.Handle(r)))
	require.False(t, ok)
	for _, p := range tb.b.Policies() {
		if p.Name == "later" {
			require.False(t, p.Paused)
		}
	}
	tb.b.Stop()
	_, stored := memoryRecord(tb.store, r)
	require.False(t, stored)
	_, stored = memoryRecord(tb.store, d)
	require.True(t, stored)
}

// The store records each lifecycle state as a Save, not a Delete.
func TestLifecycleStatesAreStored(t *testing.T) {
	t.Parallel()
	pol := Policy{MaxAttempts: 2, Backoff: noJitter(time.Minute), ResultRetention: time.Hour}
	tb := setupLC(t, lcOpts{cfg: Config{Policies: policies("fn", pol)}, can: []string{"fn"}, store: memory.New()})
	a := tb.submit(t, lcBG("fn", "", "a"))
	tb.grab(t)
	require.NoError(t, tb.b.Finish(tb.worker, a, Exception, []byte("x")))
	tb.b.Stop() // flushes the committer
	rec, ok := memoryRecord(tb.store, a)
	require.True(t, ok)
	require.Equal(t, store.StateRetryWait, rec.State)
	require.Equal(t, uint32(1), rec.Attempts)
	require.Equal(t, "x", rec.LastError)
	require.Equal(t, tb.clock.Now().Add(time.Minute).UnixNano(), rec.NotBefore)
	require.Len(t, rec.History, 1)
}

// A cron tick is submitted exactly once even across restarts; ticks
// missed while the server was down follow the schedule's Missed rule.
func TestCronExactlyOnceAcrossRestarts(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		missed Missed
		want   int
	}{{MissedAll, 3}, {MissedOne, 1}, {MissedSkip, 0}} {
		t.Run(string(tc.missed)+"-", func(t *testing.T) {
			t.Parallel()
			opts := lcOpts{cfg: Config{Schedules: []Schedule{everyMinute(t, "min", "fn", tc.missed)}}, store: memory.New()}
			tb := setupLC(t, opts)
			tb.advance(time.Minute) // 10:01: one tick
			tb.b.Stop()
			require.Equal(t, 1, tb.store.Len())

			// Restart at the same moment: nothing new.
			tb = tb.restart(t, opts)
			tb.b.RunTimers()
			tb.b.Stop()
			require.Equal(t, 1, tb.store.Len())

			// Down for three ticks.
			tb.clock.Add(3*time.Minute + 10*time.Second)
			tb = tb.restart(t, opts)
			tb.b.RunTimers()
			tb.b.Stop()
			require.Equal(t, 1+tc.want, tb.store.Len())

			// The schedule goes on from there.
			tb = tb.restart(t, opts)
			tb.advance(50 * time.Second) // 10:05
			tb.b.Stop()
			require.Equal(t, 2+tc.want, tb.store.Len())
		})
	}
}

// A crash after the tick's job was stored but before the tick itself was
// recorded does not submit the tick again: the job carries its tick.
func TestCronTickRecoveredFromJob(t *testing.T) {
	t.Parallel()
	opts := lcOpts{cfg: Config{Schedules: []Schedule{everyMinute(t, "min", "fn", MissedAll)}}, store: memory.New()}
	tb := setupLC(t, opts)
	tb.advance(time.Minute)
	tb.b.Stop()
	require.Equal(t, 1, tb.store.Len())
	meta := map[string][]byte{}
	require.NoError(t, tb.store.LoadMeta(context.Background(), func(m store.Meta) error { meta[m.Key] = m.Value; return nil }))
	require.Contains(t, meta, "cron/min")
	// as if the crash came first
	require.NoError(t, tb.store.PutMeta(context.Background(), []store.Meta{{Key: "cron/min"}}))
	tb = tb.restart(t, opts)
	tb.b.RunTimers()
	tb.b.Stop()
	require.Equal(t, 1, tb.store.Len())
}

// A job that was running at a crash runs again after the restart, keeping
// its ordering position.
func TestRestartRunningOrderedHead(t *testing.T) {
	t.Parallel()
	pol := Policy{Ordering: OrderingUniquePrefix}
	opts := lcOpts{cfg: Config{Policies: policies("fn", pol)}, can: []string{"fn"}, store: memory.New()}
	tb := setupLC(t, opts)
	a := tb.submit(t, lcBG("fn", "k:1", "a"))
	b := tb.submit(t, lcBG("fn", "k:2", "b"))
	c := tb.submit(t, lcBG("fn", "k:3", "c"))
	require.Equal(t, a, tb.grab(t).Seq)
	tb = tb.restart(t, opts)
	require.Equal(t, a, tb.grab(t).Seq)
	tb.noJob(t)
	require.NoError(t, tb.b.Finish(tb.worker, a, Complete, nil))
	require.Equal(t, b, tb.grab(t).Seq)
	require.NoError(t, tb.b.Finish(tb.worker, b, Complete, nil))
	require.Equal(t, c, tb.grab(t).Seq)
}

// Replayed dead letters do not make their function show up in "status".
func TestReplayedDeadLetterKeepsStatusClean(t *testing.T) {
	t.Parallel()
	opts := lcOpts{can: []string{"gone"}, store: memory.New()}
	tb := setupLC(t, opts)
	seq := tb.submit(t, lcBG("gone", "", "p"))
	require.NoError(t, tb.b.Finish(tb.worker, tb.grab(t).Seq, Fail, nil))
	opts.can = nil
	tb = tb.restart(t, opts)
	require.Empty(t, tb.b.Status(context.Background()))
	require.Len(t, mustDeadLetters(t, tb.b, "gone"), 1)
	require.NoError(t, tb.b.RetryDeadLetter(context.Background(), []byte(tb.b.Handle(seq))))
	require.Len(t, tb.b.Status(context.Background()), 1)
	require.Equal(t, 1, tb.b.Status(context.Background())[0].Total)
}

// waitStored polls the store until cond holds for job seq: the committer
// writes lifecycle transitions asynchronously.
func waitStored(t *testing.T, s *memory.Store, seq uint64, cond func(store.Job, bool) bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		j, ok := memoryRecord(s, seq)
		if cond(j, ok) {
			return
		}
		require.True(t, time.Now().Before(deadline), "store never reached the expected state for job %d", seq)
		time.Sleep(time.Millisecond) // polling the committer's progress
	}
}

// A crash (no final flush: the new broker starts from a copy of what the
// store holds while the old one still runs) loses no lifecycle state that
// reached the store: retry-wait, dead letters, retained results and the
// position of an ordered key.
func TestCrashKeepsStoredLifecycleState(t *testing.T) {
	t.Parallel()
	pol := Policy{MaxAttempts: 2, Backoff: noJitter(time.Minute), Ordering: OrderingUniquePrefix,
		ResultRetention: time.Hour}
	opts := lcOpts{cfg: Config{Policies: policies("fn", pol)}, can: []string{"fn"}, store: memory.New()}
	tb := setupLC(t, opts)
	head := tb.submit(t, lcBG("fn", "k:1", "head"))
	next := tb.submit(t, lcBG("fn", "k:2", "next"))
	res := tb.submit(t, lcBG("fn", "r", "res"))

	g := map[uint64]bool{}
	for range 2 {
		g[tb.grab(t).Seq] = true
	}
	require.Equal(t, map[uint64]bool{head: true, res: true}, g)
	require.NoError(t, tb.b.Finish(tb.worker, head, Fail, nil))
	require.NoError(t, tb.b.Finish(tb.worker, res, Complete, []byte("R")))
	waitStored(t, tb.store, head, func(j store.Job, ok bool) bool { return ok && j.State == store.StateRetryWait })
	waitStored(t, tb.store, res, func(j store.Job, ok bool) bool { return ok && j.State == store.StateDone })

	crashed := tb.store.Snapshot()
	opts.store = crashed
	opts.clock = tb.clock
	tb2 := setupLC(t, opts)
	tb2.noJob(t) // head waits for its backoff, next is behind it
	tb2.advance(time.Minute)
	require.Equal(t, head, tb2.grab(t).Seq)
	require.NoError(t, tb2.b.Finish(tb2.worker, head, Fail, nil))
	_, ok := mustDeadLetterByHandle(t, tb2.b, []byte(tb2.b.Handle(head)))
	require.True(t, ok)
	require.Equal(t, next, tb2.grab(t).Seq)
	r, ok := mustResult(t, tb2.b, []byte(tb2.b.Handle(res)))
	require.True(t, ok)
	require.Equal(t, []byte("R"), r.Data)
}

// A queue limit set with gearmand's "maxqueue" is stored like any other
// policy change: after a restart it is the function's policy and still
// limits its queue.
func TestRestartKeepsMaxQueue(t *testing.T) {
	t.Parallel()
	opts := lcOpts{store: memory.New()}
	tb := setupLC(t, opts)
	tb.b.SetMaxQueue("mq", [3]int{1, 1, 1})
	require.NoError(t, tb.b.Durable(context.Background()))

	tb = tb.restart(t, opts)
	require.Equal(t, [3]int{1, 1, 1}, tb.b.Policy("mq").MaxQueue)
	tb.submit(t, lcBG("mq", "", "a"))
	_, err := tb.trySubmit(t, lcBG("mq", "", "b"))
	require.ErrorIs(t, err, ErrQueueFull)
}
