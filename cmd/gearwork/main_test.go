package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/internal/gearmantest"
	"github.com/gearwork/gearwork/internal/store/postgres/pgtest"
	"github.com/gearwork/gearwork/internal/testserver"
	"github.com/gearwork/gearwork/worker"
)

func TestMain(m *testing.M) { testserver.Main(m, pgtest.Cleanup) }

// cliServer is a job server started for a test.
type cliServer struct {
	addr string
	pid  int
	ours *gearmantest.Server // nil for gearmand
}

// cliServerKind starts one kind of job server for the client commands.
type cliServerKind struct {
	name  string
	start func(t *testing.T) cliServer
}

// cliServerKinds are the servers the client commands are tested against:
// Gearwork in process and Debian's gearmand.
var cliServerKinds = []cliServerKind{
	{"gearwork", func(t *testing.T) cliServer {
		s := gearmantest.Start(t)
		return cliServer{addr: s.Addr(), pid: os.Getpid(), ours: s}
	}},
	{"gearmand", func(t *testing.T) cliServer {
		g := gearmantest.StartGearmand(t)
		return cliServer{addr: g.Addr, pid: g.Pid()}
	}},
}

// gw runs the gearwork binary (testserver.Binary) with args and returns
// its stdout, stderr and exit code.
func gw(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	return gwInput(t, "", nil, args...)
}

// gwInput is gw with stdin and variables added to the environment.
func gwInput(t *testing.T, stdin string, env []string, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, testserver.Binary(t), args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatalf("running gearwork %v: %v", args, err)
	}
	return stdout.String(), stderr.String(), code
}

// cliWorker starts a worker (four slots, the given client id) serving fns
// until the test ends.
func cliWorker(t *testing.T, addr, clientID string, fns map[string]worker.HandlerFunc) {
	t.Helper()
	w := gearmantest.NewWorker(t, worker.Config{Servers: []string{addr}, Concurrency: 4, ClientID: clientID})
	for name, f := range fns {
		w.Handle(name, f)
	}
	require.NoError(t, w.Start(context.Background()))
}

// startLogged starts cmd and sends each line it writes to stderr to lines,
// which holds up to 256 unread ones (more are dropped) and is closed when
// the process closes its stderr; exited then receives cmd.Wait's result.
// The process is killed (by its pid) when the test ends.
func startLogged(t *testing.T, cmd *exec.Cmd) (lines <-chan string, exited <-chan error) {
	t.Helper()
	stderr, err := cmd.StderrPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	out := make(chan string, 256)
	done := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			select {
			case out <- sc.Text():
			default:
			}
		}
		close(out)
		done <- cmd.Wait()
	}()
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	return out, done
}
