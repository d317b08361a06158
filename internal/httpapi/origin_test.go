package httpapi

import (
	"context"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// serveOn serves tb's server on a fresh loopback listener, as gearwork
// serve does, and returns its address.
func serveOn(t *testing.T, tb *testBundle) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = tb.srv.Serve(context.Background(), ln)
	}()
	t.Cleanup(func() {
		require.NoError(t, tb.srv.Shutdown(context.Background()))
		<-done
	})
	return ln.Addr().String()
}

// send makes one request to addr with the given Host and headers.
func send(t *testing.T, method, addr, host, path string, hdr ...string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+addr+path, strings.NewReader("x"))
	require.NoError(t, err)
	req.Host = host
	req.Header.Set("Content-Type", "text/plain")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func TestHostMustBeOneTheServerAnswersTo(t *testing.T) {
	t.Parallel()
	tb := setup(t, func(c *Config) { c.AllowedHosts = []string{"Gearwork.Internal.", "*.gw.example"} })
	addr := serveOn(t, tb)
	_, port, err := net.SplitHostPort(addr)
	require.NoError(t, err)
	for _, host := range []string{addr, "localhost:" + port, "LOCALHOST:" + port, "[::1]:" + port, "10.1.2.3:" + port,
		"gearwork.internal", "gearwork.internal:8443", "GEARWORK.internal.", "a.gw.example:443"} {
		resp := send(t, "GET", addr, host, "/v1/functions")
		require.Equal(t, http.StatusOK, resp.StatusCode, host)
	}
	for _, host := range []string{"evil.example:" + port, "evil.example", "localhost:1", "127.0.0.1", "localhost",
		"127.0.0.1.evil.example:" + port, "gearwork.internal.evil.example", "gw.example", "a.b.gw.example", ".gw.example"} {
		for _, path := range []string{"/v1/functions", "/", "/healthz"} {
			requireProblem(t, send(t, "GET", addr, host, path), http.StatusMisdirectedRequest, "does not answer to the host")
		}
		requireProblem(t, send(t, "POST", addr, host, "/v1/functions/victim/jobs"), http.StatusMisdirectedRequest, "--http-allowed-hosts")
	}
	require.Empty(t, tb.b.Status(context.Background()), "no job was accepted")
}

func TestAnyHostWhenAllowed(t *testing.T) {
	t.Parallel()
	tb := setup(t, func(c *Config) { c.AllowedHosts = []string{"*"} })
	addr := serveOn(t, tb)
	require.Equal(t, http.StatusOK, send(t, "GET", addr, "anything.example:1", "/v1/functions").StatusCode)
}

func TestCrossSiteRequestsThatChangeStateAreRefused(t *testing.T) {
	t.Parallel()
	tb := setup(t, func(c *Config) { c.CORSOrigins = []string{"https://ops.example"} })
	addr := serveOn(t, tb)
	own := "http://" + addr
	for _, tc := range []struct {
		name string
		hdr  []string
	}{
		{"cross-site", []string{"Sec-Fetch-Site", "cross-site", "Origin", "http://evil.example"}},
		{"same-site, another port", []string{"Sec-Fetch-Site", "same-site", "Origin", "http://localhost:8000"}},
		{"Origin only, another site", []string{"Origin", "http://evil.example"}},
		{"Origin only, another port", []string{"Origin", "http://127.0.0.1:1"}},
		{"opaque origin", []string{"Origin", "null"}},
		{"cross-site without Origin", []string{"Sec-Fetch-Site", "cross-site"}},
	} {
		for _, rt := range []struct{ method, path string }{
			{"POST", "/v1/functions/victim/jobs"}, {"POST", "/v1/functions/victim/pause"},
			{"DELETE", "/v1/dead-letters"}, {"POST", "/v1/jobs:batch"}, {"DELETE", "/v1/jobs/H:test:1"},
		} {
			p := requireProblem(t, send(t, rt.method, addr, addr, rt.path, tc.hdr...), http.StatusForbidden, "another site")
			require.Equal(t, problemTypeBase+"cross-origin", p.Type, tc.name)
		}
	}
	require.Empty(t, tb.b.Status(context.Background()), "no job was accepted")
	for _, p := range tb.b.Policies() {
		require.False(t, p.Paused, p.Name)
	}

	// Reads stay open to other origins (CORS governs what a page may
	// read of them); the dashboard's own origin, a trusted CORS origin
	// and clients that are not browsers may change state.
	require.Equal(t, http.StatusOK, send(t, "GET", addr, addr, "/v1/functions", "Sec-Fetch-Site", "cross-site").StatusCode)
	for _, hdr := range [][]string{
		{"Sec-Fetch-Site", "same-origin", "Origin", own},
		{"Origin", own},
		{"Sec-Fetch-Site", "none"},
		{"Sec-Fetch-Site", "cross-site", "Origin", "https://ops.example"},
		nil,
	} {
		require.Equal(t, http.StatusAccepted, send(t, "POST", addr, addr, "/v1/functions/victim/jobs", hdr...).StatusCode, hdr)
	}
	require.Equal(t, http.StatusNoContent, send(t, "POST", addr, addr, "/v1/functions/victim/pause", "Sec-Fetch-Site", "same-origin", "Origin", own).StatusCode)
}

func TestCrossSiteAllowedWithAnyCORSOrigin(t *testing.T) {
	t.Parallel()
	tb := setup(t, func(c *Config) { c.CORSOrigins = []string{"*"} })
	addr := serveOn(t, tb)
	require.Equal(t, http.StatusAccepted, send(t, "POST", addr, addr, "/v1/functions/f/jobs",
		"Sec-Fetch-Site", "cross-site", "Origin", "http://elsewhere.example").StatusCode)
}
