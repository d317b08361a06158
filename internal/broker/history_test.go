package broker

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// completeOne submits a background job of fn and has worker complete it.
func (tb *testBundle) completeOne(t *testing.T, client, worker *Session, fn string) uint64 {
	t.Helper()
	seq := tb.submit(t, client, bg(fn, "", "x", Normal)).seq
	a := tb.grab(t, worker)
	require.Equal(t, seq, a.Seq)
	require.NoError(t, tb.b.Finish(worker, seq, Complete, []byte("r")))
	return seq
}

// setupEnded starts a broker whose worker can do "f" and completes n jobs
// of it; it returns the client and worker sessions and the jobs.
func setupEnded(t *testing.T, n int) (tb *testBundle, client, worker *Session, seqs []uint64) {
	t.Helper()
	tb = setup(t, Config{})
	client, worker = tb.clientAndWorker("f")
	for range n {
		seqs = append(seqs, tb.completeOne(t, client, worker, "f"))
	}
	return tb, client, worker, seqs
}

// Records of ended jobs are kept for the function's history time and at
// most history_max of them; ExpireHistory forgets the old ones with the
// clock; "0" keeps none.
func TestHistoryRetention(t *testing.T) {
	t.Parallel()
	var short, few, none Policy
	require.NoError(t, short.Set("history", "1h"))
	require.NoError(t, few.Set("history_max", "2"))
	require.NoError(t, none.Set("history", "0"))
	tb := setup(t, Config{Policies: map[string]Policy{"short": short, "few": few, "none": none}})
	client, _ := tb.session()
	worker, _ := tb.session()
	for _, fn := range []string{"short", "few", "none", "dflt"} {
		tb.b.CanDo(worker, []byte(fn), 0)
	}

	s1 := tb.completeOne(t, client, worker, "short")
	d1 := tb.completeOne(t, client, worker, "dflt")
	var fewSeqs []uint64
	for range 3 {
		fewSeqs = append(fewSeqs, tb.completeOne(t, client, worker, "few"))
	}
	n1 := tb.completeOne(t, client, worker, "none")

	rec, ok := tb.b.Job(context.Background(), s1)
	require.True(t, ok)
	require.True(t, rec.Final)
	require.Equal(t, FinalComplete, rec.State)
	require.Equal(t, []byte("r"), rec.Result)
	_, ok = tb.b.Job(context.Background(), n1)
	require.False(t, ok, "history 0 keeps none")
	_, ok = tb.b.Job(context.Background(), fewSeqs[0])
	require.False(t, ok, "history_max 2: the oldest went")
	// The newest took the oldest's place in memory; both kept read as
	// themselves.
	for _, seq := range fewSeqs[1:] {
		rec, ok := tb.b.Job(context.Background(), seq)
		require.True(t, ok)
		require.Equal(t, seq, rec.Seq)
		require.Equal(t, "few", rec.Function)
	}
	page, err := tb.b.ListJobs(context.Background(), JobQuery{Function: "few"})
	require.NoError(t, err)
	require.Len(t, page.Jobs, 2)
	require.Equal(t, []uint64{fewSeqs[2], fewSeqs[1]}, []uint64{page.Jobs[0].Seq, page.Jobs[1].Seq})

	// The history goroutine may expire them first (it ticks in real
	// time, reading the same clock): what matters is what is left.
	tb.clock.Add(time.Hour)
	tb.b.ExpireHistory()
	_, ok = tb.b.Job(context.Background(), s1)
	require.False(t, ok, "older than its function's history")
	_, ok = tb.b.Job(context.Background(), d1)
	require.True(t, ok, "the default keeps 24h")

	// (Records made at one instant of the fake clock end a nanosecond
	// apart, in the order they were made: TestRecordsEndInOrder.)
	tb.clock.Add(23*time.Hour + time.Second)
	tb.b.ExpireHistory() // dflt and both of few
	for _, seq := range fewSeqs[1:] {
		_, ok = tb.b.Job(context.Background(), seq)
		require.False(t, ok)
	}
	_, ok = tb.b.Job(context.Background(), d1)
	require.False(t, ok)
}

