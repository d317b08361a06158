package gearmanapi

import (
	"net"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/internal/gearmantest/wire"
)

// fromListener hands out its connections as if they came from the
// addresses queued in from, one each, in order.
type fromListener struct {
	net.Listener
	mu   sync.Mutex
	from []string
}

type fromConn struct {
	net.Conn
	remote net.Addr
}

func (c fromConn) RemoteAddr() net.Addr { return c.remote }

func (l *fromListener) Accept() (net.Conn, error) {
	nc, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	ip := l.from[0]
	l.from = l.from[1:]
	return fromConn{Conn: nc, remote: &net.TCPAddr{IP: net.ParseIP(ip), Port: 40000}}, nil
}

// TestMaxConnectionsPerAddressCountsIPv6Networks: an IPv6 host is given a
// whole /64 (SLAAC, privacy addresses) and may use any address in it, so
// the limit counts each /64 as one source. Counted by address, a host
// opened the limit's connections from each of as many addresses as it
// liked, and one host could take every connection after all.
func TestMaxConnectionsPerAddressCountsIPv6Networks(t *testing.T) {
	t.Parallel()
	ln := &fromListener{}
	tb := setupListener(t, Config{MaxConnectionsPerAddress: 2}, func(inner net.Listener) net.Listener {
		ln.Listener = inner
		return ln
	})
	dialFrom := func(ip string) *client {
		ln.mu.Lock()
		ln.from = append(ln.from, ip)
		ln.mu.Unlock()
		nc, err := net.Dial("tcp", tb.addr)
		require.NoError(t, err)
		return &client{wire.New(t, nc)}
	}
	dialFrom("2001:db8:0:1::1").echo("in")
	dialFrom("2001:db8:0:1::2").echo("in")
	dialFrom("2001:db8:0:1:ffff:ffff:ffff:ffff").ExpectClosed("")
	require.Equal(t, int64(1), tb.srv.LimitStats().Rejected)
	dialFrom("2001:db8:0:2::1").echo("another network")
	// IPv4 addresses count one by one, as before.
	dialFrom("192.0.2.1").echo("v4")
	dialFrom("192.0.2.1").echo("v4")
	dialFrom("192.0.2.2").echo("v4")
	require.Equal(t, int64(1), tb.srv.LimitStats().Rejected)
}
