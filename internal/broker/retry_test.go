package broker

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestBackoffDelay(t *testing.T) {
	t.Parallel()
	bo := Backoff{Initial: time.Second, Max: 10 * time.Second, Multiplier: 2, Jitter: -1}
	var got []time.Duration
	for n := uint32(1); n <= 6; n++ {
		got = append(got, bo.delay(n, 0.99))
	}
	require.Equal(t, []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second,
		10 * time.Second, 10 * time.Second}, got)

	// Jitter takes up to its fraction off, never adds: the cap holds.
	bo.Jitter = 0.5
	require.Equal(t, 4*time.Second, bo.delay(3, 0))
	require.Equal(t, 2*time.Second, bo.delay(3, 1))
	require.Equal(t, 5*time.Second, bo.delay(9, 1))

	// Zero values are the documented defaults: 1s, ×2, 10m cap, 20% jitter.
	var def Backoff
	require.Equal(t, time.Second, def.delay(1, 0))
	require.Equal(t, 800*time.Millisecond, def.delay(1, 1))
	require.Equal(t, 10*time.Minute, def.delay(40, 0))

	// A backoff longer than the default cap, with no backoff_max, is
	// waited as written: the cap is the backoff then, not 10m.
	long := Backoff{Initial: time.Hour, Jitter: -1}
	require.Equal(t, time.Hour, long.delay(1, 0))
	require.Equal(t, time.Hour, long.delay(5, 0))
	require.NoError(t, Policy{MaxAttempts: 3, Backoff: long}.Validate())
	long.Max = 10 * time.Minute
	require.ErrorIs(t, Policy{MaxAttempts: 3, Backoff: long}.Validate(), ErrPolicy)
}

// With no policy a background WORK_FAIL is final, as in gearmand: the job
// is not run again; it is kept as a dead letter.
func TestDefaultWorkFailIsFinal(t *testing.T) {
	t.Parallel()
	tb := setupLC(t, lcOpts{can: []string{"fn"}})
	seq := tb.submit(t, lcBG("fn", "", "p"))
	a := tb.grab(t)
	require.Equal(t, seq, a.Seq)
	require.NoError(t, tb.b.Finish(tb.worker, a.Seq, Fail, nil))
	tb.advance(24 * time.Hour)
	tb.noJob(t)
	dl := tb.onlyDeadLetter(t, "fn", "failed", 1)
	require.Equal(t, seq, dl.Seq)
	require.Equal(t, []byte("p"), dl.Payload)

	// A foreground failure goes to the client and leaves no dead letter.
	fg := SubmitParams{Function: []byte("fn"), Payload: []byte("x"), Priority: Normal}
	fseq := tb.submit(t, fg)
	a = tb.grab(t)
	require.Equal(t, fseq, a.Seq)
	require.NoError(t, tb.b.Finish(tb.worker, a.Seq, Fail, nil))
	require.Equal(t, []EventKind{EventFail}, kinds(tb.cout.take()))
	require.Len(t, mustDeadLetters(t, tb.b, ""), 1)
}

