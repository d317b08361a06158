package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/client"
	"github.com/gearwork/gearwork/internal/gearmantest"
	"github.com/gearwork/gearwork/internal/testserver"
	"github.com/gearwork/gearwork/internal/testwait"
	"github.com/gearwork/gearwork/worker"
)

// TestClientCommands builds the gearwork binary (once per test process)
// and runs submit, work and admin against servers started here: Gearwork
// in process and Debian's gearmand.
func TestClientCommands(t *testing.T) {
	t.Parallel()
	bin := testserver.Binary(t)

	for _, kind := range cliServerKinds {
		t.Run("submit/"+kind.name, func(t *testing.T) { t.Parallel(); testSubmitCommand(t, kind) })
		t.Run("admin/"+kind.name, func(t *testing.T) { t.Parallel(); testAdminCommand(t, kind) })
	}
	t.Run("work", func(t *testing.T) { t.Parallel(); testWorkCommand(t, bin) })
	t.Run("admin shutdown", func(t *testing.T) { t.Parallel(); testAdminShutdown(t, bin) })
}

func testSubmitCommand(t *testing.T, kind cliServerKind) {
	srv := kind.start(t)
	cliWorker(t, srv.addr, "", map[string]worker.HandlerFunc{
		"upper": func(_ context.Context, j *worker.Job) ([]byte, error) {
			_ = j.SendStatus(1, 2)
			_ = j.SendData([]byte("chunk:"))
			_ = j.SendWarning([]byte("careful"))
			return bytes.ToUpper(j.Payload), nil
		},
		"fail": func(context.Context, *worker.Job) ([]byte, error) { return nil, errors.New("no") },
		"throw": func(_ context.Context, j *worker.Job) ([]byte, error) {
			return nil, &worker.Exception{Data: append([]byte("bad "), j.Payload...)}
		},
	})
	s := "--servers=" + srv.addr

	out, errOut, code := gw(t, "submit", s, "--priority", "high", "upper", "hello")
	require.Equal(t, 0, code, errOut)
	require.Equal(t, "chunk:HELLO", out)
	require.Equal(t, "status: 1/2\nwarning: careful\n", errOut)

	// The payload from stdin, the server from the environment.
	out, _, code = gwInput(t, "from stdin", []string{"GEARWORK_SERVERS=" + srv.addr}, "submit", "upper", "-")
	require.Equal(t, 0, code)
	require.Equal(t, "chunk:FROM STDIN", out)

	_, errOut, code = gw(t, "submit", s, "fail", "x")
	require.Equal(t, exitJobFailed, code)
	require.Contains(t, errOut, "job failed")

	_, errOut, code = gw(t, "submit", s, "throw", "x")
	require.Equal(t, exitException, code)
	require.Contains(t, errOut, "exception: bad x\n")

	_, errOut, code = gw(t, "submit", s, "--priority", "urgent", "upper")
	require.Equal(t, exitUsage, code)
	require.Contains(t, errOut, "unknown priority")

	// Background, waiting until the job ends: Gearwork reports the outcome
	// from the job's record, gearmand keeps none.
	out, errOut, code = gw(t, "submit", s, "--background", "--wait", "--poll=10ms", "upper", "bg")
	require.Equal(t, 0, code, errOut)
	if srv.ours != nil {
		require.Regexp(t, `^H:\S+\nBG$`, out, "the handle, then the result")
		require.True(t, strings.HasSuffix(errOut, "status: complete\n"), errOut)
		_, errOut, code = gw(t, "submit", s, "--background", "--wait", "--poll=10ms", "throw", "bg")
		require.Equal(t, exitFailed, code, "a failed background job is a dead letter: %s", errOut)
		require.Contains(t, errOut, "status: dead\n")
		require.Contains(t, errOut, "dead after 1 attempts: bad bg")
	} else {
		require.Regexp(t, `^H:\S+\n$`, out)
		require.True(t, strings.HasSuffix(errOut, "status: done\n"), errOut)
	}

	// A scheduled job is held by the server until its time.
	out, errOut, code = gw(t, "submit", s, "--at", "2099-01-02T03:04:05Z", "--unique", "sched-1", "later", "x")
	require.Equal(t, 0, code, errOut)
	handle := strings.TrimSpace(out)
	st, err := gearmantest.NewClient(t, srv.addr).Status(context.Background(), client.Job{Handle: handle, Server: srv.addr})
	require.NoError(t, err)
	require.Equal(t, client.Status{Known: true}, st)
	_, _, code = gw(t, "submit", s, "--at", "tomorrow", "later")
	require.Equal(t, exitUsage, code)

	// No server.
	_, errOut, code = gw(t, "submit", "--servers=127.0.0.1:1", "upper", "x")
	require.Equal(t, exitUnreachable, code)
	require.Contains(t, errOut, "no server available")

	if srv.ours != nil {
		// A refused submit: the queue is full.
		_, _, code = gw(t, "admin", s, "maxqueue", "capped", "1")
		require.Equal(t, 0, code)
		_, _, code = gw(t, "submit", s, "--background", "capped")
		require.Equal(t, 0, code)
		_, errOut, code = gw(t, "submit", s, "--background", "capped")
		require.Equal(t, exitRefused, code)
		require.Contains(t, errOut, "QUEUE_ERROR")
	}
}

