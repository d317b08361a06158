package http_test

import (
	"context"
	"net/url"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/internal/testlog"
	"github.com/gearwork/gearwork/internal/testserver"
)

type jobJSON struct {
	Handle     string  `json:"handle"`
	State      string  `json:"state"`
	Function   string  `json:"function"`
	ResultText *string `json:"result_text"`
}

type grabbed struct {
	Handle      string `json:"handle"`
	PayloadText string `json:"payload_text"`
	Lease       string `json:"lease"`
}

// curlServer starts a server for a test that drives it with curl and the
// other tools named, which must be installed, and returns it with the
// test's context.
func curlServer(t *testing.T, tools ...string) (*server, context.Context) {
	t.Helper()
	for _, name := range append(tools, "curl") {
		testserver.NeedCommand(t, name)
	}
	return startServer(t), testContext(t)
}

// A job submitted over HTTP is done by a Gearman worker (libgearman's
// gearman -w), and ?wait returns its result.
func TestHTTPSubmitGearmanWorker(t *testing.T) {
	t.Parallel()
	s, ctx := curlServer(t, "gearman")
	host, port := s.gearmanHostPort()
	worker := exec.CommandContext(ctx, "gearman", "-h", host, "-p", port, "-w", "-c", "2", "-f", "upper", "--", "tr", "a-z", "A-Z")
	var wout testlog.Buffer
	worker.Stdout, worker.Stderr = &wout, &wout
	require.NoError(t, worker.Start())

	var res jobJSON
	curlJSON(t, ctx, &res, "-X", "POST", "--data-binary", "hello gearman", s.base+"/v1/functions/upper/jobs?wait=60s")
	require.Equal(t, "complete", res.State, "gearman worker output: %s", wout.String())
	require.Equal(t, "HELLO GEARMAN", *res.ResultText)

	// Without wait: 202 and a Location to poll.
	out := curl(t, ctx, "-i", "-X", "POST", "-H", "Content-Type: text/plain", "--data-binary", "second", s.base+"/v1/functions/upper/jobs")
	require.Contains(t, out, "HTTP/1.1 202 Accepted")
	loc := regexp.MustCompile(`Location: (/v1/jobs/H:e2e:\d+)\r\n`).FindStringSubmatch(out)
	require.NotNil(t, loc, out)
	require.NoError(t, worker.Wait(), "the worker did its two jobs: %s", wout.String())
	var got jobJSON
	curlJSON(t, ctx, &got, s.base+loc[1])
	require.Equal(t, "complete", got.State)
	require.Equal(t, "SECOND", *got.ResultText)
}

// A job submitted by a Gearman client (gearman, foreground) is done by an
// HTTP worker with curl: long-poll grab, status, complete.
func TestGearmanClientHTTPWorker(t *testing.T) {
	t.Parallel()
	s, ctx := curlServer(t, "gearman")
	host, port := s.gearmanHostPort()
	client := exec.CommandContext(ctx, "gearman", "-h", host, "-p", port, "-f", "resize", "cat.png")
	var cout testlog.Buffer
	client.Stdout, client.Stderr = &cout, &cout
	require.NoError(t, client.Start())

	var g grabbed
	curlJSON(t, ctx, &g, "-X", "POST", s.base+"/v1/functions/resize/grab?wait=60s&lease=2m")
	require.Equal(t, "cat.png", g.PayloadText)
	h := url.PathEscape(g.Handle)
	code, body := statusAndBody(t, ctx, "-X", "POST", "-H", "Content-Type: application/json",
		"-d", `{"numerator":1,"denominator":2}`, s.base+"/v1/jobs/"+h+"/status?lease="+g.Lease)
	require.Equal(t, 204, code, body)
	code, body = statusAndBody(t, ctx, "-X", "POST", "--data-binary", "small-cat.png",
		"-H", "Gearwork-Lease: "+g.Lease, s.base+"/v1/jobs/"+h+"/complete")
	require.Equal(t, 204, code, body)
	require.NoError(t, client.Wait(), cout.String())
	require.Contains(t, cout.String(), "50% Complete", "the Gearman client got the HTTP worker's WORK_STATUS")
	require.Equal(t, "small-cat.png", strings.TrimSpace(strings.Replace(cout.String(), "50% Complete", "", 1)),
		"the Gearman client got the HTTP worker's result")

	// A background Gearman submit reaches HTTP workers too.
	require.NoError(t, exec.CommandContext(ctx, "gearman", "-h", host, "-p", port, "-b", "-f", "resize", "dog.png").Run())
	curlJSON(t, ctx, &g, "-X", "POST", s.base+"/v1/functions/resize/grab?wait=60s")
	require.Equal(t, "dog.png", g.PayloadText)
	code, _ = statusAndBody(t, ctx, "-X", "POST", s.base+"/v1/jobs/"+url.PathEscape(g.Handle)+"/fail?lease="+g.Lease)
	require.Equal(t, 204, code)
}