// A failing background job waits its backoff in the timer heap, runs
// again, and after MaxAttempts becomes a dead letter with its history.
func TestRetryWithBackoffThenDeadLetter(t *testing.T) {
	t.Parallel()
	pol := Policy{MaxAttempts: 3, Backoff: noJitter(10 * time.Second)}
	tb := setupLC(t, lcOpts{cfg: Config{Policies: policies("fn", pol)}, can: []string{"fn"}})
	seq := tb.submit(t, lcBG("fn", "u1", "payload"))

	a := tb.grab(t)
	require.NoError(t, tb.b.Finish(tb.worker, a.Seq, Fail, nil))
	require.Equal(t, "retry-wait", tb.b.Jobs(0)[0].State)
	tb.noJob(t)
	tb.advance(9 * time.Second)
	tb.noJob(t)
	tb.advance(time.Second)
	a = tb.grab(t)
	require.Equal(t, seq, a.Seq)
	require.NoError(t, tb.b.Finish(tb.worker, a.Seq, Exception, []byte("boom")))

	// Second backoff doubles.
	tb.advance(19 * time.Second)
	tb.noJob(t)
	tb.advance(time.Second)
	a = tb.grab(t)
	require.NoError(t, tb.b.Finish(tb.worker, a.Seq, Exception, []byte("boom again")))

	// Out of attempts: dead, not retried.
	tb.advance(time.Hour)
	tb.noJob(t)
	require.Zero(t, tb.b.JobCount())
	dl, ok := mustDeadLetterByHandle(t, tb.b, []byte(tb.b.Handle(seq)))
	require.True(t, ok)
	require.Equal(t, uint32(3), dl.Attempts)
	require.Equal(t, "boom again", dl.LastError)
	require.Equal(t, "u1", dl.Unique)
	require.Len(t, dl.History, 3)
	require.Equal(t, []string{"failed", "exception", "exception"},
		[]string{dl.History[0].Outcome, dl.History[1].Outcome, dl.History[2].Outcome})
	require.Equal(t, "boom", dl.History[1].Error)

	// The unique is free again: a new submit makes a new job.
	seq2 := tb.submit(t, lcBG("fn", "u1", "payload"))
	require.NotEqual(t, seq, seq2)
}

// A job whose worker stays silent past the policy timeout is taken back;
// the late WORK_STATUS and WORK_COMPLETE from that worker change nothing
// and get ErrJobTimedOut (which the Gearman port accepts without an
// answer, the HTTP API answers 409 timed-out).
func TestTimeoutTakesBackAndLateCompleteIsIgnored(t *testing.T) {
	t.Parallel()
	pol := Policy{MaxAttempts: 2, Timeout: 5 * time.Second, Backoff: noJitter(time.Second)}
	tb := setupLC(t, lcOpts{cfg: Config{Policies: policies("fn", pol)}, can: []string{"fn"}})
	other := tb.b.NewSession("127.0.0.1:1002", &recorder{})
	tb.b.CanDo(other, []byte("fn"), 0)
	seq := tb.submit(t, lcBG("fn", "", "p"))
	a := tb.grab(t)
	tb.advance(4 * time.Second)
	require.Equal(t, "running", tb.b.Jobs(0)[0].State)
	tb.advance(time.Second)
	require.Equal(t, "retry-wait", tb.b.Jobs(0)[0].State)

	// The silent worker finally answers: too late.
	require.ErrorIs(t, tb.b.WorkStatus(tb.worker, a.Seq, 1, 2), ErrJobTimedOut)
	require.ErrorIs(t, tb.b.Finish(tb.worker, a.Seq, Complete, []byte("late")), ErrJobTimedOut)
	require.Equal(t, "retry-wait", tb.b.Jobs(0)[0].State, "the late result changes nothing")
	require.Empty(t, tb.cout.take())
	// A session that never held the job is refused: it did not lose it.
	stranger := tb.b.NewSession("127.0.0.1:1003", &recorder{})
	require.Equal(t, ErrJobNotFound, tb.b.Finish(stranger, a.Seq, Complete, []byte("x")))

	tb.advance(time.Second)
	a2, ok := tb.b.Grab(other)
	require.True(t, ok)
	require.Equal(t, seq, a2.Seq)
	require.NoError(t, tb.b.Finish(other, seq, Complete, []byte("ok")))
	require.Zero(t, tb.b.JobCount())
	// And after it completed, the first worker's answer still changes
	// nothing.
	require.ErrorIs(t, tb.b.Finish(tb.worker, seq, Complete, []byte("late")), ErrJobTimedOut)
	require.Zero(t, tb.b.JobCount())
	require.Empty(t, mustDeadLetters(t, tb.b, ""))
}

