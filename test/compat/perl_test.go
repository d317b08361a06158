package compat

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/gearman"
	"github.com/gearwork/gearwork/internal/testwait"
)

// Tests driving the server with Perl's Gearman::Client and Gearman::Worker
// (Debian's libgearman-client-perl, a pure-Perl implementation):
// testdata/perl/client.pl and testdata/perl/worker.pl.

func perlClient(t *testing.T, s *server) *repl {
	t.Helper()
	return startREPL(t, need(t, "perl"), testdata("perl", "client.pl"), s.addr)
}

func perlWorker(t *testing.T, s *server, jobs int, specs ...string) *proc {
	t.Helper()
	return startProc(t, nil, need(t, "perl"), append([]string{testdata("perl", "worker.pl"), s.addr, fmt.Sprint(jobs)}, specs...)...)
}

type perlDo struct {
	Result *string `json:"result"`
}

func TestPerlForegroundAndBackground(t *testing.T) {
	t.Parallel()
	eachServer(t, func(t *testing.T, s *server) {
		c := perlClient(t, s)
		handle := c.background("pl_up", "in the background")
		require.Regexp(t, "^"+regexp.QuoteMeta(s.addr+"//"+pick(s, handlePrefix, "H:gearmand:"))+`\d+$`, handle)
		require.Equal(t, []any{1.0, 0.0, 0.0, 0.0}, c.status(handle))

		w := perlWorker(t, s, 3, "pl_up=upper")
		for _, high := range []int{0, 1} {
			var got perlDo
			c.call(map[string]any{"op": "do", "fn": "pl_up", "payload": "perl client", "high": high}, &got)
			require.NotNil(t, got.Result)
			require.Equal(t, "PERL CLIENT", *got.Result)
		}
		_, err := w.wait(t)
		require.NoError(t, err)
		require.Equal(t, "pl_up 17\npl_up 11\npl_up 11\n", w.stdout.String())
		require.Equal(t, []any{0.0, 0.0, 0.0, 0.0}, c.status(handle))
	})
}

// TestPerlStreamingFailException: send_work_data/status/warning reach the
// client's callbacks in order; send_work_fail and send_work_exception
// reach on_fail and on_exception.
//
// Gearman::Worker 2.004 sends WORK_STATUS without its denominator, so the
// client sees "1/0". gearwork takes missing trailing arguments of work
// updates as empty; gearmand 1.1.20 waits for the missing NUL and reads
// the next packet as part of this one, losing the stream, so this test
// runs against gearwork only.
func TestPerlStreamingFailException(t *testing.T) {
	t.Parallel()
	s := startGearwork(t)
	perlWorker(t, s, 3, "pl_stream=stream", "pl_fail=fail", "pl_exc=exception")
	c := perlClient(t, s)
	type events struct{ Events [][]string }
	var got events
	c.call(map[string]any{"op": "tasks", "fn": "pl_stream", "payload": "x"}, &got)
	require.Equal(t, [][]string{
		{"data", "d1"}, {"status", "1/0"}, {"warning", "w1"}, {"data", "d2"}, {"complete", "done"},
	}, got.Events)
	got = events{}
	c.call(map[string]any{"op": "tasks", "fn": "pl_fail", "payload": "x"}, &got)
	require.Equal(t, [][]string{{"fail", ""}}, got.Events)
	got = events{}
	c.call(map[string]any{"op": "tasks", "fn": "pl_exc", "payload": "x"}, &got)
	require.Equal(t, [][]string{{"exception", "boom"}}, got.Events)
}

