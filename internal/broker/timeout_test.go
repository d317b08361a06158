package broker

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// A job held past its worker's CAN_DO_TIMEOUT fails, as the protocol
// says: the waiting client gets WORK_FAIL at once, the job is not run
// again, and the worker's late result is refused.
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
	require.ErrorIs(t, tb.b.Finish(tb.worker, seq, Complete, []byte("late")), ErrJobNotFound)
	require.ErrorIs(t, tb.b.Finish(tb.worker, seq, Fail, nil), ErrJobNotFound, "the worker did not end it")
	tb.noJob(t)
	require.Empty(t, tb.cout.take())
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
