package broker

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestPriorityAcrossFunctions(t *testing.T) {
	t.Parallel()
	tb := setup(t, Config{})
	c, _ := tb.session()
	// Queued in an order that differs from the expected run order.
	tb.submit(t, c, bg("a", "", "a-low", Low))
	tb.submit(t, c, bg("b", "", "b-normal", Normal))
	tb.submit(t, c, bg("a", "", "a-normal", Normal))
	tb.submit(t, c, bg("b", "", "b-high", High))
	tb.submit(t, c, bg("a", "", "a-high", High))
	tb.submit(t, c, bg("b", "", "b-low", Low))

	w, _ := tb.worker("a")
	tb.b.CanDo(w, []byte("b"), 0)
	var got []string
	for {
		a, ok := tb.b.Grab(w)
		if !ok {
			break
		}
		got = append(got, string(a.Payload))
		require.NoError(t, tb.b.Finish(w, a.Seq, Complete, nil))
	}
	// Highs first (round-robin between functions), then normals, then lows.
	require.Equal(t, []string{"a-high", "b-high", "a-normal", "b-normal", "a-low", "b-low"}, got)
}

func TestFIFOWithinPriority(t *testing.T) {
	t.Parallel()
	tb := setup(t, Config{})
	c, _ := tb.session()
	for i := range 100 {
		tb.submit(t, c, bg("f", "", strconv.Itoa(i), Normal))
	}
	w, _ := tb.worker("f")
	for i := range 100 {
		a := tb.grab(t, w)
		require.Equal(t, strconv.Itoa(i), string(a.Payload))
		require.NoError(t, tb.b.Finish(w, a.Seq, Complete, nil))
	}
	require.Equal(t, 0, tb.b.JobCount())
}

func TestCoalescingForegroundWaitersAllGetResult(t *testing.T) {
	t.Parallel()
	tb := setup(t, Config{})
	c1, r1 := tb.session()
	c2, r2 := tb.session()
	first := tb.submit(t, c1, fg("f", "u1", "x"))
	second := tb.submit(t, c2, fg("f", "u1", "different payload"))
	require.True(t, first.created)
	require.False(t, second.created)
	require.Equal(t, first.seq, second.seq)

	w, _ := tb.worker("f")
	a := tb.grab(t, w)
	require.Equal(t, "x", string(a.Payload))
	require.Equal(t, "u1", a.Unique)
	require.NoError(t, tb.b.WorkData(w, a.Seq, []byte("d"), false))
	require.NoError(t, tb.b.Finish(w, a.Seq, Complete, []byte("done")))
	_, ok := tb.b.Grab(w)
	require.False(t, ok, "the coalesced job must run once")
	for _, r := range []*recorder{r1, r2} {
		require.Equal(t, []Event{
			{Kind: EventData, Seq: a.Seq, Data: []byte("d")},
			{Kind: EventComplete, Seq: a.Seq, Data: []byte("done")},
		}, r.take())
	}
	st := tb.b.GetStatusUnique([]byte("u1"))
	require.False(t, st.Known, "a finished job is forgotten")
}

func TestHashedUniqueCoalescesOnPayload(t *testing.T) {
	t.Parallel()
	tb := setup(t, Config{})
	c, _ := tb.session()
	a := tb.submit(t, c, bg("f", "-", "same", Normal))
	b := tb.submit(t, c, bg("f", "-", "same", Normal))
	d := tb.submit(t, c, bg("f", "-", "other", Normal))
	require.Equal(t, a.seq, b.seq)
	require.NotEqual(t, a.seq, d.seq)
	w, _ := tb.worker("f")
	as := tb.grab(t, w)
	require.Equal(t, "-", as.Unique)
}

func TestSameUniqueDifferentFunctionsDoNotCoalesce(t *testing.T) {
	t.Parallel()
	tb := setup(t, Config{})
	c, _ := tb.session()
	a := tb.submit(t, c, bg("f", "u", "1", Normal))
	b := tb.submit(t, c, bg("g", "u", "2", Normal))
	require.NotEqual(t, a.seq, b.seq)
}

