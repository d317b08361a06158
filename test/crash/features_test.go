package crash

import (
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/gearman"
	"github.com/gearwork/gearwork/internal/gearmantest/wire"
	"github.com/gearwork/gearwork/internal/testserver"
	"github.com/gearwork/gearwork/internal/testwait"
)

// featureConn is a connection that speaks both the binary protocol and
// the admin text lines (wire.Conn's Admin and AdminList).
type featureConn struct {
	t *testing.T
	*wire.Conn
}

func dialFeatures(t *testing.T, srv *testserver.Server) *featureConn {
	t.Helper()
	return &featureConn{t: t, Conn: wire.Dial(t, srv.Addr)}
}

// ok sends an admin line whose answer must start with OK.
func (c *featureConn) ok(line string) string {
	c.t.Helper()
	answer := c.Admin(line)
	require.True(c.t, strings.HasPrefix(answer, "OK"), "%s: %s", line, answer)
	return answer
}

// result sends the admin command "result WHICH" and returns its answer:
// "OK <length>" and the data on a line of its own, or the error.
func (c *featureConn) result(which string) string {
	c.t.Helper()
	answer := c.Admin("result " + which)
	if strings.HasPrefix(answer, "OK") {
		answer += "\n" + strings.TrimRight(c.Line(), "\n")
	}
	return answer
}

// record returns the fields of the admin "job HANDLE" answer.
func (c *featureConn) record(handle string) map[string]string {
	c.t.Helper()
	fields := map[string]string{}
	for _, l := range c.AdminList("job " + handle) {
		k, v, _ := strings.Cut(l, "\t")
		if k != "attempt" {
			fields[k] = v
		}
	}
	return fields
}

// submit sends a submit packet and returns the handle of its JOB_CREATED.
func (c *featureConn) submit(cmd gearman.Command, args ...string) string {
	c.t.Helper()
	got, answer := c.Call(cmd, args...)
	require.Equal(c.t, gearman.JobCreated, got, "%v %q: %q", cmd, args, answer)
	return answer[0]
}

// grab asks for a job with GRAB_JOB_UNIQ and returns JOB_ASSIGN_UNIQ's
// handle, function and unique, or "" when there is none.
func (c *featureConn) grab() (handle, function, unique string) {
	c.t.Helper()
	got, args := c.Call(gearman.GrabJobUniq)
	if got == gearman.NoJob {
		return "", "", ""
	}
	require.Equal(c.t, gearman.JobAssignUniq, got, "%q", args)
	return args[0], args[1], args[2]
}

