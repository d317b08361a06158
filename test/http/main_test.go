// Package http_test runs gearwork serve as a process and drives its HTTP
// API with curl, Debian's gearman tool and headless Chromium.
package http_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/internal/testlog"
	"github.com/gearwork/gearwork/internal/testserver"
)

// binary is the gearwork executable built once for all tests.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "gearwork-http-e2e")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "gearwork")
	build := testserver.BuildCommand(binary)
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building gearwork:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// server is a running gearwork serve.
type server struct {
	cmd      *exec.Cmd
	gearman  string // host:port of the Gearman port
	httpAddr string // host:port of the HTTP API
	base     string // http://host:port
	logs     *testlog.Buffer
}

var (
	gearmanAddrRE = regexp.MustCompile(`msg="serve: listening" addr=(\S+)`)
	httpAddrRE    = regexp.MustCompile(`msg="serve: HTTP API listening" addr=(\S+)`)
)

// startServer runs gearwork serve on free loopback ports (port 0; the
// addresses are read from its log) and stops it at the end of the test.
func startServer(t *testing.T, extra ...string) *server {
	t.Helper()
	args := append([]string{"serve", "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--handle-prefix", "H:e2e:", "--store", "memory:"}, extra...)
	cmd := exec.Command(binary, args...)
	cmd.Env = testserver.Env()
	pr, pw := io.Pipe()
	logs := &testlog.Buffer{}
	cmd.Stderr = pw
	cmd.Stdout = logs
	require.NoError(t, cmd.Start())
	s := &server{cmd: cmd, logs: logs}
	found := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(pr)
		closed := false
		for sc.Scan() {
			line := sc.Text()
			logs.Write([]byte(line + "\n"))
			if m := gearmanAddrRE.FindStringSubmatch(line); m != nil {
				s.gearman = m[1]
			}
			if m := httpAddrRE.FindStringSubmatch(line); m != nil {
				s.httpAddr = m[1]
				if !closed {
					closed = true
					close(found)
				}
			}
		}
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			require.NoError(t, err, "gearwork serve exits cleanly on SIGTERM; log:\n%s", logs.String())
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-done
			t.Errorf("gearwork serve did not stop on SIGTERM; log:\n%s", logs.String())
		}
		pw.Close()
		if t.Failed() {
			t.Logf("server log:\n%s", logs.String())
		}
	})
	select {
	case <-found:
	case <-time.After(30 * time.Second):
		t.Fatalf("gearwork serve did not start; log:\n%s", logs.String())
	}
	s.base = "http://" + s.httpAddr
	return s
}

func (s *server) gearmanHostPort() (string, string) {
	i := strings.LastIndexByte(s.gearman, ':')
	return s.gearman[:i], s.gearman[i+1:]
}

// curl runs curl with args and returns its output (headers included when
// -i is given). It fails the test if curl itself fails.
func curl(t *testing.T, ctx context.Context, args ...string) string {
	t.Helper()
	cmd := exec.CommandContext(ctx, "curl", append([]string{"-sS", "--max-time", "60"}, args...)...)
	out, err := cmd.Output()
	var stderr string
	if ee, ok := err.(*exec.ExitError); ok {
		stderr = string(ee.Stderr)
	}
	require.NoError(t, err, "curl %v: %s", args, stderr)
	return string(out)
}

// curlJSON runs curl and decodes its JSON body.
func curlJSON(t *testing.T, ctx context.Context, v any, args ...string) {
	t.Helper()
	out := curl(t, ctx, args...)
	require.NoError(t, json.Unmarshal([]byte(out), v), "body: %s", out)
}

// statusAndBody runs curl -w to get the status code on the last line.
func statusAndBody(t *testing.T, ctx context.Context, args ...string) (int, string) {
	t.Helper()
	out := curl(t, ctx, append(args, "-w", "\n%{http_code}")...)
	i := strings.LastIndexByte(out, '\n')
	var code int
	_, err := fmt.Sscan(out[i+1:], &code)
	require.NoError(t, err)
	return code, out[:i]
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}
