package compat

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/gearman"
	"github.com/gearwork/gearwork/internal/testwait"
)

// Tests driving the server with libgearman itself, the C library (Debian's
// libgearman-dev 1.1.20) that PHP's extension, the gearman tool and many
// other clients wrap: testdata/c/gwlib.c, built once per run with the
// system's C compiler. Its client runs one operation per process and its
// worker serves named behaviours; both print what they saw, one line each.

var (
	gwlibOnce sync.Once
	gwlibPath string
	gwlibErr  error
	gwlibOut  []byte
)

// gwlibFlags are the compiler flags of gwlib. Warnings are shown, not
// fatal: another compiler or libgearman version may warn about code that
// is right. Those that mean the program would not call libgearman as
// written (a function its headers do not declare, a pointer or integer
// of the wrong type, a function that returns nothing) fail the build.
var gwlibFlags = []string{"-Wall", "-Wextra", "-O1",
	"-Werror=implicit-function-declaration", "-Werror=incompatible-pointer-types",
	"-Werror=int-conversion", "-Werror=return-type"}

// gwlib returns the path of testdata/c/gwlib.c built against libgearman.
// A missing compiler or libgearman-dev fails the test (skips it with
// GEARWORK_ALLOW_SKIP=1). The compiler's warnings are logged by the
// test that builds it.
func gwlib(t *testing.T) string {
	t.Helper()
	cc := need(t, "cc")
	needPath(t, "/usr/include/libgearman-1.0/gearman.h", "libgearman-dev")
	gwlibOnce.Do(func() {
		gwlibPath = filepath.Join(filepath.Dir(gearworkBin), "gwlib")
		args := append(slices.Clone(gwlibFlags), "-o", gwlibPath, testdata("c", "gwlib.c"), "-lgearman")
		gwlibOut, gwlibErr = exec.Command(cc, args...).CombinedOutput()
		if gwlibErr == nil && len(gwlibOut) > 0 {
			t.Logf("building testdata/c/gwlib.c warned:\n%s", gwlibOut)
		}
	})
	require.NoError(t, gwlibErr, "building testdata/c/gwlib.c:\n%s", gwlibOut)
	return gwlibPath
}

// cClient runs one client operation of gwlib against s and returns its
// output lines.
func cClient(t *testing.T, s *server, op string, args ...string) []string {
	t.Helper()
	return strings.Split(strings.TrimSuffix(run(t, nil, gwlib(t), append([]string{op, s.addr}, args...)...), "\n"), "\n")
}

// cClientAsync starts one client operation of gwlib; wait for its output.
func cClientAsync(t *testing.T, s *server, op string, args ...string) *proc {
	t.Helper()
	return startProc(t, nil, gwlib(t), append([]string{op, s.addr}, args...)...)
}

// lines waits for p to succeed and returns its output lines.
func lines(t *testing.T, p *proc) []string {
	t.Helper()
	out, err := p.wait(t)
	require.NoError(t, err, "%s: %s", p.name, p.stderr.String())
	return strings.Split(strings.TrimSuffix(out, "\n"), "\n")
}

// cWorker starts a gwlib worker for jobs jobs (0: until it is killed or
// its timeout= passes) with options and NAME=BEHAVIOUR specs.
func cWorker(t *testing.T, s *server, jobs int, specs ...string) *proc {
	t.Helper()
	return startProc(t, nil, gwlib(t), append([]string{"worker", s.addr, fmt.Sprint(jobs)}, specs...)...)
}

const ok = "rc GEARMAN_SUCCESS"