func TestWorkerDisconnectRequeuesToFront(t *testing.T) {
	t.Parallel()
	tb := setup(t, Config{})
	c, _ := tb.session()
	first := tb.submit(t, c, bg("f", "", "first", Normal))
	tb.submit(t, c, bg("f", "", "second", Normal))
	w1, _ := tb.worker("f")
	a := tb.grab(t, w1)
	require.Equal(t, first.seq, a.Seq)

	w2, w2out := tb.worker("f")
	tb.b.PreSleep(w2)
	require.Equal(t, []Event{{Kind: EventNoop}}, w2out.take(), "work is queued, so PRE_SLEEP is answered at once")
	tb.b.CloseSession(w1)
	a2 := tb.grab(t, w2)
	require.Equal(t, first.seq, a2.Seq, "a job taken back goes to the front")
	require.Equal(t, uint32(1), tb.b.Jobs(0)[0].Retries)
}

func TestJobRetriesLimitFailsJob(t *testing.T) {
	t.Parallel()
	tb := setup(t, Config{JobRetries: 2})
	c, cout := tb.session()
	j := tb.submit(t, c, fg("f", "", "x"))
	for i := range 2 {
		w, _ := tb.worker("f")
		_, ok := tb.b.Grab(w)
		require.True(t, ok, "attempt %d", i)
		tb.b.CloseSession(w)
	}
	require.Equal(t, []Event{{Kind: EventFail, Seq: j.seq}}, cout.take())
	require.Equal(t, 0, tb.b.JobCount())
}

func TestClientDisconnectDropsQueuedForegroundJob(t *testing.T) {
	t.Parallel()
	tb := setup(t, Config{})
	c1, _ := tb.session()
	c2, c2out := tb.session()
	tb.submit(t, c1, fg("f", "", "alone"))
	shared := tb.submit(t, c1, fg("f", "u", "shared"))
	tb.submit(t, c2, fg("f", "u", "shared"))
	tb.b.CloseSession(c1)
	require.Equal(t, 1, tb.b.JobCount(), "only the job another client waits on stays")

	w, _ := tb.worker("f")
	a := tb.grab(t, w)
	require.Equal(t, shared.seq, a.Seq)
	require.NoError(t, tb.b.Finish(w, a.Seq, Complete, []byte("r")))
	require.Equal(t, []Event{{Kind: EventComplete, Seq: a.Seq, Data: []byte("r")}}, c2out.take())
}

func TestClientDisconnectWhileRunningDiscardsResult(t *testing.T) {
	t.Parallel()
	tb := setup(t, Config{})
	c, _ := tb.session()
	j := tb.submit(t, c, fg("f", "", "x"))
	w, _ := tb.worker("f")
	tb.grab(t, w)
	tb.b.CloseSession(c)
	require.Equal(t, 1, tb.b.JobCount(), "a running job finishes")
	require.NoError(t, tb.b.Finish(w, j.seq, Complete, []byte("r")))
	require.Equal(t, 0, tb.b.JobCount())
}

func TestWakeOnlyAsManySleepersAsJobs(t *testing.T) {
	t.Parallel()
	tb := setup(t, Config{})
	outs := tb.sleepers("f", 5)
	c, _ := tb.session()
	tb.submit(t, c, bg("f", "", "1", Normal))
	tb.submit(t, c, bg("f", "", "2", Normal))
	require.Equal(t, 2, woken(t, outs))
}

// sleepers returns the recorders of n workers of fn that sent PRE_SLEEP.
func (tb *testBundle) sleepers(fn string, n int) []*recorder {
	var outs []*recorder
	for range n {
		w, out := tb.worker(fn)
		tb.b.PreSleep(w)
		outs = append(outs, out)
	}
	return outs
}

// woken counts the workers among outs sent NOOP since the last call, each
// at most once.
func woken(t *testing.T, outs []*recorder) int {
	t.Helper()
	n := 0
	for _, o := range outs {
		ev := o.take()
		require.LessOrEqual(t, len(ev), 1, "a worker is woken once")
		n += len(ev)
	}
	return n
}

func TestEpochJobWaitsForItsTime(t *testing.T) {
	t.Parallel()
	tb := setup(t, Config{})
	c, _ := tb.session()
	p := bg("f", "", "later", Normal)
	p.RunAt = tb.clock.Now().Add(time.Minute).Unix()
	j := tb.submit(t, c, p)
	w, wout := tb.worker("f")
	tb.b.PreSleep(w)
	_, ok := tb.b.Grab(w)
	require.False(t, ok)
	tb.b.PreSleep(w)
	require.Empty(t, wout.take())

	next := tb.b.RunTimers()
	require.Equal(t, time.Unix(p.RunAt, 0), next)
	tb.clock.Add(time.Minute)
	tb.b.RunTimers()
	require.Equal(t, []Event{{Kind: EventNoop}}, wout.take(), "the sleeping worker is woken when the job is due")
	a := tb.grab(t, w)
	require.Equal(t, j.seq, a.Seq)
}

