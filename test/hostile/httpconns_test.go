package hostile_test

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/internal/testserver"
)

// TestOneHostCannotTakeEveryHTTPConnection: the HTTP port serves at most
// --http-max-connections connections and keeps the others waiting at
// accept. With --http-max-connections-per-address one host's connections
// beyond the limit are closed at accept, so that it cannot hold them all
// (idle ones make room, TestIdleHTTPConnectionsMakeRoom, but not those
// whose requests are under way), and others are served.
func TestOneHostCannotTakeEveryHTTPConnection(t *testing.T) {
	t.Parallel()
	const (
		max        = 40
		perAddress = 10
	)
	srv := testserver.Start(t, "--http", "127.0.0.1:0", "--http-max-connections", fmt.Sprint(max),
		"--http-max-connections-per-address", fmt.Sprint(perAddress))
	httpAddr := srv.HTTPAddr(t)

	// The attacker, from 127.0.0.2: a request on each connection, then
	// nothing, keeping them alive.
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}, Timeout: time.Minute}
	answered := 0
	for range max {
		c, err := d.Dial("tcp", httpAddr)
		require.NoError(t, err)
		t.Cleanup(func() { c.Close() })
		require.NoError(t, c.SetDeadline(time.Now().Add(time.Minute)))
		_, err = fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: %s\r\n\r\n", httpAddr)
		if err != nil {
			continue // closed at accept
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			continue // closed at accept
		}
		resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode)
		answered++
	}
	require.Equal(t, perAddress, answered, "connections from one address beyond the limit are closed")
	require.Contains(t, srv.Log(), "too many HTTP connections from one address")

	// Another client is served at once (not after the attacker's
	// connections time out, two minutes on).
	hc := &http.Client{Timeout: time.Minute}
	resp, err := hc.Get("http://" + httpAddr + "/healthz")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
}

// TestIdleHTTPConnectionsMakeRoom: with every HTTP connection the server
// takes (--http-max-connections) kept alive by one client between
// requests, a new client no longer waits for their idle timeout (two
// minutes): the connection idle for the longest time is closed to make
// room, without any limit per address.
func TestIdleHTTPConnectionsMakeRoom(t *testing.T) {
	t.Parallel()
	const max = 20
	srv := testserver.Start(t, "--http", "127.0.0.1:0", "--http-max-connections", fmt.Sprint(max))
	httpAddr := srv.HTTPAddr(t)

	var held []net.Conn
	for range max {
		c, err := net.DialTimeout("tcp", httpAddr, time.Minute)
		require.NoError(t, err)
		t.Cleanup(func() { c.Close() })
		require.NoError(t, c.SetDeadline(time.Now().Add(time.Minute)))
		_, err = fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: %s\r\n\r\n", httpAddr)
		require.NoError(t, err)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode)
		held = append(held, c)
	}

	// Well within the idle timeout of the connections held.
	hc := &http.Client{Timeout: time.Minute}
	for range 3 {
		resp, err := hc.Get("http://" + httpAddr + "/healthz")
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode)
		hc.CloseIdleConnections()
	}
	// The first connections held were closed for them.
	require.NoError(t, held[0].SetReadDeadline(time.Now().Add(time.Minute)))
	_, err := held[0].Read(make([]byte, 1))
	require.Error(t, err, "the connection idle for the longest time is closed")
}
