package gearmantest

import (
	"errors"
	"net"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/gearwork/gearwork/internal/testserver"
)

// GearmandPath is where Debian's gearman-job-server installs gearmand.
const GearmandPath = "/usr/sbin/gearmand"

// Gearmand is a running C gearmand.
type Gearmand struct {
	Addr string
	Port int
	cmd  *exec.Cmd
	done chan struct{}
}

// StartGearmand starts /usr/sbin/gearmand on a free loopback port with the
// given extra arguments and stops it (by its pid) when the test ends. If
// gearmand is not installed the test fails (scripts/deps.sh installs it),
// or is skipped when GEARWORK_ALLOW_SKIP=1.
func StartGearmand(tb testing.TB, args ...string) *Gearmand {
	tb.Helper()
	testserver.NeedCommand(tb, GearmandPath)
	var lastErr error
	for range 5 {
		g, err := startGearmand(args)
		if err == nil {
			tb.Cleanup(g.Stop)
			return g
		}
		lastErr = err
	}
	tb.Fatalf("gearmantest: cannot start gearmand: %v", lastErr)
	return nil
}

func startGearmand(args []string) (*Gearmand, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	argv := append([]string{"--listen=127.0.0.1", "--port=" + strconv.Itoa(port),
		"--log-file=none", "--threads=1"}, args...)
	cmd := exec.Command(GearmandPath, argv...)
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	g := &Gearmand{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), Port: port, cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(g.done)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-g.done:
			return nil, errors.New("gearmand exited at start (port taken?)")
		default:
		}
		if c, err := net.DialTimeout("tcp", g.Addr, time.Second); err == nil {
			c.Close()
			return g, nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	g.Stop()
	return nil, errors.New("gearmand did not start listening within 10s")
}

// Pid returns gearmand's process id.
func (g *Gearmand) Pid() int { return g.cmd.Process.Pid }

// Stop kills gearmand by its pid and waits for it. Safe to call twice.
func (g *Gearmand) Stop() {
	_ = g.cmd.Process.Kill() // os.ErrProcessDone once it has exited
	<-g.done
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}