func TestStatusAndProgress(t *testing.T) {
	t.Parallel()
	tb := setup(t, Config{})
	c, _ := tb.session()
	j := tb.submit(t, c, bg("f", "u", "x", Normal))
	h := []byte(tb.b.Handle(j.seq))
	require.Equal(t, JobStatus{Seq: j.seq, Known: true}, tb.b.GetStatus(h))
	w, _ := tb.worker("f")
	tb.grab(t, w)
	require.NoError(t, tb.b.WorkStatus(w, j.seq, 3, 10))
	require.Equal(t, JobStatus{Seq: j.seq, Known: true, Running: true, Numerator: 3, Denominator: 10}, tb.b.GetStatus(h))
	require.Equal(t, JobStatus{Seq: j.seq, Known: true, Running: true, Numerator: 3, Denominator: 10}, tb.b.GetStatusUnique([]byte("u")))
	require.Equal(t, []FunctionStatus{{Name: "f", Total: 1, Running: 1, Workers: 1}}, tb.b.Status(context.Background()))
	require.NoError(t, tb.b.Finish(w, j.seq, Complete, nil))
	require.Equal(t, JobStatus{}, tb.b.GetStatus(h))
}

func TestExceptionsOnlyForClientsThatAsked(t *testing.T) {
	t.Parallel()
	tb := setup(t, Config{})
	plain, plainOut := tb.session()
	wants, wantsOut := tb.session()
	tb.b.SetExceptions(wants)
	j := tb.submit(t, plain, fg("f", "u", "x"))
	tb.submit(t, wants, fg("f", "u", "x"))
	w, _ := tb.worker("f")
	tb.grab(t, w)
	require.NoError(t, tb.b.Finish(w, j.seq, Exception, []byte("boom")))
	require.Equal(t, []Event{{Kind: EventFail, Seq: j.seq}}, plainOut.take())
	require.Equal(t, []Event{{Kind: EventException, Seq: j.seq, Data: []byte("boom")}}, wantsOut.take())
}

func TestMaxQueue(t *testing.T) {
	t.Parallel()
	tb := setup(t, Config{})
	c, _ := tb.session()
	tb.b.SetMaxQueue("f", [3]int{2, 2, 2})
	require.NoError(t, tb.submit(t, c, bg("f", "", "1", Normal)).err)
	require.NoError(t, tb.submit(t, c, bg("f", "", "2", Normal)).err)
	require.ErrorIs(t, tb.submit(t, c, bg("f", "", "3", Normal)).err, ErrQueueFull)
	require.NoError(t, tb.submit(t, c, bg("g", "", "other function", Normal)).err)
}

func TestCancelJob(t *testing.T) {
	t.Parallel()
	tb := setup(t, Config{})
	c, cout := tb.session()
	j := tb.submit(t, c, fg("f", "", "x"))
	require.NoError(t, tb.b.CancelJob(context.Background(), []byte(tb.b.Handle(j.seq))))
	require.Equal(t, []Event{{Kind: EventFail, Seq: j.seq}}, cout.take())
	require.Equal(t, 0, tb.b.JobCount())
	// Its record is kept: the job has ended, which is no unknown job.
	err := tb.b.CancelJob(context.Background(), []byte(tb.b.Handle(j.seq)))
	require.ErrorIs(t, err, ErrJobEnded)
	require.NotErrorIs(t, err, ErrJobNotFound)
	require.ErrorContains(t, err, "(cancelled)")
	require.ErrorIs(t, tb.b.CancelJob(context.Background(), []byte(tb.b.Handle(j.seq+1000))), ErrJobNotFound)
}

func TestDropFunction(t *testing.T) {
	t.Parallel()
	tb := setup(t, Config{})
	c, _ := tb.session()
	tb.submit(t, c, bg("f", "", "x", Normal))
	w, _ := tb.worker("f")
	require.ErrorIs(t, tb.b.DropFunction(context.Background(), "f"), ErrFunctionBusy)
	tb.b.CloseSession(w)
	require.NoError(t, tb.b.DropFunction(context.Background(), "f"))
	require.Empty(t, tb.b.Status(context.Background()))
	require.Equal(t, 0, tb.b.JobCount())
	require.ErrorIs(t, tb.b.DropFunction(context.Background(), "f"), ErrFunctionNotFound)
}

