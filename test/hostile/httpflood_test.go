package hostile_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/gearman"
	"github.com/gearwork/gearwork/internal/gearmantest/wire"
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
	const flood = 1000
	srv := startAtFileLimit(t, flood, "--store", "pebble:"+t.TempDir(), "--http", "127.0.0.1:0")
	httpAddr := srv.HTTPAddr(t)
	require.Contains(t, srv.Log(), "http_max_connections=32", "the HTTP connection limit is capped and logged")

	client := wire.Dial(t, srv.Addr)
	client.Send(gearman.EchoReq, "ready")
	client.Expect(gearman.EchoRes, "ready")
	// Connections beyond the cap wait in the listen backlog, holding no
	// descriptor of the server's.
	closeFlood := openFlood(t, httpAddr, flood)
	submitLarge(t, client, "flood")
	require.True(t, srv.Alive())
	require.NotContains(t, srv.Log(), "level=ERROR")

	closeFlood()
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
