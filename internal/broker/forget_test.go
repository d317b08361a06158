package broker

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// statusNames returns the names "status" lists.
func statusNames(b *Broker) []string {
	var out []string
	for _, f := range b.Status(context.Background()) {
		out = append(out, f.Name)
	}
	return out
}

// At the limit, a new name makes the broker forget the function that has
// held nothing the longest, instead of refusing the name: one that was
// only created, one whose jobs all ended, one whose workers all left.
func TestNewFunctionForgetsIdleOneAtLimit(t *testing.T) {
	t.Parallel()
	tb := setup(t, Config{MaxFunctions: 3})
	b := tb.b
	// "created" was only created.
	require.NoError(t, b.CreateFunction("created"))
	// "left" had a worker, which unregistered it.
	w, _ := tb.session()
	require.NoError(t, b.CanDo(w, []byte("left"), 0))
	// "ran" had a job, which a worker completed.
	c, _ := tb.session()
	res := tb.submit(t, c, bg("ran", "", "x", Normal))
	require.NoError(t, res.err)
	require.NoError(t, b.CanDo(w, []byte("ran"), 0))
	a := tb.grab(t, w)
	require.NoError(t, b.Finish(w, a.Seq, Complete, nil))
	b.CantDo(w, []byte("left"))
	b.CantDo(w, []byte("ran"))
	require.Equal(t, []string{"created", "left", "ran"}, statusNames(b))

	// "created" has been idle longest.
	require.NoError(t, tb.submit(t, c, bg("new1", "", "x", Normal)).err)
	require.Equal(t, []string{"left", "new1", "ran"}, statusNames(b))
	// Then "left" (its last worker left before "ran"'s did).
	require.NoError(t, b.CreateFunction("new2"))
	require.Equal(t, []string{"new1", "new2", "ran"}, statusNames(b))
	// A forgotten name comes back as a new function.
	require.NoError(t, b.CanDo(w, []byte("created"), 0))
	require.Equal(t, []string{"created", "new1", "new2"}, statusNames(b))
	require.Len(t, b.functions, 3)
}