// vanishWithJob has a new worker that can do fn take job seq and
// disconnect while it holds it.
func (tb *lcBundle) vanishWithJob(t *testing.T, fn string, seq uint64) {
	t.Helper()
	w := tb.b.NewSession("127.0.0.1:2000", &recorder{})
	tb.b.CanDo(w, []byte(fn), 0)
	a, ok := tb.b.Grab(w)
	require.True(t, ok, "a job for the worker that will vanish")
	require.Equal(t, seq, a.Seq)
	tb.b.CloseSession(w)
}

// requireVanishedTwice checks that the one job of fn is gone, kept as a
// dead letter of two attempts lost to workers that vanished.
func (tb *lcBundle) requireVanishedTwice(t *testing.T, fn string) {
	t.Helper()
	tb.onlyDeadLetter(t, fn, "worker vanished", 2)
}

// A worker that vanishes counts as a failed attempt under a policy; the
// last attempt lost this way leaves a dead letter saying so.
func TestWorkerVanishedUsesAttempts(t *testing.T) {
	t.Parallel()
	pol := Policy{MaxAttempts: 2, Backoff: noJitter(time.Second)}
	tb := setupLC(t, lcOpts{cfg: Config{Policies: policies("fn", pol)}})
	seq := tb.submit(t, lcBG("fn", "", "p"))
	for range 2 {
		tb.vanishWithJob(t, "fn", seq)
		tb.advance(time.Second)
	}
	tb.requireVanishedTwice(t, "fn")
}

// Without a policy a vanished worker's job goes back to the front of the
// queue at once, as in gearmand; with --job-retries exhausted a background
// job becomes a dead letter.
func TestGearmandTakebackRules(t *testing.T) {
	t.Parallel()
	tb := setupLC(t, lcOpts{cfg: Config{JobRetries: 2}})
	seq := tb.submit(t, lcBG("fn", "", "p"))
	for range 2 {
		tb.vanishWithJob(t, "fn", seq)
	}
	tb.requireVanishedTwice(t, "fn")
}

// A foreground job is never retried after WORK_FAIL, even with a policy.
func TestForegroundFailNotRetried(t *testing.T) {
	t.Parallel()
	pol := Policy{MaxAttempts: 5, Backoff: noJitter(time.Second)}
	tb := setupLC(t, lcOpts{cfg: Config{Policies: policies("fn", pol)}, can: []string{"fn"}})
	tb.b.SetExceptions(tb.client)
	seq := tb.submit(t, SubmitParams{Function: []byte("fn"), Payload: []byte("x")})
	a := tb.grab(t)
	require.NoError(t, tb.b.Finish(tb.worker, a.Seq, Exception, []byte("bad")))
	evs := tb.cout.take()
	require.Equal(t, []EventKind{EventException}, kinds(evs))
	require.Equal(t, seq, evs[0].Seq)
	tb.advance(time.Minute)
	tb.noJob(t)
	require.Zero(t, tb.b.JobCount())
	require.Empty(t, mustDeadLetters(t, tb.b, ""))
}

// Per-job attempts and timeout (HTTP API) override the function's policy.
func TestPerJobOverrides(t *testing.T) {
	t.Parallel()
	tb := setupLC(t, lcOpts{can: []string{"fn"}})
	p := lcBG("fn", "", "p")
	p.Attempts = 2
	p.Timeout = 3 * time.Second
	seq := tb.submit(t, p)
	tb.grab(t)
	tb.advance(3 * time.Second) // timed out: attempt 1
	tb.advance(2 * time.Second) // default backoff is at most 1s
	a := tb.grab(t)
	require.Equal(t, seq, a.Seq)
	require.NoError(t, tb.b.Finish(tb.worker, seq, Fail, nil))
	dl := mustDeadLetters(t, tb.b, "fn")
	require.Len(t, dl, 1)
	require.Equal(t, uint32(2), dl[0].Attempts)
	require.Equal(t, "timeout", dl[0].History[0].Outcome)
}

