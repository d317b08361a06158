package main

import (
	"errors"
	"flag"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/internal/testcert"
	"github.com/gearwork/gearwork/internal/testwait"
)

func TestHTTPAllowedHostsFromFlagAndEnvironment(t *testing.T) {
	load := func(args ...string) []string {
		t.Helper()
		var f httpFlags
		fs := flag.NewFlagSet("serve", flag.ContinueOnError)
		f.register(fs)
		require.NoError(t, parseFlags(fs, args))
		h, err := f.load(tlsFiles{}, time.Second, false)
		require.NoError(t, err)
		return h.cfg.AllowedHosts
	}
	require.Empty(t, load())
	require.Equal(t, []string{"gw.example", "proxy.internal"}, load("--http-allowed-hosts", "gw.example, proxy.internal,"))
	t.Setenv("GEARWORK_HTTP_ALLOWED_HOSTS", "from-env.example")
	require.Equal(t, []string{"from-env.example"}, load())
	require.Equal(t, []string{"flag.example"}, load("--http-allowed-hosts=flag.example"), "a flag wins over the environment")
}

func TestHTTPAnswersToItsCertificateNames(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := testcert.NewCA(t, "servers")
	cert, key := ca.Client(t, "gw", "gw.example", "*.gw.example").WriteFiles(t, dir, "server")
	h, err := httpFlags{addr: "127.0.0.1:0", allowedHosts: "proxy.example"}.load(tlsFiles{cert: cert, key: key}, time.Second, false)
	require.NoError(t, err)
	require.Equal(t, []string{"proxy.example", "gw.example", "*.gw.example"}, h.cfg.AllowedHosts)
}

// TestLimitListener: with two slots, a third connection is accepted only
// once one of the first two closes (closing twice frees one slot), and
// Close ends an Accept that waits for a slot.
func TestLimitListener(t *testing.T) {
	t.Parallel()
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ln := newLimitListener(raw, 2, 0, nil)
	defer ln.Close()
	accepted := make(chan net.Conn, 4)
	acceptErr := make(chan error, 1)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				acceptErr <- err
				return
			}
			accepted <- c
		}
	}()
	for range 3 {
		c, err := net.Dial("tcp", raw.Addr().String())
		require.NoError(t, err)
		defer c.Close()
	}
	first := <-accepted
	<-accepted
	select {
	case <-accepted:
		t.Fatal("a third connection was accepted while two were open")
	case <-time.After(100 * time.Millisecond): // a negative check: nothing to wait on
	}
	require.NoError(t, first.Close())
	_ = first.Close()
	<-accepted
	// Two are open again (the second and third): a fourth waits, which it
	// would not if closing the first twice had given back two slots.
	c, err := net.Dial("tcp", raw.Addr().String())
	require.NoError(t, err)
	defer c.Close()
	select {
	case <-accepted:
		t.Fatal("a connection closed twice gave back two slots")
	case <-time.After(100 * time.Millisecond): // a negative check: nothing to wait on
	}
	require.NoError(t, ln.Close())
	require.True(t, errors.Is(<-acceptErr, net.ErrClosed), "Close ends an Accept that waits for a slot")
}

// TestLimitListenerPerAddress: a source with perAddress connections open
// has its next one closed at accept (and reported), while other sources
// are accepted; closing one makes room for its source again.
func TestLimitListenerPerAddress(t *testing.T) {
	t.Parallel()
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	refused := make(chan net.Addr, 4)
	ln := newLimitListener(raw, 0, 2, func(a net.Addr) { refused <- a })
	defer ln.Close()
	accepted := make(chan net.Conn, 8)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	dial := func(src string) net.Conn {
		t.Helper()
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: time.Minute}
		c, err := d.Dial("tcp", raw.Addr().String())
		require.NoError(t, err)
		t.Cleanup(func() { c.Close() })
		return c
	}
	dial("127.0.0.2")
	dial("127.0.0.2")
	first, second := <-accepted, <-accepted
	third := dial("127.0.0.2")
	a := <-refused
	require.Equal(t, third.LocalAddr().String(), a.String())
	require.NoError(t, third.SetReadDeadline(time.Now().Add(time.Minute)))
	_, err = third.Read(make([]byte, 1))
	require.Error(t, err, "the third connection from one address is closed")

	dial("127.0.0.3")
	other := <-accepted
	require.Equal(t, "127.0.0.3", other.RemoteAddr().(*net.TCPAddr).IP.String(), "another address has room")

	require.NoError(t, first.Close())
	_ = first.Close()
	fourth := dial("127.0.0.2")
	got := <-accepted
	require.Equal(t, fourth.LocalAddr().String(), got.RemoteAddr().String(), "closing one makes room")
	dial("127.0.0.2")
	<-refused
	_ = second
}

// TestLimitListenerClosesIdleConnections: with every slot taken, a new
// connection closes the one idle for the longest time instead of waiting
// for it; a connection busy with a request is not closed.
func TestLimitListenerClosesIdleConnections(t *testing.T) {
	t.Parallel()
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ln := newLimitListener(raw, 2, 0, nil)
	defer ln.Close()
	accepted := make(chan net.Conn, 4)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	dial := func() net.Conn {
		t.Helper()
		c, err := net.Dial("tcp", raw.Addr().String())
		require.NoError(t, err)
		t.Cleanup(func() { c.Close() })
		return c
	}
	dial()
	older := <-accepted
	dial()
	newer := <-accepted
	ln.ConnState(newer, http.StateIdle)
	ln.ConnState(older, http.StateIdle)
	ln.ConnState(older, http.StateActive)
	// A third: the idle one (newer) is closed for it, the busy one kept.
	dial()
	third := <-accepted
	require.NotNil(t, third)
	_, err = newer.Write([]byte("x"))
	require.ErrorIs(t, err, net.ErrClosed, "the idle connection was closed")
	_, err = older.Write([]byte("x"))
	require.NoError(t, err, "the busy connection is kept")
}

// TestLimitListenerClosesAConnectionThatGoesIdleLater: a new connection
// that found every slot busy with a request, none idle, takes the slot of
// the first connection that goes idle after, instead of waiting for that
// one's idle timeout (two minutes): a client whose connections were all
// busy at that moment, then kept alive, had the others wait as long.
func TestLimitListenerClosesAConnectionThatGoesIdleLater(t *testing.T) {
	t.Parallel()
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ln := newLimitListener(raw, 1, 0, nil)
	defer ln.Close()
	accepted := make(chan net.Conn, 2)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	dial := func() {
		t.Helper()
		c, err := net.Dial("tcp", raw.Addr().String())
		require.NoError(t, err)
		t.Cleanup(func() { c.Close() })
	}
	dial()
	busy := <-accepted
	ln.ConnState(busy, http.StateActive)
	dial()
	testwait.Until(t, "the second connection waits for a slot", func() bool { return ln.waiting.Load() == 1 })
	ln.ConnState(busy, http.StateIdle) // its request answered, kept alive
	select {
	case second := <-accepted:
		require.NotNil(t, second)
	case <-time.After(testwait.Timeout):
		t.Fatal("the second connection waits for the idle one's timeout")
	}
	_, err = busy.Write([]byte("x"))
	require.ErrorIs(t, err, net.ErrClosed, "the connection that went idle was closed")
}
