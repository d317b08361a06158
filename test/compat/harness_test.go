package compat

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/gearwork/gearwork/internal/gearmantest/wire"
	"github.com/gearwork/gearwork/internal/testlog"
	"github.com/gearwork/gearwork/internal/testserver"
	"github.com/gearwork/gearwork/internal/testwait"
)

// Generous bounds: they only end a test that really hangs.
const (
	// waitTimeout bounds every poll of server state.
	waitTimeout = 60 * time.Second
	// procTimeout bounds every client process the tests run.
	procTimeout = 90 * time.Second
	// ioTimeout bounds every read on a raw connection.
	ioTimeout = 60 * time.Second
)

// handlePrefix makes gearwork's job handles predictable: H:compat:1, ...
const handlePrefix = "H:compat:"

// gearworkBin is the gearwork binary built once by TestMain.
var gearworkBin string

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "gearwork-compat-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "compat:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	gearworkBin = filepath.Join(dir, "gearwork")
	build := testserver.BuildCommand(gearworkBin)
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "compat: building gearwork:", err)
		return 1
	}
	code := m.Run()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "compat: leaked goroutines:", err)
			return 1
		}
	}
	return code
}

// need fails the test when a client program is missing, or skips it when
// GEARWORK_ALLOW_SKIP=1. It returns the program's path.
func need(t *testing.T, program string) string {
	t.Helper()
	return testserver.NeedCommand(t, program)
}

// server is a job server under test, running as a child process.
type server struct {
	// kind is "gearwork" or "gearmand".
	kind string
	// memory is set for a gearwork server on the in-memory store.
	memory bool
	// args are the server's command-line arguments (gearmand's beyond
	// those every test gives it).
	args []string
	addr string
	host string
	port string
	cmd  *exec.Cmd
	log  *testlog.Buffer
	done chan struct{}
}

func (s *server) isGearwork() bool { return s.kind == "gearwork" }

// pid returns the server's process id.
func (s *server) pid() int { return s.cmd.Process.Pid }

// exited reports whether the server process has ended.
func (s *server) exited() bool { return isClosed(s.done) }

// isClosed reports whether done is closed.
func isClosed(done <-chan struct{}) bool {
	select {
	case <-done:
		return true
	default:
		return false
	}
}

// stop ends the server by its pid: SIGTERM, then SIGKILL if it does not
// exit within the bound.
func (s *server) stop(t *testing.T) {
	t.Helper()
	if s.exited() {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(procTimeout):
		_ = s.cmd.Process.Kill()
		<-s.done
		t.Errorf("%s (pid %d) ignored SIGTERM", s.kind, s.pid())
	}
}

// waitExit waits for the server to exit on its own.
func (s *server) waitExit(t *testing.T) {
	t.Helper()
	select {
	case <-s.done:
	case <-time.After(procTimeout):
		t.Fatalf("%s (pid %d) did not exit", s.kind, s.pid())
	}
}

var listeningRE = regexp.MustCompile(`msg="serve: listening" addr=(\S+)`)

// startGearwork starts "gearwork serve" on a free loopback port with the
// default store (Pebble in a directory of the test's, --sync always: a
// background job is acknowledged after its fsync and handed to workers
// before it) and returns once it accepts connections. A "--store" among
// args wins (eachServer also runs each test with "memory:"). The server is
// stopped when the test ends.
func startGearwork(t *testing.T, args ...string) *server {
	t.Helper()
	return launchGearwork(t, append([]string{"serve", "--listen", "127.0.0.1:0", "--store", "pebble:" + filepath.Join(t.TempDir(), "data"),
		"--http", "off", "--handle-prefix", handlePrefix, "--log-level", "info"}, args...))
}

// restartGearwork stops a gearwork server and starts it again with the
// same arguments (so the same store) on the same address.
func restartGearwork(t *testing.T, s *server) *server {
	t.Helper()
	s.stop(t)
	return launchGearwork(t, append(slices.Clone(s.args), "--listen", s.addr))
}

