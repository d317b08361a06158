package compat

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/gearman"
	"github.com/gearwork/gearwork/internal/testwait"
)

// Tests driving the server with PHP's gearman extension (pecl gearman on
// libgearman): testdata/php/client.php and testdata/php/worker.php.

func phpClient(t *testing.T, s *server) *repl {
	t.Helper()
	return startREPL(t, need(t, "php"), testdata("php", "client.php"), s.host, s.port)
}

// phpWorker starts worker.php for jobs jobs with NAME=BEHAVIOUR specs.
func phpWorker(t *testing.T, s *server, jobs int, specs ...string) *proc {
	t.Helper()
	return startProc(t, nil, need(t, "php"), append([]string{testdata("php", "worker.php"), s.host, s.port, fmt.Sprint(jobs)}, specs...)...)
}

type phpDo struct {
	Result *string `json:"result"`
	RC     int     `json:"rc"`
}

func TestPHPForegroundPriorities(t *testing.T) {
	t.Parallel()
	eachServer(t, func(t *testing.T, s *server) {
		w := phpWorker(t, s, 3, "php_echo=echo")
		c := phpClient(t, s)
		for _, prio := range []string{"normal", "high", "low"} {
			var got phpDo
			c.call(map[string]any{"op": "do", "prio": prio, "fn": "php_echo", "payload": "via " + prio}, &got)
			require.Equal(t, 0, got.RC, "GEARMAN_SUCCESS")
			require.NotNil(t, got.Result)
			require.Equal(t, "via "+prio, *got.Result)
		}
		_, err := w.wait(t)
		require.NoError(t, err)
		require.Equal(t, "php_echo 10\nphp_echo 8\nphp_echo 7\n", w.stdout.String())
	})
}

// TestPHPBackgroundStatus: doBackground, then jobStatus while the job is
// queued, running with a status, and done.
func TestPHPBackgroundStatus(t *testing.T) {
	t.Parallel()
	eachServer(t, func(t *testing.T, s *server) {
		c := phpClient(t, s)
		handle := c.background("php_bg", "work")
		require.True(t, strings.HasPrefix(handle, pick(s, handlePrefix, "H:gearmand:")), handle)
		require.Equal(t, []any{true, false, 0.0, 0.0}, c.status(handle))

		w := rawWorker(t, s, "php_bg")
		h, _, _, payload := w.grab()
		require.Equal(t, handle, h)
		require.Equal(t, "work", payload)
		require.Equal(t, []any{true, true, 0.0, 0.0}, c.status(handle))
		w.Send(gearman.WorkStatus, h, "3", "7")
		w.Send(gearman.EchoReq, "sync")
		w.Expect(gearman.EchoRes, "sync")
		require.Equal(t, []any{true, true, 3.0, 7.0}, c.status(handle))
		w.Send(gearman.WorkComplete, h, "")
		w.Send(gearman.EchoReq, "sync")
		w.Expect(gearman.EchoRes, "sync")
		require.Equal(t, []any{false, false, 0.0, 0.0}, c.status(handle))
	})
}

// TestPHPBackgroundPriorities: doLowBackground, doBackground and
// doHighBackground jobs of one function run high, normal, low.
func TestPHPBackgroundPriorities(t *testing.T) {
	t.Parallel()
	eachServer(t, func(t *testing.T, s *server) {
		c := phpClient(t, s)
		for _, prio := range []string{"low", "normal", "high", "low", "high"} {
			var bg struct{ RC int }
			c.call(map[string]any{"op": "bg", "prio": prio, "fn": "php_prio", "payload": prio}, &bg)
			require.Equal(t, 0, bg.RC)
		}
		require.Equal(t, []string{"php_prio\t2\t1\t2\t0"}, admin(t, s, "prioritystatus"))
		record := t.TempDir() + "/order"
		order := runRecordingWorker(t, s, record, 5, "php_prio=record")
		require.Equal(t, []string{"php_prio:high", "php_prio:high", "php_prio:normal", "php_prio:low", "php_prio:low"}, order)
	})
}

// runRecordingWorker runs worker.php with GEARWORK_RECORD set and returns
// the recorded "function:workload" lines in order.
func runRecordingWorker(t *testing.T, s *server, file string, jobs int, specs ...string) []string {
	t.Helper()
	php := need(t, "php")
	args := append([]string{"GEARWORK_RECORD=" + file, php, testdata("php", "worker.php"),
		s.host, s.port, fmt.Sprint(jobs)}, specs...)
	run(t, nil, "env", args...)
	data, err := os.ReadFile(file)
	require.NoError(t, err)
	return strings.Fields(string(data))
}

