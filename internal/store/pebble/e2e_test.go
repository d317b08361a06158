package pebble_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/gearman"
	"github.com/gearwork/gearwork/internal/broker"
	"github.com/gearwork/gearwork/internal/gearmanapi"
	"github.com/gearwork/gearwork/internal/gearmantest/wire"
	"github.com/gearwork/gearwork/internal/store/pebble"
)

// serveGearman serves the Gearman protocol for b, which is started, on a
// free loopback port. It returns the address and a stop that closes the
// server and returns what Serve returned.
func serveGearman(t *testing.T, b *broker.Broker, log *slog.Logger) (addr string, stop func() error) {
	t.Helper()
	srv := gearmanapi.New(gearmanapi.Config{Broker: b, Logger: log})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(context.Background(), ln) }()
	return ln.Addr().String(), func() error {
		srv.Close()
		return <-served
	}
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
	addr, stop := serveGearman(t, b, log)

	c := wire.Dial(t, addr)
	c.Send(gearman.SubmitJobBg, "f", "", "before")
	cmd, args := c.Read()
	require.Equal(t, gearman.JobCreated, cmd)
	acked := args[0]

	fs.failSync.Store(true)
	c.Send(gearman.SubmitJobBg, "f", "", "during")
	cmd, args = c.Read()
	require.Equal(t, gearman.Error, cmd, "a job whose fsync failed must not be acknowledged")
	require.Equal(t, "QUEUE_ERROR", args[0])
	t.Logf("ERROR %s %s", args[0], args[1])

	fs.failSync.Store(false)
	c.Send(gearman.SubmitJobBg, "f", "", "after")
	cmd, args = c.Read()
	require.Equal(t, gearman.Error, cmd, "no background job may be accepted after a failed fsync")
	require.Contains(t, args[1], "injected error", "the refusal names the original failure")

	// Foreground jobs do not touch the disk and keep working.
	c.Send(gearman.SubmitJob, "g", "", "fg")
	cmd, _ = c.Read()
	require.Equal(t, gearman.JobCreated, cmd)

	require.Contains(t, logs.String(), "refusing every further write")
	require.Contains(t, logs.String(), "refusing background submits until restart")

	require.ErrorIs(t, stop(), gearmanapi.ErrServerClosed)
	b.Stop()
	_ = st.Close()

	// Restart on a healthy disk: the acknowledged job is there, the one
	// refused before it reached the disk is not.
	var payloads []string
	for _, j := range reopen(t, dir) {
		payloads = append(payloads, string(j.Payload))
	}
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
		addr, stop := serveGearman(t, b, quiet)
		fn(addr, b)
		_ = stop()
		b.Stop()
		require.NoError(t, st.Close())
	}
	// worker registers a connection for f and returns it with a grab that
	// takes a job, completes it and checks its payload.
	worker := func(addr string) (w *wire.Conn, grab func()) {
		w = wire.Dial(t, addr)
		w.Send(gearman.CanDo, "f")
		return w, func() {
			w.Send(gearman.GrabJobUniq)
			cmd, args := w.Read()
			require.Equal(t, gearman.JobAssignUniq, cmd)
			u, got := args[2], args[3]
			want, ok := payloads[u]
			require.True(t, ok, "job %s handed out again", u)
			require.True(t, want == got, "payload of %s: got %d bytes, want %d", u, len(got), len(want))
			delete(payloads, u)
			w.Send(gearman.WorkComplete, args[0], "")
		}
	}
	serve(func(addr string, b *broker.Broker) {
		c := wire.Dial(t, addr)
		for u, p := range payloads {
			c.Send(gearman.SubmitJobBg, "f", u, p)
			cmd, _ := c.Read()
			require.Equal(t, gearman.JobCreated, cmd)
		}
		inMem, onDisk := b.TieringStats()
		require.LessOrEqual(t, inMem, int64(30000))
		require.Positive(t, onDisk)
		w, grab := worker(addr)
		for range 5 { // take some, leave the rest for after the restart
			grab()
		}
		// The completions are processed once the echo comes back.
		w.Send(gearman.EchoReq, "sync")
		w.Expect(gearman.EchoRes, "sync")
	})
	serve(func(addr string, b *broker.Broker) {
		_, onDisk := b.TieringStats()
		require.Positive(t, onDisk, "after a restart payloads beyond the budget stay on disk")
		_, grab := worker(addr)
		for len(payloads) > 0 {
			grab()
		}
	})
}
