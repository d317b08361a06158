package gearmanapi

import (
	"io"
	"net"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/internal/gearmantest/wire"
)

// TestRawReadWriteAllocateNothing: a connection's raw write and read, made
// for every burst of requests, allocate nothing.
func TestRawReadWriteAllocateNothing(t *testing.T) {
	c, peer := rawConnPair(t)
	msg, got, buf := []byte("ping"), make([]byte, 4), make([]byte, 16)
	allocs := testing.AllocsPerRun(100, func() {
		if n, err := c.tryWrite(msg); err != nil || n != len(msg) {
			t.Fatalf("tryWrite: %d, %v", n, err)
		}
		if _, err := io.ReadFull(peer, got); err != nil {
			t.Fatal(err)
		}
		if _, err := peer.Write(msg); err != nil {
			t.Fatal(err)
		}
		for read := 0; read < len(msg); {
			n, err := c.read(buf[read:])
			if err != nil {
				t.Fatalf("read: %v", err)
			}
			read += n
		}
	})
	require.Zero(t, allocs)
	require.Equal(t, "ping", string(buf[:4]))

	// The peer's close is the end of the stream.
	require.NoError(t, peer.Close())
	_, err := c.read(buf)
	require.ErrorIs(t, err, io.EOF)
}

// TestRawWriteIsBounded: one raw write attempt copies at most
// maxRawWrite bytes, however much is pending and however much room the
// socket has; the caller writes the rest.
func TestRawWriteIsBounded(t *testing.T) {
	c, _ := rawConnPair(t)
	require.NoError(t, c.nc.(*net.TCPConn).SetWriteBuffer(4<<20))
	n, err := c.tryWrite(make([]byte, 1<<20))
	require.NoError(t, err)
	require.Positive(t, n)
	require.LessOrEqual(t, n, maxRawWrite)
}

// rawConnPair returns a server-side conn with its raw calls over a
// loopback TCP connection, and the peer's end; both close with the test.
func rawConnPair(t *testing.T) (*conn, net.Conn) {
	t.Helper()
	peer, nc := wire.Pair(t)
	raw, err := nc.(syscall.Conn).SyscallConn()
	require.NoError(t, err)
	c := &conn{nc: nc, raw: raw}
	c.newRawCalls()
	return c, peer
}