// TestCClientAndWorker: a libgearman worker (gearman_worker_add_function)
// serves a libgearman client: echo; gearman_client_do, do_high and do_low;
// a unique; gearman_execute; a task with every callback (created, data,
// status, warning, complete); WORK_FAIL; WORK_EXCEPTION to a client with
// GEARMAN_CLIENT_EXCEPTION (OPTION_REQ "exceptions"); 300 tasks of mixed
// priorities added at once and run by gearman_client_run_tasks, and 100
// more on a GEARMAN_CLIENT_NON_BLOCKING client that waits with
// gearman_client_wait; a client timeout on a function nobody serves.
func TestCClientAndWorker(t *testing.T) {
	t.Parallel()
	eachServer(t, func(t *testing.T, s *server) {
		w := cWorker(t, s, 0, "c_up=upper", "c_uniq=uniq", "c_stream=stream", "c_fail=fail", "c_exc=exception")
		waitStatus(t, s, "c_up", funcStatus{Workers: 1})
		require.Equal(t, []string{ok}, cClient(t, s, "echo", "ping"))
		for _, prio := range []string{"normal", "high", "low"} {
			require.Equal(t, []string{ok, "result VIA " + strings.ToUpper(prio)}, cClient(t, s, "do", "c_up", prio, "via "+prio))
		}
		require.Equal(t, []string{ok, "result u-1/payload"}, cClient(t, s, "do", "c_uniq", "normal", "payload", "u-1"))
		require.Equal(t, []string{ok, "result EXECUTED"}, cClient(t, s, "execute", "c_up", "executed"))
		require.Equal(t, []string{"created", "data d1", "status 1/2 known=1 running=1", "warning w1", "data d2",
			"status 2/2 known=1 running=1", "complete done", ok}, cClient(t, s, "events", "c_stream", "x"))
		require.Equal(t, []string{"created", "fail", ok}, cClient(t, s, "events", "c_fail", "x"))
		require.Equal(t, []string{"created", "exception boom", ok}, cClient(t, s, "events", "c_exc", "x", "exceptions"))
		require.Equal(t, []string{ok, "ok 300"}, cClient(t, s, "tasks", "c_up", "300"))
		require.Equal(t, []string{ok, "ok 100"}, cClient(t, s, "tasks", "c_up", "100", "nonblocking"))
		require.Equal(t, []string{"rc GEARMAN_TIMEOUT"}, cClient(t, s, "timeout", "c_nobody", "300", "x"))

		w.kill()
		got := strings.Split(strings.TrimSuffix(w.stdout.String(), "\n"), "\n")
		require.Len(t, got, 3+1+1+3+400, "one line per job:\n%s", w.stdout.String())
		require.Equal(t, []string{"c_up 10", "c_up 8", "c_up 7", "c_uniq 7", "c_up 8", "c_stream 1", "c_fail 1", "c_exc 1"}, got[:8])
	})
}

// TestCClientWithoutExceptions: a libgearman client that did not ask for
// exceptions gets WORK_FAIL when the worker sends WORK_EXCEPTION (here
// followed by the WORK_FAIL libgearman's worker sends for GEARMAN_FAIL),
// and the worker goes on to its next job. Gearwork only: gearmand 1.1.20's
// WORK_FAIL carries a NUL after the handle (item 9 of "Differences from
// gearmand"), which libgearman's client does not take for its job, so it
// waits for an end that never comes.
func TestCClientWithoutExceptions(t *testing.T) {
	t.Parallel()
	s := startGearwork(t)
	cWorker(t, s, 2, "c_exc=exception", "c_up=upper")
	require.Equal(t, []string{"created", "fail", ok}, cClient(t, s, "events", "c_exc", "x"))
	require.Equal(t, []string{ok, "result NEXT"}, cClient(t, s, "do", "c_up", "normal", "next"))
}