// A job held past its worker's CAN_DO_TIMEOUT fails, as the protocol
// says: the waiting client gets WORK_FAIL at once, the job is not run
// again, and the worker's late data and result change nothing and get
// ErrJobTimedOut.
func TestCanDoTimeoutFailsForegroundJob(t *testing.T) {
	t.Parallel()
	tb := setupLC(t, lcOpts{})
	tb.b.CanDo(tb.worker, []byte("fn"), 2*time.Second)
	seq := tb.submit(t, SubmitParams{Function: []byte("fn"), Payload: []byte("x")})
	a := tb.grab(t)
	require.Equal(t, seq, a.Seq)

	tb.advance(1999 * time.Millisecond)
	require.Empty(t, tb.cout.take(), "not before the timeout")
	tb.advance(time.Millisecond)
	require.Equal(t, []Event{{Kind: EventFail, Seq: seq}}, tb.cout.take())
	require.Zero(t, tb.b.JobCount(), "failed, not queued again")
	require.ErrorIs(t, tb.b.WorkData(tb.worker, seq, []byte("late"), false), ErrJobTimedOut)
	require.ErrorIs(t, tb.b.Finish(tb.worker, seq, Complete, []byte("late")), ErrJobTimedOut)
	require.ErrorIs(t, tb.b.Finish(tb.worker, seq, Fail, nil), ErrJobTimedOut)
	require.Zero(t, tb.b.JobCount(), "nothing comes back")
	tb.noJob(t)
	require.Empty(t, tb.cout.take())
}

// A job lost to its timeout and given again to the same worker is answered
// for its new run: cancelled while it runs again, its updates get
// ErrJobCancelled (not the ErrJobTimedOut of the first run) and its final
// packet ends the cancelled entry; completed in its new run, a contradicting
// WORK_EXCEPTION is refused as for any job, not taken for a late packet of
// the first run.
func TestTimedOutJobGivenAgainToTheSameWorker(t *testing.T) {
	t.Parallel()
	pol := Policy{MaxAttempts: 3, Timeout: 5 * time.Second, Backoff: noJitter(time.Second)}
	tb := setupLC(t, lcOpts{cfg: Config{Policies: policies("fn", pol)}, can: []string{"fn"}})
	handle := func(seq uint64) []byte { return []byte(tb.b.Handle(seq)) }

	// Cancelled in its second run.
	seq := tb.submit(t, lcBG("fn", "", "p"))
	require.Equal(t, seq, tb.grab(t).Seq)
	tb.advance(5 * time.Second)
	require.ErrorIs(t, tb.b.WorkData(tb.worker, seq, []byte("late"), false), ErrJobTimedOut)
	tb.advance(time.Second)
	require.Equal(t, seq, tb.grab(t).Seq, "the same worker runs it again")
	require.NoError(t, tb.b.WorkStatus(tb.worker, seq, 1, 2), "it holds the job again")
	require.NoError(t, tb.b.CancelJob(context.Background(), handle(seq)))
	require.ErrorIs(t, tb.b.WorkData(tb.worker, seq, []byte("d"), false), ErrJobCancelled)
	require.ErrorIs(t, tb.b.WorkStatus(tb.worker, seq, 2, 2), ErrJobCancelled)
	require.ErrorIs(t, tb.b.Finish(tb.worker, seq, Complete, []byte("r")), ErrJobCancelled)
	tb.b.mu.Lock()
	left := len(tb.worker.cancelled)
	tb.b.mu.Unlock()
	require.Zero(t, left, "the final packet ends the cancelled entry")
	require.Equal(t, ErrJobNotFound, tb.b.Finish(tb.worker, seq, Complete, []byte("r")), "and only once")

	// Completed in its second run.
	seq = tb.submit(t, lcBG("fn", "", "p"))
	require.Equal(t, seq, tb.grab(t).Seq)
	tb.advance(5 * time.Second)
	tb.advance(time.Second)
	require.Equal(t, seq, tb.grab(t).Seq)
	require.NoError(t, tb.b.Finish(tb.worker, seq, Complete, []byte("r")))
	require.NoError(t, tb.b.Finish(tb.worker, seq, Complete, []byte("r")), "a repeat")
	require.Equal(t, ErrJobNotFound, tb.b.Finish(tb.worker, seq, Exception, []byte("e")), "a contradiction")
	require.Equal(t, ErrJobNotFound, tb.b.WorkData(tb.worker, seq, []byte("d"), false))
}

