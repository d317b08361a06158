// Package testserver builds the gearwork binary and runs it as a real
// process for end-to-end tests: the server listens on a free loopback
// port, its log is captured, and it is stopped by its process id.
package testserver

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gearwork/gearwork/internal/procstat"
	"github.com/gearwork/gearwork/internal/testlog"
)

// Server is a running gearwork serve process.
type Server struct {
	// Addr is the Gearman port's host:port.
	Addr string
	// httpAddr receives the HTTP API's host:port once it is logged.
	httpAddr chan string
	cmd      *exec.Cmd
	log      *testlog.Buffer
	done     chan struct{}
	err      error
}

// Start runs "gearwork serve --listen 127.0.0.1:0 --http off --store
// memory:" with extra args (a --store among them wins) and waits until it
// logs that it listens (so --log-level must let info through). Pass
// "--http", "127.0.0.1:0" to turn the HTTP API on (see HTTPAddr). The
// process is stopped when the test ends.
func Start(t testing.TB, args ...string) *Server {
	t.Helper()
	return StartWrapped(t, nil, args...)
}

// StartWrapped is Start with the server run by a wrapper command: wrapper
// followed by the binary and its arguments, for example
// {"sh", "-c", `ulimit -n 256 && exec "$0" "$@"`}. The wrapper must exec
// the server, so that Pid is the server's.
func StartWrapped(t testing.TB, wrapper []string, args ...string) *Server {
	t.Helper()
	return mustStart(t, Binary(t), wrapper, args)
}

// The listening lines, as --log-format text or json writes them.
var (
	listening     = regexp.MustCompile(`msg="serve: listening" addr=(\S+)|"msg":"serve: listening","addr":"([^"]+)"`)
	httpListening = regexp.MustCompile(`msg="serve: HTTP API listening" addr=(\S+)|"msg":"serve: HTTP API listening","addr":"([^"]+)"`)
)

// StartPlain is Start with PlainBinary: a server without the race
// detector, for tests that measure its memory.
func StartPlain(t testing.TB, args ...string) *Server {
	t.Helper()
	return mustStart(t, PlainBinary(t), nil, args)
}

// mustStart starts a server (see start), fails the test if it does not
// come up, and stops it when the test ends.
func mustStart(t testing.TB, bin string, wrapper, args []string) *Server {
	t.Helper()
	s, err := start(t, bin, wrapper, args)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return s
}

func start(t testing.TB, bin string, wrapper, args []string) (*Server, error) {
	argv := append(append(wrapper[:len(wrapper):len(wrapper)], bin, "serve", "--listen", "127.0.0.1:0", "--http", "off", "--store", "memory:"), args...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = Env()
	DieWithTests(cmd)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s := &Server{cmd: cmd, log: &testlog.Buffer{}, done: make(chan struct{}), httpAddr: make(chan string, 1)}
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			_, _ = s.log.Write([]byte(line + "\n"))
			if m := listening.FindStringSubmatch(line); m != nil {
				select {
				case addr <- m[1] + m[2]:
				default:
				}
			}
			if m := httpListening.FindStringSubmatch(line); m != nil {
				select {
				case s.httpAddr <- m[1] + m[2]:
				default:
				}
			}
		}
		_, _ = io.Copy(s.log, stderr)
		s.err = cmd.Wait()
		close(s.done)
	}()
	select {
	case s.Addr = <-addr:
		return s, nil
	case <-s.done:
		return nil, fmt.Errorf("gearwork serve exited before listening (%v):\n%s", s.err, s.log.String())
	case <-time.After(time.Minute):
		s.Kill()
		return nil, fmt.Errorf("gearwork serve did not listen within a minute:\n%s", s.log.String())
	}
}

// HTTPAddr waits until the server logs that its HTTP API listens and
// returns its host:port. It fails the test if the server exits first or
// does not log it within a minute.
func (s *Server) HTTPAddr(t testing.TB) string {
	t.Helper()
	select {
	case a := <-s.httpAddr:
		s.httpAddr <- a // for the next call
		return a
	case <-s.done:
		select {
		case a := <-s.httpAddr:
			s.httpAddr <- a
			return a
		default:
		}
		t.Fatalf("gearwork serve exited before its HTTP API listened (%v):\n%s", s.err, s.log.String())
	case <-time.After(time.Minute):
		t.Fatalf("gearwork serve's HTTP API did not listen within a minute:\n%s", s.log.String())
	}
	return ""
}

// Metric returns the value of the unlabelled metric name (such as
// "go_memstats_heap_alloc_bytes") in the /metrics of the server's HTTP API
// (see HTTPAddr). It fails the test if the metric is not there.
func (s *Server) Metric(t testing.TB, name string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + s.HTTPAddr(t) + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("metric %s: %v", name, err)
			}
			return f
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	t.Fatalf("no %s in /metrics", name)
	return 0
}

// Pid returns the server's process id.
func (s *Server) Pid() int { return s.cmd.Process.Pid }

// Log returns everything the server logged so far.
func (s *Server) Log() string { return s.log.String() }

// Alive reports whether the process still runs.
func (s *Server) Alive() bool {
	select {
	case <-s.done:
		return false
	default:
		return true
	}
}

// Stop sends SIGTERM and waits for the process to exit (killing it after
// a minute). Safe to call twice.
func (s *Server) Stop() {
	if !s.Alive() {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(time.Minute):
		s.Kill()
	}
}

// Done is closed when the process exits.
func (s *Server) Done() <-chan struct{} { return s.done }

// Err returns how the process exited (nil for exit status 0) once it has
// exited, and nil while it runs.
func (s *Server) Err() error {
	if s.Alive() {
		return nil
	}
	return s.err
}

// Kill kills the process and waits for it.
func (s *Server) Kill() {
	_ = s.cmd.Process.Kill()
	<-s.done
}

// Status returns the named fields of /proc/<pid>/status in kB, such as
// "VmRSS" and "VmHWM" (see procstat.Status).
func (s *Server) Status(fields ...string) (map[string]int64, error) {
	return procstat.Status(s.Pid(), fields...)
}