// TestPHPStreaming: the worker's sendData/sendStatus/sendWarning reach the
// client's callbacks in order, before the complete.
func TestPHPStreaming(t *testing.T) {
	t.Parallel()
	eachServer(t, func(t *testing.T, s *server) {
		phpWorker(t, s, 1, "php_stream=stream")
		c := phpClient(t, s)
		var got struct {
			Events [][]string
			OK     bool
		}
		c.call(map[string]any{"op": "tasks", "fn": "php_stream", "payload": "x"}, &got)
		require.True(t, got.OK)
		require.Equal(t, [][]string{
			{"data", "d1"}, {"status", "1/2"}, {"warning", "w1"}, {"data", "d2"}, {"complete", "done"},
		}, got.Events)
	})
}

// TestPHPFailAndException: sendFail reaches the fail callback and
// sendException the exception callback. (libgearman's client always sends
// OPTION_REQ "exceptions"; TestRawExceptions covers a client that does not.)
func TestPHPFailAndException(t *testing.T) {
	t.Parallel()
	eachServer(t, func(t *testing.T, s *server) {
		phpWorker(t, s, 3, "php_fail=fail", "php_exc=exception")
		type events struct{ Events [][]string }

		var got events
		phpClient(t, s).call(map[string]any{"op": "tasks", "fn": "php_fail", "payload": "x"}, &got)
		require.Equal(t, [][]string{{"fail", ""}}, got.Events)

		got = events{}
		phpClient(t, s).call(map[string]any{"op": "tasks", "fn": "php_exc", "payload": "x"}, &got)
		require.Equal(t, [][]string{{"exception", "boom"}}, got.Events)

	})
}

// TestPHPPayloadSizes: a 16 MiB payload reaches the worker intact. (The
// way back is covered by TestRawHugeAndEmptyPayloads: libgearman's own
// receive path needs tens of seconds for 16 MiB on either server. An empty
// workload is refused by libgearman's client before it is sent, so the
// 0-byte case runs with the gearman tool, Perl and raw packets.)
func TestPHPPayloadSizes(t *testing.T) {
	t.Parallel()
	eachServer(t, func(t *testing.T, s *server) {
		phpWorker(t, s, 1, "php_size=digest")
		var got struct {
			Result, Want string
			RC           int
		}
		phpClient(t, s).call(map[string]any{"op": "size", "fn": "php_size", "size": 16 << 20}, &got)
		require.Equal(t, 0, got.RC)
		require.Equal(t, got.Want, got.Result)
		require.True(t, strings.HasPrefix(got.Result, "16777216:"))
	})
}

// TestPHPHundredsOfFunctions: one worker registers 300 functions and runs
// one background job of each.
func TestPHPHundredsOfFunctions(t *testing.T) {
	t.Parallel()
	eachServer(t, func(t *testing.T, s *server) {
		const n = 300
		var specs, want []string
		c := phpClient(t, s)
		for i := range n {
			fn := fmt.Sprintf("many_%03d", i)
			specs = append(specs, fn+"=record")
			want = append(want, fn+":p"+fn[5:])
			var bg struct{ RC int }
			c.call(map[string]any{"op": "bg", "fn": fn, "payload": "p" + fn[5:]}, &bg)
			require.Equal(t, 0, bg.RC)
		}
		st := status(t, s)
		require.Len(t, st, n)
		got := runRecordingWorker(t, s, t.TempDir()+"/many", n, specs...)
		slices.Sort(got)
		require.Equal(t, want, got)
		for fn, fs := range status(t, s) {
			require.Equal(t, funcStatus{}, fs, fn)
		}
	})
}

// TestPHPWorkerTimeoutFailsJob: a PHP worker registers with
// addFunction(..., $timeout = 1) and takes four seconds over the job. The
// server fails the job after the timeout, as the protocol and PHP's manual
// describe it ("how many seconds the server will wait before marking a job
// as failed"): the client's fail callback runs long before the job would
// have finished, and the worker's late result changes nothing. Gearwork
// only: gearmand 1.1.20 takes the job back and hands it out again.
func TestPHPWorkerTimeoutFailsJob(t *testing.T) {
	t.Parallel()
	s := startGearwork(t)
	w := phpWorker(t, s, 1, "php_slow=sleep4:1")
	waitStatus(t, s, "php_slow", funcStatus{Workers: 1})
	c := phpClient(t, s)
	var got struct{ Events [][]string }
	start := time.Now()
	c.call(map[string]any{"op": "tasks", "fn": "php_slow", "payload": "x"}, &got)
	took := time.Since(start)
	t.Logf("the client's failure arrived after %v", took)
	require.Equal(t, [][]string{{"fail", ""}}, got.Events)
	require.GreaterOrEqual(t, took, time.Second, "not before the timeout")
	require.Less(t, took, 3*time.Second, "well before the four-second job would have finished")

	// The worker finishes after four seconds; its result is accepted and
	// the job is not run again.
	_, _ = w.wait(t)
	require.Equal(t, "php_slow 1\n", w.stdout.String())
	waitStatus(t, s, "php_slow", funcStatus{})
	require.Empty(t, admin(t, s, "show jobs"))
}

