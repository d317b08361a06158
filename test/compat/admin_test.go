package compat

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/gearman"
	"github.com/gearwork/gearwork/internal/testwait"
)

// Tests of every text admin command, byte for byte, on gearwork and on
// gearmand 1.1.20 where the two differ.

// adminExact sends one admin line on c and returns the exact answer,
// line endings included.
func (c *rawConn) adminExact(command string) string {
	c.T.Helper()
	c.Write([]byte(command + "\r\n"))
	var sb strings.Builder
	for first := true; ; first = false {
		line := c.Line()
		sb.WriteString(line)
		if adminAnswerEnds(command, line, first) {
			return sb.String()
		}
	}
}

// pick returns the gearwork or the gearmand variant of an expected answer.
func pick(s *server, gearwork, gearmand string) string {
	if s.isGearwork() {
		return gearwork
	}
	return gearmand
}

func TestAdminCommands(t *testing.T) {
	t.Parallel()
	eachServer(t, func(t *testing.T, s *server) {
		prefix := pick(s, handlePrefix, "H:gearmand:")
		cl := dialRaw(t, s)
		h1 := cl.submit(gearman.SubmitJobBg, "adm", "u1", "x")
		require.True(t, strings.HasPrefix(h1, prefix), h1)
		a := dialRaw(t, s)

		require.Equal(t, "adm\t1\t0\t0\n.\n", a.adminExact("status"))
		require.Equal(t, "adm\t0\t1\t0\t0\n.\n", a.adminExact("prioritystatus"))
		// The last column (job_queued) is 1 in gearmand for every
		// background job; gearwork sets it only for stored jobs, so not
		// on the in-memory store.
		queued := "1"
		if s.memory {
			queued = "0"
		}
		require.Equal(t, h1+"\t0\t0\t"+queued+"\n.\n", a.adminExact("show jobs"))
		require.Equal(t, "u1\n.\n", a.adminExact("show unique jobs"))
		require.Equal(t, "ERR UNKNOWN_SHOW_ARGUMENTS\r\n", a.adminExact("show nothing"))

		// workers: "FD IP CLIENT-ID : FUNCTIONS" for every connection.
		w := rawWorker(t, s, "adm", "other")
		w.Send(gearman.SetClientID, "worker-7")
		var workers string
		testwait.Until(t, "the worker to be listed", func() bool {
			workers = a.adminExact("workers")
			return strings.Contains(workers, "worker-7")
		})
		require.Regexp(t, `(?m)^\d+ 127\.0\.0\.1 worker-7 : (adm other|other adm)$`, workers)
		require.Regexp(t, `(?m)^\d+ 127\.0\.0\.1 - :$`, workers)
		require.True(t, strings.HasSuffix(workers, "\n.\n"))

		// maxqueue: one number limits every priority; the full queue
		// answers ERROR and the connection stays usable.
		require.Equal(t, "OK\r\n", a.adminExact("maxqueue adm 1"))
		if s.isGearwork() {
			require.Equal(t, "adm\t1\t1\t1\n.\n", a.adminExact("show maxqueue adm"))
		} else {
			require.Equal(t, "ERR UNKNOWN_SHOW_ARGUMENTS\r\n", a.adminExact("show maxqueue adm"))
		}
		cl.Send(gearman.SubmitJobBg, "adm", "u2", "y")
		cl.Expect(gearman.Error, "QUEUE_ERROR", "Job queue is full")
		cl.Send(gearman.EchoReq, "still here")
		cl.Expect(gearman.EchoRes, "still here")
		require.Equal(t, "OK\r\n", a.adminExact("maxqueue adm 5 2 1"))
		if s.isGearwork() {
			require.Equal(t, "adm\t5\t2\t1\nother\t0\t0\t0\n.\n", a.adminExact("show maxqueue"))
		}
		require.Equal(t, "OK\r\n", a.adminExact("maxqueue adm"))
		if s.isGearwork() {
			require.Equal(t, "adm\t0\t0\t0\n.\n", a.adminExact("show maxqueue adm"))
		}
		h2 := cl.submit(gearman.SubmitJobBg, "adm", "u2", "y")

		// cancel job removes a queued job.
		require.Equal(t, "OK\r\n", a.adminExact("cancel job "+h1))
		require.Equal(t, "ERR UNKNOWN_JOB\r\n", a.adminExact("cancel job "+prefix+"999"))
		if s.isGearwork() {
			// The job is gone at once.
			require.Equal(t, "ERR JOB_ENDED The+job+has+already+ended+(cancelled);+job+HANDLE+shows+its+record\r\n", a.adminExact("cancel job "+h1))
			require.Equal(t, "adm\t1\t0\t1\n"+"other\t0\t0\t1\n.\n", sortedList(a.adminExact("status")))
		} else {
			// gearmand only marks it ignored; it still counts until a
			// worker would take it, and cancelling again succeeds.
			require.Equal(t, "OK\r\n", a.adminExact("cancel job "+h1))
			require.Equal(t, "adm\t2\t0\t1\n"+"other\t0\t0\t1\n.\n", sortedList(a.adminExact("status")))
		}
		require.Equal(t, "OK\r\n", a.adminExact("cancel job "+h2))

		// create and drop function.
		require.Equal(t, "OK\r\n", a.adminExact("create function made"))
		require.Contains(t, a.adminExact("status"), "made\t0\t0\t0\n")
		require.Equal(t, "OK\r\n", a.adminExact("drop function made"))
		require.NotContains(t, a.adminExact("status"), "made\t")
		require.Equal(t, "ERR function not found\r\n", a.adminExact("drop function made"))
		require.Equal(t, "ERR there are still connected workers or executing clients\r\n", a.adminExact("drop function adm"))

		// getpid, version, verbose.
		require.Equal(t, fmt.Sprintf("OK %d\n", s.pid()), a.adminExact("getpid"))
		require.Equal(t, pick(s, "OK 0.1.0\n", "OK 1.1.20+ds\n"), a.adminExact("version"))
		require.Equal(t, pick(s, "OK INFO\n", "OK ERROR\n"), a.adminExact("verbose"))

		// Unknown commands and wrong arguments.
		require.Equal(t, "ERR UNKNOWN_COMMAND Unknown+server+commandbogus\r\n", a.adminExact("bogus"))
		require.Equal(t, "ERR INVALID_ARGUMENTS An+incomplete+set+of+arguments+was+sent+to+this+command+maxqueue\r\n",
			a.adminExact("maxqueue"))
		require.Equal(t, "ERR INVALID_ARGUMENTS An+incomplete+set+of+arguments+was+sent+to+this+command+create\r\n",
			a.adminExact("create function"))

		// Binary packets and admin lines mix on one connection.
		a.Send(gearman.EchoReq, "binary")
		a.Expect(gearman.EchoRes, "binary")
		require.Equal(t, pick(s, "OK INFO\n", "OK ERROR\n"), a.adminExact("VERBOSE"))
	})
}

