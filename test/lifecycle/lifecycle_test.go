// Package lifecycle tests Gearwork's lifecycle features end to end: a real
// "gearwork serve --config" process, Debian's gearman client and worker
// (libgearman), and raw Gearman packets.
package lifecycle

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/gearman"
	"github.com/gearwork/gearwork/internal/gearmantest/wire"
	"github.com/gearwork/gearwork/internal/testserver"
)

func TestMain(m *testing.M) { testserver.Main(m) }

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

type server struct {
	addr string
}

// writeConfig writes yaml to a configuration file and returns its path.
func writeConfig(t *testing.T, yaml string) string {
	t.Helper()
	cfg := filepath.Join(t.TempDir(), "gearwork.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte(yaml), 0o600))
	return cfg
}

// serve runs "gearwork serve --config cfg" with args on a free port and
// shows its log if the test fails; testserver stops it (by its process
// id) at cleanup.
func serve(t *testing.T, cfg string, args ...string) (*testserver.Server, *server) {
	t.Helper()
	srv := testserver.Start(t, append([]string{"--config", cfg}, args...)...)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("server log:\n%s", srv.Log())
		}
	})
	return srv, &server{addr: srv.Addr}
}

// start serves configYAML.
func start(t *testing.T) *server {
	t.Helper()
	_, s := serve(t, writeConfig(t, configYAML), "--log-level", "debug")
	return s
}

// conn is a raw Gearman connection with this package's helpers.
type conn struct{ *wire.Conn }

func (s *server) dial(t *testing.T) *conn {
	t.Helper()
	return &conn{wire.Dial(t, s.addr)}
}

// grabWhenReady grabs a job, sleeping (PRE_SLEEP) until the server sends
// NOOP when there is none yet.
func (c *conn) grabWhenReady() []string {
	c.T.Helper()
	for {
		c.Send(gearman.GrabJobUniq)
		cmd, args := c.Read()
		switch cmd {
		case gearman.JobAssignUniq:
			return args
		case gearman.NoJob:
			c.Send(gearman.PreSleep)
			cmd, _ = c.Read()
			require.Equal(c.T, gearman.Noop, cmd)
		default:
			c.T.Fatalf("unexpected %v %q", cmd, args)
		}
	}
}

func (c *conn) admin(line string) []string {
	c.T.Helper()
	_, err := c.NC.Write([]byte(line + "\n"))
	require.NoError(c.T, err)
	var lines []string
	for {
		l, err := c.R.ReadString('\n')
		require.NoError(c.T, err)
		if l == ".\n" || strings.HasPrefix(l, "OK") || strings.HasPrefix(l, "ERR") {
			if l != ".\n" {
				lines = append(lines, strings.TrimRight(l, "\r\n"))
			}
			return lines
		}
		lines = append(lines, strings.TrimRight(l, "\n"))
	}
}

// gearmanCLI runs Debian's gearman tool against s and returns its output.
func gearmanCLI(t *testing.T, s *server, args ...string) string {
	t.Helper()
	out, err := testserver.GearmanCLI(t, s.addr, args...)
	require.NoError(t, err, "gearman %v: %s", args, out)
	return out
}

