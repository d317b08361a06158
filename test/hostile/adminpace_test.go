package hostile_test

import (
	"bufio"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/internal/gearmantest/wire"
	"github.com/gearwork/gearwork/internal/testserver"
)

// TestUnreadAdminAnswersAreBounded: an admin answer can be thousands of
// times larger than its command ("status" lists every function), and any
// connection may send open commands. Peers that sent "status" again and
// again without reading had each connection hold up to half of
// --max-output of answers until the write timeout dropped them (20 such
// peers took the server to 580 MB). An admin command now runs, and a long
// answer goes on, only once the connection's earlier output is down to
// 64 KiB, so the peers hold little while one of them reads every answer.
func TestUnreadAdminAnswersAreBounded(t *testing.T) {
	const (
		functions = 10000
		conns     = 20
		commands  = 100
		ceiling   = 256 << 10 // kB of peak resident memory
	)
	// Without the race detector, which multiplies the memory; the write
	// timeout outlasts the test: the peers are not dropped.
	srv := testserver.StartPlain(t, "--http", "off", "--write-timeout", "10m")
	w := wire.Dial(t, srv.Addr)
	names := make([]string, functions)
	for i := range names {
		names[i] = fmt.Sprintf("f%05d%s", i, strings.Repeat("x", 500))
	}
	codes, _ := canDoMany(t, w, names)
	require.Empty(t, codes)

	var reader *bufio.Reader
	for i := range conns {
		nc, err := net.DialTimeout("tcp", srv.Addr, time.Minute)
		require.NoError(t, err)
		t.Cleanup(func() { nc.Close() })
		_, err = nc.Write([]byte(strings.Repeat("status\n", commands)))
		require.NoError(t, err)
		if i == 0 {
			require.NoError(t, nc.SetReadDeadline(time.Now().Add(5*time.Minute)))
			reader = bufio.NewReaderSize(nc, 1<<20)
		}
	}
	// One peer reads all its answers, whole, while the others read none.
	for range commands {
		lines := 0
		for {
			l, err := reader.ReadSlice('\n')
			require.NoError(t, err)
			if string(l) == ".\n" {
				break
			}
			lines++
		}
		require.Equal(t, functions, lines)
	}
	mem, err := srv.Status("VmHWM", "VmRSS")
	require.NoError(t, err)
	t.Logf("peak RSS %d MiB (now %d MiB): %d peers sent %d status commands of %d functions, one read the answers",
		mem["VmHWM"]>>10, mem["VmRSS"]>>10, conns, commands, functions)
	require.Less(t, mem["VmHWM"], int64(ceiling), "kB of peak RSS")
	require.True(t, srv.Alive())
}