// A function that holds anything is never forgotten: queued, scheduled,
// running and waiting jobs, a worker, a client waiting, a policy (set at
// run time, by maxqueue or in the configuration), a pause, retained
// results, a cron schedule. A new name is refused only when every known
// function holds something, and accepted again once one holds nothing.
func TestBusyFunctionsAreNeverForgotten(t *testing.T) {
	t.Parallel()
	sched, err := ParseCron("0 0 1 1 *", nil)
	require.NoError(t, err)
	tb := setup(t, Config{
		MaxFunctions:  12,
		Policies:      map[string]Policy{"configured": {}},
		DefaultPolicy: Policy{},
		Schedules:     []Schedule{{Name: "yearly", Function: "scheduled-cron", Cron: sched}},
	})
	b := tb.b
	b.SetPolicy("retains", Policy{ResultRetention: time.Hour})
	c, _ := tb.session()
	ctx := context.Background()

	// queued: a background job waits.
	queued := tb.submit(t, c, bg("queued", "", "x", Normal))
	require.NoError(t, queued.err)
	// scheduled: a job waits for its time.
	p := bg("scheduled", "", "x", Normal)
	p.RunAt = tb.clock.Now().Add(time.Hour).Unix()
	require.NoError(t, tb.submit(t, c, p).err)
	// running: a worker holds a job (and has unregistered the function).
	w, _ := tb.session()
	require.NoError(t, tb.submit(t, c, bg("running", "", "x", Normal)).err)
	require.NoError(t, b.CanDo(w, []byte("running"), 0))
	tb.grab(t, w)
	b.CantDo(w, []byte("running"))
	// waiting: a client waits for a foreground job.
	fc, _ := tb.session()
	require.NoError(t, tb.submit(t, fc, fg("waiting", "", "x")).err)
	// worker: a worker registered it.
	require.NoError(t, b.CanDo(w, []byte("worker"), 0))
	// policy: set at run time; maxqueue: set by "maxqueue".
	require.NoError(t, b.CreateFunction("policy"))
	b.SetPolicy("policy", Policy{Concurrency: 2})
	require.NoError(t, b.SetMaxQueue("maxqueue", [numPriorities]int{5, 5, 5}))
	// configured: its policy is in the configuration.
	require.NoError(t, b.CreateFunction("configured"))
	// paused: paused with nothing queued.
	require.NoError(t, b.CreateFunction("paused"))
	require.NoError(t, b.Pause("paused", time.Time{}))
	// retains: a result is retained.
	r := tb.submit(t, c, bg("retains", "u1", "x", Normal))
	require.NoError(t, r.err)
	require.NoError(t, b.CanDo(w, []byte("retains"), 0))
	require.NoError(t, b.Finish(w, tb.grab(t, w).Seq, Complete, []byte("kept")))
	b.CantDo(w, []byte("retains"))
	// scheduled-cron: a cron schedule of the configuration submits to it.
	require.NoError(t, b.CreateFunction("scheduled-cron"))
	// idle: holds nothing.
	require.NoError(t, b.CreateFunction("idle"))
	require.Len(t, b.functions, 12)

	busy := []string{"configured", "maxqueue", "paused", "policy", "queued", "retains", "running",
		"scheduled", "scheduled-cron", "waiting", "worker"}
	// The idle one makes room for one new name...
	require.NoError(t, b.CreateFunction("new1"))
	require.ElementsMatch(t, append([]string{"new1"}, busy...), statusNames(b))
	// ...which is idle in turn.
	require.NoError(t, tb.submit(t, c, bg("new2", "", "x", Normal)).err)
	require.ElementsMatch(t, append([]string{"new2"}, busy...), statusNames(b))
	// Now everything holds something: every path refuses a new name.
	err = tb.submit(t, c, bg("new3", "", "x", Normal)).err
	require.ErrorIs(t, err, ErrTooManyFunctions)
	require.ErrorIs(t, b.CreateFunction("new3"), ErrTooManyFunctions)
	require.ErrorIs(t, b.CanDo(w, []byte("new3"), 0), ErrTooManyFunctions)
	require.ErrorIs(t, b.SetMaxQueue("new3", [numPriorities]int{1, 1, 1}), ErrTooManyFunctions)
	require.ElementsMatch(t, append([]string{"new2"}, busy...), statusNames(b))
	_, ok, err := b.ResultByUnique(ctx, "retains", "u1")
	require.NoError(t, err)
	require.True(t, ok, "the retained result is still there")

	// Once the queued job is cancelled, its function holds nothing.
	require.NoError(t, b.CancelJob(ctx, b.AppendHandle(nil, queued.seq)))
	require.NoError(t, tb.submit(t, c, bg("new3", "", "x", Normal)).err)
	require.NotContains(t, statusNames(b), "queued")
	// Once the pause ends, so does "paused".
	require.True(t, b.Resume("paused"))
	require.NoError(t, tb.submit(t, c, bg("new4", "", "x", Normal)).err)
	require.NotContains(t, statusNames(b), "paused")
	require.ErrorIs(t, b.CreateFunction("new5"), ErrTooManyFunctions)
	// A policy reset frees "policy"; the worker leaving frees "worker".
	b.ResetPolicy("policy")
	b.CloseSession(w)
	require.NoError(t, b.CreateFunction("new5"))
	require.NoError(t, b.CreateFunction("new6"))
	names := statusNames(b)
	require.NotContains(t, names, "policy")
	require.NotContains(t, names, "worker")
	// The running job went back to its queue when its worker left: its
	// function is kept.
	require.Contains(t, names, "running")
}