// TestCBackgroundStatus: gearman_client_do_low_background, do_background
// and do_high_background with uniques; the same unique again is coalesced
// onto the queued job (same handle); gearman_client_job_status,
// gearman_client_unique_status (GET_STATUS_UNIQUE) and
// gearman_client_add_task_status for a known and an unknown handle. Then a
// worker with GEARMAN_WORKER_GRAB_UNIQ and gearman_worker_set_identifier
// (SET_CLIENT_ID, shown by "workers") runs them high, normal, low, each
// with its unique, and its gearman_worker_set_timeout ends its wait for
// more.
func TestCBackgroundStatus(t *testing.T) {
	t.Parallel()
	eachServer(t, func(t *testing.T, s *server) {
		handles := map[string]string{}
		for _, prio := range []string{"low", "normal", "high"} {
			got := cClient(t, s, "bg", "c_bg", prio, "bg-"+prio, "u-"+prio)
			require.Len(t, got, 2)
			require.Equal(t, ok, got[0])
			require.True(t, strings.HasPrefix(got[1], "handle "+pick(s, handlePrefix, "H:gearmand:")), got[1])
			handles[prio] = strings.TrimPrefix(got[1], "handle ")
		}
		require.Equal(t, []string{ok, "handle " + handles["normal"]}, cClient(t, s, "bg", "c_bg", "normal", "again", "u-normal"))
		require.Equal(t, []string{ok, "status 1 0 0 0"}, cClient(t, s, "status", handles["high"]))
		require.Equal(t, []string{ok, "status 1 0 0 0"}, cClient(t, s, "ustatus", "u-low"))
		require.Equal(t, []string{ok, "status 0 0 0 0"}, cClient(t, s, "ustatus", "u-none"))
		require.Equal(t, []string{ok, "status 0/0 known=1 running=0", "status 0/0 known=0 running=0"},
			cClient(t, s, "taskstatus", handles["low"], pick(s, handlePrefix, "H:gearmand:")+"999"))
		require.Equal(t, []string{"c_bg\t3\t0\t0"}, admin(t, s, "status"))

		w := cWorker(t, s, 3, "uniq", "id=c-worker-1", "c_bg=echo")
		require.Equal(t, []string{"c_bg 7 u-high", "c_bg 9 u-normal", "c_bg 6 u-low"}, lines(t, w))
		waitStatus(t, s, "c_bg", funcStatus{})

		idle := cWorker(t, s, 0, "id=c-worker-2", "timeout=500", "c_bg=echo")
		testwait.Until(t, "the worker's identifier in workers", func() bool {
			return slices.ContainsFunc(admin(t, s, "workers"), func(l string) bool {
				return strings.HasSuffix(l, " c-worker-2 : c_bg")
			})
		})
		require.Equal(t, []string{"timeout"}, lines(t, idle))
	})
}

// TestCMapReduce: gearman_execute_by_partition sends "1 2 3 4" to a
// partition function (gearman_function_create_partition, a worker with
// GEARMAN_WORKER_GRAB_ALL: SUBMIT_REDUCE_JOB, GRAB_JOB_ALL,
// JOB_ASSIGN_ALL); its worker sends each number as WORK_DATA, libgearman's
// worker submits each as a job of the reducer function to a second worker,
// which doubles it, and the aggregator adds the results up.
func TestCMapReduce(t *testing.T) {
	t.Parallel()
	eachServer(t, func(t *testing.T, s *server) {
		splitter := cWorker(t, s, 1, "c_split=split")
		doubler := cWorker(t, s, 4, "c_double=double")
		waitStatus(t, s, "c_split", funcStatus{Workers: 1})
		waitStatus(t, s, "c_double", funcStatus{Workers: 1})
		require.Equal(t, []string{ok, "result 20"}, cClient(t, s, "mapreduce", "c_split", "c_double", "1 2 3 4"))
		require.Equal(t, []string{"c_split 7"}, lines(t, splitter))
		require.Equal(t, []string{"c_double 1", "c_double 1", "c_double 1", "c_double 1"}, lines(t, doubler))
	})
}

// TestCPayloads: 8 MiB to a worker and 4 MiB back, compared byte for
// byte, through gearman_client_do and gearman_worker_add_function.
func TestCPayloads(t *testing.T) {
	t.Parallel()
	eachServer(t, func(t *testing.T, s *server) {
		cWorker(t, s, 0, "c_digest=digest", "c_bytes=bytes")
		got := cClient(t, s, "digest", "c_digest", fmt.Sprint(8<<20))
		require.Equal(t, []string{ok, "same 1"}, got[:2], "%q", got)
		require.Equal(t, []string{ok, fmt.Sprintf("length %d", 4<<20), "same 1"}, cClient(t, s, "fetch", "c_bytes", fmt.Sprint(4<<20)))
	})
}

