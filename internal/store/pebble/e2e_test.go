package pebble_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/gearman"
	"github.com/gearwork/gearwork/internal/broker"
	"github.com/gearwork/gearwork/internal/gearmanapi"
	"github.com/gearwork/gearwork/internal/store"
	"github.com/gearwork/gearwork/internal/store/pebble"
)

// client is a minimal Gearman client over one connection.
type client struct {
	t  *testing.T
	nc net.Conn
	r  *gearman.Reader
}

func dial(t *testing.T, addr string) *client {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { nc.Close() })
	return &client{t: t, nc: nc, r: gearman.NewReader(nc, 4096)}
}

// call sends one request and returns the next packet from the server.
func (c *client) call(cmd gearman.Command, args ...string) gearman.Packet {
	c.t.Helper()
	bs := make([][]byte, len(args))
	for i, a := range args {
		bs[i] = []byte(a)
	}
	_, err := c.nc.Write(gearman.AppendPacket(nil, gearman.MagicReq, cmd, bs...))
	require.NoError(c.t, err)
	require.NoError(c.t, c.nc.SetReadDeadline(time.Now().Add(time.Minute)))
	var f gearman.Frame
	require.NoError(c.t, c.r.Next(&f))
	require.False(c.t, f.Text)
	return f.Packet
}

// TestFsyncFailureAnswersError runs the whole path with a disk whose fsync
// fails: the submitter of the job being written gets an ERROR, never
// JOB_CREATED; later background submits are refused even though the disk
// works again; foreground jobs still run; the log says why; and a restart
// recovers the jobs acknowledged before the failure.
func TestFsyncFailureAnswersError(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "data")
	st, fs, logs := openFaulty(t, ctx, dir, pebble.Options{})
	log := slog.New(slog.NewTextHandler(logs, nil))
	b := broker.New(broker.Config{Store: st, Logger: log, HandlePrefix: "H:t:"})
	require.NoError(t, b.Start(ctx))
	srv := gearmanapi.New(gearmanapi.Config{Broker: b, Logger: log})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, ln) }()

	c := dial(t, ln.Addr().String())
	p := c.call(gearman.SubmitJobBg, "f", "", "before")
	require.Equal(t, gearman.JobCreated, p.Command)
	acked := string(p.Args[0])

	fs.failSync.Store(true)
	p = c.call(gearman.SubmitJobBg, "f", "", "during")
	require.Equal(t, gearman.Error, p.Command, "a job whose fsync failed must not be acknowledged")
	require.Equal(t, "QUEUE_ERROR", string(p.Args[0]))
	t.Logf("ERROR %s %s", p.Args[0], p.Args[1])

	fs.failSync.Store(false)
	p = c.call(gearman.SubmitJobBg, "f", "", "after")
	require.Equal(t, gearman.Error, p.Command, "no background job may be accepted after a failed fsync")
	require.Contains(t, string(p.Args[1]), "injected error", "the refusal names the original failure")

	// Foreground jobs do not touch the disk and keep working.
	p = c.call(gearman.SubmitJob, "g", "", "fg")
	require.Equal(t, gearman.JobCreated, p.Command)

	require.Contains(t, logs.String(), "refusing every further write")
	require.Contains(t, logs.String(), "refusing background submits until restart")

	srv.Close()
	require.True(t, errors.Is(<-served, gearmanapi.ErrServerClosed))
	b.Stop()
	_ = st.Close()

	// Restart on a healthy disk: the acknowledged job is there, the one
	// refused before it reached the disk is not.
	st, err = pebble.Open(ctx, dir, pebble.Options{})
	require.NoError(t, err)
	defer st.Close()
	var payloads []string
	require.NoError(t, st.Load(ctx, func(j store.Job) error {
		payloads = append(payloads, string(j.Payload))
		return nil
	}))
	require.Contains(t, payloads, "before")
	require.NotContains(t, payloads, "after")
	t.Logf("stored after restart: %q (acknowledged: %s)", payloads, acked)
}

// TestTieringThroughGearman submits jobs larger than the memory budget
// through the Gearman port and checks that workers get every payload back
// from disk, also after a restart.
func TestTieringThroughGearman(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "data")
	quiet := slog.New(slog.DiscardHandler)
	payloads := map[string]string{}
	for i := range 20 {
		payloads[fmt.Sprintf("u%d", i)] = strings.Repeat(fmt.Sprintf("%02d", i), 5000+i)
	}
	serve := func(fn func(addr string, b *broker.Broker)) {
		st, err := pebble.Open(ctx, dir, pebble.Options{Logger: quiet})
		require.NoError(t, err)
		b := broker.New(broker.Config{Store: st, Logger: quiet, MemoryBudget: 30000})
		require.NoError(t, b.Start(ctx))
		srv := gearmanapi.New(gearmanapi.Config{Broker: b, Logger: quiet})
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		served := make(chan error, 1)
		go func() { served <- srv.Serve(ctx, ln) }()
		fn(ln.Addr().String(), b)
		srv.Close()
		<-served
		b.Stop()
		require.NoError(t, st.Close())
	}
	// grab takes a job, completes it and checks its payload.
	grab := func(c *client) {
		p := c.call(gearman.GrabJobUniq)
		require.Equal(t, gearman.JobAssignUniq, p.Command)
		u, got := string(p.Args[2]), string(p.Args[3])
		want, ok := payloads[u]
		require.True(t, ok, "job %s handed out again", u)
		require.True(t, want == got, "payload of %s: got %d bytes, want %d", u, len(got), len(want))
		delete(payloads, u)
		_, err := c.nc.Write(gearman.AppendPacket(nil, gearman.MagicReq, gearman.WorkComplete, p.Args[0], nil))
		require.NoError(t, err)
	}
	serve(func(addr string, b *broker.Broker) {
		c := dial(t, addr)
		for u, p := range payloads {
			require.Equal(t, gearman.JobCreated, c.call(gearman.SubmitJobBg, "f", u, p).Command)
		}
		inMem, onDisk := b.TieringStats()
		require.LessOrEqual(t, inMem, int64(30000))
		require.Positive(t, onDisk)
		w := dial(t, addr)
		_, err := w.nc.Write(gearman.AppendPacket(nil, gearman.MagicReq, gearman.CanDo, []byte("f")))
		require.NoError(t, err)
		for range 5 { // take some, leave the rest for after the restart
			grab(w)
		}
		w.call(gearman.EchoReq, "sync") // the completions are processed
	})
	serve(func(addr string, b *broker.Broker) {
		_, onDisk := b.TieringStats()
		require.Positive(t, onDisk, "after a restart payloads beyond the budget stay on disk")
		w := dial(t, addr)
		_, err := w.nc.Write(gearman.AppendPacket(nil, gearman.MagicReq, gearman.CanDo, []byte("f")))
		require.NoError(t, err)
		for len(payloads) > 0 {
			grab(w)
		}
	})
}