// A forgotten function's counters go with it (as after "drop function"),
// the snapshots of Stats neither list nor break on it, its dead letters
// are still listed by name, and the name comes back with fresh counters.
func TestForgottenFunctionStats(t *testing.T) {
	t.Parallel()
	tb := setup(t, Config{MaxFunctions: 2, DefaultPolicy: Policy{MaxAttempts: 1}})
	b := tb.b
	ctx := context.Background()
	c, _ := tb.session()
	w, _ := tb.session()
	require.NoError(t, b.CanDo(w, []byte("counted"), 0))
	for range 2 {
		require.NoError(t, tb.submit(t, c, bg("counted", "", "x", Normal)).err)
	}
	require.NoError(t, b.Finish(w, tb.grab(t, w).Seq, Complete, nil))
	require.NoError(t, b.Finish(w, tb.grab(t, w).Seq, Fail, nil))
	b.CantDo(w, []byte("counted"))
	var st FunctionStats
	for _, f := range b.Stats(ctx).Functions {
		if f.Name == "counted" {
			st = f
		}
	}
	require.Equal(t, uint64(2), st.Submitted)
	require.Equal(t, uint64(1), st.Completed)
	require.Equal(t, 1, st.DeadLetters)

	require.NoError(t, b.CreateFunction("other"))
	require.NoError(t, b.CreateFunction("new"))
	// Only its dead letter is left of "counted".
	got := map[string]FunctionStats{}
	for _, f := range b.Stats(ctx).Functions {
		got[f.Name] = f
	}
	require.Contains(t, got, "counted")
	require.Equal(t, FunctionStats{FunctionStatus: FunctionStatus{Name: "counted"}, DeadLetters: 1}, got["counted"])
	require.NotContains(t, statusNames(b), "counted")
	dls, err := b.DeadLetters(ctx, "counted", 0)
	require.NoError(t, err)
	require.Len(t, dls, 1)

	// The name comes back with fresh counters, and its dead letter can
	// be retried.
	require.NoError(t, tb.submit(t, c, bg("counted", "", "x", Normal)).err)
	got = map[string]FunctionStats{}
	for _, f := range b.Stats(ctx).Functions {
		got[f.Name] = f
	}
	require.Equal(t, uint64(1), got["counted"].Submitted)
	require.Equal(t, uint64(0), got["counted"].Completed)
	require.NoError(t, b.RetryDeadLetter(ctx, b.AppendHandle(nil, dls[0].Seq)))
	require.Equal(t, 2, b.Status(ctx)[0].Total)
}

// The limit counts the functions the broker must keep, also those made
// beyond it (a pause is never refused): a new name makes the broker
// forget idle functions until there is room for it, and is refused when
// there is none even then.
func TestForgetIdleMakesRoomBelowLimit(t *testing.T) {
	t.Parallel()
	tb := setup(t, Config{MaxFunctions: 2})
	b := tb.b
	require.NoError(t, b.CreateFunction("a"))
	require.NoError(t, b.CreateFunction("b"))
	b.PauseFor("p1", time.Hour)
	b.PauseFor("p2", time.Hour)
	require.Len(t, b.functions, 4)
	require.ErrorIs(t, b.CreateFunction("c"), ErrTooManyFunctions)
	require.Equal(t, []string{"p1", "p2"}, statusNames(b))
	require.True(t, b.Resume("p1"))
	require.NoError(t, b.CreateFunction("c"))
	require.Equal(t, []string{"c", "p2"}, statusNames(b))
}

// A cron schedule of the configuration submits its ticks also while the
// broker knows as many functions as it may and each holds something:
// the configuration's functions are never refused.
func TestCronTickIsNotRefusedAtLimit(t *testing.T) {
	t.Parallel()
	tb := setupLC(t, lcOpts{cfg: Config{MaxFunctions: 1, Schedules: []Schedule{everyMinute(t, "min", "cronfn", MissedAll)}}})
	tb.submit(t, lcBG("busy", "", "x"))
	require.ErrorIs(t, tb.b.CreateFunction("other"), ErrTooManyFunctions)
	tb.advance(time.Minute)
	var total int
	for _, f := range tb.b.Status(context.Background()) {
		if f.Name == "cronfn" {
			total = f.Total
		}
	}
	require.Equal(t, 1, total, "the tick's job is queued")
}
