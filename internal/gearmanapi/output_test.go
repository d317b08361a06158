package gearmanapi

import (
	"cmp"
	"context"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/gearman"
	"github.com/gearwork/gearwork/internal/gearmantest/wire"
)

// writing reports whether the server is in the middle of a write to the
// client c (a write the peer does not take).
func (tb *secBundle) writing(c *client) bool {
	tb.srv.mu.Lock()
	defer tb.srv.mu.Unlock()
	for sc := range tb.srv.conns {
		if sc.remote == c.NC.LocalAddr().String() {
			return sc.writeStart.Load() != 0
		}
	}
	return false
}

// queued returns how many jobs of function fn the broker holds.
func (tb *secBundle) queued(fn string) int {
	for _, f := range tb.b.Status(context.Background()) {
		if f.Name == fn {
			return f.Total
		}
	}
	return 0
}

// dialSmallWindow connects a client whose receive buffer is set small
// before it connects (so that the window it offers stays small): a
// server's writes to it wait as soon as it stops reading.
func (tb *secBundle) dialSmallWindow(t *testing.T) *client {
	t.Helper()
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 128<<10)
		})
		return cmp.Or(err, serr)
	}}
	nc, err := d.Dial("tcp", tb.addr)
	require.NoError(t, err)
	return &client{wire.New(t, nc)}
}

// TestRequestsWaitForAPeerThatDoesNotRead: a peer that pipelines requests
// whose answers are much larger (admin commands) and does not read them
// is served at its own pace: once more than half of MaxOutput waits for
// it, its next request waits for the answers to be written, instead of
// the server holding every answer (a pipeline of a few kilobytes could
// make it hold hundreds of megabytes). Once the peer reads, everything
// is answered in order.
func TestRequestsWaitForAPeerThatDoesNotRead(t *testing.T) {
	t.Parallel()
	tb := setupListener(t, Config{MaxOutput: 64 << 10, WriteTimeout: time.Hour}, nil)
	w := tb.dial(t)
	for i := range 300 {
		w.Send(gearman.CanDo, strings.Repeat("f", 200)+string(rune('A'+i%26))+strings.Repeat("x", i/26))
	}
	w.echo("registered")

	c := tb.dialSmallWindow(t)
	const statuses = 400
	var pipeline []byte
	for range statuses {
		pipeline = append(pipeline, "status\n"...)
	}
	pipeline = append(pipeline, wire.Request(gearman.SubmitJobBg, "marker", "", "after the statuses")...)
	c.Write(pipeline)

	require.Eventually(t, func() bool { return tb.writing(c) }, time.Minute, time.Millisecond,
		"the statuses' answers wait for the client")
	require.Zero(t, tb.queued("marker"),
		"the submit after the statuses waits until the client reads their answers")

	for range statuses {
		for {
			line := c.Line()
			if line == ".\n" {
				break
			}
			require.True(t, strings.HasPrefix(line, "f"), "a status line: %q", line)
		}
	}
	c.ExpectCmd(gearman.JobCreated)
	require.Equal(t, 1, tb.queued("marker"))
}

// TestRequestsWaitForARunningFlush: while a flusher goroutine waits to
// write event output to a peer that does not read (results of its
// foreground job), the peer's own requests are not answered into an
// unbounded buffer either: past half of MaxOutput the next request waits
// for the flush.
func TestRequestsWaitForARunningFlush(t *testing.T) {
	t.Parallel()
	tb := setupListener(t, Config{MaxOutput: 8 << 20, WriteTimeout: time.Hour}, nil)
	w := tb.dial(t)
	w.Send(gearman.CanDo, "f")
	c := tb.dialSmallWindow(t)
	c.Send(gearman.SubmitJob, "f", "", "job")
	c.ExpectCmd(gearman.JobCreated)
	w.Send(gearman.GrabJob)
	job := w.ExpectCmd(gearman.JobAssign)
	data := strings.Repeat("d", 64<<10)
	// Event output below MaxOutput in all, more than the socket takes:
	// the flusher waits.
	const chunks = 64 // 4 MiB
	for range chunks {
		w.Send(gearman.WorkData, job[0], data)
	}
	require.Eventually(t, func() bool { return tb.writing(c) }, time.Minute, time.Millisecond,
		"the server waits to write to the client")

	const echoes = 160 // 10 MiB of answers, more than MaxOutput
	var pipeline []byte
	for range echoes {
		pipeline = append(pipeline, wire.Request(gearman.EchoReq, data)...)
	}
	pipeline = append(pipeline, wire.Request(gearman.SubmitJobBg, "marker", "", "after the echoes")...)
	wrote := make(chan error, 1)
	go func() { // the server stops reading it midway
		_, err := c.NC.Write(pipeline)
		wrote <- err
	}()
	require.Eventually(t, func() bool { return tb.srv.LimitStats().OutputWaits > 0 }, time.Minute, time.Millisecond,
		"a request waits for the flush")
	w.echo("the worker is served meanwhile")
	require.Zero(t, tb.queued("marker"), "the submit after the echoes waits for the flush")

	for range chunks {
		c.Expect(gearman.WorkData, job[0], data)
	}
	for range echoes {
		c.Expect(gearman.EchoRes, data)
	}
	c.ExpectCmd(gearman.JobCreated)
	require.NoError(t, <-wrote)
	require.Equal(t, 1, tb.queued("marker"))
}