func TestDrainStopsHandingOutJobs(t *testing.T) {
	t.Parallel()
	tb := setup(t, Config{})
	c, _ := tb.session()
	tb.submit(t, c, bg("f", "", "1", Normal))
	tb.submit(t, c, bg("f", "", "2", Normal))
	w, _ := tb.worker("f")
	a := tb.grab(t, w)
	idle := tb.b.Drain()
	_, ok := tb.b.Grab(w)
	require.False(t, ok)
	select {
	case <-idle:
		t.Fatal("idle while a job runs")
	default:
	}
	require.NoError(t, tb.b.Finish(w, a.Seq, Complete, nil))
	<-idle
}

func TestParseHandle(t *testing.T) {
	t.Parallel()
	b := New(Config{HandlePrefix: "H:host:"})
	seq, ok := b.ParseHandle([]byte("H:host:42"))
	require.True(t, ok)
	require.Equal(t, uint64(42), seq)
	for _, bad := range []string{"", "H:host:", "H:other:42", "H:host:4x", "H:host:99999999999999999999999"} {
		_, ok := b.ParseHandle([]byte(bad))
		require.False(t, ok, bad)
	}
}

// TestParseHandleOfEarlierPrefix: a handle with one of
// Config.HandlePrefixAliases, the prefix the server's handles had before
// (a default prefix from a host name since kept shorter), names the same
// job as the handle with the prefix; handles are still given out with the
// prefix.
func TestParseHandleOfEarlierPrefix(t *testing.T) {
	t.Parallel()
	long := "H:ip-172-31-45-123.ap-southeast-2.compute.internal:"
	b := New(Config{HandlePrefix: "H:ip-172-31-45-123:", HandlePrefixAliases: []string{long}})
	for _, h := range []string{"H:ip-172-31-45-123:42", long + "42"} {
		seq, ok := b.ParseHandle([]byte(h))
		require.True(t, ok, h)
		require.Equal(t, uint64(42), seq, h)
	}
	require.Equal(t, "H:ip-172-31-45-123:42", b.Handle(42))
	for _, bad := range []string{long, "H:ip-172-31-45-123.ap-southeast-2:42", long + "4x"} {
		_, ok := b.ParseHandle([]byte(bad))
		require.False(t, ok, bad)
	}
}

// TestRepeatedFinalPacketAccepted: a worker that ends a job with
// WORK_EXCEPTION and then sends WORK_FAIL for it (Perl's Gearman::Worker
// does) has the second packet accepted without effect; a repeat of the
// same final packet too. A contradicting result, a final packet from a
// session that never held the job, and one for a job ended longer ago than
// the session remembers are refused.
func TestRepeatedFinalPacketAccepted(t *testing.T) {
	t.Parallel()
	tb := setup(t, Config{})
	c, cout := tb.session()
	w, _ := tb.session()
	other, _ := tb.session()
	tb.b.CanDo(w, []byte("f"), 0)

	j := tb.submit(t, c, fg("f", "", "x"))
	a := tb.grab(t, w)
	require.NoError(t, tb.b.Finish(w, a.Seq, Exception, []byte("boom")))
	require.NoError(t, tb.b.Finish(w, a.Seq, Fail, nil), "WORK_FAIL after WORK_EXCEPTION")
	require.NoError(t, tb.b.Finish(w, a.Seq, Exception, []byte("boom")), "the same final packet again")
	require.ErrorIs(t, tb.b.Finish(w, a.Seq, Complete, []byte("late")), ErrJobNotFound, "a result after a failure contradicts it")
	require.ErrorIs(t, tb.b.Finish(other, a.Seq, Fail, nil), ErrJobNotFound, "never held by this session")
	require.ErrorIs(t, tb.b.WorkData(w, a.Seq, []byte("d"), false), ErrJobNotFound, "only final packets are forgiven")
	require.Equal(t, []Event{{Kind: EventFail, Seq: j.seq}}, cout.take(), "the client hears of the failure once")

	// A completed job: a repeated WORK_COMPLETE or a WORK_FAIL is accepted.
	j2 := tb.submit(t, c, fg("f", "", "y"))
	a = tb.grab(t, w)
	require.NoError(t, tb.b.Finish(w, a.Seq, Complete, []byte("ok")))
	require.NoError(t, tb.b.Finish(w, a.Seq, Complete, []byte("ok")))
	require.NoError(t, tb.b.Finish(w, a.Seq, Fail, nil))
	require.Equal(t, []Event{{Kind: EventComplete, Seq: j2.seq, Data: []byte("ok")}}, cout.take())

	// The memory is bounded: after enough later jobs the first is forgotten.
	first := j.seq
	for range 8 {
		tb.submit(t, c, bg("f", "", "z", Normal))
		a := tb.grab(t, w)
		require.NoError(t, tb.b.Finish(w, a.Seq, Complete, nil))
	}
	require.ErrorIs(t, tb.b.Finish(w, first, Fail, nil), ErrJobNotFound)
}

