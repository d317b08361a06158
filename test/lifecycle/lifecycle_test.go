// Package lifecycle tests Gearwork's lifecycle features end to end: a real
// "gearwork serve --config" process, Debian's gearman client and worker
// (libgearman), and raw Gearman packets.
package lifecycle

import (
	"context"
	"net"
	"os"
	"os/exec"
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
	port string
}

// start runs "gearwork serve --config" on a free port; testserver stops
// it (by its process id) at cleanup.
func start(t *testing.T) *server {
	t.Helper()
	cfg := filepath.Join(t.TempDir(), "gearwork.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte(configYAML), 0o600))
	srv := testserver.Start(t, "--config", cfg, "--log-level", "debug")
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("server log:\n%s", srv.Log())
		}
	})
	_, port, err := net.SplitHostPort(srv.Addr)
	require.NoError(t, err)
	return &server{addr: srv.Addr, port: port}
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

func gearmanCLI(t *testing.T, s *server, args ...string) string {
	t.Helper()
	bin := testserver.NeedCommand(t, "gearman")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, append([]string{"-h", "127.0.0.1", "-p", s.port}, args...)...).CombinedOutput()
	require.NoError(t, err, "gearman %v: %s", args, out)
	return string(out)
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