// TestPHPClientAndWorkerFeatures: GearmanClient::ping; a worker with
// setId (SET_CLIENT_ID, shown by "workers") and addOptions
// GEARMAN_WORKER_GRAB_UNIQ reads each job's unique; doBackground and
// doJobHandle; jobStatus, jobStatusByUniqueKey and addTaskStatus (with a
// context) on a running job with a status and on an unknown handle; 200
// tasks at once by turns addTask, addTaskHigh, addTaskLow and
// addTaskBackground, each with its context; setTimeout on a client whose
// function has no worker; GearmanWorker::setTimeout ending an idle worker.
func TestPHPClientAndWorkerFeatures(t *testing.T) {
	t.Parallel()
	eachServer(t, func(t *testing.T, s *server) {
		c := phpClient(t, s)
		var ping struct{ OK bool }
		c.call(map[string]any{"op": "ping", "payload": "hello"}, &ping)
		require.True(t, ping.OK)

		const many = 200
		w := phpWorker(t, s, 2+many, "uniq", "id=php-worker-7", "php_uniq=uniq", "php_hold=hold", "php_many=echo")
		waitStatus(t, s, "php_uniq", funcStatus{Workers: 1})
		var do phpDo
		c.call(map[string]any{"op": "do", "fn": "php_uniq", "payload": "abc", "unique": "uq1"}, &do)
		require.Equal(t, 0, do.RC)
		require.NotNil(t, do.Result)
		require.Equal(t, "uq1/abc", *do.Result)

		release := filepath.Join(t.TempDir(), "release")
		var bg struct {
			Handle, JobHandle string
			RC                int
		}
		c.call(map[string]any{"op": "bg", "fn": "php_hold", "payload": release, "unique": "bguniq"}, &bg)
		require.Equal(t, 0, bg.RC)
		require.Equal(t, bg.Handle, bg.JobHandle, "doJobHandle")
		running := []any{true, true, 2.0, 5.0}
		testwait.Until(t, "the job to run with its status", func() bool { return slices.Equal(c.status(bg.Handle), running) })
		var st struct{ Status []any }
		// A client of its own: after jobStatusByUniqueKey the extension's
		// next runTasks waits until its timeout (GEARMAN_TIMEOUT), against
		// either server.
		phpClient(t, s).call(map[string]any{"op": "ustatus", "unique": "bguniq"}, &st)
		require.Equal(t, running, st.Status)
		unknown := pick(s, handlePrefix, "H:gearmand:") + "999"
		var ts struct {
			Events [][]any
			OK     bool
		}
		c.call(map[string]any{"op": "taskstatus", "handles": []string{bg.Handle, unknown}}, &ts)
		require.True(t, ts.OK)
		// libgearman runs the tasks last added first.
		require.ElementsMatch(t, [][]any{{bg.Handle, true, true, 2.0, 5.0}, {unknown, false, false, 0.0, 0.0}}, ts.Events)
		var fns []string
		for _, l := range admin(t, s, "workers") {
			if id, list, ok := strings.Cut(l, " : "); ok && strings.HasSuffix(id, " php-worker-7") {
				fns = strings.Fields(list)
			}
		}
		require.ElementsMatch(t, []string{"php_uniq", "php_hold", "php_many"}, fns, "workers: %q", admin(t, s, "workers"))
		require.NoError(t, os.WriteFile(release, nil, 0o644))
		testwait.Until(t, "the held job to end", func() bool {
			return slices.Equal(c.status(bg.Handle), []any{false, false, 0.0, 0.0})
		})

		var got struct {
			Complete map[string]string
			Created  int
			OK       bool
		}
		c.call(map[string]any{"op": "many", "fn": "php_many", "n": many}, &got)
		require.True(t, got.OK)
		require.Equal(t, many, got.Created)
		want := map[string]string{}
		for i := range many {
			if i%4 != 3 { // addTaskBackground's tasks do not complete for the client
				want[fmt.Sprint("t", i)] = fmt.Sprint("t", i)
			}
		}
		require.Equal(t, want, got.Complete)
		_, err := w.wait(t)
		require.NoError(t, err, "the worker ran every job, the background tasks too")
		waitStatus(t, s, "php_many", funcStatus{})

		// Last: a task that timed out stays among the client's tasks, and
		// its next runTasks would wait for it.
		var timeout struct{ RC int }
		c.call(map[string]any{"op": "timeout", "fn": "php_nobody", "ms": 300}, &timeout)
		require.Equal(t, 47, timeout.RC, "GEARMAN_TIMEOUT")

		idle := phpWorker(t, s, 1, "timeout=300", "php_idle=echo")
		out, err := idle.wait(t)
		require.NoError(t, err)
		require.Equal(t, "timeout\n", out)
	})
}