// Expiry works in batches: many records expire over several holds of the
// lock, and all of them go.
func TestHistoryExpiresInBatches(t *testing.T) {
	t.Parallel()
	tb := setup(t, Config{})
	client, worker := tb.clientAndWorker("f")
	n := expireBatch*2 + 10
	for range n {
		tb.completeOne(t, client, worker, "f")
	}
	tb.b.mu.Lock()
	require.Equal(t, n, tb.b.hist.bySeq.len())
	tb.b.mu.Unlock()
	tb.clock.Add(DefaultHistory + time.Second)
	tb.b.ExpireHistory()
	tb.b.mu.Lock()
	defer tb.b.mu.Unlock()
	require.Zero(t, tb.b.hist.bySeq.len())
}

// Records end in the order they are made: those made at one instant of
// the clock (or by a connection whose burst clock lags another's) end a
// nanosecond after the one before, so that listings and a store's index,
// ordered by end time, see them in the order their jobs ended.
func TestRecordsEndInOrder(t *testing.T) {
	t.Parallel()
	tb, _, _, seqs := setupEnded(t, 5)
	var last time.Time
	for i, seq := range seqs {
		rec, ok := tb.b.Job(context.Background(), seq)
		require.True(t, ok)
		if i > 0 {
			require.Equal(t, time.Nanosecond, rec.Finished.Sub(last), "record %d", i)
		}
		last = rec.Finished
	}
	require.WithinDuration(t, tb.clock.Now(), last, time.Microsecond)
}

// A result longer than HistoryResultCap is cut and marked.
func TestHistoryResultTruncated(t *testing.T) {
	t.Parallel()
	tb := setup(t, Config{})
	client, worker := tb.clientAndWorker("f")
	seq := tb.submit(t, client, bg("f", "", "x", Normal)).seq
	tb.grab(t, worker)
	big := make([]byte, HistoryResultCap+1)
	require.NoError(t, tb.b.Finish(worker, seq, Complete, big))
	rec, ok := tb.b.Job(context.Background(), seq)
	require.True(t, ok)
	require.Len(t, rec.Result, HistoryResultCap)
	require.True(t, rec.ResultTruncated)
}

func TestHistoryPolicyKeys(t *testing.T) {
	t.Parallel()
	var p Policy
	for _, kv := range [][2]string{{"history", "24h"}, {"history_max", "10000"}} {
		require.NoError(t, p.Set(kv[0], kv[1]))
	}
	require.True(t, p.IsZero(), "restating the defaults keeps the zero policy")
	var off Policy
	require.NoError(t, off.Set("history", "0"))
	require.False(t, off.needsLife(), "history alone takes no lifecycle state")
	v, _ := p.Get("history")
	require.Equal(t, "24h0m0s", v)
	require.NoError(t, p.Set("history", "0"))
	require.NoError(t, p.Set("history_max", "5"))
	var q Policy
	for _, kv := range []string{"history", "history_max"} {
		v, _ := p.Get(kv)
		require.NoError(t, q.Set(kv, v), fmt.Sprint(kv, v))
	}
	require.Equal(t, p, q, "Get and Set round-trip")
	age, max := q.historyLimits()
	require.Equal(t, time.Duration(0), age)
	require.Equal(t, 5, max)
	require.Error(t, p.Set("history_max", "-3"))
}