// launchGearwork runs the gearwork binary with args (the last --listen
// wins) and returns once it accepts connections.
func launchGearwork(t *testing.T, args []string) *server {
	t.Helper()
	cmd := exec.Command(gearworkBin, args...)
	cmd.Env = testserver.Env()
	testserver.DieWithTests(cmd)
	pr, pw := io.Pipe()
	logBuf := &testlog.Buffer{}
	cmd.Stdout = logBuf
	cmd.Stderr = io.MultiWriter(logBuf, pw)
	require.NoError(t, cmd.Start())
	s := &server{kind: "gearwork", cmd: cmd, log: logBuf, done: make(chan struct{}),
		memory: slices.Contains(args, "memory:"), args: args}
	go func() {
		_ = cmd.Wait()
		pw.Close()
		close(s.done)
	}()
	addrc := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		sent := false
		for sc.Scan() {
			if m := listeningRE.FindStringSubmatch(sc.Text()); m != nil && !sent {
				addrc <- m[1]
				sent = true
			}
		}
		_, _ = io.Copy(io.Discard, pr)
		close(addrc)
	}()
	t.Cleanup(func() {
		s.stop(t)
		if t.Failed() {
			t.Logf("gearwork log:\n%s", s.log.String())
		}
	})
	select {
	case addr, ok := <-addrc:
		if !ok {
			t.Fatalf("gearwork exited before listening:\n%s", logBuf.String())
		}
		s.addr = addr
	case <-time.After(waitTimeout):
		t.Fatalf("gearwork did not start listening:\n%s", logBuf.String())
	}
	// The log line comes after the listener is bound, so connections are
	// accepted from now on. (No probe connection: it would take a session
	// number and make "workers" output depend on scheduling.)
	var err error
	s.host, s.port, err = net.SplitHostPort(s.addr)
	require.NoError(t, err)
	return s
}

// startGearmand starts Debian's C gearmand (1.1.20) on a free loopback port.
func startGearmand(t *testing.T, args ...string) *server {
	t.Helper()
	for attempt := 0; ; attempt++ {
		s, out := launchGearmand(t, freePort(t), args)
		if s != nil {
			return s
		}
		// The port was taken between freePort and gearmand's bind.
		if attempt == 4 {
			t.Fatalf("gearmand did not start:\n%s", out)
		}
	}
}

// restartServer stops a server and starts it again on the same address:
// gearwork with the same arguments (so the same store), gearmand afresh
// (its queue is in memory).
func restartServer(t *testing.T, s *server) *server {
	t.Helper()
	if s.isGearwork() {
		return restartGearwork(t, s)
	}
	s.stop(t)
	var out string
	// The port was just given up; another process may take it meanwhile,
	// which fails the test.
	for attempt := 0; attempt < 5; attempt++ {
		var next *server
		if next, out = launchGearmand(t, s.port, s.args); next != nil {
			return next
		}
	}
	t.Fatalf("gearmand did not start again on port %s:\n%s", s.port, out)
	return nil
}

// launchGearmand runs gearmand on port and returns it once it accepts
// connections, or nil and its output when it exited or did not start
// accepting in time. It is stopped when the test ends.
func launchGearmand(t *testing.T, port string, args []string) (*server, string) {
	t.Helper()
	bin := "/usr/sbin/gearmand"
	if _, err := os.Stat(bin); err != nil {
		if os.Getenv("GEARWORK_ALLOW_SKIP") == "1" {
			t.Skipf("%s is not installed; skipped because GEARWORK_ALLOW_SKIP=1", bin)
		}
		t.Fatalf("%s is not installed: run scripts/deps.sh", bin)
	}
	all := []string{"-p", port, "-L", "127.0.0.1", "--log-file", "none",
		"--pid-file", filepath.Join(t.TempDir(), "gearmand.pid"), "-t", "2"}
	if !slices.Contains(args, "--job-handle-prefix") {
		all = append(all, "--job-handle-prefix", "H:gearmand")
	}
	all = append(all, args...)
	cmd := exec.Command(bin, all...)
	logBuf := &testlog.Buffer{}
	cmd.Stdout, cmd.Stderr = logBuf, logBuf
	require.NoError(t, cmd.Start())
	s := &server{kind: "gearmand", cmd: cmd, log: logBuf, done: make(chan struct{}), args: args,
		host: "127.0.0.1", port: port, addr: net.JoinHostPort("127.0.0.1", port)}
	go func() {
		_ = cmd.Wait()
		close(s.done)
	}()
	if !waitAcceptingOrExit(s) {
		s.stop(t)
		return nil, logBuf.String()
	}
	t.Cleanup(func() {
		s.stop(t)
		if t.Failed() {
			t.Logf("gearmand output:\n%s", s.log.String())
		}
	})
	return s, ""
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	_, port, err := net.SplitHostPort(ln.Addr().String())
	require.NoError(t, err)
	return port
}