// Event streams over a real connection: events of a running job, resume
// with Last-Event-ID, the end of the stream after the final event.
func TestEventsResumeWithCurl(t *testing.T) {
	t.Parallel()
	s, ctx := curlServer(t)
	var job jobJSON
	curlJSON(t, ctx, &job, "-X", "POST", "--data-binary", "report-2026", s.base+"/v1/functions/report/jobs")
	h := url.PathEscape(job.Handle)
	var g grabbed
	curlJSON(t, ctx, &g, "-X", "POST", s.base+"/v1/functions/report/grab?wait=10s")
	for i := 1; i <= 3; i++ {
		code, _ := statusAndBody(t, ctx, "-X", "POST", "-d", `{"numerator":`+string(rune('0'+i))+`,"denominator":3}`,
			s.base+"/v1/jobs/"+h+"/status?lease="+g.Lease)
		require.Equal(t, 204, code)
	}
	code, _ := statusAndBody(t, ctx, "-X", "POST", "--data-binary", "page 1 done", s.base+"/v1/jobs/"+h+"/data?lease="+g.Lease)
	require.Equal(t, 204, code)

	// Start a stream and resume it: the server closes neither, so read
	// until the data event with a bounded curl.
	done := make(chan string, 1)
	go func() {
		out, _ := exec.CommandContext(ctx, "curl", "-sS", "-N", "--max-time", "60", "-H", "Last-Event-ID: 2",
			s.base+"/v1/jobs/"+h+"/events").Output()
		done <- string(out)
	}()
	// Give the job its final event; the stream ends after it.
	code, _ = statusAndBody(t, ctx, "-X", "POST", "--data-binary", "report.pdf", s.base+"/v1/jobs/"+h+"/complete?lease="+g.Lease)
	require.Equal(t, 204, code)
	out := <-done
	require.NotContains(t, out, "id: 1\n", "events up to Last-Event-ID are not sent again")
	require.NotContains(t, out, "id: 2\n")
	for _, want := range []string{"id: 3\nevent: status\n", "id: 4\nevent: status\n", "id: 5\nevent: data\n", "id: 6\nevent: complete\n"} {
		require.Contains(t, out, want)
	}
	require.Contains(t, out, `"text":"report.pdf"`)
	// The whole log from the start.
	full := curl(t, ctx, "-N", s.base+"/v1/jobs/"+h+"/events")
	require.True(t, strings.HasPrefix(full, "retry: 1000\n\nid: 1\nevent: state\n"), full)
	code, _ = statusAndBody(t, ctx, "-H", "Last-Event-ID: 6", s.base+"/v1/jobs/"+h+"/events")
	require.Equal(t, 204, code)
}

func TestMetricsHealthAndProblems(t *testing.T) {
	t.Parallel()
	s, ctx := curlServer(t)
	for range 3 {
		curl(t, ctx, "-X", "POST", s.base+"/v1/functions/mail/jobs?priority=low")
	}
	metrics := curl(t, ctx, s.base+"/metrics")
	require.Contains(t, metrics, `gearwork_jobs_submitted_total{function="mail"} 3`)
	require.Contains(t, metrics, `gearwork_queue_depth{function="mail",priority="low"} 3`)
	require.Contains(t, metrics, `gearwork_connections{frontend="gearman"} 0`)
	require.Contains(t, curl(t, ctx, s.base+"/healthz"), `"ok"`)
	require.Contains(t, curl(t, ctx, s.base+"/readyz"), `"ready"`)
	out := curl(t, ctx, "-i", s.base+"/v1/jobs/H:e2e:999")
	require.Contains(t, out, "HTTP/1.1 404 Not Found")
	require.Contains(t, out, "Content-Type: application/problem+json")
	require.Contains(t, out, `"detail":"no job H:e2e:999`)
	out = curl(t, ctx, "-i", "-X", "POST", "--data-binary", "{}", "--compressed", s.base+"/v1/jobs:batch")
	require.Contains(t, out, "Content-Encoding: gzip")
	require.Contains(t, out, `{"line":1,"error":{`, "the batch line names no function")
}

func TestTokens(t *testing.T) {
	t.Parallel()
	testserver.NeedCommand(t, "curl")
	dir := t.TempDir()
	tokens := dir + "/tokens"
	require.NoError(t, os.WriteFile(tokens, []byte("ci submit,read s3cret\n"), 0o600))
	s := startServer(t, "--http-tokens", tokens)
	ctx := testContext(t)
	code, body := statusAndBody(t, ctx, "-X", "POST", s.base+"/v1/functions/f/jobs")
	require.Equal(t, 401, code, body)
	code, body = statusAndBody(t, ctx, "-X", "POST", "-H", "Authorization: Bearer s3cret", s.base+"/v1/functions/f/jobs")
	require.Equal(t, 202, code, body)
	code, _ = statusAndBody(t, ctx, "-X", "POST", "-H", "Authorization: Bearer s3cret", s.base+"/v1/functions/f/grab?wait=1ms")
	require.Equal(t, 403, code)
}
