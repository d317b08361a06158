package gearmanapi

import (
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/gearman"
	"github.com/gearwork/gearwork/internal/gearmantest/wire"
)

// TestReturnMemory: memory released by idle connections is returned to
// the system once releases settle: a large amount at once, the small tail
// of a burst too, but that at most every returnMemorySmallEvery.
func TestReturnMemory(t *testing.T) {
	t.Parallel()
	now := int64(time.Hour)
	s := &Server{lastReturn: now}
	tick := func(add int64) (returned bool) {
		s.releasedBytes.Add(add)
		before := s.lastReturn
		now += int64(500 * time.Millisecond)
		s.returnMemory(now)
		return s.lastReturn != before
	}
	require.False(t, tick(32<<20), "releases still coming")
	require.True(t, tick(0), "settled: 32 MiB returned")
	require.False(t, tick(2<<20))
	require.False(t, tick(0), "a small tail waits for returnMemorySmallEvery")
	for range int(returnMemorySmallEvery/(500*time.Millisecond)) - 3 {
		require.False(t, tick(0))
	}
	require.True(t, tick(0), "then it is returned")
	require.False(t, tick(0), "nothing left")
	require.False(t, tick(100<<10))
	for range 100 {
		require.False(t, tick(0), "less than returnMemorySmall stays")
	}
}

// TestHostileConnectionsStayOutOfTheBroker: a connection joins the broker
// (takes a session, under the broker's lock, which every good client's
// request needs) with its first valid frame only. One that sends nothing,
// or a malformed or oversized header, is answered and dropped without
// ever appearing in the broker.
func TestHostileConnectionsStayOutOfTheBroker(t *testing.T) {
	t.Parallel()
	tb := setupListener(t, Config{MaxPacket: 1 << 20}, nil)
	first := tb.dial(t)
	first.echo("first")
	silent := tb.dial(t)
	for _, a := range []struct{ send, answer string }{
		{"\x00REQ\x00\x00\x00\x10\xff\xff\xff\xff", string(gearman.AppendPacket(nil, gearman.MagicRes, gearman.Error,
			[]byte("ARGUMENT_TOO_LARGE"), []byte("packet body of 4294967295 bytes exceeds the limit of 1048576 bytes")))},
		{"\x00RAQ\x00\x00\x00\x10\x00\x00\x00\x00", string(gearman.AppendPacket(nil, gearman.MagicRes, gearman.Error,
			[]byte("INVALID_MAGIC"), []byte(`bad packet magic "\x00RAQ"`)))},
	} {
		c := tb.dial(t)
		// In pieces: the header is assembled before it is checked.
		for i := range len(a.send) {
			_, err := c.NC.Write([]byte{a.send[i]})
			require.NoError(t, err)
		}
		c.ExpectClosed(a.answer)
	}
	last := tb.dial(t)
	last.echo("last")

	var ids []uint64
	for _, w := range tb.b.Workers() {
		ids = append(ids, w.ID)
	}
	require.Equal(t, []uint64{1, 2}, ids, "only the two connections that sent a valid frame have sessions")
	require.Eventually(t, func() bool { return tb.srv.Connections() == 3 }, time.Minute, time.Millisecond, "first, silent and last are open")
	silent.echo("late")
}

// TestMaxConnectionsPerAddress: one source address cannot open more than
// MaxConnectionsPerAddress connections; others still can, and a closed
// connection frees its place.
func TestMaxConnectionsPerAddress(t *testing.T) {
	t.Parallel()
	tb := setupListener(t, Config{MaxConnectionsPerAddress: 2}, nil)
	dialFrom := func(ip string) *client {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
		nc, err := d.Dial("tcp", tb.addr)
		require.NoError(t, err)
		return &client{wire.New(t, nc)}
	}
	a, b := dialFrom("127.0.0.2"), dialFrom("127.0.0.2")
	for _, c := range []*client{a, b} {
		c.echo("in")
	}
	dialFrom("127.0.0.2").ExpectClosed("")
	require.Equal(t, int64(1), tb.srv.LimitStats().Rejected)
	for range 2 {
		other := dialFrom("127.0.0.3")
		other.echo("other")
	}
	a.NC.Close()
	require.Eventually(t, func() bool { return tb.srv.Connections() == 3 }, time.Minute, time.Millisecond)
	c := dialFrom("127.0.0.2")
	c.echo("again")
	require.Equal(t, int64(1), tb.srv.LimitStats().Rejected)
}

// emfileListener fails Accept with EMFILE while its switch is on, and
// accepts normally otherwise.
type emfileListener struct {
	net.Listener
	failSwitch
}

func (l *emfileListener) Accept() (net.Conn, error) {
	if l.fail() {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	}
	return l.Listener.Accept()
}

// TestAcceptOutOfFileDescriptors: while accept fails for want of file
// descriptors, the server retries after growing pauses instead of
// spinning, keeps serving the connections it has, and accepts again once
// descriptors are free.
func TestAcceptOutOfFileDescriptors(t *testing.T) {
	t.Parallel()
	var ln *emfileListener
	tb := setupListener(t, Config{}, func(inner net.Listener) net.Listener {
		ln = &emfileListener{Listener: inner}
		return ln
	})
	existing := tb.dial(t)
	existing.echo("before")

	ln.on.Store(true)
	// An accept already in progress may still return this connection;
	// the ones after it fail, and it is served at the latest once accept
	// works again.
	waiting := tb.dial(t)
	waiting.Send(gearman.EchoReq, "queued")
	// Pauses of 5, 10, 20 and 40 ms at least between the first five
	// attempts.
	ln.requireBackoff(t, 5, 75*time.Millisecond, "accept must back off")
	existing.echo("meanwhile")

	ln.on.Store(false)
	waiting.Expect(gearman.EchoRes, "queued")
	later := tb.dial(t)
	later.echo("after")
	existing.echo("still")
}
