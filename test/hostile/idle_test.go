package hostile_test

import (
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/gearman"
	"github.com/gearwork/gearwork/internal/testserver"
)

// raiseFileLimit raises this process's open file limit (inherited by the
// server it starts) to at least want. If the hard limit is lower the test
// fails, or is skipped when GEARWORK_ALLOW_SKIP=1.
func raiseFileLimit(t *testing.T, want uint64) {
	t.Helper()
	var rl syscall.Rlimit
	require.NoError(t, syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl))
	if rl.Cur >= want {
		return
	}
	if rl.Max < want {
		msg := fmt.Sprintf("open file limit is %d (hard %d); 10k idle connections need %d: raise it with ulimit -n", rl.Cur, rl.Max, want)
		if os.Getenv("GEARWORK_ALLOW_SKIP") == "1" {
			t.Skip(msg + "; skipped because GEARWORK_ALLOW_SKIP=1")
		}
		t.Fatal(msg + " (or set GEARWORK_ALLOW_SKIP=1 to skip)")
	}
	rl.Cur = max(rl.Cur, want)
	require.NoError(t, syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl))
}

// TestTenThousandIdleConnections opens 10,000 connections that each
// complete one ECHO round trip and then stay idle, and checks that the
// server's resident memory (VmRSS: heap, stacks and buffers, and the pages
// of the executable) settles below a generous ceiling of 128 MiB, which
// catches memory held per connection (a 16 KiB buffer each is 156 MiB)
// but not the kernel's and runtime's variations. The goal of 64 MiB is a
// benchmark (BENCHMARKS.md, "gearwork bench --scenario idle"), not this
// test. Connections idle for 2 s give their read buffers back and park
// without a goroutine, and the server returns the freed memory; the check
// polls until then.
func TestTenThousandIdleConnections(t *testing.T) {
	if testing.Short() {
		t.Skip("10k idle connections skipped in -short mode")
	}
	const (
		conns   = 10_000
		ceiling = 128 << 10 // kB
	)
	raiseFileLimit(t, conns+1000)
	srv := testserver.StartPlain(t, "--max-connections", "20000") // memory is measured: no race detector
	before, err := srv.Status("VmRSS", "RssAnon")
	require.NoError(t, err)

	echo := gearman.AppendPacket(nil, gearman.MagicReq, gearman.EchoReq, []byte("idle"))
	want := string(gearman.AppendPacket(nil, gearman.MagicRes, gearman.EchoRes, []byte("idle")))
	got := make([]byte, len(want))
	open := make([]net.Conn, 0, conns)
	defer func() {
		for _, nc := range open {
			nc.Close()
		}
	}()
	for range conns {
		nc, err := net.Dial("tcp", srv.Addr)
		require.NoError(t, err)
		open = append(open, nc)
		require.NoError(t, nc.SetDeadline(time.Now().Add(time.Minute)))
		_, err = nc.Write(echo)
		require.NoError(t, err)
		_, err = io.ReadFull(nc, got)
		require.NoError(t, err)
		require.Equal(t, want, string(got))
	}

	var rss int64
	deadline := time.Now().Add(2 * time.Minute)
	for {
		st, err := srv.Status("VmRSS", "VmHWM", "RssAnon")
		require.NoError(t, err)
		rss = st["VmRSS"]
		if rss <= ceiling || time.Now().After(deadline) {
			t.Logf("RSS: %d kB at start, %d kB peak while connecting, %d kB with %d idle connections (%d bytes each); "+
				"of it anonymous (heap, stacks): %d kB at start, %d kB idle",
				before["VmRSS"], st["VmHWM"], rss, conns, (rss-before["VmRSS"])*1024/conns,
				before["RssAnon"], st["RssAnon"])
			break
		}
		time.Sleep(100 * time.Millisecond) // polling the process's memory; nothing to signal on
	}
	require.LessOrEqual(t, rss, int64(ceiling), "10k idle connections must fit in 128 MiB of RSS")

	// They are idle, not dead: a sample still answers.
	for i := 0; i < conns; i += conns / 10 {
		_, err := open[i].Write(echo)
		require.NoError(t, err)
		_, err = io.ReadFull(open[i], got)
		require.NoError(t, err)
		require.Equal(t, want, string(got))
	}
}