// TestCCoalescing: two libgearman clients submit foreground jobs with the
// same unique; the job runs once and both receive its result.
func TestCCoalescing(t *testing.T) {
	t.Parallel()
	eachServer(t, func(t *testing.T, s *server) {
		holder := rawWorker(t, s, "c_co")
		first := cClientAsync(t, s, "do", "c_co", "normal", "first", "shared")
		h, _, unique, payload := holder.grabWhenReady()
		require.Equal(t, "shared", unique)
		require.Equal(t, "first", payload)
		second := cClientAsync(t, s, "do", "c_co", "high", "second", "shared")
		probe := dialRaw(t, s)
		testwait.Until(t, "the second client to attach", func() bool {
			probe.Send(gearman.GetStatusUnique, "shared")
			return probe.ExpectCmd(gearman.StatusResUnique)[5] == "2"
		})
		holder.Send(gearman.WorkComplete, h, "shared result")
		for _, p := range []*proc{first, second} {
			require.Equal(t, []string{ok, "result shared result"}, lines(t, p))
		}
	})
}

// TestCWorkerKilledMidJob: a libgearman worker is killed while it holds a
// foreground job; the job goes back to the queue and a second libgearman
// worker finishes it for the waiting libgearman client.
func TestCWorkerKilledMidJob(t *testing.T) {
	t.Parallel()
	eachServer(t, func(t *testing.T, s *server) {
		doomed := cWorker(t, s, 1, "c_kill=hang")
		waitStatus(t, s, "c_kill", funcStatus{Workers: 1})
		c := cClientAsync(t, s, "do", "c_kill", "normal", "survive")
		testwait.Until(t, "the worker to hold the job", func() bool {
			return strings.Contains(doomed.stdout.String(), "holding ")
		})
		doomed.kill()
		waitStatus(t, s, "c_kill", funcStatus{Total: 1})
		cWorker(t, s, 1, "c_kill=upper")
		require.Equal(t, []string{ok, "result SURVIVE"}, lines(t, c))
	})
}

// TestCWorkerReconnects: a libgearman worker that keeps calling
// gearman_worker_work after an error (as daemons do) runs a job, sees its
// server go away (the Pebble store keeps nothing of it), and once the
// server is back on its address runs the next job, submitted after the
// restart. gearmand behaves the same; the harness restarts only gearwork
// on its address.
func TestCWorkerReconnects(t *testing.T) {
	t.Parallel()
	s := startGearwork(t)
	w := cWorker(t, s, 2, "reconnect", "timeout=1000", "c_r=upper")
	waitStatus(t, s, "c_r", funcStatus{Workers: 1})
	require.Equal(t, []string{ok, "result BEFORE"}, cClient(t, s, "do", "c_r", "normal", "before"))
	s = restartGearwork(t, s)
	waitStatus(t, s, "c_r", funcStatus{Workers: 1})
	require.Equal(t, []string{ok, "result AFTER"}, cClient(t, s, "do", "c_r", "normal", "after"))
	got := lines(t, w)
	require.Equal(t, "c_r 6", got[0])
	require.Equal(t, "c_r 5", got[len(got)-1])
}

// TestCEpoch: gearman_execute with gearman_task_attr_init_epoch submits
// SUBMIT_JOB_EPOCH; the job is not handed out before its time and runs
// when its time comes, on a worker that was already waiting. Gearwork
// only: gearmand 1.1.20 hands an epoch job to a worker that asks for work
// at once (item 4 of "Differences from gearmand").
func TestCEpoch(t *testing.T) {
	t.Parallel()
	s := startGearwork(t)
	w := cWorker(t, s, 1, "uniq", "c_later=echo")
	waitStatus(t, s, "c_later", funcStatus{Workers: 1})
	start := time.Now()
	got := cClient(t, s, "epoch", "c_later", "3", "later")
	require.Len(t, got, 2)
	require.Equal(t, ok, got[0])
	require.True(t, strings.HasPrefix(got[1], "handle "+handlePrefix), got[1])
	out := lines(t, w)
	require.Len(t, out, 1)
	require.True(t, strings.HasPrefix(out[0], "c_later 5"), out[0])
	// The epoch is whole seconds: now+3 is at least two seconds away.
	require.GreaterOrEqual(t, time.Since(start), 2*time.Second, "not before its time")
}

