package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/gearman"
)

// fakeServer answers every binary packet with answer (or never, when
// answer is nil) and returns its address.
func fakeServer(t *testing.T, answer func(p *gearman.Packet) []byte) string {
	addr, _ := fakeServerAccepts(t, answer)
	return addr
}

// fakeServerAccepts is fakeServer that also reports each accepted
// connection on the returned channel (without blocking).
func fakeServerAccepts(t *testing.T, answer func(p *gearman.Packet) []byte) (string, <-chan struct{}) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	done := make(chan struct{})
	conns := make(chan net.Conn, 64)
	accepted := make(chan struct{}, 64)
	go func() {
		defer close(done)
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			conns <- nc
			accepted <- struct{}{}
			go func() {
				r := gearman.NewReader(nc, 4096)
				var f gearman.Frame
				for r.Next(&f) == nil {
					if answer != nil && !f.Text {
						if _, err := nc.Write(answer(&f.Packet)); err != nil {
							return
						}
					}
				}
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		close(conns)
		for nc := range conns {
			nc.Close()
		}
	})
	return ln.Addr().String(), accepted
}

func TestServerErrorFailsScenario(t *testing.T) {
	t.Parallel()
	addr := fakeServer(t, func(p *gearman.Packet) []byte {
		return gearman.AppendPacket(nil, gearman.MagicRes, gearman.Error, []byte("QUEUE_ERROR"), []byte("queue full"))
	})
	_, err := Run(t.Context(), tinyConfig(addr, 0), "submit")
	var se *ServerError
	require.ErrorAs(t, err, &se)
	require.Equal(t, "QUEUE_ERROR", se.Code)
	require.ErrorContains(t, err, "bench submit: server answered ERROR QUEUE_ERROR: queue full")
}

func TestWrongAnswerFailsScenario(t *testing.T) {
	t.Parallel()
	addr := fakeServer(t, func(p *gearman.Packet) []byte {
		return gearman.AppendPacket(nil, gearman.MagicRes, gearman.EchoRes, []byte("not what was sent"))
	})
	_, err := Run(t.Context(), tinyConfig(addr, 0), "echo")
	require.ErrorContains(t, err, "ECHO_RES carries 17 bytes, want the 64 sent")
}

func TestSilentServerTimesOut(t *testing.T) {
	t.Parallel()
	addr := fakeServer(t, nil)
	cfg := tinyConfig(addr, 0)
	cfg.Timeout = 300 * time.Millisecond
	_, err := Run(t.Context(), cfg, "fg1")
	require.ErrorContains(t, err, "bench fg1: timed out after 300ms")
}

func TestIdleSettleCountsAgainstTimeout(t *testing.T) {
	t.Parallel()
	addr, _ := startGearwork(t)
	cfg := tinyConfig(addr, os.Getpid())
	cfg.IdleSettle, cfg.Timeout = time.Hour, 2*time.Second
	_, err := Run(t.Context(), cfg, "idle")
	require.ErrorContains(t, err, "bench idle: timed out after 2s")
}

func TestCancelInterrupts(t *testing.T) {
	t.Parallel()
	addr, accepted := fakeServerAccepts(t, nil)
	ctx, cancel := context.WithCancel(t.Context())
	cfg := tinyConfig(addr, 0)
	cfg.Timeout = time.Hour
	errc := make(chan error, 1)
	go func() {
		_, err := Run(ctx, cfg, "submit")
		errc <- err
	}()
	// Both client connections are up: the run waits for answers that
	// never come, until it is cancelled.
	<-accepted
	<-accepted
	cancel()
	err := <-errc
	require.ErrorIs(t, err, context.Canceled)
	require.ErrorContains(t, err, "bench submit: interrupted")
}

func TestRunRejectsBadInput(t *testing.T) {
	t.Parallel()
	_, err := Run(t.Context(), Config{Addr: "127.0.0.1:1"}, "nope")
	require.ErrorContains(t, err, `unknown scenario "nope"`)
	_, err = Run(t.Context(), Config{Addr: "127.0.0.1:1"}, "memory")
	require.ErrorContains(t, err, "needs the server's pid")
	_, err = Run(t.Context(), Config{}, "echo")
	require.ErrorContains(t, err, "no server address")
	// Nothing listens on port 1.
	_, err = Run(t.Context(), Config{Addr: "127.0.0.1:1", Timeout: 5 * time.Second}, "echo")
	require.Error(t, err)
	require.False(t, errors.Is(err, context.Canceled))
	require.ErrorContains(t, err, fmt.Sprintf("connect to %s", "127.0.0.1:1"))
}