// TestPerlCoalescing: two Perl clients submit the same unique; a Perl
// worker runs the job once and both receive the result.
func TestPerlCoalescing(t *testing.T) {
	t.Parallel()
	eachServer(t, func(t *testing.T, s *server) {
		holder := rawWorker(t, s, "pl_co")
		c1, c2 := perlClient(t, s), perlClient(t, s)
		c1.callAsync(map[string]any{"op": "do", "fn": "pl_co", "payload": "first", "uniq": "shared"})
		h, _, unique, payload := holder.grabWhenReady()
		require.Equal(t, "shared", unique)
		require.Equal(t, "first", payload)
		c2.callAsync(map[string]any{"op": "do", "fn": "pl_co", "payload": "second", "uniq": "shared"})
		probe := dialRaw(t, s)
		testwait.Until(t, "the second client to attach", func() bool {
			probe.Send(gearman.GetStatusUnique, "shared")
			return probe.ExpectCmd(gearman.StatusResUnique)[5] == "2"
		})
		holder.Send(gearman.WorkComplete, h, "shared result")
		for _, c := range []*repl{c1, c2} {
			var got perlDo
			c.receive(&got)
			require.NotNil(t, got.Result)
			require.Equal(t, "shared result", *got.Result)
		}
		waitStatus(t, s, "pl_co", funcStatus{Workers: 1})
	})
}

// TestPerlWorkerKilledMidJob: a Perl worker is killed while it holds a
// foreground job; the job goes back to the queue and another worker (the
// gearman tool) finishes it for the waiting Perl client.
func TestPerlWorkerKilledMidJob(t *testing.T) {
	t.Parallel()
	eachServer(t, func(t *testing.T, s *server) {
		doomed := perlWorker(t, s, 1, "pl_kill=hang")
		c := perlClient(t, s)
		c.callAsync(map[string]any{"op": "do", "fn": "pl_kill", "payload": "survive"})
		testwait.Until(t, "the Perl worker to hold the job", func() bool {
			return strings.Contains(doomed.stdout.String(), "holding ")
		})
		require.Equal(t, funcStatus{Total: 1, Running: 1, Workers: 1}, status(t, s)["pl_kill"])
		doomed.kill()
		waitStatus(t, s, "pl_kill", funcStatus{Total: 1})
		jobs := admin(t, s, "show jobs")
		require.Len(t, jobs, 1)
		require.Equal(t, "1", strings.Split(jobs[0], "\t")[1], "the take-back counts as a retry")

		gearmanCLI(t, s, "", "-w", "-f", "pl_kill", "-c", "1", "--", "tr", "a-z", "A-Z")
		var got perlDo
		c.receive(&got)
		require.NotNil(t, got.Result)
		require.Equal(t, "SURVIVE", *got.Result)
	})
}

// TestPerlPayloadSizes: 0-byte and 16 MiB payloads round trip through a
// Perl worker. Gearman::Worker sends an empty result as a WORK_COMPLETE
// without the NUL after the handle; gearwork accepts it, gearmand 1.1.20
// loses the stream over it (see TestPerlStreamingFailException), so this
// runs against gearwork only.
func TestPerlPayloadSizes(t *testing.T) {
	t.Parallel()
	s := startGearwork(t)
	perlWorker(t, s, 2, "pl_size=echo")
	c := perlClient(t, s)
	for _, size := range []int{0, 16 << 20} {
		var got struct {
			Len  *int
			Same int
		}
		c.call(map[string]any{"op": "size", "fn": "pl_size", "size": size}, &got)
		require.NotNil(t, got.Len, "size %d failed", size)
		require.Equal(t, size, *got.Len)
		require.Equal(t, 1, got.Same)
	}
}

