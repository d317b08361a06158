package compat

import (
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestCSlowLinkLargePayloads: a libgearman client behind a slow link (a
// proxy that passes what either side sends at 1 MiB/s) sends a 12 MiB
// payload and receives a 12 MiB result, each of which takes several
// seconds longer than --read-timeout and --write-timeout (5s). The client
// sends and reads all along. The read timeout drops a peer that trickles
// a frame and the write timeout one that does not read; they dropped
// this one, since they bounded each whole packet and each whole write of
// the connection's output. (The socket takes more of a write once its
// buffer is half free, a few MiB at most: 5s leaves room for that at
// 1 MiB/s.) Gearwork only: gearmand has neither timeout.
func TestCSlowLinkLargePayloads(t *testing.T) {
	t.Parallel()
	s := startGearwork(t, "--write-timeout", "5s", "--read-timeout", "5s")
	cWorker(t, s, 0, "c_bytes=bytes", "c_digest=digest")
	waitStatus(t, s, "c_bytes", funcStatus{Workers: 1})
	slow := &server{addr: slowProxy(t, s.addr, 1<<20)}
	start := time.Now()
	got := cClient(t, slow, "digest", "c_digest", fmt.Sprint(12<<20))
	require.Equal(t, []string{ok, "same 1"}, got[:2], "%q", got)
	t.Logf("the payload took %v", time.Since(start))
	start = time.Now()
	require.Equal(t, []string{ok, fmt.Sprintf("length %d", 12<<20), "same 1"}, cClient(t, slow, "fetch", "c_bytes", fmt.Sprint(12<<20)))
	t.Logf("the result took %v", time.Since(start))
	require.NotContains(t, s.log.String(), "closing connection")
}

// slowProxy forwards TCP connections to addr and returns its own address.
// What either side sends passes at about rate bytes a second, as over a
// slow network link. It stops when the test ends.
func slowProxy(t *testing.T, addr string, rate int) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns []net.Conn
	)
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	const chunk = 16 << 10
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			client, err := ln.Accept()
			if err != nil {
				return
			}
			srv, err := net.Dial("tcp", addr)
			if err != nil {
				client.Close()
				continue
			}
			// Small receive buffers, so that the kernel takes in little
			// more than the link has passed.
			_ = srv.(*net.TCPConn).SetReadBuffer(chunk)
			_ = client.(*net.TCPConn).SetReadBuffer(chunk)
			mu.Lock()
			conns = append(conns, client, srv)
			mu.Unlock()
			wg.Add(2)
			go pass(&wg, client, srv, rate, chunk)
			go pass(&wg, srv, client, rate, chunk)
		}
	}()
	return ln.Addr().String()
}

// pass copies from src to dst at about rate bytes a second, in parts of
// chunk, and closes both when either side ends. It keeps to the rate on
// average: a sleep that overran (on a loaded machine) is made up by the
// next ones, and a pause longer than a second is not made up.
func pass(wg *sync.WaitGroup, src, dst net.Conn, rate, chunk int) {
	defer wg.Done()
	defer src.Close()
	defer dst.Close()
	buf := make([]byte, chunk)
	next := time.Now()
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if _, err := dst.Write(buf[:n]); err != nil {
				return
			}
			if floor := time.Now().Add(-time.Second); next.Before(floor) {
				next = floor
			}
			next = next.Add(time.Duration(n) * time.Second / time.Duration(rate))
			time.Sleep(time.Until(next))
		}
		if err != nil {
			return
		}
	}
}