// sortedList sorts the lines of a list answer (gearmand lists in hash
// order).
func sortedList(answer string) string {
	lines := strings.Split(strings.TrimSuffix(answer, ".\n"), "\n")
	lines = lines[:len(lines)-1]
	slices.Sort(lines)
	return strings.Join(lines, "\n") + "\n.\n"
}

// TestGearadmin runs Debian's gearadmin against gearwork: every option it
// has, parsed the way monitoring scripts parse it.
func TestGearadmin(t *testing.T) {
	t.Parallel()
	eachServer(t, func(t *testing.T, s *server) {
		bin := need(t, "gearadmin")
		ga := func(args ...string) string {
			t.Helper()
			return run(t, nil, bin, append([]string{"-h", s.host, "-p", s.port}, args...)...)
		}
		cl := dialRaw(t, s)
		h := cl.submit(gearman.SubmitJobHighBg, "ga", "ga-unique", "payload")
		w := rawWorker(t, s, "ga")
		w.Send(gearman.SetClientID, "ga-worker")

		require.Equal(t, strconv.Itoa(s.pid())+"\n", ga("--getpid"))
		require.Equal(t, pick(s, "0.1.0\n", "1.1.20+ds\n"), ga("--server-version"))
		require.Equal(t, pick(s, "INFO\n", "ERROR\n"), ga("--server-verbose"))
		require.Equal(t, "ga\t1\t0\t1\n.\n", ga("--status"))
		require.Equal(t, "ga\t1\t0\t0\t1\n.\n", ga("--priority-status"))
		require.Regexp(t, regexp.MustCompile(`(?m)^`+regexp.QuoteMeta(h)+"\t0\t0\t[01]$"), ga("--show-jobs"))
		require.Equal(t, "ga-unique\n.\n", ga("--show-unique-jobs"))
		require.Regexp(t, `(?m)^\d+ 127\.0\.0\.1 ga-worker : ga$`, ga("--workers"))

		require.Equal(t, "OK\n", ga("--create-function", "made"))
		require.Contains(t, ga("--status"), "made\t0\t0\t0\n")
		require.Equal(t, "OK\n", ga("--drop-function", "made"))
		require.NotContains(t, ga("--status"), "made")

		require.Equal(t, "OK\n", ga("--cancel-job", h))
		require.Equal(t, pick(s, "ga\t0\t0\t1\n.\n", "ga\t1\t0\t1\n.\n"), ga("--status"))
	})
}

