// Package gearmantest starts Gearman job servers for tests and examples:
// Gearwork's own, in process, and Debian's C gearmand as a child process.
// Both listen on a free loopback port and are stopped by the test.
package gearmantest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/gearwork/gearwork/internal/broker"
	"github.com/gearwork/gearwork/internal/gearmanapi"
)

// Server is an in-process Gearwork server with an in-memory store.
type Server struct {
	addr string
	mu   sync.Mutex
	b    *broker.Broker
	api  *gearmanapi.Server
	done chan error
}

// NewServer starts a server on addr ("127.0.0.1:0" picks a free port).
// Close it when done.
func NewServer(addr string) (*Server, error) {
	s := &Server{}
	if err := s.start(addr); err != nil {
		return nil, err
	}
	return s, nil
}

// Start starts a server on a free loopback port and closes it when the test
// ends.
func Start(tb testing.TB) *Server {
	tb.Helper()
	s, err := NewServer("127.0.0.1:0")
	if err != nil {
		tb.Fatalf("gearmantest: %v", err)
	}
	tb.Cleanup(s.Close)
	return s
}

func (s *Server) start(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", addr, err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	b := broker.New(broker.Config{HandlePrefix: "H:test:", Logger: log})
	if err := b.Start(context.Background()); err != nil {
		ln.Close()
		return err
	}
	api := gearmanapi.New(gearmanapi.Config{Broker: b, Logger: log, Version: "gearwork-test"})
	done := make(chan error, 1)
	go func() { done <- api.Serve(context.Background(), ln) }()
	s.mu.Lock()
	s.addr, s.b, s.api, s.done = ln.Addr().String(), b, api, done
	s.mu.Unlock()
	return nil
}

// Addr returns the server's host:port.
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addr
}

// Broker returns the running broker, for tests that inspect its state.
func (s *Server) Broker() *broker.Broker {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b
}

// Close stops the server: its listener and every connection close, and all
// jobs are lost. Safe to call twice.
func (s *Server) Close() {
	s.mu.Lock()
	api, b, done := s.api, s.b, s.done
	s.api, s.done = nil, nil
	s.mu.Unlock()
	if api == nil {
		return
	}
	api.Close()
	<-done
	b.Stop()
}

// Restart closes the server and starts a new, empty one on the same
// address.
func (s *Server) Restart() error {
	s.Close()
	var err error
	// The port was just released; binding it again can fail briefly.
	for range 50 {
		if err = s.start(s.Addr()); err == nil {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return err
}

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
	if _, err := os.Stat(GearmandPath); err != nil {
		if os.Getenv("GEARWORK_ALLOW_SKIP") == "1" {
			tb.Skipf("gearmand not installed (%v); skipped because GEARWORK_ALLOW_SKIP=1", err)
		}
		tb.Fatalf("gearmand not installed (%v): run scripts/deps.sh (or set GEARWORK_ALLOW_SKIP=1 to skip)", err)
	}
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
	select {
	case <-g.done:
		return
	default:
	}
	_ = g.cmd.Process.Kill()
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