// The config file's retry policy applies to a job from libgearman's client:
// it fails twice and becomes a dead letter; retried from the admin port, it
// completes and its retained result answers a re-submit. The config's cron
// schedule feeds libgearman's worker.
func TestServeWithConfig(t *testing.T) {
	t.Parallel()
	s := start(t)
	adm := s.dial(t)
	pol := adm.admin("show policy flaky")
	require.Len(t, pol, 1)
	require.Contains(t, pol[0], "flaky\texplicit\tactive\tmax_attempts=2 backoff=10ms ")
	sched := adm.admin("show schedules")
	require.Len(t, sched, 1)
	require.True(t, strings.HasPrefix(sched[0], "heartbeat\tping\t@every 1s\t"), sched[0])

	gearmanCLI(t, s, "-b", "-f", "flaky", "-u", "k1", "data")
	w := s.dial(t)
	w.Send(gearman.CanDo, "flaky")
	a := w.grabWhenReady()
	h := a[0]
	require.Equal(t, []string{h, "flaky", "k1", "data"}, a)
	w.Send(gearman.WorkFail, h)
	// The retry comes after its backoff and wakes the sleeping worker.
	require.Equal(t, []string{h, "flaky", "k1", "data"}, w.grabWhenReady())
	w.Send(gearman.WorkException, h, "still broken")
	w.Send(gearman.EchoReq, "sync")
	cmd, _ := w.Read()
	require.Equal(t, gearman.EchoRes, cmd)

	dl := adm.admin("deadletters flaky")
	require.Len(t, dl, 1)
	require.True(t, strings.HasPrefix(dl[0], h+"\tflaky\tk1\t2\t"), dl[0])
	require.True(t, strings.HasSuffix(dl[0], "\t\"still broken\""), dl[0])
	require.Equal(t, []string{"OK 1"}, adm.admin("deadletter retry all flaky"))
	require.Equal(t, []string{h, "flaky", "k1", "data"}, w.grabWhenReady())
	w.Send(gearman.WorkComplete, h, "fixed")
	w.Send(gearman.EchoReq, "sync")
	cmd, _ = w.Read()
	require.Equal(t, gearman.EchoRes, cmd)

	require.Equal(t, "fixed", strings.TrimSpace(gearmanCLI(t, s, "-f", "flaky", "-u", "k1", "data")))
	require.Empty(t, adm.admin("deadletters"))

	// The heartbeat schedule submits a job every second; libgearman's
	// worker runs one.
	out := gearmanCLI(t, s, "-w", "-f", "ping", "-c", "1", "--", "cat")
	require.Empty(t, out)
	sched = adm.admin("show schedules")
	require.NotContains(t, sched[0], "\t-\t", "the schedule has a last tick")
}