// TestAdminShutdown: "shutdown" stops the server at once.
func TestAdminShutdown(t *testing.T) {
	t.Parallel()
	s := startGearwork(t)
	a := dialRaw(t, s)
	require.Equal(t, "OK\r\n", a.adminExact("shutdown"))
	s.waitExit(t)
	require.Equal(t, 0, s.cmd.ProcessState.ExitCode())
}

// TestAdminShutdownGraceful: "shutdown graceful" stops accepting
// connections and handing out jobs, lets the running job finish and
// deliver its result, then exits.
func TestAdminShutdownGraceful(t *testing.T) {
	t.Parallel()
	s := startGearwork(t)
	w := rawWorker(t, s, "long")
	cl := dialRaw(t, s)
	h := cl.submit(gearman.SubmitJob, "long", "", "first")
	cl.submit(gearman.SubmitJob, "long", "", "second")
	got, _, _, _ := w.grab()
	require.Equal(t, h, got)

	a := dialRaw(t, s)
	require.Equal(t, "OK\r\n", a.adminExact("shutdown graceful"))
	testwait.Until(t, "the listener to close", func() bool { return !s.accepts() })
	require.False(t, s.exited(), "a job is still running")
	// No new work is handed out while draining.
	w.Send(gearman.GrabJobUniq)
	w.Expect(gearman.NoJob)
	w.Send(gearman.WorkComplete, h, "done")
	cl.Expect(gearman.WorkComplete, h, "done")
	s.waitExit(t)
}

// TestAdminLines checks details of the text protocol: case, extra blanks,
// bare "\n" endings and lines in one write.
func TestAdminLines(t *testing.T) {
	t.Parallel()
	eachServer(t, func(t *testing.T, s *server) {
		a := dialRaw(t, s)
		require.Equal(t, "OK\r\n", a.adminExact("CREATE FUNCTION Mixed"))
		a.Write([]byte("status\ngetpid\n"))
		require.Equal(t, "Mixed\t0\t0\t0\n", a.Line())
		require.Equal(t, ".\n", a.Line())
		require.Equal(t, fmt.Sprintf("OK %d\n", s.pid()), a.Line())
	})
}

// Function names are bytes, case included: "Resize", "resize" and
// "RESIZE" are three functions (status lists three, a worker of one never
// gets the jobs of another). "drop function" names one of them exactly,
// as every other command does; gearmand matches it regardless of case
// and drops every function so named, answering OK for each, which loses
// the queued jobs of functions nobody named.
func TestAdminDropFunctionNamesOneFunction(t *testing.T) {
	t.Parallel()
	eachServer(t, func(t *testing.T, s *server) {
		cl := dialRaw(t, s)
		handles := map[string]string{}
		for _, fn := range []string{"Resize", "resize", "RESIZE"} {
			handles[fn] = cl.submit(gearman.SubmitJobBg, fn, "", "x")
		}
		a := dialRaw(t, s)
		require.Equal(t, "RESIZE\t1\t0\t0\nResize\t1\t0\t0\nresize\t1\t0\t0\n.\n", sortedList(a.adminExact("status")))
		if !s.isGearwork() {
			require.Equal(t, "OK\r\nOK\r\nOK\r\n", a.adminExact("drop function resize")+a.Line()+a.Line())
			require.Equal(t, ".\n", a.adminExact("status"))
			return
		}
		require.Equal(t, "OK\r\n", a.adminExact("drop function resize"))
		require.Equal(t, "RESIZE\t1\t0\t0\nResize\t1\t0\t0\n.\n", sortedList(a.adminExact("status")))
		// The dropped job's record says who dropped its function.
		require.Regexp(t, `(?m)^cancelled_by\t"function dropped by admin 127\.0\.0\.1:\d+"$`, a.adminExact("job "+handles["resize"]))
		require.Equal(t, "ERR function not found\r\n", a.adminExact("drop function resize"))
		require.Equal(t, "ERR function not found\r\n", a.adminExact("drop function rESIZE"),
			"a name that only differs in case names no function")
		require.Equal(t, "RESIZE\t1\t0\t0\nResize\t1\t0\t0\n.\n", sortedList(a.adminExact("status")))
		require.Equal(t, "OK\r\n", a.adminExact("drop function Resize"))
		require.Equal(t, "RESIZE\t1\t0\t0\n.\n", a.adminExact("status"))
	})
}