// A background job that times out without a retry policy is kept as a
// dead letter whose error says it timed out.
func TestCanDoTimeoutFailsBackgroundJob(t *testing.T) {
	t.Parallel()
	tb := setupLC(t, lcOpts{})
	tb.b.CanDo(tb.worker, []byte("fn"), time.Second)
	seq := tb.submit(t, lcBG("fn", "u", "p"))
	tb.grab(t)
	tb.advance(time.Second)
	dl := tb.onlyDeadLetter(t, "fn", "timed out", 1)
	require.Equal(t, seq, dl.Seq)
	require.Len(t, dl.History, 1)
	require.Equal(t, "timeout", dl.History[0].Outcome)
	require.Equal(t, "timed out", dl.History[0].Error)
	tb.noJob(t)
}

// Under a retry policy a timed-out job runs again while attempts remain:
// a foreground job at the front of its queue (its client keeps waiting),
// and it fails once the attempts are used up.
func TestTimeoutRetriedWhilePolicyAllows(t *testing.T) {
	t.Parallel()
	pol := Policy{MaxAttempts: 2, Timeout: 5 * time.Second, Backoff: noJitter(time.Second)}
	tb := setupLC(t, lcOpts{cfg: Config{Policies: policies("fn", pol)}, can: []string{"fn"}})
	seq := tb.submit(t, SubmitParams{Function: []byte("fn"), Payload: []byte("x")})
	tb.grab(t)
	tb.advance(5 * time.Second)
	require.Empty(t, tb.cout.take(), "attempt 1 of 2 timed out: retried")
	a := tb.grab(t)
	require.Equal(t, seq, a.Seq)
	tb.advance(5 * time.Second)
	require.Equal(t, []Event{{Kind: EventFail, Seq: seq}}, tb.cout.take())
	require.Zero(t, tb.b.JobCount())
	tb.noJob(t)
}

// An HTTP worker's lease is not a CAN_DO_TIMEOUT: when it runs out the
// worker is taken as gone and the job goes back to the front of its
// queue, counted against --job-retries.
func TestLeaseExpiryRequeues(t *testing.T) {
	t.Parallel()
	tb := setupLC(t, lcOpts{})
	tb.b.CanDoLease(tb.worker, []byte("fn"), time.Second)
	seq := tb.submit(t, SubmitParams{Function: []byte("fn"), Payload: []byte("x")})
	tb.grab(t)
	tb.advance(time.Second)
	require.Empty(t, tb.cout.take())
	jobs := tb.b.Jobs(0)
	require.Len(t, jobs, 1)
	require.Equal(t, "queued", jobs[0].State)
	require.Equal(t, uint32(1), jobs[0].Retries)
	a := tb.grab(t)
	require.Equal(t, seq, a.Seq)
	require.NoError(t, tb.b.Finish(tb.worker, seq, Complete, []byte("ok")))
	require.Equal(t, []Event{{Kind: EventComplete, Seq: seq, Data: []byte("ok")}}, tb.cout.take())
}

// The policy timeout of a function fails the job the same way when it is
// shorter than the worker's lease.
func TestPolicyTimeoutShorterThanLeaseFails(t *testing.T) {
	t.Parallel()
	pol := Policy{Timeout: time.Second}
	tb := setupLC(t, lcOpts{cfg: Config{Policies: policies("fn", pol)}})
	tb.b.CanDoLease(tb.worker, []byte("fn"), time.Minute)
	seq := tb.submit(t, SubmitParams{Function: []byte("fn"), Payload: []byte("x")})
	tb.grab(t)
	tb.advance(time.Second)
	require.Equal(t, []Event{{Kind: EventFail, Seq: seq}}, tb.cout.take())
	require.Zero(t, tb.b.JobCount())
}
