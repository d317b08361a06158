package compat

import (
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestCSlowLinkLargeResult: a libgearman client behind a slow link (a
// proxy that passes what the server sends at 1 MiB/s) receives a 12 MiB
// result, which takes several seconds longer than --write-timeout (5s):
// the client reads all along, so the server keeps writing. The write
// timeout drops a peer that does not read; it dropped this one, since it
// bounded each whole write of the connection's output. (The socket takes
// more of a write once its buffer is half free, a few MiB at most: 5s
// leaves room for that at 1 MiB/s.) Gearwork only: gearmand has no write
// timeout.
func TestCSlowLinkLargeResult(t *testing.T) {
	t.Parallel()
	s := startGearwork(t, "--write-timeout", "5s")
	cWorker(t, s, 0, "c_bytes=bytes")
	waitStatus(t, s, "c_bytes", funcStatus{Workers: 1})
	slow := &server{addr: slowProxy(t, s.addr, 1<<20)}
	start := time.Now()
	require.Equal(t, []string{ok, fmt.Sprintf("length %d", 12<<20), "same 1"}, cClient(t, slow, "fetch", "c_bytes", fmt.Sprint(12<<20)))
	t.Logf("the result took %v", time.Since(start))
	require.NotContains(t, s.log.String(), "write timeout")
}

// slowProxy forwards TCP connections to addr and returns its own address.
// What a client sends passes at once; what the server sends passes at
// about rate bytes a second, as over a slow network link. It stops when
// the test ends.
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
			// A small receive buffer, so that the kernel takes in little
			// more from the server than the link has passed.
			_ = srv.(*net.TCPConn).SetReadBuffer(chunk)
			mu.Lock()
			conns = append(conns, client, srv)
			mu.Unlock()
			wg.Add(2)
			go func() {
				defer wg.Done()
				_, _ = io.Copy(srv, client)
				srv.Close()
			}()
			go func() {
				defer wg.Done()
				defer client.Close()
				buf := make([]byte, chunk)
				for {
					n, err := srv.Read(buf)
					if n > 0 {
						if _, err := client.Write(buf[:n]); err != nil {
							return
						}
						time.Sleep(time.Duration(n) * time.Second / time.Duration(rate))
					}
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}