// TestPerlWorkerSubDies: a Perl worker whose sub dies sends WORK_EXCEPTION
// and then WORK_FAIL for the job. The client sees one failure, and the same
// worker process goes on to the next job (gearmand 1.1.20 answers the
// WORK_FAIL with ERROR JOB_NOT_FOUND, on which Gearman::Worker dies), so
// this runs against gearwork only.
func TestPerlWorkerSubDies(t *testing.T) {
	t.Parallel()
	s := startGearwork(t)
	w := perlWorker(t, s, 2, "pl_die=die", "pl_after=upper")
	c := perlClient(t, s)
	var got struct{ Events [][]string }
	c.call(map[string]any{"op": "tasks", "fn": "pl_die", "payload": "x"}, &got)
	require.Len(t, got.Events, 1, "exactly one failure: %q", got.Events)
	require.Equal(t, "exception", got.Events[0][0])
	require.Contains(t, got.Events[0][1], "boom")

	var after perlDo
	c.call(map[string]any{"op": "do", "fn": "pl_after", "payload": "next job"}, &after)
	require.NotNil(t, after.Result)
	require.Equal(t, "NEXT JOB", *after.Result)
	_, err := w.wait(t)
	require.NoError(t, err, "the worker process ran both jobs")
	require.Equal(t, "pl_die 1\npl_after 8\n", w.stdout.String())
}

// TestPerlPrefixPrioritiesUniq: a Gearman::Client and a Gearman::Worker
// made with prefix => "tenant" meet on "tenant\tpl_up"; do_task with
// priority low; dispatch_background with uniq "-" (the payload is the
// unique) coalesces the same payload onto the queued job and not another.
func TestPerlPrefixPrioritiesUniq(t *testing.T) {
	t.Parallel()
	eachServer(t, func(t *testing.T, s *server) {
		c := perlClient(t, s)
		var bg [3]struct{ Handle string }
		for i, payload := range []string{"same", "same", "other"} {
			c.call(map[string]any{"op": "bg", "fn": "pl_up", "payload": payload, "uniq": "-", "prefix": "tenant"}, &bg[i])
			require.NotEmpty(t, bg[i].Handle)
		}
		require.Equal(t, bg[0].Handle, bg[1].Handle, "the same payload is the same job")
		require.NotEqual(t, bg[0].Handle, bg[2].Handle)
		// gearmand shows the tab raw, an extra field; Gearwork as \x09.
		want := "tenant\tpl_up\t2\t0\t0"
		if s.isGearwork() {
			want = `tenant\x09pl_up` + "\t2\t0\t0"
		}
		require.Equal(t, []string{want}, admin(t, s, "status"))

		w := perlWorker(t, s, 3, "prefix=tenant", "pl_up=upper")
		var got perlDo
		c.call(map[string]any{"op": "do", "fn": "pl_up", "payload": "low one", "priority": "low", "prefix": "tenant"}, &got)
		require.NotNil(t, got.Result)
		require.Equal(t, "LOW ONE", *got.Result)
		_, err := w.wait(t)
		require.NoError(t, err)
		// The background jobs came first.
		require.Equal(t, "tenant\tpl_up 4\ntenant\tpl_up 5\ntenant\tpl_up 7\n", w.stdout.String())
	})
}

// TestPerlRetry: a Gearman::Client task with retry_count (a client
// without exceptions) whose worker sub dies twice: the client's on_retry
// runs for each failure and it submits the job again, and the third run
// completes; with retry_count 1 the second failure reaches on_fail.
// Gearwork only: gearmand 1.1.20 answers the WORK_FAIL that
// Gearman::Worker sends after its WORK_EXCEPTION with ERROR JOB_NOT_FOUND
// and forwards WORK_FAIL with a NUL after the handle (items 9 and 23 of
// "Differences from gearmand"), on which Gearman::Client dies ("Got
// work_fail for unknown handle").
func TestPerlRetry(t *testing.T) {
	t.Parallel()
	s := startGearwork(t)
	w := perlWorker(t, s, 5, "pl_flaky=flaky")
	c := perlClient(t, s)
	type events struct{ Events [][]string }
	var got events
	c.call(map[string]any{"op": "retry", "fn": "pl_flaky", "payload": "a", "retries": 3, "exceptions": 0}, &got)
	require.Equal(t, [][]string{{"retry", "1"}, {"retry", "2"}, {"complete", "ok after 3 runs"}}, got.Events)
	got = events{}
	c.call(map[string]any{"op": "retry", "fn": "pl_flaky", "payload": "b", "retries": 1, "exceptions": 0}, &got)
	require.Equal(t, [][]string{{"retry", "1"}, {"fail", ""}}, got.Events)
	_, err := w.wait(t)
	require.NoError(t, err)
	require.Equal(t, strings.Repeat("pl_flaky 1\n", 5), w.stdout.String())
}

