package httpapi

import (
	"bufio"
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/internal/testwait"
)

// openStream starts GET /v1/stream and reads its first line, so that the
// stream holds its place when openStream returns; the caller closes it.
func openStream(t *testing.T, tb *testBundle) *http.Response {
	t.Helper()
	resp := tb.do(t, "GET", "/v1/stream", nil, "Accept", "text/event-stream")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(line, "retry:"), "first line %q", line)
	return resp
}

// TestLongRequestsAreCapped: with MaxLongRequests open event streams, a
// further stream is refused with 503 too-many-streams, a waiting submit
// answers 202 at once instead of holding its connection until the job
// ends, a worker's long poll answers at once, and short requests are
// served; once a stream closes, a new one is accepted.
func TestLongRequestsAreCapped(t *testing.T) {
	tb := setup(t, func(c *Config) { c.MaxLongRequests = 2 })
	first, second := openStream(t, tb), openStream(t, tb)
	defer second.Body.Close()

	resp := tb.do(t, "GET", "/v1/stream", nil, "Accept", "text/event-stream")
	p := requireProblem(t, resp, http.StatusServiceUnavailable, "event streams")
	require.Equal(t, problemTypeBase+"too-many-streams", p.Type)
	require.Equal(t, "5", resp.Header.Get("Retry-After"))

	// No worker takes the job: a submit that waited would not answer
	// before the client's deadline.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "POST", tb.ts.URL+"/v1/functions/f/jobs?wait=5m", strings.NewReader("x"))
	require.NoError(t, err)
	sub, err := tb.ts.Client().Do(req)
	require.NoError(t, err, "a waiting submit must answer at once while the long requests are at their limit")
	defer sub.Body.Close()
	require.Equal(t, http.StatusAccepted, sub.StatusCode)
	require.Equal(t, "queued", decode[jobJSON](t, sub).State)

	req, err = http.NewRequestWithContext(ctx, "POST", tb.ts.URL+"/v1/functions/other/grab?wait=5m", nil)
	require.NoError(t, err)
	poll, err := tb.ts.Client().Do(req)
	require.NoError(t, err, "a long poll must answer at once while the long requests are at their limit")
	defer poll.Body.Close()
	require.Equal(t, http.StatusNoContent, poll.StatusCode)

	require.Equal(t, http.StatusOK, tb.do(t, "GET", "/healthz", nil).StatusCode)

	first.Body.Close()
	testwait.Until(t, "a stream accepted after another closed", func() bool {
		resp := tb.do(t, "GET", "/v1/stream", nil, "Accept", "text/event-stream")
		defer resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

// TestLongRequestsUnlimitedByDefault: without MaxLongRequests, streams
// are not counted.
func TestLongRequestsUnlimitedByDefault(t *testing.T) {
	tb := setup(t)
	for range 5 {
		defer openStream(t, tb).Body.Close()
	}
}
