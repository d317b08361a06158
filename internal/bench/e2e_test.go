package bench

import (
	"context"
	"errors"
	"fmt"
	"github.com/gearwork/gearwork/internal/testserver"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/gearwork/gearwork/gearman"
	"github.com/gearwork/gearwork/internal/broker"
	"github.com/gearwork/gearwork/internal/gearmantest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// startGearwork runs an in-process Gearwork server on a free loopback port.
func startGearwork(t *testing.T) (string, *broker.Broker) {
	t.Helper()
	s := gearmantest.Start(t)
	return s.Addr(), s.Broker()
}

// tinyConfig keeps every scenario small: correctness, not speed.
func tinyConfig(addr string, pid int) Config {
	return Config{Addr: addr, Jobs: 500, Connections: 2, Inflight: 8, Workers: 3,
		IdleConns: 40, IdleSettle: 10 * time.Millisecond, PID: pid, Timeout: time.Minute}
}

// checkResult checks what every successful result must satisfy.
func checkResult(t *testing.T, cfg Config, res Result) {
	t.Helper()
	want := cfg.Jobs
	if res.Scenario == "idle" {
		want = cfg.IdleConns
	}
	require.Equal(t, want, res.Jobs)
	require.Equal(t, cfg.Addr, res.Server)
	require.Positive(t, res.Elapsed)
	require.Positive(t, res.Rate)
	if res.LatencyOf != "" {
		require.Positive(t, res.P50)
		require.LessOrEqual(t, res.P50, res.P99)
	}
	if cfg.PID != 0 {
		require.Positive(t, res.RSS)
		require.GreaterOrEqual(t, res.CPUPerJob, time.Duration(0))
	}
	if res.Scenario == "memory" || res.Scenario == "idle" {
		require.Positive(t, res.RSSBefore)
	}
	if res.Scenario == "idle" {
		require.Equal(t, cfg.IdleSettle, res.IdleSettle)
		require.Positive(t, res.RSSFile, "the executable's pages are resident")
		require.Less(t, res.RSSFile, res.RSS)
	}
	line := res.Line()
	require.True(t, strings.HasPrefix(line, "scenario="+res.Scenario+" server="+cfg.Addr+" jobs="+strconv.Itoa(want)+" "), line)
	require.NotContains(t, line, "\n")
}

// prepare returns the configuration of scenario name: for verify, a queue
// that memory has just filled with cfg.Jobs checkable jobs (verify then
// takes them all).
func prepare(t *testing.T, cfg Config, name string) Config {
	t.Helper()
	if name != "verify" {
		return cfg
	}
	fill := cfg
	fill.Queue, fill.NoCleanup, fill.Payload = "bench-e2e-verify."+strconv.Itoa(os.Getpid()), true, 100
	_, err := Run(t.Context(), fill, "memory")
	require.NoError(t, err)
	cfg.Queue, cfg.Payload = fill.Queue, fill.Payload
	return cfg
}

func TestScenariosAgainstGearwork(t *testing.T) {
	t.Parallel()
	addr, b := startGearwork(t)
	for _, name := range Scenarios() {
		t.Run(name, func(t *testing.T) {
			// Our own pid stands in for the server's: it is in-process.
			cfg := prepare(t, tinyConfig(addr, os.Getpid()), name)
			res, err := Run(t.Context(), cfg, name)
			require.NoError(t, err)
			checkResult(t, cfg, res)
		})
	}
	// Every scenario cleaned up after itself.
	require.Equal(t, 0, b.JobCount())
}

// TestSteadyWithPipelinedGrabs: steady workers with several grabs in
// flight complete every job once, and the result says how they worked.
func TestSteadyWithPipelinedGrabs(t *testing.T) {
	t.Parallel()
	addr, b := startGearwork(t)
	cfg := tinyConfig(addr, 0)
	cfg.Workers, cfg.Grabs = 3, 4
	res, err := Run(t.Context(), cfg, "steady")
	require.NoError(t, err)
	checkResult(t, cfg, res)
	require.Equal(t, 3, res.Workers)
	require.Equal(t, 4, res.Grabs)
	require.Equal(t, 0, b.JobCount())
}

func TestBacklogAndNoCleanup(t *testing.T) {
	t.Parallel()
	addr, b := startGearwork(t)
	cfg := tinyConfig(addr, 0)
	cfg.Backlog = 300
	res, err := Run(t.Context(), cfg, "submit")
	require.NoError(t, err)
	require.Equal(t, 300, res.Backlog)
	require.Equal(t, 0, b.JobCount(), "backlog and measured jobs were completed")

	cfg.NoCleanup = true
	_, err = Run(t.Context(), cfg, "submit")
	require.NoError(t, err)
	require.Equal(t, 800, b.JobCount(), "NoCleanup leaves the jobs queued")
	var total int
	for _, f := range b.Status(context.Background()) {
		total += f.Total
	}
	require.Equal(t, 800, total)
}

// TestScenariosAgainstGearmand runs every scenario against the C gearmand,
// which the project's test dependencies install.
func TestScenariosAgainstGearmand(t *testing.T) {
	t.Parallel()
	bin := testserver.NeedCommand(t, "/usr/sbin/gearmand")
	addr, pid := startGearmand(t, bin)
	for _, name := range Scenarios() {
		t.Run(name, func(t *testing.T) {
			cfg := prepare(t, tinyConfig(addr, pid), name)
			res, err := Run(t.Context(), cfg, name)
			require.NoError(t, err)
			checkResult(t, cfg, res)
		})
	}
}

func startGearmand(t *testing.T, bin string) (string, int) {
	t.Helper()
	// gearmand takes a port number, not a listener: find a free one.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := ln.Addr().(*net.TCPAddr).Port
	require.NoError(t, ln.Close())
	dir := t.TempDir()
	cmd := exec.Command(bin, "-t", "1", "-L", "127.0.0.1", "-p", strconv.Itoa(port),
		"--log-file", filepath.Join(dir, "gearmand.log"), "--pid-file", filepath.Join(dir, "gearmand.pid"))
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return addr, cmd.Process.Pid
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "gearmand.log"))
			t.Fatalf("gearmand did not listen on %s: %v\n%s", addr, err, log)
		}
		// Poll; gearmand offers no readiness signal.
		time.Sleep(20 * time.Millisecond)
	}
}