// TestPerlWorkerTimeout: a Gearman::Worker registers with
// register_function($name, $timeout, ...) (CAN_DO_TIMEOUT; 1, read as
// milliseconds and raised to the one-second floor) and takes three
// seconds over the job. Gearwork fails the job at the timeout (item 22 of
// "Differences from gearmand"): the Perl client's on_fail runs, the
// worker's late WORK_COMPLETE changes nothing, and the same worker process
// runs the next job. Gearwork only: gearmand 1.1.20 hands the job to the
// next worker, as Gearman::Worker's documentation describes.
func TestPerlWorkerTimeout(t *testing.T) {
	t.Parallel()
	s := startGearwork(t)
	w := perlWorker(t, s, 2, "pl_slow=sleep3:1", "pl_next=upper")
	c := perlClient(t, s)
	type events struct{ Events [][]string }
	var got events
	start := time.Now()
	c.call(map[string]any{"op": "tasks", "fn": "pl_slow", "payload": "x"}, &got)
	require.Equal(t, [][]string{{"fail", ""}}, got.Events)
	require.GreaterOrEqual(t, time.Since(start), time.Second, "not before the timeout")
	var next perlDo
	c.call(map[string]any{"op": "do", "fn": "pl_next", "payload": "next"}, &next)
	require.NotNil(t, next.Result)
	require.Equal(t, "NEXT", *next.Result)
	_, err := w.wait(t)
	require.NoError(t, err)
	require.Equal(t, "pl_slow 1\npl_next 4\n", w.stdout.String())
	require.Empty(t, admin(t, s, "show jobs"))
}

// TestPerlWorkerJobCancelled: "cancel job" takes a running job from its
// Perl worker (item 8 of "Differences from gearmand"); the worker's
// WORK_STATUS, WORK_DATA and WORK_WARNING sent after the cancel and its
// WORK_COMPLETE are accepted without an answer, the job stays cancelled,
// and the same worker process runs the next job (Gearman::Worker dies on
// an ERROR in answer). The worker sends its updates only once the cancel
// is done (it waits for a file the test creates then), however slow the
// machine. Gearwork only: gearmand has no cancel of a running job.
func TestPerlWorkerJobCancelled(t *testing.T) {
	t.Parallel()
	s := startGearwork(t)
	w := perlWorker(t, s, 2, "pl_cancel=gate", "pl_after=upper")
	c := perlClient(t, s)
	gate := filepath.Join(t.TempDir(), "cancelled")
	handle := c.background("pl_cancel", gate)
	h := handle[strings.LastIndex(handle, "/")+1:]
	testwait.Until(t, "the worker to run the job", func() bool {
		return strings.Contains(w.stdout.String(), fmt.Sprintf("pl_cancel %d\n", len(gate)))
	})
	require.Equal(t, []string{"OK"}, admin(t, s, "cancel job "+h))
	require.NoError(t, os.WriteFile(gate, nil, 0o600))
	var after perlDo
	c.call(map[string]any{"op": "do", "fn": "pl_after", "payload": "after"}, &after)
	require.NotNil(t, after.Result, "the worker survived its cancelled job")
	require.Equal(t, "AFTER", *after.Result)
	_, err := w.wait(t)
	require.NoError(t, err)
	require.Equal(t, fmt.Sprintf("pl_cancel %d\npl_after 5\n", len(gate)), w.stdout.String())
	require.Equal(t, []any{0.0, 0.0, 0.0, 0.0}, c.status(handle))
}