func testWorkCommand(t *testing.T, bin string) {
	srv := gearmantest.Start(t)
	dir := t.TempDir()
	script := `p=$(cat)
case "$p" in
fail) echo "bad thing" >&2; exit 3 ;;
progress) echo "status 1 2" >&3; echo "data part one" >&3; echo "nonsense" >&3; printf done ;;
slow*) touch "$DIR/started-$p"; while [ ! -e "$DIR/release" ]; do sleep 0.02; done; printf 'finished %s' "$p" ;;
*) printf '%s:%s' "$GEARWORK_FUNCTION" "$p" | tr a-z A-Z ;;
esac`
	cmd := exec.Command(bin, "work", "--servers="+srv.Addr(), "--concurrency=2", "--client-id=cli-worker",
		"shout", "--", "sh", "-c", script)
	cmd.Env = append(os.Environ(), "DIR="+dir)
	stderr, err := cmd.StderrPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	exited := make(chan error, 1)
	logLines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			select {
			case logLines <- sc.Text():
			default:
			}
		}
		close(logLines)
		exited <- cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
	})

	c := gearmantest.NewClient(t, srv.Addr())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := c.Do(ctx, client.Request{Function: "shout", Payload: []byte("abc")})
	require.NoError(t, err)
	require.Equal(t, "SHOUT:ABC", string(res))

	var warnings []string
	_, err = c.Do(ctx, client.Request{Function: "shout", Payload: []byte("fail"),
		UpdateFunc: func(u client.Update) { warnings = append(warnings, string(u.Data)) }})
	require.ErrorIs(t, err, client.ErrJobFailed)
	require.Equal(t, []string{"bad thing\n"}, warnings)

	// Progress and data on file descriptor 3.
	var updates []string
	res, err = c.Do(ctx, client.Request{Function: "shout", Payload: []byte("progress"),
		UpdateFunc: func(u client.Update) {
			updates = append(updates, fmt.Sprintf("%d %d/%d %s", u.Kind, u.Numerator, u.Denominator, u.Data))
		}})
	require.NoError(t, err)
	require.Equal(t, "done", string(res))
	require.Equal(t, []string{fmt.Sprintf("%d 1/2 ", client.UpdateStatus), fmt.Sprintf("%d 0/0 part one", client.UpdateData)}, updates)

	// A failing background job: its stderr is the dead letter's error.
	bg, err := c.SubmitBackground(ctx, client.Request{Function: "shout", Payload: []byte("fail")})
	require.NoError(t, err)
	testwait.Until(t, "the job to be a dead letter", func() bool {
		dls, err := srv.Broker().DeadLetters(ctx, "shout", 0)
		require.NoError(t, err)
		return len(dls) == 1
	})
	dls, err := srv.Broker().DeadLetters(ctx, "shout", 0)
	require.NoError(t, err)
	require.Equal(t, bg.Handle, dls[0].Handle)
	require.Equal(t, "bad thing\n", dls[0].LastError)
	require.Equal(t, "bad thing\n", dls[0].History[0].Error)

	// Two slow jobs run at once (--concurrency=2); SIGTERM lets them finish.
	var tasks []*client.Task
	for _, p := range []string{"slow1", "slow2"} {
		task, err := c.Submit(ctx, client.Request{Function: "shout", Payload: []byte(p)})
		require.NoError(t, err)
		tasks = append(tasks, task)
	}
	testwait.Until(t, "both slow jobs to start", func() bool {
		_, e1 := os.Stat(filepath.Join(dir, "started-slow1"))
		_, e2 := os.Stat(filepath.Join(dir, "started-slow2"))
		return e1 == nil && e2 == nil
	})
	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	stopping := false
	for l := range logLines {
		if stopping = strings.Contains(l, "work: stopping"); stopping {
			break
		}
	}
	require.True(t, stopping, "the worker logs that it is stopping")
	require.NoError(t, os.WriteFile(filepath.Join(dir, "release"), nil, 0o644))
	for i, task := range tasks {
		res, err := task.Wait(ctx)
		require.NoError(t, err)
		require.Equal(t, fmt.Sprintf("finished slow%d", i+1), string(res))
	}
	require.NoError(t, <-exited, "gearwork work exits 0 after a graceful stop")
}
