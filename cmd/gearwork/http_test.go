package main

import (
	"errors"
	"flag"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/internal/testcert"
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
	ln := newLimitListener(raw, 2)
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