// A background job held past its worker's CAN_DO_TIMEOUT ends dead, and
// its record says the attempt timed out and which worker held it.
func TestHistoryRecordsTimeout(t *testing.T) {
	t.Parallel()
	tb := setup(t, Config{})
	client, _ := tb.session()
	worker, _ := tb.session()
	tb.b.SetClientID(worker, "slow-worker")
	tb.b.CanDo(worker, []byte("f"), time.Second)
	seq := tb.submit(t, client, bg("f", "", "x", Normal)).seq
	tb.grab(t, worker)
	tb.clock.Add(time.Second)
	tb.b.RunTimers()
	rec, ok := tb.b.Job(context.Background(), seq)
	require.True(t, ok)
	require.True(t, rec.Final)
	require.Equal(t, FinalDead, rec.State)
	require.Equal(t, errTimedOut, rec.LastError)
	require.Len(t, rec.History, 1)
	require.Equal(t, outcomeTimeout, rec.History[0].Outcome)
	require.Equal(t, "slow-worker", rec.History[0].Worker)
	require.ErrorIs(t, tb.b.Finish(worker, seq, Complete, nil), ErrJobTimedOut, "the late result of the timed-out run")
	rec, _ = tb.b.Job(context.Background(), seq)
	require.Equal(t, FinalDead, rec.State, "the state never flips after the end")
}

// A function's history limits follow its policy as it changes, and its
// history is found again after expiry emptied and forgot it.
func TestHistoryFollowsPolicyChanges(t *testing.T) {
	t.Parallel()
	tb := setup(t, Config{})
	client, _ := tb.session()
	worker, _ := tb.session()
	tb.b.CanDo(worker, []byte("f"), 0)
	kept := func(seq uint64) bool { _, ok := tb.b.Job(context.Background(), seq); return ok }

	s1 := tb.completeOne(t, client, worker, "f")
	require.True(t, kept(s1))
	var none Policy
	require.NoError(t, none.Set("history", "0"))
	tb.b.SetPolicy("f", none)
	s2 := tb.completeOne(t, client, worker, "f")
	require.False(t, kept(s2), "history 0 set afterwards keeps none")
	var one Policy
	require.NoError(t, one.Set("history", "1m"))
	tb.b.SetPolicy("f", one)
	s3 := tb.completeOne(t, client, worker, "f")
	require.True(t, kept(s3))
	tb.clock.Add(2 * time.Minute)
	tb.b.ExpireHistory() // empties f's history, which is forgotten
	require.False(t, kept(s3))
	tb.b.ResetPolicy("f")
	s4 := tb.completeOne(t, client, worker, "f")
	require.True(t, kept(s4), "a history made again after expiry keeps records")
	page, err := tb.b.ListJobs(context.Background(), JobQuery{Function: "f", State: FinalComplete})
	require.NoError(t, err)
	require.Len(t, page.Jobs, 1, "s4 only: s1 went with s3 under the 1m limit")
	require.Equal(t, s4, page.Jobs[0].Seq)
}

// A job cancelled while a worker ran it keeps that run in its record: an
// attempt with the outcome "cancelled", by the worker that held it.
func TestHistoryRecordsCancelledRun(t *testing.T) {
	t.Parallel()
	tb := setup(t, Config{})
	client, worker := tb.clientAndWorker("f")
	tb.b.SetClientID(worker, "busy-worker")
	seq := tb.submit(t, client, bg("f", "", "x", Normal)).seq
	tb.grab(t, worker)
	require.NoError(t, tb.b.CancelJobBy(context.Background(), []byte(tb.b.Handle(seq)), "admin 127.0.0.1:9"))
	rec, ok := tb.b.Job(context.Background(), seq)
	require.True(t, ok)
	require.Equal(t, FinalCancelled, rec.State)
	require.Equal(t, uint32(1), rec.Attempts, "the run counts as an attempt")
	require.Len(t, rec.History, 1)
	require.Equal(t, "cancelled", rec.History[0].Outcome)
	require.Equal(t, "busy-worker", rec.History[0].Worker)
	require.NotZero(t, rec.History[0].End)
	require.Empty(t, rec.LastError, "a cancel is no error: cancelled_by says who")

	// A job cancelled before it ran has no attempt.
	seq = tb.submit(t, client, bg("f", "", "y", Normal)).seq
	require.NoError(t, tb.b.CancelJobBy(context.Background(), []byte(tb.b.Handle(seq)), "admin 127.0.0.1:9"))
	rec, _ = tb.b.Job(context.Background(), seq)
	require.Equal(t, FinalCancelled, rec.State)
	require.Zero(t, rec.Attempts)
	require.Empty(t, rec.History)
}

