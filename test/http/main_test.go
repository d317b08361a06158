// Package http_test runs gearwork serve as a process and drives its HTTP
// API with curl, Debian's gearman tool and headless Chromium.
package http_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/internal/testserver"
)

func TestMain(m *testing.M) { testserver.Main(m) }

// server is a running gearwork serve.
type server struct {
	*testserver.Server
	gearman  string // host:port of the Gearman port
	httpAddr string // host:port of the HTTP API
	base     string // http://host:port
}

// startServer runs gearwork serve on free loopback ports and stops it at
// the end of the test, failing the test unless it exits cleanly on
// SIGTERM.
func startServer(t *testing.T, extra ...string) *server {
	t.Helper()
	srv := testserver.Start(t, append([]string{"--http", "127.0.0.1:0", "--handle-prefix", "H:e2e:"}, extra...)...)
	t.Cleanup(func() {
		srv.Stop()
		require.NoError(t, srv.Err(), "gearwork serve exits cleanly on SIGTERM; log:\n%s", srv.Log())
		if t.Failed() {
			t.Logf("server log:\n%s", srv.Log())
		}
	})
	s := &server{Server: srv, gearman: srv.Addr, httpAddr: srv.HTTPAddr(t)}
	s.base = "http://" + s.httpAddr
	return s
}

func (s *server) gearmanHostPort() (string, string) {
	i := strings.LastIndexByte(s.gearman, ':')
	return s.gearman[:i], s.gearman[i+1:]
}

// curl runs curl with args and returns its output (headers included when
// -i is given). It fails the test if curl fails.
func curl(t *testing.T, ctx context.Context, args ...string) string {
	t.Helper()
	out, code := testserver.Curl(ctx, t, args...)
	require.Zero(t, code, "curl %v: %s", args, out)
	return out
}

// curlJSON runs curl and decodes its JSON body.
func curlJSON(t *testing.T, ctx context.Context, v any, args ...string) {
	t.Helper()
	out := curl(t, ctx, args...)
	require.NoError(t, json.Unmarshal([]byte(out), v), "body: %s", out)
}

// statusAndBody runs curl -w to get the status code on the last line.
func statusAndBody(t *testing.T, ctx context.Context, args ...string) (int, string) {
	t.Helper()
	out := curl(t, ctx, append(args, "-w", "\n%{http_code}")...)
	i := strings.LastIndexByte(out, '\n')
	var code int
	_, err := fmt.Sscan(out[i+1:], &code)
	require.NoError(t, err)
	return code, out[:i]
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}
