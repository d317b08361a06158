package http_test

import (
	"bytes"
	"context"
	"encoding/json"
	"github.com/gearwork/gearwork/internal/testserver"
	"net/http"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"
)

// browser starts Debian's chromium headless with a fresh profile (and
// extra options) and returns a chromedp context for one tab.
func browser(t *testing.T, extra ...chromedp.ExecAllocatorOption) context.Context {
	t.Helper()
	path := testserver.NeedCommand(t, "chromium")
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), append([]chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
	}, extra...)...)
	ctx, cancelCtx := chromedp.NewContext(actx)
	t.Cleanup(func() {
		cancelCtx()
		cancelAlloc()
	})
	return ctx
}

// poll waits until a JavaScript expression is true in the page.
func poll(t *testing.T, ctx context.Context, what, expr string) {
	t.Helper()
	_, err := chromedp.Run(ctx, chromedp.Poll[bool](expr, chromedp.WithPollingTimeout(60*time.Second)))
	require.NoError(t, err, "waiting for %s (%s)", what, expr)
}

func text(t *testing.T, ctx context.Context, sel string) string {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[string]("document.querySelector("+jsString(sel)+").textContent"))
	require.NoError(t, err)
	return v
}

func jsString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// httpPost posts body and decodes a JSON answer into v (if non-nil).
func httpPost(t *testing.T, u, body string, v any) int {
	t.Helper()
	resp, err := http.Post(u, "text/plain", bytes.NewBufferString(body))
	require.NoError(t, err)
	defer resp.Body.Close()
	if v != nil && resp.StatusCode == http.StatusOK {
		require.NoError(t, json.NewDecoder(resp.Body).Decode(v))
	}
	return resp.StatusCode
}

// The dashboard in a real browser: it goes live over SSE, submits a job,
// follows its progress as an HTTP worker reports it, shows the result,
// lists the function with its counters, retries a dead letter and pauses
// and resumes a function.
func TestDashboardInChromium(t *testing.T) {
	ctx := browser(t)
	s := startServer(t)

	require.NoError(t, chromedp.Do(ctx,
		chromedp.Navigate(s.base+"/"),
		chromedp.WaitVisible("#conn.on"),
	), "the page loads and its overview stream connects")

	require.NoError(t, chromedp.Do(ctx,
		chromedp.SendKeys("#submit-fn", "dash"),
		chromedp.SendKeys("#submit-payload", "render me"),
		chromedp.Click("#submit-btn"),
	))
	poll(t, ctx, "the submitted job to be followed", `document.querySelector('#job-state').textContent === 'queued'`)
	handle := text(t, ctx, "#job-handle")
	require.Regexp(t, `^H:e2e:\d+$`, handle)
	poll(t, ctx, "the function row", `(() => { const r = document.querySelector('tr[data-function="dash"]');
		return r && r.children[2].textContent === '1'; })()`)

	// An HTTP worker takes the job and reports progress.
	var g grabbed
	require.Equal(t, http.StatusOK, httpPost(t, s.base+"/v1/functions/dash/grab?wait=30s", "", &g))
	require.Equal(t, handle, g.Handle)
	require.Equal(t, "render me", g.PayloadText)
	job := s.base + "/v1/jobs/" + url.PathEscape(g.Handle)
	require.Equal(t, http.StatusNoContent, httpPost(t, job+"/status?lease="+g.Lease, `{"numerator":1,"denominator":4}`, nil))
	poll(t, ctx, "25% progress", `document.querySelector('#job-progress-text').textContent === '25%'`)
	require.Equal(t, "running", text(t, ctx, "#job-state"))
	require.Equal(t, http.StatusNoContent, httpPost(t, job+"/data?lease="+g.Lease, "frame 1 of 4", nil))
	poll(t, ctx, "the data event in the log", `document.querySelector('#job-events').textContent.includes('frame 1 of 4')`)
	require.Equal(t, http.StatusNoContent, httpPost(t, job+"/complete?lease="+g.Lease, "movie.mp4", nil))
	poll(t, ctx, "the job to complete", `document.querySelector('#job-state').textContent === 'complete'`)
	require.Equal(t, "movie.mp4", text(t, ctx, "#job-result"))
	poll(t, ctx, "the completed counter", `(() => { const r = document.querySelector('tr[data-function="dash"]');
		return r && r.children[7].textContent === '1' && r.children[4].textContent === '0'; })()`)
	poll(t, ctx, "the chart to draw", `document.querySelectorAll('#chart polyline').length > 0`)

	// A job out of attempts shows as a dead letter; Retry queues it again
	// and the page follows it to its new outcome.
	require.Equal(t, http.StatusAccepted, httpPost(t, s.base+"/v1/functions/flaky/jobs?attempts=1", "order-9", nil))
	require.Equal(t, http.StatusOK, httpPost(t, s.base+"/v1/functions/flaky/grab?wait=30s", "", &g))
	dead := g.Handle
	require.Equal(t, http.StatusNoContent, httpPost(t, s.base+"/v1/jobs/"+url.PathEscape(dead)+"/fail?lease="+g.Lease, "card declined", nil))
	row := `#dead tr[data-handle="` + dead + `"]`
	poll(t, ctx, "the dead letter row", `(() => { const r = document.querySelector(`+jsString(row)+`);
		return r && r.textContent.includes('card declined'); })()`)
	require.NoError(t, chromedp.Do(ctx, chromedp.Click(row+" button.retry")))
	poll(t, ctx, "the retried job to be followed", `document.querySelector('#job-handle').textContent === `+jsString(dead)+
		` && document.querySelector('#job-state').textContent === 'queued'`)
	poll(t, ctx, "the dead letter row to go", `document.querySelector(`+jsString(row)+`) === null`)
	require.Equal(t, http.StatusOK, httpPost(t, s.base+"/v1/functions/flaky/grab?wait=30s", "", &g))
	require.Equal(t, dead, g.Handle)
	require.Equal(t, http.StatusNoContent, httpPost(t, s.base+"/v1/jobs/"+url.PathEscape(dead)+"/complete?lease="+g.Lease, "charged", nil))
	poll(t, ctx, "the retried job to complete", `document.querySelector('#job-state').textContent === 'complete' &&
		document.querySelector('#job-result').textContent === 'charged'`)

	// Pause and resume a function from its row.
	fnRow := `tr[data-function="dash"]`
	require.NoError(t, chromedp.Do(ctx, chromedp.Click(fnRow+" button.pause")))
	poll(t, ctx, "the function to show paused", `document.querySelector('`+fnRow+` td.paused') !== null`)
	require.Equal(t, http.StatusNoContent, httpPost(t, s.base+"/v1/functions/dash/grab?wait=1ms", "", nil))
	require.NoError(t, chromedp.Do(ctx, chromedp.Click(fnRow+" button.resume")))
	poll(t, ctx, "the function to run again", `(() => { const r = document.querySelector('`+fnRow+`');
		return r && r.querySelector('td.paused') === null && r.querySelector('button.pause') !== null; })()`)

	if path := os.Getenv("GEARWORK_SCREENSHOT"); path != "" {
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(path, png, 0o644))
	}
}
