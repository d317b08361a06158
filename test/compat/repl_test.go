package compat

import (
	"bufio"
	"encoding/json"
	"io"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/internal/testlog"
)

// repl is a client script that reads one JSON request per line and answers
// each with one JSON line (testdata/php/client.php, testdata/perl/client.pl).
type repl struct {
	t      *testing.T
	name   string
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  chan string
	stderr *testlog.Buffer
	done   chan struct{}
}

func startREPL(t *testing.T, name string, args ...string) *repl {
	t.Helper()
	cmd := exec.Command(name, args...)
	r := &repl{t: t, name: filepath.Base(name) + " " + strings.Join(args, " "), cmd: cmd,
		lines: make(chan string, 16), stderr: &testlog.Buffer{}, done: make(chan struct{})}
	var err error
	r.stdin, err = cmd.StdinPipe()
	require.NoError(t, err)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	cmd.Stderr = r.stderr
	cmd.WaitDelay = 5 * time.Second
	require.NoError(t, cmd.Start())
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		defer close(r.lines)
		br := bufio.NewReaderSize(stdout, 1<<20)
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			r.lines <- line
		}
	}()
	go func() {
		<-readDone
		_ = cmd.Wait()
		close(r.done)
	}()
	t.Cleanup(func() {
		r.stdin.Close()
		select {
		case <-r.done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-r.done
		}
		if t.Failed() {
			t.Logf("%s stderr:\n%s", r.name, r.stderr.String())
		}
	})
	return r
}

// call sends one request and decodes the answer into out.
func (r *repl) call(req map[string]any, out any) {
	r.t.Helper()
	r.callAsync(req)
	r.receive(out)
}

// callAsync sends one request without waiting; receive reads the answer.
func (r *repl) callAsync(req map[string]any) {
	r.t.Helper()
	b, err := json.Marshal(req)
	require.NoError(r.t, err)
	_, err = r.stdin.Write(append(b, '\n'))
	require.NoError(r.t, err, "%s: stderr:\n%s", r.name, r.stderr.String())
}

// background submits a background job of fn and returns its handle.
func (r *repl) background(fn, payload string) string {
	r.t.Helper()
	var bg struct{ Handle string }
	r.call(map[string]any{"op": "bg", "fn": fn, "payload": payload}, &bg)
	return bg.Handle
}

// status asks for the status of the job handle: the client library's
// answer (known, running, numerator, denominator) as JSON values.
func (r *repl) status(handle string) []any {
	r.t.Helper()
	var st struct{ Status []any }
	r.call(map[string]any{"op": "status", "handle": handle}, &st)
	return st.Status
}

func (r *repl) receive(out any) {
	r.t.Helper()
	select {
	case line, ok := <-r.lines:
		require.True(r.t, ok, "%s exited; stderr:\n%s", r.name, r.stderr.String())
		require.NoError(r.t, json.Unmarshal([]byte(line), out), "answer %q", line)
	case <-time.After(procTimeout):
		r.t.Fatalf("%s did not answer; stderr:\n%s", r.name, r.stderr.String())
	}
}