// TestCNamespace: gearman_client_set_namespace and
// gearman_worker_set_namespace put the namespace in front of the function
// name; the server sees the prefixed name.
func TestCNamespace(t *testing.T) {
	t.Parallel()
	eachServer(t, func(t *testing.T, s *server) {
		w := cWorker(t, s, 1, "ns=tenant1:", "c_ns=upper")
		waitStatus(t, s, "tenant1:c_ns", funcStatus{Workers: 1})
		require.Equal(t, []string{ok, "result IN NS"}, cClient(t, s, "ns", "tenant1:", "c_ns", "in ns"))
		require.Equal(t, []string{"tenant1:c_ns 5"}, lines(t, w))
	})
}

// TestCTwoServers: one libgearman worker connected to two servers
// (gearman_worker_add_servers: gearwork on Pebble and on memory) serves
// the clients of both; a client given a dead address before a live one
// (gearman_client_add_servers) reaches the live server.
func TestCTwoServers(t *testing.T) {
	t.Parallel()
	s1 := startGearwork(t)
	s2 := startGearwork(t, "--store", "memory:")
	both := &server{addr: s1.addr + "," + s2.addr}
	w := cWorker(t, both, 0, "c_multi=upper")
	waitStatus(t, s1, "c_multi", funcStatus{Workers: 1})
	waitStatus(t, s2, "c_multi", funcStatus{Workers: 1})
	for _, s := range []*server{s1, s2} {
		require.Equal(t, []string{ok, "result TO " + strings.ToUpper(s.addr)}, cClient(t, s, "do", "c_multi", "normal", "to "+s.addr))
		require.Equal(t, []string{ok, "ok 50"}, cClient(t, s, "tasks", "c_multi", "50"))
	}
	dead := &server{addr: "127.0.0.1:" + freePort(t) + "," + s2.addr}
	require.Equal(t, []string{ok, "result FAILED OVER"}, cClient(t, dead, "do", "c_multi", "normal", "failed over"))
	w.kill()
	require.Equal(t, 103, strings.Count(w.stdout.String(), "c_multi "), "one line per job:\n%s", w.stdout.String())
}

// TestCBackgroundJobsSurviveSIGKILL: background jobs a libgearman client
// submitted (each priority, with uniques, and one at an epoch a minute
// away) are acknowledged after their fsync (--sync always); gearwork is
// killed with SIGKILL and started again on its store and address, where a
// libgearman worker that kept trying to reconnect runs them, high before
// normal before low, each with its unique; the epoch job is still waiting.
func TestCBackgroundJobsSurviveSIGKILL(t *testing.T) {
	t.Parallel()
	s := startGearwork(t)
	var want []string
	for _, prio := range []string{"low", "normal", "high"} {
		for i := range 3 {
			unique := fmt.Sprintf("%s-%d", prio, i)
			got := cClient(t, s, "bg", "c_durable", prio, "payload-"+unique, unique)
			require.Equal(t, ok, got[0])
		}
	}
	for _, prio := range []string{"high", "normal", "low"} {
		for i := range 3 {
			unique := fmt.Sprintf("%s-%d", prio, i)
			want = append(want, fmt.Sprintf("c_durable %d %s", len("payload-"+unique), unique))
		}
	}
	got := cClient(t, s, "epoch", "c_durable", "60", "later")
	require.Equal(t, ok, got[0])
	require.Equal(t, funcStatus{Total: 10}, status(t, s)["c_durable"])

	require.NoError(t, s.cmd.Process.Kill()) // SIGKILL: no flush, no goodbye
	s.waitExit(t)
	w := cWorker(t, s, len(want), "reconnect", "uniq", "timeout=1000", "c_durable=echo")
	s = launchGearwork(t, append(slices.Clone(s.args), "--listen", s.addr))
	var ran []string
	for _, l := range lines(t, w) {
		if strings.HasPrefix(l, "c_durable ") {
			ran = append(ran, l)
		}
	}
	require.Equal(t, want, ran)
	waitStatus(t, s, "c_durable", funcStatus{Total: 1})
}