// waitAcceptingOrExit polls until the server accepts a connection (true) or
// exits or the bound passes (false).
func waitAcceptingOrExit(s *server) bool {
	deadline := time.Now().Add(waitTimeout)
	for time.Now().Before(deadline) {
		if s.exited() {
			return false
		}
		if s.accepts() {
			return true
		}
		select {
		case <-s.done:
			return false
		case <-time.After(10 * time.Millisecond):
		}
	}
	return false
}

// accepts reports whether the server accepts a connection now.
func (s *server) accepts() bool {
	c, err := net.DialTimeout("tcp", s.addr, time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// eachServer runs f as a subtest against gearwork on its default store
// (Pebble), against gearwork on the in-memory store, and against
// gearmand, so that behavioural differences show up side by side. The
// subtests run in parallel, each with its own server.
func eachServer(t *testing.T, f func(t *testing.T, s *server)) {
	t.Helper()
	t.Run("gearwork", func(t *testing.T) {
		t.Parallel()
		f(t, startGearwork(t))
	})
	t.Run("gearwork-memory", func(t *testing.T) {
		t.Parallel()
		f(t, startGearwork(t, "--store", "memory:"))
	})
	t.Run("gearmand", func(t *testing.T) {
		t.Parallel()
		f(t, startGearmand(t))
	})
}

// startLike starts another server of the kind of s: gearwork on the same
// store kind (a store of its own) and with the same handle prefix, or
// gearmand with the handle prefix H:gearmand2. (gearmand's handles are its
// prefix and a count from 1, so two gearmands with the same prefix, as two
// on one host have by default, give out the same handles; gearwork's
// count starts at its start time in microseconds.)
func startLike(t *testing.T, s *server) *server {
	t.Helper()
	switch {
	case !s.isGearwork():
		return startGearmand(t, "--job-handle-prefix", "H:gearmand2")
	case s.memory:
		return startGearwork(t, "--store", "memory:")
	default:
		return startGearwork(t)
	}
}

// admin sends one text admin command on a new connection and returns the
// answer's lines without line endings. List answers are read up to the
// closing "." line (not included).
func admin(t *testing.T, s *server, command string) []string {
	t.Helper()
	lines, err := tryAdmin(s, command)
	require.NoError(t, err, "admin %q", command)
	return lines
}

func tryAdmin(s *server, command string) ([]string, error) {
	c, err := wire.DialStream(s.addr)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	_ = c.NC.SetDeadline(time.Now().Add(ioTimeout))
	if err := c.Write([]byte(command + "\r\n")); err != nil {
		return nil, err
	}
	return readAdminAnswer(c.R, command)
}

// isListCommand reports whether an admin command answers with lines ended
// by ".".
func isListCommand(command string) bool {
	f := strings.Fields(strings.ToLower(command))
	if len(f) == 0 {
		return false
	}
	switch f[0] {
	case "status", "prioritystatus", "workers", "deadletters", "job":
		return true
	case "show":
		return true
	case "deadletter":
		return len(f) > 1 && f[1] == "show"
	}
	return false
}

// adminAnswerEnds reports whether line, as read (line ending included),
// is the last of the answer to an admin command: the only line of a
// command that is not a list, an ERR line in place of a list, or the "."
// that closes a list.
func adminAnswerEnds(command, line string, first bool) bool {
	return !isListCommand(command) || strings.HasPrefix(line, "ERR ") && first || strings.TrimRight(line, "\r\n") == "."
}

func readAdminAnswer(br *bufio.Reader, command string) ([]string, error) {
	var lines []string
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return lines, fmt.Errorf("reading answer to %q after %q: %w", command, lines, err)
		}
		end := adminAnswerEnds(command, line, len(lines) == 0)
		line = strings.TrimRight(line, "\r\n")
		if end && isListCommand(command) && line == "." {
			return lines, nil
		}
		lines = append(lines, line)
		if end {
			return lines, nil
		}
	}
}

