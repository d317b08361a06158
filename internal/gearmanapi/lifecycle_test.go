package gearmanapi

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/gearman"
	"github.com/gearwork/gearwork/internal/broker"
	"github.com/gearwork/gearwork/internal/clocktest"
	"github.com/gearwork/gearwork/internal/testserver"
)

type lcBundle struct {
	*testBundle
	clock *clocktest.Clock
}

// setupLifecycle starts a server on a broker with a test clock, and dials
// a connection to use for admin lines.
func setupLifecycle(t *testing.T) (tb *lcBundle, adm *client) {
	t.Helper()
	clock := clocktest.New(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	sb := setupServer(t, broker.Config{Clock: clock, RandFunc: func() float64 { return 0 }}, Config{}, nil)
	tb = &lcBundle{testBundle: sb.testBundle, clock: clock}
	return tb, tb.dial(t)
}

// advance moves the clock and fires due timers.
func (tb *lcBundle) advance(d time.Duration) {
	tb.clock.Add(d)
	tb.b.RunTimers()
}

// admin sends one admin line and returns the answer: one line, or up to
// and including the "." line for list answers.
func (c *client) admin(line string, list bool) string {
	c.T.Helper()
	_, err := c.NC.Write([]byte(line + "\n"))
	require.NoError(c.T, err)
	if !list {
		return c.Line()
	}
	var sb strings.Builder
	for {
		l := c.Line()
		sb.WriteString(l)
		if l == ".\n" || strings.HasPrefix(l, "ERR ") {
			return sb.String()
		}
	}
}

// adminOK sends each admin line and checks that it is answered "OK".
func (c *client) adminOK(lines ...string) {
	c.T.Helper()
	for _, line := range lines {
		require.Equal(c.T, "OK\r\n", c.admin(line, false), line)
	}
}

// adminEmpty sends each admin line and checks that it is answered with
// an empty list.
func (c *client) adminEmpty(lines ...string) {
	c.T.Helper()
	for _, line := range lines {
		require.Equal(c.T, ".\n", c.admin(line, true), line)
	}
}

// A background job submitted by libgearman's client fails twice under a
// retry policy, becomes a dead letter, is retried by an admin command,
// completes, and its retained result answers a foreground re-submit of the
// same unique without any worker.
func TestLifecycleWithGearmanClient(t *testing.T) {
	t.Parallel()
	tb, adm := setupLifecycle(t)
	// A policy is set for a known function: create it before its workers connect.
	adm.adminOK("create function lcfn", "policy lcfn max_attempts=2 backoff=1s backoff_jitter=-1 result_retention=1h")
	require.Equal(t, "lcfn\texplicit\tactive\tmax_attempts=2 backoff=1s backoff_max=0s backoff_multiplier=0 "+
		"backoff_jitter=-1 timeout=0s ordering=off ordering_separator=: concurrency=0 rate=0 burst=0 "+
		"max_queue=0 overflow=reject result_retention=1h0m0s age_after=0s max_dead_letters=0 history=24h0m0s history_max=10000\n.\n",
		adm.admin("show policy lcfn", true))

	out, err := testserver.GearmanCLI(t, tb.addr, "-b", "-f", "lcfn", "-u", "order-1", "hello")
	require.NoError(t, err, out)

	w := tb.dial(t)
	w.Send(gearman.CanDo, "lcfn")
	w.Send(gearman.GrabJobUniq)
	cmd, args := w.Read()
	require.Equal(t, gearman.JobAssignUniq, cmd)
	h := args[0]
	require.Equal(t, []string{h, "lcfn", "order-1", "hello"}, args)
	w.Send(gearman.WorkFail, h)

	// Waiting out its backoff: not handed out, still a known job.
	w.Send(gearman.GrabJobUniq)
	w.Expect(gearman.NoJob)
	require.Equal(t, h+"\t0\t0\t0\n.\n", adm.admin("show jobs", true))
	tb.advance(time.Second)
	w.Send(gearman.GrabJobUniq)
	w.Expect(gearman.JobAssignUniq, h, "lcfn", "order-1", "hello")
	w.Send(gearman.WorkException, h, "disk full")
	w.Send(gearman.GrabJobUniq)
	w.Expect(gearman.NoJob)

	died := tb.clock.Now().UTC().Format(time.RFC3339Nano)
	require.Equal(t, h+"\tlcfn\torder-1\t2\t"+died+"\t\"disk full\"\n.\n", adm.admin("deadletters", true))
	show := adm.admin("deadletter show "+h, true)
	require.Contains(t, show, "handle\t"+h+"\nfunction\tlcfn\nunique\t\"order-1\"\npriority\tnormal\nattempts\t2\n")
	require.Contains(t, show, "error\t\"disk full\"\npayload\t\"hello\"\n")
	require.Contains(t, show, "\tfailed\t\"\"\n")
	require.Contains(t, show, "\texception\t\"disk full\"\n.\n")

	require.Equal(t, "OK 1\n", adm.admin("deadletter retry "+h, false))
	require.Equal(t, "ERR UNKNOWN_JOB\r\n", adm.admin("deadletter retry "+h, false))
	w.Send(gearman.GrabJobUniq)
	w.Expect(gearman.JobAssignUniq, h, "lcfn", "order-1", "hello")
	w.Send(gearman.WorkComplete, h, "done!")
	w.Send(gearman.GrabJob)
	w.Expect(gearman.NoJob)

	require.Equal(t, "OK 5\n", adm.admin("result "+h, false))
	require.Equal(t, "done!\n", adm.Line())
	require.Equal(t, "OK 5\n", adm.admin("result unique:order-1", false))
	require.Equal(t, "done!\n", adm.Line())
	require.Equal(t, "ERR UNKNOWN_JOB\r\n", adm.admin("result unique:nope", false))

	// libgearman's foreground client gets the retained result; nothing runs.
	out, err = testserver.GearmanCLI(t, tb.addr, "-f", "lcfn", "-u", "order-1", "hello")
	require.NoError(t, err, out)
	require.Equal(t, "done!", strings.TrimSpace(out))
	adm.adminEmpty("show jobs", "deadletters")
}

// Pausing, resuming or setting the policy of a function the server does
// not know answers UNKNOWN_FUNCTION and creates nothing that "status",
// "show policy" or the metrics would list; once the function exists
// ("create function", a worker, a job) the same commands work.
func TestLifecycleUnknownFunction(t *testing.T) {
	t.Parallel()
	tb, adm := setupLifecycle(t)
	for _, cmd := range []string{"pause nosuch", "pause nosuch until 30m", "resume nosuch",
		"policy nosuch max_attempts=2", "policy nosuch reset"} {
		require.Equal(t, "ERR UNKNOWN_FUNCTION unknown+function+nosuch\r\n", adm.admin(cmd, false), cmd)
	}
	require.Equal(t, ".\n", adm.admin("status", true), "no phantom function")
	require.NotContains(t, adm.admin("show policy", true), "nosuch")
	require.False(t, tb.b.KnownFunction("nosuch"))

	adm.adminOK("create function nosuch", "pause nosuch", "resume nosuch", "policy nosuch max_attempts=2")
}

// A worker that stays silent past the policy timeout loses the job; its
// late WORK_COMPLETE is accepted without an answer. Bounded queues answer
// "Job queue is full"; pause holds jobs back and resume wakes the worker.
func TestLifecycleTimeoutQueueFullPause(t *testing.T) {
	t.Parallel()
	tb, adm := setupLifecycle(t)
	adm.adminOK("create function t", "policy t timeout=5s max_attempts=3 backoff=1s backoff_jitter=-1 max_queue=1")
	c := tb.dial(t)
	c.Send(gearman.SubmitJobBg, "t", "", "one")
	cmd, args := c.Read()
	require.Equal(t, gearman.JobCreated, cmd)
	h := args[0]
	c.Send(gearman.SubmitJobBg, "t", "", "two")
	c.Expect(gearman.Error, "QUEUE_ERROR", "Job queue is full")
	require.Equal(t, "t\t1\t1\t1\n.\n", adm.admin("show maxqueue t", true))

	w := tb.dial(t)
	w.Send(gearman.CanDo, "t")
	w.Send(gearman.GrabJob)
	w.Expect(gearman.JobAssign, h, "t", "one")
	tb.advance(5 * time.Second)
	w.Send(gearman.WorkComplete, h, "late")
	w.Send(gearman.EchoReq, "sync")
	w.Expect(gearman.EchoRes, "sync") // no ERROR before it

	adm.adminOK("pause t")
	require.Contains(t, adm.admin("show policy t", true), "t\texplicit\tpaused\t")
	tb.advance(time.Second) // the backoff is over, but t is paused
	w.Send(gearman.GrabJob)
	w.Expect(gearman.NoJob)
	w.Send(gearman.PreSleep)
	adm.adminOK("resume t")
	w.Expect(gearman.Noop)
	w.Send(gearman.GrabJob)
	w.Expect(gearman.JobAssign, h, "t", "one")
	w.Send(gearman.WorkComplete, h, "on time")
	w.Send(gearman.GrabJob)
	w.Expect(gearman.NoJob)

	adm.adminOK("pause t until 30m")
	until := tb.clock.Now().Add(30 * time.Minute).UTC().Format(time.RFC3339Nano)
	require.Contains(t, adm.admin("show policy t", true), "t\texplicit\tpaused-until="+until+"\t")
	adm.adminOK("pause t until 2030-01-01T00:00:00Z")
	require.Contains(t, adm.admin("show policy t", true), "paused-until=2030-01-01T00:00:00Z\t")
	require.Equal(t, "ERR INVALID_ARGUMENTS pause+until+needs+an+RFC+3339+time+or+a+positive+duration\r\n",
		adm.admin("pause t until soon", false))
	require.Equal(t, "ERR INVALID_ARGUMENTS invalid+policy:+unknown+key+\"speed\"+(known:+max_attempts,+"+
		"backoff,+backoff_max,+backoff_multiplier,+backoff_jitter,+timeout,+ordering,+ordering_separator,+"+
		"concurrency,+rate,+burst,+max_queue,+overflow,+result_retention,+age_after,+max_dead_letters,+history,+history_max)\r\n",
		adm.admin("policy t speed=9", false))
	// backoff_max caps every wait, the first one too, as the config file
	// says: a backoff longer than the backoff_max given is refused and the
	// policy stays as it was.
	before := adm.admin("show policy t", true)
	require.Equal(t, "ERR INVALID_ARGUMENTS invalid+policy:+backoff+1h0m0s+is+longer+than+backoff_max+10m0s,+"+
		"which+caps+every+wait:+raise+backoff_max+or+lower+backoff\r\n", adm.admin("policy t max_attempts=3 backoff=1h backoff_max=10m", false))
	require.Equal(t, "ERR INVALID_ARGUMENTS invalid+policy:+backoff+1m0s+is+longer+than+backoff_max+30s,+"+
		"which+caps+every+wait:+raise+backoff_max+or+lower+backoff\r\n", adm.admin("policy t backoff=1m backoff_max=30s", false))
	require.Equal(t, before, adm.admin("show policy t", true))
	adm.adminOK("policy t backoff=1m backoff_max=1h")
	adm.adminOK("policy t reset")
	require.Contains(t, adm.admin("show policy t", true), "t\tdefault\tpaused-until=")
	require.Equal(t, "OK 0\n", adm.admin("deadletter purge t", false))
	adm.adminEmpty("show schedules", "show ordering")
	// gearmand's answers stay as they were.
	require.Equal(t, "ERR UNKNOWN_SHOW_ARGUMENTS\r\n", adm.admin("show nothing", false))
	require.Equal(t, "ERR UNKNOWN_COMMAND Unknown+server+commandbogus\r\n", adm.admin("bogus", false))
}

// "jobs" lists job records and "job" shows one with its attempts, for jobs
// submitted and run over the Gearman port.
func TestAdminJobRecords(t *testing.T) {
	t.Parallel()
	tb, adm := setupLifecycle(t)
	c := tb.dial(t)
	w := tb.dial(t)
	w.Send(gearman.SetClientID, "w9")
	w.Send(gearman.CanDo, "rec")
	submit := func(payload string) string {
		c.Send(gearman.SubmitJobBg, "rec", "", payload)
		cmd, args := c.Read()
		require.Equal(t, gearman.JobCreated, cmd)
		return args[0]
	}
	failed := submit("a")
	w.Send(gearman.GrabJob)
	cmd, args := w.Read()
	require.Equal(t, gearman.JobAssign, cmd)
	require.Equal(t, failed, args[0])
	w.Send(gearman.WorkException, failed, "disk full")
	queued := submit("b")
	w.Send(gearman.EchoReq, "sync")
	cmd, _ = w.Read()
	require.Equal(t, gearman.EchoRes, cmd)

	now := tb.clock.Now().UTC().Format(time.RFC3339Nano)
	require.Equal(t, queued+"\trec\tqueued\t0\t"+now+"\t-\t\"\"\tL"+strings.TrimPrefix(queued, "H:test:")+"\n"+
		failed+"\trec\tdead\t1\t"+now+"\t"+now+"\t\"disk full\"\tF1\n.\n", adm.admin("jobs function=rec", true))
	require.Equal(t, ".\n", adm.admin("jobs state=complete", true))
	got := adm.admin("jobs state=dead limit=1", true)
	require.True(t, strings.HasPrefix(got, failed+"\trec\tdead\t"), got)

	show := adm.admin("job "+failed, true)
	for _, want := range []string{"state\tdead\n", "final\ttrue\n", "background\ttrue\n", "error\t\"disk full\"\n",
		"payload\t\"a\"\n", "attempt\t1\t" + now + "\t" + now + "\texception\tw9\t\"disk full\"\n"} {
		require.Contains(t, show, want)
	}
	require.Contains(t, adm.admin("job H:test:1", true), "ERR UNKNOWN_JOB")
	// An error line's text has no spaces: the command is named with '+'.
	require.Equal(t, "ERR INVALID_ARGUMENTS An+incomplete+set+of+arguments+was+sent+to+this+command+retry+job\r\n",
		adm.admin("retry job", false))

	// Cancelled on the admin port: the record says by which connection.
	adm.adminOK("cancel job " + queued)
	show = adm.admin("job "+queued, true)
	require.Contains(t, show, "state\tcancelled\n")
	require.Contains(t, show, "cancelled_by\t\"admin 127.0.0.1:")
	require.Contains(t, adm.admin("jobs state=sleeping", true), "ERR INVALID_ARGUMENTS")
}

// "show maxqueue" reads the limits "show policy" reads: a function with a
// max_queue policy of its own is listed before any job or worker of it
// made the server use it (as after a restart).
func TestShowMaxQueueReadsPolicies(t *testing.T) {
	t.Parallel()
	pol := map[string]broker.Policy{"capped": {MaxQueue: [3]int{3, 2, 1}}}
	sb := setupServer(t, broker.Config{Policies: pol}, Config{}, nil)
	adm := sb.dial(t)
	adm.adminOK("create function used")
	require.Equal(t, "capped\t3\t2\t1\nused\t0\t0\t0\n.\n", adm.admin("show maxqueue", true))
	require.Equal(t, "capped\t3\t2\t1\n.\n", adm.admin("show maxqueue capped", true))
	require.Contains(t, adm.admin("show policy capped", true), "max_queue=3,2,1")
}

// A pause that would end at a time already passed is refused like a
// negative duration, and the function stays paused as it was.
func TestPauseUntilPastRefused(t *testing.T) {
	t.Parallel()
	_, adm := setupLifecycle(t)
	adm.adminOK("create function p", "pause p until 2026-03-01T13:00:00Z")
	for _, end := range []string{"2020-01-01T00:00:00Z", "2026-03-01T12:00:00Z"} {
		require.Equal(t, "ERR INVALID_ARGUMENTS pause+until+needs+a+time+in+the+future,+not+"+end+"\r\n",
			adm.admin("pause p until "+end, false))
	}
	fields := strings.Split(adm.admin("show policy p", true), "\t")
	require.Equal(t, []string{"p", "default", "paused-until=2026-03-01T13:00:00Z"}, fields[:3])
}

// maxqueue takes gearmand's forms, FUNCTION [N | HIGH NORMAL LOW], and
// refuses anything else without changing the limit.
func TestMaxQueueRefusesBadCounts(t *testing.T) {
	t.Parallel()
	_, adm := setupLifecycle(t)
	adm.adminOK("maxqueue q 5")
	for line, want := range map[string]string{
		"maxqueue q abc":                  "maxqueue limit abc is not a whole number",
		"maxqueue q 3 abc":                "maxqueue takes FUNCTION [N | HIGH NORMAL LOW]",
		"maxqueue q 1 2 3 4":              "maxqueue takes FUNCTION [N | HIGH NORMAL LOW]",
		"maxqueue q 1 2":                  "maxqueue takes FUNCTION [N | HIGH NORMAL LOW]",
		"maxqueue q 1 2 x3":               "maxqueue limit x3 is not a whole number",
		"maxqueue q 99999999999999999999": "maxqueue limit 99999999999999999999 is not a whole number",
	} {
		require.Equal(t, "ERR INVALID_ARGUMENTS "+strings.ReplaceAll(want, " ", "+")+"\r\n", adm.admin(line, false), line)
	}
	require.Equal(t, "q\t5\t5\t5\n.\n", adm.admin("show maxqueue q", true))
	adm.adminOK("maxqueue q 0", "maxqueue q 10 5 0")
	require.Equal(t, "q\t10\t5\t0\n.\n", adm.admin("show maxqueue q", true))
	adm.adminOK("maxqueue q")
	require.Equal(t, "q\t0\t0\t0\n.\n", adm.admin("show maxqueue q", true))
	// As gearmand, a negative number means no limit.
	adm.adminOK("maxqueue q 5", "maxqueue q -1")
	require.Equal(t, "q\t0\t0\t0\n.\n", adm.admin("show maxqueue q", true))
}

// "jobs" answers limit records when there are that many, also for a query
// that matches few of many live jobs: a page of the job list may stop
// short after a bounded walk, and "jobs" goes on from there.
func TestAdminJobsFewAmongMany(t *testing.T) {
	t.Parallel()
	tb, adm := setupLifecycle(t)
	s := tb.b.NewSession("client", make(broker.NoopSignal, 1))
	submit := func(fn string) uint64 {
		var seq uint64
		tb.b.Submit(s, broker.SubmitParams{Function: []byte(fn), Payload: []byte("p"), Background: true},
			func(q uint64, _ bool, err error) { require.NoError(t, err); seq = q })
		return seq
	}
	var rare []string // newest first
	for range 2 {
		rare = append([]string{tb.b.Handle(submit("rare"))}, rare...)
	}
	for range 70_000 { // more than one page of the job list looks at
		submit("f")
	}
	page, err := tb.b.ListJobs(context.Background(), broker.JobQuery{Function: "rare", Limit: 2})
	require.NoError(t, err)
	require.Empty(t, page.Jobs, "the page stopped short")
	require.NotEmpty(t, page.Next)

	var got []string
	for _, l := range strings.Split(strings.TrimSuffix(adm.admin("jobs function=rare limit=2", true), "\n.\n"), "\n") {
		got = append(got, strings.Split(l, "\t")[0])
	}
	require.Equal(t, rare, got)
}