// fakeServer answers every binary packet with answer (or never, when
// answer is nil) and returns its address.
func fakeServer(t *testing.T, answer func(p *gearman.Packet) []byte) string {
	addr, _ := fakeServerAccepts(t, answer)
	return addr
}

// fakeServerAccepts is fakeServer that also reports each accepted
// connection on the returned channel (without blocking).
func fakeServerAccepts(t *testing.T, answer func(p *gearman.Packet) []byte) (string, <-chan struct{}) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	done := make(chan struct{})
	conns := make(chan net.Conn, 64)
	accepted := make(chan struct{}, 64)
	go func() {
		defer close(done)
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			conns <- nc
			accepted <- struct{}{}
			go func() {
				r := gearman.NewReader(nc, 4096)
				var f gearman.Frame
				for r.Next(&f) == nil {
					if answer != nil && !f.Text {
						if _, err := nc.Write(answer(&f.Packet)); err != nil {
							return
						}
					}
				}
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		close(conns)
		for nc := range conns {
			nc.Close()
		}
	})
	return ln.Addr().String(), accepted
}

func TestServerErrorFailsScenario(t *testing.T) {
	t.Parallel()
	addr := fakeServer(t, func(p *gearman.Packet) []byte {
		return gearman.AppendPacket(nil, gearman.MagicRes, gearman.Error, []byte("QUEUE_ERROR"), []byte("queue full"))
	})
	_, err := Run(t.Context(), tinyConfig(addr, 0), "submit")
	var se *ServerError
	require.ErrorAs(t, err, &se)
	require.Equal(t, "QUEUE_ERROR", se.Code)
	require.ErrorContains(t, err, "bench submit: server answered ERROR QUEUE_ERROR: queue full")
}

func TestWrongAnswerFailsScenario(t *testing.T) {
	t.Parallel()
	addr := fakeServer(t, func(p *gearman.Packet) []byte {
		return gearman.AppendPacket(nil, gearman.MagicRes, gearman.EchoRes, []byte("not what was sent"))
	})
	_, err := Run(t.Context(), tinyConfig(addr, 0), "echo")
	require.ErrorContains(t, err, "ECHO_RES carries 17 bytes, want the 64 sent")
}

func TestSilentServerTimesOut(t *testing.T) {
	t.Parallel()
	addr := fakeServer(t, nil)
	cfg := tinyConfig(addr, 0)
	cfg.Timeout = 300 * time.Millisecond
	_, err := Run(t.Context(), cfg, "fg1")
	require.ErrorContains(t, err, "bench fg1: timed out after 300ms")
}

func TestIdleSettleCountsAgainstTimeout(t *testing.T) {
	t.Parallel()
	addr, _ := startGearwork(t)
	cfg := tinyConfig(addr, os.Getpid())
	cfg.IdleSettle, cfg.Timeout = time.Hour, 2*time.Second
	_, err := Run(t.Context(), cfg, "idle")
	require.ErrorContains(t, err, "bench idle: timed out after 2s")
}

func TestCancelInterrupts(t *testing.T) {
	t.Parallel()
	addr, accepted := fakeServerAccepts(t, nil)
	ctx, cancel := context.WithCancel(t.Context())
	cfg := tinyConfig(addr, 0)
	cfg.Timeout = time.Hour
	errc := make(chan error, 1)
	go func() {
		_, err := Run(ctx, cfg, "submit")
		errc <- err
	}()
	// Both client connections are up: the run waits for answers that
	// never come, until it is cancelled.
	<-accepted
	<-accepted
	cancel()
	err := <-errc
	require.ErrorIs(t, err, context.Canceled)
	require.ErrorContains(t, err, "bench submit: interrupted")
}

func TestRunRejectsBadInput(t *testing.T) {
	t.Parallel()
	_, err := Run(t.Context(), Config{Addr: "127.0.0.1:1"}, "nope")
	require.ErrorContains(t, err, `unknown scenario "nope"`)
	_, err = Run(t.Context(), Config{Addr: "127.0.0.1:1"}, "memory")
	require.ErrorContains(t, err, "needs the server's pid")
	_, err = Run(t.Context(), Config{}, "echo")
	require.ErrorContains(t, err, "no server address")
	// Nothing listens on port 1.
	_, err = Run(t.Context(), Config{Addr: "127.0.0.1:1", Timeout: 5 * time.Second}, "echo")
	require.Error(t, err)
	require.False(t, errors.Is(err, context.Canceled))
	require.ErrorContains(t, err, fmt.Sprintf("connect to %s", "127.0.0.1:1"))
}