// TestPerlTwoServers: a Gearman::Worker and a Gearman::Client, each on two
// servers of a kind. A task set of 20 tasks with uniques, which the client
// spreads over the servers by unique, all complete. Then the first server
// is stopped: a new client's 20 tasks without uniques go to the second,
// and all complete. (Whatever the server, Gearman::Client 2.004 does not
// fail over otherwise: the first client keeps its connections and dies,
// "reading response packet failed: eof", when it sends a task on one
// whose server went away, and a task whose unique hashes to a server that
// is down fails, as Gearman::Taskset tries only the first server of its
// list.) Gearman::Taskset files the tasks it waits for by their handle
// alone: two servers that give out the same handle would get their
// results crossed, as two gearmands with the same handle prefix do (see
// startLike); the two gearwork servers here have the same prefix.
// The first server comes back on its address: the worker connects to it
// again (Gearman::Worker retries a server that went down, after it waited
// a while, and sends CAN_DO and PRE_SLEEP on the new connection), and a
// client on that server alone gets its job done.
func TestPerlTwoServers(t *testing.T) {
	t.Parallel()
	eachServer(t, func(t *testing.T, s1 *server) {
		s2 := startLike(t, s1)
		both := s1.addr + "," + s2.addr
		perl := need(t, "perl")
		w := startProc(t, nil, perl, testdata("perl", "worker.pl"), both, "1000", "pl_two=upper")
		for _, s := range []*server{s1, s2} {
			waitStatus(t, s, "pl_two", funcStatus{Workers: 1})
		}
		c := startREPL(t, perl, testdata("perl", "client.pl"), both)
		want := make([]string, 20)
		for i := range want {
			want[i] = fmt.Sprint("P", i)
		}
		var got struct{ Results []string }
		c.call(map[string]any{"op": "many", "fn": "pl_two", "n": 20, "uniques": 1}, &got)
		require.Equal(t, want, got.Results, "the tasks spread over both servers")

		s1.stop(t)
		got.Results = nil
		c = startREPL(t, perl, testdata("perl", "client.pl"), both)
		c.call(map[string]any{"op": "many", "fn": "pl_two", "n": 20, "uniques": 0}, &got)
		require.Equal(t, want, got.Results, "the tasks went to the server that is up")

		s1 = restartServer(t, s1)
		waitStatus(t, s1, "pl_two", funcStatus{Workers: 1})
		var one perlDo
		perlClient(t, s1).call(map[string]any{"op": "do", "fn": "pl_two", "payload": "back again"}, &one)
		require.NotNil(t, one.Result)
		require.Equal(t, "BACK AGAIN", *one.Result)
		require.False(t, w.exited(), "worker stderr:\n%s", w.stderr.String())
	})
}

// TestPerlWorkerFunctionNameRefused: a Perl worker that registers a
// function whose name the server does not take (longer than 511 bytes, or
// empty: Gearman::Worker checks neither) goes on to serve the functions it
// registered besides. CAN_DO has no answer, and Gearman::Worker dies on an
// ERROR it reads while it waits for its next job, so the server ignores
// the refused CAN_DO and logs it; gearmand takes any name.
func TestPerlWorkerFunctionNameRefused(t *testing.T) {
	t.Parallel()
	eachServer(t, func(t *testing.T, s *server) {
		long := strings.Repeat("l", 600)
		w := perlWorker(t, s, 1, long+"=echo", "=echo", "pl_named=upper")
		waitStatus(t, s, "pl_named", funcStatus{Workers: 1})
		var got perlDo
		perlClient(t, s).call(map[string]any{"op": "do", "fn": "pl_named", "payload": "still served"}, &got)
		require.NotNil(t, got.Result)
		require.Equal(t, "STILL SERVED", *got.Result)
		_, err := w.wait(t)
		require.NoError(t, err, "the worker ran its job")
		require.Equal(t, "pl_named 12\n", w.stdout.String())
		if s.isGearwork() {
			require.Contains(t, s.log.String(), "CAN_DO ignored")
			require.NotContains(t, status(t, s), long)
		}
	})
}