// TestFinalPacketAfterCancelRefused: a running job cancelled by the admin
// was not ended by its worker; the worker's final packets for it are not
// forgiven as repeats.
func TestFinalPacketAfterCancelRefused(t *testing.T) {
	t.Parallel()
	tb := setup(t, Config{})
	c, w := tb.clientAndWorker("f")
	tb.submit(t, c, bg("f", "", "x", Normal))
	a := tb.grab(t, w)
	require.NoError(t, tb.b.CancelJob(context.Background(), []byte(tb.b.Handle(a.Seq))))
	_ = tb.b.Finish(w, a.Seq, Exception, []byte("boom")) // refused or dropped, as cancel rules say
	require.ErrorIs(t, tb.b.Finish(w, a.Seq, Fail, nil), ErrJobNotFound)
}

// TestSubmitWhenRunsOnceAtNextMatch: a job submitted with cron fields
// (SUBMIT_JOB_SCHED) waits for the first matching time after the submit,
// runs once there, and is not submitted again at the next match. A
// schedule that never matches is refused.
func TestSubmitWhenRunsOnceAtNextMatch(t *testing.T) {
	t.Parallel()
	tb := setup(t, Config{}) // 2023-11-14 22:13:20 UTC
	c, w := tb.clientAndWorker("f")
	when, err := ParseCron("30 23 * * *", nil)
	require.NoError(t, err)
	p := bg("f", "", "nightly", Normal)
	p.When = &when
	j := tb.submit(t, c, p)
	require.NoError(t, j.err)
	due := time.Date(2023, 11, 14, 23, 30, 0, 0, time.UTC)
	snap, ok := tb.b.Job(context.Background(), j.seq)
	require.True(t, ok)
	require.Equal(t, due.Unix(), snap.RunAt, "the job's record shows when it runs")
	_, ok = tb.b.Grab(w)
	require.False(t, ok, "not before its time")

	tb.clock.Add(due.Sub(tb.clock.Now()) - time.Second)
	tb.b.RunTimers()
	_, ok = tb.b.Grab(w)
	require.False(t, ok)
	tb.clock.Add(time.Second)
	tb.b.RunTimers()
	a := tb.grab(t, w)
	require.Equal(t, j.seq, a.Seq)
	require.NoError(t, tb.b.Finish(w, a.Seq, Complete, nil))

	tb.clock.Add(24 * time.Hour)
	tb.b.RunTimers()
	_, ok = tb.b.Grab(w)
	require.False(t, ok, "once, not every day")
	require.Zero(t, tb.b.JobCount())

	never, err := ParseCron("0 0 31 2 *", nil)
	require.NoError(t, err)
	p = bg("f", "", "never", Normal)
	p.When = &never
	require.ErrorIs(t, tb.submit(t, c, p).err, ErrNoMatchingTime)
	require.Zero(t, tb.b.JobCount())

	// SUBMIT_JOB_EPOCH takes any 64-bit time; past the year 9999 no
	// record could say when the job runs.
	p = bg("f", "", "far", Normal)
	p.RunAt = MaxRunAt + 1
	require.ErrorIs(t, tb.submit(t, c, p).err, ErrRunAtOutOfRange)
	require.Zero(t, tb.b.JobCount())
	p.RunAt = MaxRunAt
	require.NoError(t, tb.submit(t, c, p).err, "the last second of 9999 is taken")
}

func TestForegroundJobWakesTwoSleepers(t *testing.T) {
	t.Parallel()
	tb := setup(t, Config{})
	outs := tb.sleepers("f", 4)
	c, _ := tb.session()
	tb.submit(t, c, fg("f", "", "1"))
	require.Equal(t, 2, woken(t, outs), "a client waits on a foreground job: two sleepers are woken for it")
	tb.submit(t, c, bg("f", "", "2", Normal))
	require.Equal(t, 1, woken(t, outs), "a background job wakes one")
	tb.submit(t, c, fg("f", "", "3"))
	require.Equal(t, 1, woken(t, outs), "only one sleeper was left")
	tb.submit(t, c, fg("f", "", "4"))
	require.Equal(t, 0, woken(t, outs), "no sleeper was left")
}
