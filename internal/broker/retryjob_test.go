package broker

import (
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// A failed foreground job runs again as a new background job with the same
// function, unique, priority and payload, whose record names the old one;
// a dead letter is queued again under its own handle; a complete, live or
// unknown job, or one whose payload the record did not keep, is refused.
func TestRetryJob(t *testing.T) {
	t.Parallel()
	var noDead Policy
	require.NoError(t, noDead.Set("max_dead_letters", "-1"))
	require.NoError(t, noDead.Set("max_attempts", "1"))
	tb := setup(t, Config{HandlePrefix: "H:t:", Policies: map[string]Policy{"dies": {MaxAttempts: 1}, "gone": noDead}})
	ctx := context.Background()
	client, worker := tb.clientAndWorker("f")
	for _, fn := range []string{"dies", "gone"} {
		tb.b.CanDo(worker, []byte(fn), 0)
	}
	finish := func(seq uint64, how Outcome, data string) {
		t.Helper()
		a, ok := tb.b.Grab(worker)
		require.True(t, ok)
		require.Equal(t, seq, a.Seq)
		require.NoError(t, tb.b.Finish(worker, seq, how, []byte(data)))
	}
	run := func(p SubmitParams, how Outcome, data string) uint64 {
		t.Helper()
		seq := tb.submit(t, client, p).seq
		finish(seq, how, data)
		return seq
	}

	p := fg("f", "order-7", "the payload")
	p.Priority = High
	failed := run(p, Fail, "")
	rec, ok := tb.b.Job(context.Background(), failed)
	require.True(t, ok)
	require.Equal(t, FinalFailed, rec.State)
	require.Equal(t, []byte("the payload"), rec.Payload, "a failed job's record keeps its payload")

	seq, created, err := tb.b.RetryJob(ctx, []byte(tb.b.Handle(failed)), "test")
	require.NoError(t, err)
	require.True(t, created)
	require.NotEqual(t, failed, seq)
	again, ok := tb.b.Job(context.Background(), seq)
	require.True(t, ok)
	require.Equal(t, "queued", again.State)
	require.True(t, again.Background)
	require.Equal(t, "order-7", again.Unique)
	require.Equal(t, High, again.Priority)
	require.Equal(t, failed, again.RetryOf)
	a, ok := tb.b.Grab(worker)
	require.True(t, ok)
	require.Equal(t, seq, a.Seq)
	require.Equal(t, []byte("the payload"), a.Payload)
	require.NoError(t, tb.b.Finish(worker, seq, Complete, []byte("ok")))
	done, ok := tb.b.Job(context.Background(), seq)
	require.True(t, ok)
	require.Equal(t, FinalComplete, done.State)
	require.Equal(t, failed, done.RetryOf, "the record names the job it ran again")
	old, _ := tb.b.Job(context.Background(), failed)
	require.Equal(t, FinalFailed, old.State, "the old record does not change")

	// An exception ends a job too.
	exc := run(fg("f", "", "x"), Exception, "boom")
	seq, created, err = tb.b.RetryJob(ctx, []byte(tb.b.Handle(exc)), "test")
	require.NoError(t, err)
	require.True(t, created)
	finish(seq, Complete, "")

	// A dead letter is queued again under its own handle.
	dead := run(bg("dies", "", "d", Normal), Fail, "")
	seq, created, err = tb.b.RetryJob(ctx, []byte(tb.b.Handle(dead)), "test")
	require.NoError(t, err)
	require.False(t, created)
	require.Equal(t, dead, seq)
	live, _ := tb.b.Job(context.Background(), dead)
	require.Equal(t, "queued", live.State)
	_, _, err = tb.b.RetryJob(ctx, []byte(tb.b.Handle(dead)), "test")
	require.ErrorIs(t, err, ErrJobLive)
	finish(dead, Complete, "")

	// A dead job whose function keeps no dead letters runs again from
	// its record.
	gone := run(bg("gone", "", "g", Low), Fail, "")
	rec, _ = tb.b.Job(context.Background(), gone)
	require.Equal(t, FinalDead, rec.State)
	seq, created, err = tb.b.RetryJob(ctx, []byte(tb.b.Handle(gone)), "test")
	require.NoError(t, err)
	require.True(t, created)
	require.NotEqual(t, gone, seq)
	finish(seq, Complete, "")

	ok1 := run(fg("f", "", "x"), Complete, "r")
	_, _, err = tb.b.RetryJob(ctx, []byte(tb.b.Handle(ok1)), "test")
	require.ErrorIs(t, err, ErrNotRetryable)

	big := run(fg("f", "", strings.Repeat("x", RetryPayloadCap+1)), Fail, "")
	rec, _ = tb.b.Job(context.Background(), big)
	require.Nil(t, rec.Payload)
	require.Len(t, rec.PayloadPreview, PayloadPreviewCap)
	_, _, err = tb.b.RetryJob(ctx, []byte(tb.b.Handle(big)), "test")
	require.ErrorIs(t, err, ErrPayloadNotKept)

	_, _, err = tb.b.RetryJob(ctx, []byte("H:t:999999"), "test")
	require.ErrorIs(t, err, ErrJobNotFound)
}

// Retries of one dead letter at once run it once: every other is told the
// job is live again, none that it is unknown.
func TestRetryJobOfDeadLetterAtOnce(t *testing.T) {
	t.Parallel()
	tb := setup(t, Config{HandlePrefix: "H:t:", Policies: map[string]Policy{"dies": {MaxAttempts: 1}}})
	client, worker := tb.clientAndWorker("dies")
	const n = 16
	for range 20 {
		seq := tb.submit(t, client, bg("dies", "", "d", Normal)).seq
		require.Equal(t, seq, tb.grab(t, worker).Seq)
		require.NoError(t, tb.b.Finish(worker, seq, Fail, nil))
		handle := []byte(tb.b.Handle(seq))
		errs := make(chan error, n)
		for range n {
			go func() {
				_, _, err := tb.b.RetryJob(context.Background(), handle, "test")
				errs <- err
			}()
		}
		ran := 0
		for range n {
			if err := <-errs; err == nil {
				ran++
			} else {
				require.ErrorIs(t, err, ErrJobLive)
			}
		}
		require.Equal(t, 1, ran)
		require.Equal(t, seq, tb.grab(t, worker).Seq)
		require.NoError(t, tb.b.Finish(worker, seq, Complete, nil))
	}
}

// A failed job retried twice while its first retry is live runs once: the
// second retry answers the live one (created false). Once that one has
// ended, a retry runs the job again.
func TestRetryJobTwice(t *testing.T) {
	t.Parallel()
	tb := setup(t, Config{HandlePrefix: "H:t:"})
	ctx := context.Background()
	client, worker := tb.clientAndWorker("f")
	failed := tb.submit(t, client, fg("f", "", "the payload")).seq
	require.Equal(t, failed, tb.grab(t, worker).Seq)
	require.NoError(t, tb.b.Finish(worker, failed, Fail, nil))
	handle := []byte(tb.b.Handle(failed))

	first, created, err := tb.b.RetryJob(ctx, handle, "test")
	require.NoError(t, err)
	require.True(t, created)
	again, created, err := tb.b.RetryJob(ctx, handle, "test")
	require.NoError(t, err)
	require.Equal(t, first, again, "the second retry answers the live one")
	require.False(t, created)
	st := tb.b.Status(ctx)
	require.Len(t, st, 1)
	require.Equal(t, 1, st[0].Total, "one job of f is live")

	require.Equal(t, first, tb.grab(t, worker).Seq)
	require.NoError(t, tb.b.Finish(worker, first, Fail, nil))
	third, created, err := tb.b.RetryJob(ctx, handle, "test")
	require.NoError(t, err)
	require.True(t, created, "the first retry ended: the job runs again")
	require.NotEqual(t, first, third)
}

// failedJobOfDroppedFunction gives a broker of at most two functions, the
// sequence number of a job of "f" that failed, "f" dropped since, and a
// worker session that registers nothing.
func failedJobOfDroppedFunction(t *testing.T) (*testBundle, *Session, uint64) {
	t.Helper()
	tb := setup(t, Config{HandlePrefix: "H:t:", MaxFunctions: 2})
	client, worker := tb.clientAndWorker("f")
	seq := tb.submit(t, client, fg("f", "", "the payload")).seq
	a, ok := tb.b.Grab(worker)
	require.True(t, ok)
	require.NoError(t, tb.b.Finish(worker, a.Seq, Fail, nil))
	tb.b.CantDo(worker, []byte("f"))
	require.NoError(t, tb.b.DropFunction(context.Background(), "f"))
	return tb, worker, seq
}

// Running an ended job again is the server's own submit of a job it
// accepted before: --max-functions never refuses it, also when its
// function was dropped since and every known function holds something.
func TestRetryJobIsNotRefusedForTheFunctionLimit(t *testing.T) {
	t.Parallel()
	tb, worker, seq := failedJobOfDroppedFunction(t)
	for _, fn := range []string{"a", "b"} {
		require.NoError(t, tb.b.CanDo(worker, []byte(fn), 0))
	}
	require.ErrorIs(t, tb.b.CanDo(worker, []byte("c"), 0), ErrTooManyFunctions, "every known function holds a worker")

	again, created, err := tb.b.RetryJob(context.Background(), []byte(tb.b.Handle(seq)), "test")
	require.NoError(t, err)
	require.True(t, created)
	rec, ok := tb.b.Job(context.Background(), again)
	require.True(t, ok)
	require.Equal(t, "f", rec.Function)
	require.Equal(t, "queued", rec.State)
}

// The server's own submit is never refused, but it does not take the
// broker past --max-functions while a function holding nothing can be
// forgotten: a peer allowed to retry stored jobs cannot grow the
// functions beyond the limit through them.
func TestRetryJobMakesRoomAtTheFunctionLimit(t *testing.T) {
	t.Parallel()
	tb, worker, seq := failedJobOfDroppedFunction(t)
	require.NoError(t, tb.b.CanDo(worker, []byte("busy"), 0))
	require.NoError(t, tb.b.CreateFunction("idle"))

	again, created, err := tb.b.RetryJob(context.Background(), []byte(tb.b.Handle(seq)), "test")
	require.NoError(t, err)
	require.True(t, created)
	rec, ok := tb.b.Job(context.Background(), again)
	require.True(t, ok)
	require.Equal(t, "queued", rec.State)
	require.Equal(t, []string{"busy", "f"}, statusNames(tb.b), "the idle function made room for the retried job's")
}