// funcStatus is one line of the "status" admin command.
type funcStatus struct {
	Total, Running, Workers int
}

// status returns the "status" admin answer by function name.
func status(t *testing.T, s *server) map[string]funcStatus {
	t.Helper()
	out := map[string]funcStatus{}
	for _, line := range admin(t, s, "status") {
		f := strings.Split(line, "\t")
		require.Len(t, f, 4, "status line %q", line)
		out[f[0]] = funcStatus{atoi(t, f[1]), atoi(t, f[2]), atoi(t, f[3])}
	}
	return out
}

// waitStatus polls "status" until fn's line equals want.
func waitStatus(t *testing.T, s *server, fn string, want funcStatus) {
	t.Helper()
	var got funcStatus
	testwait.Until(t, fmt.Sprintf("status of %s to become %+v", fn, want), func() bool {
		got = status(t, s)[fn]
		return got == want
	})
}

func atoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	require.NoError(t, err)
	return n
}

// proc is a client or worker process started by a test.
type proc struct {
	name   string
	cmd    *exec.Cmd
	stdout *testlog.Buffer
	stderr *testlog.Buffer
	done   chan struct{}
	err    error
}

// startProc starts a program; it is killed (by its pid) when the test ends
// if it still runs. stdin may be nil.
func startProc(t *testing.T, stdin io.Reader, name string, args ...string) *proc {
	t.Helper()
	return startProcWith(t, func(cmd *exec.Cmd) { cmd.Stdin = stdin }, name, args...)
}

// startProcWith is startProc with setup applied to the command before it
// starts (to set its stdin, directory or environment).
func startProcWith(t *testing.T, setup func(cmd *exec.Cmd), name string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(name, args...)
	p := &proc{name: filepath.Base(name) + " " + strings.Join(args, " "), cmd: cmd,
		stdout: &testlog.Buffer{}, stderr: &testlog.Buffer{}, done: make(chan struct{})}
	setup(cmd)
	cmd.Stdout, cmd.Stderr = p.stdout, p.stderr
	// A killed process's children may keep its output pipes open.
	cmd.WaitDelay = 5 * time.Second
	require.NoError(t, cmd.Start(), "starting %s", p.name)
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			t.Logf("%s: stdout:\n%s\nstderr:\n%s", p.name, p.stdout.String(), p.stderr.String())
		}
	})
	return p
}

// kill ends the process by its pid with SIGKILL and waits for it.
func (p *proc) kill() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Kill()
	<-p.done
}

// exited reports whether the process has ended.
func (p *proc) exited() bool { return isClosed(p.done) }

// wait waits for the process to exit and returns its stdout and exit error.
func (p *proc) wait(t *testing.T) (string, error) {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(procTimeout):
		p.kill()
		t.Fatalf("%s did not exit; stdout:\n%s\nstderr:\n%s", p.name, p.stdout.String(), p.stderr.String())
	}
	return p.stdout.String(), p.err
}

// run runs a program to completion and requires it to succeed.
func run(t *testing.T, stdin io.Reader, name string, args ...string) string {
	t.Helper()
	p := startProc(t, stdin, name, args...)
	out, err := p.wait(t)
	require.NoError(t, err, "%s failed; stderr:\n%s", p.name, p.stderr.String())
	return out
}

// testdata returns the path of a file under testdata.
func testdata(parts ...string) string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(append([]string{filepath.Dir(file), "testdata"}, parts...)...)
}
