package hostile_test

import (
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/gearman"
	"github.com/gearwork/gearwork/internal/testserver"
)

// TestHTTPConnectionFloodKeepsTheStoresDescriptors runs the server with an
// open file limit of 256 and a Pebble store, and opens 1,000 idle
// connections to its HTTP port. HTTP connections are capped within the
// descriptors not kept for the store, as Gearman connections are: the
// store can still open new files (background submits of 1 MiB each
// overflow its memtable and all get JOB_CREATED), nothing is logged as an
// error, and once the flood ends the HTTP API answers again.
func TestHTTPConnectionFloodKeepsTheStoresDescriptors(t *testing.T) {
	if testing.Short() {
		t.Skip("file limit test skipped in -short mode")
	}
	const (
		limit = 256
		flood = 1000
		jobs  = 40
	)
	sh := testserver.NeedCommand(t, "sh")
	raiseFileLimit(t, flood+500)
	srv := testserver.StartWrapped(t, []string{sh, "-c", fmt.Sprintf(`ulimit -n %d && exec "$0" "$@"`, limit)},
		"--store", "pebble:"+t.TempDir(), "--http", "127.0.0.1:0")
	httpAddr := srv.HTTPAddr(t)
	require.Regexp(t, `http_max_connections=\d+`, srv.Log(), "the HTTP connection limit is logged")

	client := dialG(t, srv.Addr)
	cmd, _ := client.call(gearman.EchoReq, "ready")
	require.Equal(t, gearman.EchoRes, cmd)
	open := make([]net.Conn, 0, flood)
	defer func() {
		for _, nc := range open {
			nc.Close()
		}
	}()
	for range flood {
		// Connections beyond the cap wait in the listen backlog, or are
		// refused by the kernel once it is full: either way they hold no
		// descriptor of the server's.
		nc, err := net.DialTimeout("tcp", httpAddr, time.Second)
		if err != nil {
			break
		}
		open = append(open, nc)
	}

	payload := strings.Repeat("p", 1<<20)
	for i := range jobs {
		cmd, body := client.call(gearman.SubmitJobBg, "flood", fmt.Sprint(i), payload)
		require.Equal(t, gearman.JobCreated, cmd, "submit %d: %s", i, body)
	}
	require.True(t, srv.Alive())
	require.NotContains(t, srv.Log(), "level=ERROR")

	for _, nc := range open {
		nc.Close()
	}
	open = nil
	hc := &http.Client{Timeout: 10 * time.Second}
	deadline := time.Now().Add(time.Minute)
	for {
		resp, err := hc.Get("http://" + httpAddr + "/healthz")
		if err == nil {
			resp.Body.Close()
			require.Equal(t, http.StatusOK, resp.StatusCode)
			break
		}
		require.True(t, time.Now().Before(deadline), "the HTTP API does not answer after the flood: %v", err)
		time.Sleep(50 * time.Millisecond) // the server frees the flood's connections as it reads their ends
	}
}