// TestCrashKeepsFeatureState sets up one function for each feature that
// stores state of its own — a runtime policy (max_queue, maxqueue,
// max_attempts with a long backoff, result_retention), a pause, a dead
// letter, a job waiting for its retry, a retained result, scheduled jobs
// (SUBMIT_JOB_EPOCH, SUBMIT_JOB_SCHED), priorities, a unique shared by two
// submits, a cancelled job, a job waiting for another (after:) and an open
// batch — kills the server with SIGKILL right after the last answer, and
// checks after the restart that each kept its state: what was
// acknowledged is there, once, and behaves as before the kill.
func TestCrashKeepsFeatureState(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test skipped in -short mode")
	}
	dir := filepath.Join(t.TempDir(), "data")
	args := []string{"--store", "pebble:" + dir, "--handle-prefix", "H:feat:"}
	srv := testserver.Start(t, args...)
	c := dialFeatures(t, srv)
	for _, fn := range []string{"limited", "maxq", "paused", "pausedfor", "dies", "retries", "kept", "prio", "cancelled", "later", "batched"} {
		c.ok("create function " + fn)
	}
	c.ok("policy limited max_queue=3")
	c.ok("maxqueue maxq 2")
	c.ok("pause paused")
	c.ok("pause pausedfor until 1h")
	c.ok("policy dies max_attempts=1")
	c.ok("policy retries max_attempts=3 backoff=1h backoff_max=1h backoff_jitter=-1")
	c.ok("policy kept result_retention=1h")

	limited := map[string]bool{}
	for i := range 3 {
		limited[c.submit(gearman.SubmitJobBg, "limited", "l"+strconv.Itoa(i), "x")] = true
	}
	got, answer := c.Call(gearman.SubmitJobBg, "limited", "l3", "x")
	require.Equal(t, gearman.Error, got, "a fourth job of a function with max_queue=3: %q", answer)
	paused := c.submit(gearman.SubmitJobBg, "paused", "p", "x")
	pausedFor := c.submit(gearman.SubmitJobBg, "pausedfor", "pf", "x")
	epoch := c.submit(gearman.SubmitJobEpoch, "later", "e", strconv.FormatInt(time.Now().Add(time.Hour).Unix(), 10), "x")
	sched := c.submit(gearman.SubmitJobSched, "later", "s", "0", "12", "1", "1", "", "x")
	low := c.submit(gearman.SubmitJobLowBg, "prio", "low", "low")
	normal := c.submit(gearman.SubmitJobBg, "prio", "normal", "normal")
	high := c.submit(gearman.SubmitJobHighBg, "prio", "high", "high")
	require.Equal(t, normal, c.submit(gearman.SubmitJobBg, "prio", "normal", "again"), "a submit with a live job's unique")
	cancelled := c.submit(gearman.SubmitJobBg, "cancelled", "c", "x")
	c.ok("cancel job " + cancelled)
	dies := c.submit(gearman.SubmitJobBg, "dies", "d", "x")
	retries := c.submit(gearman.SubmitJobBg, "retries", "r", "x")
	kept := c.submit(gearman.SubmitJobBg, "kept", "k", "x")
	// A job of "later" waits for the high job of "prio".
	seqOf := func(handle string) string { return strings.TrimPrefix(handle, "H:feat:") }
	waiting := c.submit(gearman.SubmitJobBg, "later", "after:"+seqOf(high)+":w", "x")
	batch := strings.TrimPrefix(c.ok("batch create on_complete=later"), "OK ")
	inBatch := c.submit(gearman.SubmitJobBg, "batched", "batch:"+batch, "x")
	c.ok("batch close " + batch)

	w := dialFeatures(t, srv)
	for _, fn := range []string{"dies", "retries", "kept"} {
		w.Send(gearman.CanDo, fn)
	}
	for range 3 {
		handle, fn, _ := w.grab()
		require.NotEmpty(t, handle, "a job of dies, retries or kept")
		if fn == "kept" {
			w.Send(gearman.WorkComplete, handle, "the result")
		} else {
			w.Send(gearman.WorkFail, handle)
		}
	}
	// The outcomes are stored once a client can read them: wait for each.
	waitRecord := func(handle, state string) {
		t.Helper()
		testwait.Until(t, handle+" to be "+state, func() bool { return c.record(handle)["state"] == state })
	}
	waitRecord(dies, "dead")
	waitRecord(retries, "retry-wait")
	// (The worker's WORK_COMPLETE and this connection's reads are not
	// ordered: wait until the result answers.)
	testwait.Until(t, "the retained result before the kill", func() bool { return c.result("unique:k") == "OK 10\nthe result" })
	// A job waiting for its retry is not acknowledged to anyone: a later
	// acknowledged submit, written after it, makes it durable.
	fence := c.submit(gearman.SubmitJobBg, "paused", "fence", "x")
	w.NC.Close()
	srv.Kill()

	srv = testserver.Start(t, args...)
	c = dialFeatures(t, srv)

	// Policies and pauses.
	got, answer = c.Call(gearman.SubmitJobBg, "limited", "l3", "x")
	require.Equal(t, gearman.Error, got, "max_queue=3 after the restart: %q", answer)
	require.Contains(t, c.AdminList("show maxqueue maxq"), "maxq\t2\t2\t2")
	policies := strings.Join(c.AdminList("show policy"), "\n")
	require.Regexp(t, `(?m)^paused\t\w+\tpaused\t`, policies)
	require.Regexp(t, `(?m)^pausedfor\t\w+\tpaused-until=`, policies)
	require.Regexp(t, `(?m)^retries\texplicit\tactive\tmax_attempts=3 backoff=1h0m0s `, policies)

	// The dead letter, the job waiting for its retry, the retained result.
	dead := c.AdminList("deadletters dies")
	require.Len(t, dead, 1)
	require.True(t, strings.HasPrefix(dead[0], dies+"\t"), "%q", dead)
	require.Equal(t, "retry-wait", c.record(retries)["state"])
	require.Equal(t, "OK 10\nthe result", c.result("unique:k"), "the retained result after the restart")
	require.Equal(t, kept, c.submit(gearman.SubmitJobBg, "kept", "k", "x"),
		"a submit with a retained result's unique answers the finished job")
	require.Equal(t, "cancelled", c.record(cancelled)["state"])
	require.Equal(t, "scheduled", c.record(epoch)["state"])
	require.Equal(t, "scheduled", c.record(sched)["state"])
	require.Equal(t, "waiting", c.record(waiting)["state"])
	require.Equal(t, normal, c.submit(gearman.SubmitJobBg, "prio", "normal", "again"), "a submit with a live job's unique")
	require.Contains(t, c.AdminList("batch "+batch), "pending\t1")

	// What a worker gets now: the jobs of prio by priority, then the job
	// that waited for the high one, the batch's job and its callback;
	// never a paused, scheduled or cancelled job.
	w = dialFeatures(t, srv)
	for _, fn := range []string{"prio", "paused", "pausedfor", "cancelled", "later", "dies", "retries"} {
		w.Send(gearman.CanDo, fn)
	}
	var order, prio []string
	for {
		handle, fn, _ := w.grab()
		if handle == "" {
			break
		}
		order = append(order, handle)
		if fn == "prio" {
			prio = append(prio, handle)
		}
		w.Send(gearman.WorkComplete, handle, "")
		if handle == high {
			testwait.Until(t, "the job waiting for "+high+" to be released once it completed",
				func() bool { return c.record(waiting)["state"] != "waiting" })
		}
	}
	require.Equal(t, []string{high, normal, low}, prio, "jobs of prio handed out after the restart")
	require.ElementsMatch(t, []string{high, normal, low, waiting}, order, "jobs handed out after the restart")
	require.Greater(t, slices.Index(order, waiting), slices.Index(order, high), "the job waiting for another ran first: %v", order)
	require.Equal(t, "queued", c.record(paused)["state"])
	require.Equal(t, "queued", c.record(fence)["state"])
	require.Equal(t, "queued", c.record(pausedFor)["state"])
	for h := range limited {
		require.Equal(t, "queued", c.record(h)["state"])
	}
	require.Equal(t, "queued", c.record(inBatch)["state"])
}
