package compat

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/gearman"
	"github.com/gearwork/gearwork/internal/testwait"
)

// Lifecycle features end to end: "gearwork serve --config" with retry
// policies, dead letters, retained results, ordering and a cron schedule,
// driven by Debian's gearman client and worker (libgearman) and raw
// Gearman packets, and all of that state kept across a SIGKILL.

const configYAML = `
functions:
  flaky:
    max_attempts: 2
    backoff: 10ms
    backoff_jitter: -1
    result_retention: 1h
schedules:
  - name: heartbeat
    function: ping
    cron: "@every 1s"
    payload: beat
`

// writeConfig writes yaml to a configuration file and returns its path.
func writeConfig(t *testing.T, yaml string) string {
	t.Helper()
	cfg := filepath.Join(t.TempDir(), "gearwork.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte(yaml), 0o600))
	return cfg
}

// gearmanOutput runs Debian's gearman tool against s to completion and
// returns what it wrote (stdout, then stderr).
func gearmanOutput(t *testing.T, s *server, args ...string) string {
	t.Helper()
	p := gearmanCLI(t, s, "", args...)
	out, err := p.wait(t)
	require.NoError(t, err, "gearman %v: %s%s", args, out, p.stderr.String())
	return out + p.stderr.String()
}

// echoSync is an ECHO round trip: the server has handled what c sent
// before, and answered nothing else.
func (c *rawConn) echoSync() {
	c.T.Helper()
	c.Send(gearman.EchoReq, "sync")
	c.Expect(gearman.EchoRes, "sync")
}

// The config file's retry policy applies to a job from libgearman's client:
// it fails twice and becomes a dead letter; retried from the admin port, it
// completes and its retained result answers a re-submit. The config's cron
// schedule feeds libgearman's worker.
func TestServeWithConfig(t *testing.T) {
	t.Parallel()
	s := startGearwork(t, "--config", writeConfig(t, configYAML), "--log-level", "debug")
	pol := admin(t, s, "show policy flaky")
	require.Len(t, pol, 1)
	require.Contains(t, pol[0], "flaky\texplicit\tactive\tmax_attempts=2 backoff=10ms ")
	sched := admin(t, s, "show schedules")
	require.Len(t, sched, 1)
	require.True(t, strings.HasPrefix(sched[0], "heartbeat\tping\t@every 1s\t"), sched[0])

	gearmanOutput(t, s, "-b", "-f", "flaky", "-u", "k1", "data")
	w := rawWorker(t, s, "flaky")
	a := w.grabAfterSleep()
	h := a[0]
	require.Equal(t, []string{h, "flaky", "k1", "data"}, a)
	w.Send(gearman.WorkFail, h)
	// The retry comes after its backoff and wakes the sleeping worker.
	require.Equal(t, []string{h, "flaky", "k1", "data"}, w.grabAfterSleep())
	w.Send(gearman.WorkException, h, "still broken")
	w.echoSync()

	dl := admin(t, s, "deadletters flaky")
	require.Len(t, dl, 1)
	require.True(t, strings.HasPrefix(dl[0], h+"\tflaky\tk1\t2\t"), dl[0])
	require.True(t, strings.HasSuffix(dl[0], "\t\"still broken\""), dl[0])
	require.Equal(t, []string{"OK 1"}, admin(t, s, "deadletter retry all flaky"))
	require.Equal(t, []string{h, "flaky", "k1", "data"}, w.grabAfterSleep())
	w.Send(gearman.WorkComplete, h, "fixed")
	w.echoSync()

	require.Equal(t, "fixed", strings.TrimSpace(gearmanOutput(t, s, "-f", "flaky", "-u", "k1", "data")))
	require.Empty(t, admin(t, s, "deadletters"))

	// The heartbeat schedule submits a job every second; libgearman's
	// worker runs one.
	out := gearmanOutput(t, s, "-w", "-f", "ping", "-c", "1", "--", "cat")
	require.Empty(t, out)
	sched = admin(t, s, "show schedules")
	require.NotContains(t, sched[0], "\t-\t", "the schedule has a last tick")
}

const restartYAML = `
functions:
  flaky:
    max_attempts: 3
    backoff: 1h
    backoff_max: 1h
    backoff_jitter: -1
  once:
    max_attempts: 1
  kept:
    result_retention: 1h
  ordered:
    ordering: unique-prefix
schedules:
  - name: heartbeat
    function: ping
    cron: "@every 1s"
    payload: beat
`

// startDurable serves cfg on the Pebble store in dir.
func startDurable(t *testing.T, cfg, dir string) *server {
	t.Helper()
	return startGearwork(t, "--config", cfg, "--store", "pebble:"+dir)
}

// TestLifecycleSurvivesSIGKILL puts jobs into every lifecycle state the
// store keeps (retry-wait, dead letter, retained result, ordered and held
// by a worker, a cron schedule's last tick), kills the server with SIGKILL
// and checks that a new server on the same data directory has all of them.
func TestLifecycleSurvivesSIGKILL(t *testing.T) {
	t.Parallel()
	cfg := writeConfig(t, restartYAML)
	dir := filepath.Join(t.TempDir(), "data")
	s := startDurable(t, cfg, dir)

	c := dialRaw(t, s)
	retryH := c.submit(gearman.SubmitJobBg, "flaky", "r1", "try again later")
	deadH := c.submit(gearman.SubmitJobBg, "once", "d1", "will die")
	keptH := c.submit(gearman.SubmitJobBg, "kept", "k1", "keep my result")
	first := c.submit(gearman.SubmitJobBg, "ordered", "acct:1", "first")
	second := c.submit(gearman.SubmitJobBg, "ordered", "acct:2", "second")

	w := rawWorker(t, s, "flaky", "once", "kept", "ordered")
	held := map[string]bool{}
	for range 4 {
		a := w.grabAfterSleep()
		held[a[0]] = true
		switch a[0] {
		case retryH:
			w.Send(gearman.WorkFail, a[0]) // waits an hour before its next attempt
		case deadH:
			w.Send(gearman.WorkException, a[0], "boom") // out of attempts: a dead letter
		case keptH:
			w.Send(gearman.WorkComplete, a[0], "the result")
		case first:
			// Held by this worker when the server dies.
		default:
			t.Fatalf("unexpected job %q (the ordered second job must wait for the first)", a)
		}
	}
	require.True(t, held[first])
	// A job with no policy completes: its record is written with its
	// removal.
	plainH := c.submit(gearman.SubmitJobBg, "plain", "p1", "no policy")
	w.Send(gearman.CanDo, "plain")
	pa := w.grabAfterSleep()
	require.Equal(t, plainH, pa[0])
	w.Send(gearman.WorkComplete, plainH, "plain result")
	w.echoSync()
	require.Equal(t, []string{"OK"}, admin(t, s, "policy kept max_attempts=7"))
	require.Len(t, admin(t, s, "deadletters once"), 1)
	// The heartbeat's function has no worker: a job of it shows that the
	// schedule fired. (The schedule's "last tick" is no sign: a new
	// schedule shows the time it started.) The tick is recorded once its
	// job is stored, which the server logs.
	testwait.Until(t, "the heartbeat's job to be stored", func() bool {
		return status(t, s)["ping"].Total > 0 && strings.Contains(s.log.String(), `msg="broker: cron tick submitted" schedule=heartbeat`)
	})
	// State changes are written by the group committer in submission
	// order: once a later background submit is acknowledged (stored), the
	// results above and the recorded tick are stored too. Without this
	// barrier a kill may land between a WORK_COMPLETE and its record (the
	// job would rightly run again after the restart: at-least-once), or
	// before the tick's record (the new server would then start the
	// schedule afresh instead of catching up).
	c.submit(gearman.SubmitJobBg, "barrier", "", "")

	require.NoError(t, s.cmd.Process.Kill()) // SIGKILL: no flush, no goodbye
	s.waitExit(t)
	// The server stays down over one whole tick of the heartbeat (every
	// second, at whole seconds), which the new server must catch up on
	// (missed ticks default to "all") from the last tick it stored: a
	// server that forgot it would start the schedule afresh and skip it.
	missed := time.Now().Truncate(time.Second).Add(time.Second)
	time.Sleep(time.Until(missed) + 50*time.Millisecond) // downtime, not a wait for an event

	s2 := startDurable(t, cfg, dir)
	missedUnique := fmt.Sprintf("heartbeat:%d", missed.Unix())
	c0 := dialRaw(t, s2)
	c0.Send(gearman.GetStatusUnique, missedUnique)
	cmd0, args0 := c0.Read()
	require.Equal(t, gearman.StatusResUnique, cmd0)
	require.Equal(t, []string{missedUnique, "1"}, args0[:2], "the tick missed while the server was down is caught up on")

	rec := strings.Join(admin(t, s2, "job "+plainH), "\n")
	require.Contains(t, rec, "state\tcomplete\nfinal\ttrue", "the completed job's record survives, and the job is not queued again")

	dl := admin(t, s2, "deadletters once")
	require.Len(t, dl, 1, "the dead letter survives")
	require.True(t, strings.HasPrefix(dl[0], deadH+"\tonce\td1\t1\t"), dl[0])
	require.True(t, strings.HasSuffix(dl[0], "\t\"boom\""), dl[0])

	adm2 := dialRaw(t, s2)
	_, err := adm2.NC.Write([]byte("result unique:k1\n"))
	require.NoError(t, err)
	line, err := adm2.R.ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "OK 10\n", line, "the retained result survives")
	data, err := adm2.R.ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "the result\n", data)

	// The retry-waiting job is known, with its attempt counted, and not
	// handed out before its backoff ends.
	c2 := dialRaw(t, s2)
	c2.Send(gearman.GetStatus, retryH)
	cmd, args := c2.Read()
	require.Equal(t, gearman.StatusRes, cmd)
	require.Equal(t, []string{retryH, "1", "0", "0", "0"}, args)

	// The ordered job that was running runs again, before its successor.
	w2 := rawWorker(t, s2, "ordered", "flaky")
	a := w2.grabAfterSleep()
	require.Equal(t, []string{first, "ordered", "acct:1", "first"}, a)
	w2.Send(gearman.GrabJobUniq)
	cmd, args = w2.Read()
	require.Equal(t, gearman.NoJob, cmd, "neither the successor nor the retry-waiting job: %q", args)
	w2.Send(gearman.WorkComplete, first, "done")
	a = w2.grabAfterSleep()
	require.Equal(t, []string{second, "ordered", "acct:2", "second"}, a)
	w2.Send(gearman.WorkComplete, second, "done")
	w2.echoSync()

	// A policy changed at runtime outlives the restart.
	pol := admin(t, s2, "show policy kept")
	require.Len(t, pol, 1)
	require.Contains(t, pol[0], "max_attempts=7 ")
	require.Contains(t, pol[0], "result_retention=1h", "on top of the config file's policy")
}