const restartYAML = `
functions:
  flaky:
    max_attempts: 3
    backoff: 1h
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
func startDurable(t *testing.T, cfg, dir string) (*testserver.Server, *server) {
	t.Helper()
	return serve(t, cfg, "--store", "pebble:"+dir, "--log-level", "info")
}

func (c *conn) sync() {
	c.T.Helper()
	c.Send(gearman.EchoReq, "sync")
	cmd, _ := c.Read()
	require.Equal(c.T, gearman.EchoRes, cmd)
}

func (c *conn) submitBg(fn, unique, payload string) string {
	c.T.Helper()
	c.Send(gearman.SubmitJobBg, fn, unique, payload)
	cmd, args := c.Read()
	require.Equal(c.T, gearman.JobCreated, cmd, "%q", args)
	return args[0]
}

// TestLifecycleSurvivesSIGKILL puts jobs into every lifecycle state the
// store keeps (retry-wait, dead letter, retained result, ordered and held
// by a worker, a cron schedule's last tick), kills the server with SIGKILL
// and checks that a new server on the same data directory has all of them.
func TestLifecycleSurvivesSIGKILL(t *testing.T) {
	t.Parallel()
	cfg := writeConfig(t, restartYAML)
	dir := filepath.Join(t.TempDir(), "data")
	proc, s := startDurable(t, cfg, dir)

	c := s.dial(t)
	retryH := c.submitBg("flaky", "r1", "try again later")
	deadH := c.submitBg("once", "d1", "will die")
	keptH := c.submitBg("kept", "k1", "keep my result")
	first := c.submitBg("ordered", "acct:1", "first")
	second := c.submitBg("ordered", "acct:2", "second")

	w := s.dial(t)
	for _, fn := range []string{"flaky", "once", "kept", "ordered"} {
		w.Send(gearman.CanDo, fn)
	}
	held := map[string]bool{}
	for range 4 {
		a := w.grabWhenReady()
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
	plainH := c.submitBg("plain", "p1", "no policy")
	w.Send(gearman.CanDo, "plain")
	pa := w.grabWhenReady()
	require.Equal(t, plainH, pa[0])
	w.Send(gearman.WorkComplete, plainH, "plain result")
	w.sync()
	require.Equal(t, []string{"OK"}, s.dial(t).admin("policy kept max_attempts=7"))
	// State changes after a result are written by the group committer in
	// submission order: once a later background submit is acknowledged
	// (stored), the results above are stored too. Without this barrier a
	// kill may land between a WORK_COMPLETE and its record, and the job
	// would rightly run again after the restart (at-least-once).
	c.submitBg("barrier", "", "")

	adm := s.dial(t)
	require.Len(t, adm.admin("deadletters once"), 1)
	require.True(t, waitForTick(adm), "the heartbeat schedule ticked")

	proc.Kill() // SIGKILL: no flush, no goodbye
	// The server stays down over one whole tick of the heartbeat (every
	// second, at whole seconds), which the new server must catch up on
	// (missed ticks default to "all") from the last tick it stored: a
	// server that forgot it would start the schedule afresh and skip it.
	missed := time.Now().Truncate(time.Second).Add(time.Second)
	time.Sleep(time.Until(missed) + 50*time.Millisecond) // downtime, not a wait for an event

	_, s2 := startDurable(t, cfg, dir)
	adm2 := s2.dial(t)
	missedUnique := fmt.Sprintf("heartbeat:%d", missed.Unix())
	c0 := s2.dial(t)
	c0.Send(gearman.GetStatusUnique, missedUnique)
	cmd0, args0 := c0.Read()
	require.Equal(t, gearman.StatusResUnique, cmd0)
	require.Equal(t, []string{missedUnique, "1"}, args0[:2], "the tick missed while the server was down is caught up on")

	rec := strings.Join(adm2.admin("job "+plainH), "\n")
	require.Contains(t, rec, "state\tcomplete\nfinal\ttrue", "the completed job's record survives, and the job is not queued again")

	dl := adm2.admin("deadletters once")
	require.Len(t, dl, 1, "the dead letter survives")
	require.True(t, strings.HasPrefix(dl[0], deadH+"\tonce\td1\t1\t"), dl[0])
	require.True(t, strings.HasSuffix(dl[0], "\t\"boom\""), dl[0])

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
	c2 := s2.dial(t)
	c2.Send(gearman.GetStatus, retryH)
	cmd, args := c2.Read()
	require.Equal(t, gearman.StatusRes, cmd)
	require.Equal(t, []string{retryH, "1", "0", "0", "0"}, args)

	// The ordered job that was running runs again, before its successor.
	w2 := s2.dial(t)
	w2.Send(gearman.CanDo, "ordered")
	w2.Send(gearman.CanDo, "flaky")
	a := w2.grabWhenReady()
	require.Equal(t, []string{first, "ordered", "acct:1", "first"}, a)
	w2.Send(gearman.GrabJobUniq)
	cmd, args = w2.Read()
	require.Equal(t, gearman.NoJob, cmd, "neither the successor nor the retry-waiting job: %q", args)
	w2.Send(gearman.WorkComplete, first, "done")
	a = w2.grabWhenReady()
	require.Equal(t, []string{second, "ordered", "acct:2", "second"}, a)
	w2.Send(gearman.WorkComplete, second, "done")
	w2.sync()

	// A policy changed at runtime outlives the restart.
	pol := adm2.admin("show policy kept")
	require.Len(t, pol, 1)
	require.Contains(t, pol[0], "max_attempts=7 ")
	require.Contains(t, pol[0], "result_retention=1h", "on top of the config file's policy")
}

// waitForTick polls until the heartbeat schedule (every second) has fired:
// its function, which has no worker, has a job. (The schedule's "last
// tick" is no sign: a new schedule shows the time it started.) The bound
// only catches a schedule that never fires.
func waitForTick(c *conn) bool {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		for _, l := range c.admin("status") {
			if f := strings.Split(l, "\t"); len(f) > 1 && f[0] == "ping" && f[1] != "0" {
				return true
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}