// Under gearmand's rules (no policy), a run whose worker vanished is an
// attempt in the job's record, whether the job then completes elsewhere
// or --job-retries ends it (a background job as a dead letter).
func TestHistoryRecordsVanishedWorkers(t *testing.T) {
	t.Parallel()
	tb := setup(t, Config{JobRetries: 2})
	client, _ := tb.session()
	run := func(name string) *Session {
		w, _ := tb.session()
		tb.b.SetClientID(w, name)
		tb.b.CanDo(w, []byte("f"), 0)
		return w
	}
	seq := tb.submit(t, client, bg("f", "", "x", Normal)).seq
	w1 := run("w1")
	tb.grab(t, w1)
	tb.b.CloseSession(w1)
	w2 := run("w2")
	require.Equal(t, seq, tb.grab(t, w2).Seq)
	require.NoError(t, tb.b.Finish(w2, seq, Complete, []byte("r")))
	rec, ok := tb.b.Job(context.Background(), seq)
	require.True(t, ok)
	require.Equal(t, FinalComplete, rec.State)
	require.Equal(t, uint32(2), rec.Attempts)
	require.Len(t, rec.History, 2, "both runs")
	require.Equal(t, outcomeVanished, rec.History[0].Outcome)
	require.Equal(t, "w1", rec.History[0].Worker)
	require.Equal(t, outcomeComplete, rec.History[1].Outcome)

	seq = tb.submit(t, client, bg("f", "", "y", Normal)).seq
	for _, name := range []string{"w3", "w4"} {
		w := run(name)
		require.Equal(t, seq, tb.grab(t, w).Seq)
		tb.b.CloseSession(w)
	}
	rec, ok = tb.b.Job(context.Background(), seq)
	require.True(t, ok)
	require.Equal(t, FinalDead, rec.State, "out of --job-retries")
	require.Equal(t, uint32(2), rec.Attempts)
	require.Len(t, rec.History, 2)
	require.Equal(t, "w4", rec.History[1].Worker)
	require.Equal(t, outcomeVanished, rec.History[1].Outcome)
	require.Equal(t, outcomeVanished, rec.LastError)
}

// A run that ends without a result and says nothing of why (a WORK_FAIL
// with no warning before it, an exception without data) is named by its
// outcome in the job's last error, whether the job ran in the foreground
// or in the background: one word for one event in every view.
func TestHistoryLastErrorOfASilentEnd(t *testing.T) {
	t.Parallel()
	tb := setup(t, Config{})
	client, _ := tb.session()
	worker, _ := tb.session()
	tb.b.CanDo(worker, []byte("f"), 0)
	for _, c := range []struct {
		p       SubmitParams
		o       Outcome
		state   string
		lastErr string
	}{
		{fg("f", "", "a"), Fail, FinalFailed, outcomeFailed},
		{bg("f", "", "b", Normal), Fail, FinalDead, outcomeFailed},
		{fg("f", "", "c"), Exception, FinalException, outcomeException},
		{bg("f", "", "d", Normal), Exception, FinalDead, outcomeException},
	} {
		seq := tb.submit(t, client, c.p).seq
		require.Equal(t, seq, tb.grab(t, worker).Seq)
		require.NoError(t, tb.b.Finish(worker, seq, c.o, nil))
		rec, ok := tb.b.Job(context.Background(), seq)
		require.True(t, ok)
		require.Equal(t, c.state, rec.State, "background %t", c.p.Background)
		require.Equal(t, c.lastErr, rec.LastError, "%s, background %t", c.state, c.p.Background)
		require.Len(t, rec.History, 1)
		require.Empty(t, rec.History[0].Error, "the attempt itself sent no error")
	}
}
