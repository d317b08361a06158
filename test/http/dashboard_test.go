package http_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gearwork/gearwork/gearman"
	"github.com/gearwork/gearwork/internal/gearmantest/wire"
	"github.com/gearwork/gearwork/internal/testserver"

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

// httpPost posts body and decodes a JSON answer (200 OK or 202 Accepted)
// into v (if non-nil).
func httpPost(t *testing.T, u, body string, v any) int {
	t.Helper()
	resp, err := http.Post(u, "text/plain", bytes.NewBufferString(body))
	require.NoError(t, err)
	defer resp.Body.Close()
	if v != nil && (resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusAccepted) {
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
	poll(t, ctx, "the function to show paused", `document.querySelector('`+fnRow+` td.paused')?.textContent === 'paused'`)
	require.Equal(t, http.StatusNoContent, httpPost(t, s.base+"/v1/functions/dash/grab?wait=1ms", "", nil))
	require.NoError(t, chromedp.Do(ctx, chromedp.Click(fnRow+" button.resume")))
	// Not paused, it is "active", the word of gearwork admin policy (not
	// "running", a job's state, which the function's jobs may not be in).
	poll(t, ctx, "the function to run again", `(() => { const r = document.querySelector('`+fnRow+`');
		return r && r.querySelector('td.paused') === null && r.querySelector('button.pause') !== null &&
			[...r.children].some((td) => td.textContent === 'active'); })()`)

	if path := os.Getenv("GEARWORK_SCREENSHOT"); path != "" {
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(path, png, 0o644))
	}
}

// The job browser in a real browser, in a 1280-px window: counts by state
// per function, the list filtered by function and state and paged, a job's
// record by its deep link (payload, attempts with their errors), cancel of
// a live job and retry of a dead one; the dead letters fit the window.
func TestDashboardJobBrowser(t *testing.T) {
	ctx := browser(t)
	s := startServer(t)
	require.NoError(t, chromedp.Do(ctx, chromedp.EmulateViewport(1280, 900)))

	// Three complete jobs, one dead with a long error, one queued.
	var g grabbed
	for i := range 3 {
		require.Equal(t, http.StatusAccepted, httpPost(t, s.base+"/v1/functions/browse/jobs", fmt.Sprintf("img-%d", i), nil))
		require.Equal(t, http.StatusOK, httpPost(t, s.base+"/v1/functions/browse/grab?wait=30s", "", &g))
		require.Equal(t, http.StatusNoContent, httpPost(t, s.base+"/v1/jobs/"+url.PathEscape(g.Handle)+"/complete?lease="+g.Lease, "ok", nil))
	}
	longError := strings.Repeat("disk full on /var/spool/images ", 20)
	require.Equal(t, http.StatusAccepted, httpPost(t, s.base+"/v1/functions/browse/jobs?attempts=1", "img-dead", nil))
	require.Equal(t, http.StatusOK, httpPost(t, s.base+"/v1/functions/browse/grab?wait=30s", "", &g))
	dead := g.Handle
	require.Equal(t, http.StatusNoContent, httpPost(t, s.base+"/v1/jobs/"+url.PathEscape(dead)+"/fail?lease="+g.Lease, longError, nil))
	var queued struct{ Handle string }
	require.Equal(t, http.StatusAccepted, httpPost(t, s.base+"/v1/functions/browse/jobs", "img-queued", nil))
	resp, err := http.Get(s.base + "/v1/jobs?function=browse&state=queued")
	require.NoError(t, err)
	var page struct{ Jobs []struct{ Handle string } }
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&page))
	resp.Body.Close()
	require.Len(t, page.Jobs, 1)
	queued.Handle = page.Jobs[0].Handle

	require.NoError(t, chromedp.Do(ctx, chromedp.Navigate(s.base+"/"), chromedp.WaitVisible("#conn.on")))
	counts := `#job-counts tr[data-function="browse"]`
	poll(t, ctx, "the counts by state", `(() => { const r = document.querySelector(`+jsString(counts)+`);
		return r && r.querySelector('td[data-state="complete"]').textContent === '3' &&
			r.querySelector('td[data-state="dead"]').textContent === '1' &&
			r.querySelector('td[data-state="queued"]').textContent === '1'; })()`)

	// Click the "complete" count: the list shows the three, newest first.
	require.NoError(t, chromedp.Do(ctx, chromedp.Click(counts+` td[data-state="complete"] a`)))
	poll(t, ctx, "the filtered list", `document.querySelectorAll('#jobs tbody tr').length === 3 &&
		[...document.querySelectorAll('#jobs tbody td.state')].every((td) => td.textContent === 'complete')`)

	// The dead letters fit a 1280-px window, long error and all.
	poll(t, ctx, "the dead letter row", `document.querySelector('#dead tr[data-handle="`+dead+`"]') !== null`)
	fits, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`(() => { const s = document.querySelector('#dead-section');
		return s.scrollWidth <= s.clientWidth && document.documentElement.scrollWidth <= 1280; })()`))
	require.NoError(t, err)
	require.True(t, fits, "the dead letters fit the window")

	// The dead job's deep link shows its record; Retry queues it again.
	require.NoError(t, chromedp.Do(ctx, chromedp.Navigate(s.base+"/#job="+url.QueryEscape(dead))))
	poll(t, ctx, "the dead job's record", `document.querySelector('#detail-state').textContent === 'dead' &&
		document.querySelector('#detail-payload').textContent.startsWith('img-dead') &&
		document.querySelector('#detail-attempts tbody').textContent.includes('disk full on /var/spool/images') &&
		document.querySelector('#detail-attempts tbody').textContent.includes('exception')`)
	require.NoError(t, chromedp.Do(ctx, chromedp.Click("#detail-retry")))
	poll(t, ctx, "the retried job to be queued", `document.querySelector('#detail-state').textContent === 'queued'`)

	// A foreground job submitted over Gearman that failed: Retry runs it
	// again as a new job, whose page names the failed one.
	gc := wire.Dial(t, s.gearman)
	gc.Send(gearman.SubmitJob, "browse-fg", "", "img-fg")
	cmd, args := gc.Read()
	require.Equal(t, gearman.JobCreated, cmd)
	failed := args[0]
	require.Equal(t, http.StatusOK, httpPost(t, s.base+"/v1/functions/browse-fg/grab?wait=30s", "", &g))
	require.Equal(t, failed, g.Handle)
	require.Equal(t, http.StatusNoContent, httpPost(t, s.base+"/v1/jobs/"+url.PathEscape(failed)+"/fail?lease="+g.Lease, "", nil))
	gc.Expect(gearman.WorkFail, failed)
	require.NoError(t, chromedp.Do(ctx, chromedp.Navigate(s.base+"/#job="+url.QueryEscape(failed))))
	poll(t, ctx, "the failed job's record", `document.querySelector('#detail-state').textContent === 'failed' &&
		!document.querySelector('#detail-retry').hidden`)
	require.NoError(t, chromedp.Do(ctx, chromedp.Click("#detail-retry")))
	poll(t, ctx, "the new job's page", `location.hash !== '#job=`+url.QueryEscape(failed)+`' &&
		document.querySelector('#detail-state').textContent === 'queued' &&
		document.querySelector('#detail-fields a').textContent === `+jsString(failed))
	require.Equal(t, http.StatusOK, httpPost(t, s.base+"/v1/functions/browse-fg/grab?wait=30s", "", &g))
	require.NotEqual(t, failed, g.Handle)
	require.Equal(t, "img-fg", g.PayloadText, "the new job has the failed one's payload")
	require.Equal(t, http.StatusNoContent, httpPost(t, s.base+"/v1/jobs/"+url.PathEscape(g.Handle)+"/complete?lease="+g.Lease, "ok", nil))

	// A queued job cancelled from its page stays cancelled.
	require.NoError(t, chromedp.Do(ctx, chromedp.Navigate(s.base+"/#job="+url.QueryEscape(queued.Handle))))
	poll(t, ctx, "the queued job's record", `document.querySelector('#detail-state').textContent === 'queued' &&
		!document.querySelector('#detail-cancel').hidden`)
	require.NoError(t, chromedp.Do(ctx, chromedp.Click("#detail-cancel")))
	poll(t, ctx, "the job to show cancelled", `document.querySelector('#detail-state').textContent === 'cancelled' &&
		document.querySelector('#detail-cancel').hidden &&
		document.querySelector('#detail-fields').textContent.includes('cancelled by')`)

	// Delete forgets a complete job's record.
	require.Equal(t, http.StatusAccepted, httpPost(t, s.base+"/v1/functions/browse/jobs", "img-forget", nil))
	require.Equal(t, http.StatusOK, httpPost(t, s.base+"/v1/functions/browse/grab?wait=30s", "", &g))
	require.Equal(t, http.StatusNoContent, httpPost(t, s.base+"/v1/jobs/"+url.PathEscape(g.Handle)+"/complete?lease="+g.Lease, "ok", nil))
	require.NoError(t, chromedp.Do(ctx, chromedp.Navigate(s.base+"/#job="+url.QueryEscape(g.Handle))))
	poll(t, ctx, "the complete job's record", `document.querySelector('#detail-state').textContent === 'complete' &&
		!document.querySelector('#detail-delete').hidden`)
	_, err = chromedp.Run(ctx, chromedp.Evaluate[any](`(() => { window.confirm = () => true; return null; })()`))
	require.NoError(t, err)
	require.NoError(t, chromedp.Do(ctx, chromedp.Click("#detail-delete")))
	poll(t, ctx, "the record to be gone", `document.querySelector('#detail-state').textContent === 'unknown'`)

	// The function's list in every state: live jobs and ended ones.
	_, err = chromedp.Run(ctx, chromedp.Evaluate[any](`(() => {
		document.querySelector('#jobs-function').value = 'browse'; document.querySelector('#jobs-state').value = '';
		return null; })()`))
	require.NoError(t, err)
	require.NoError(t, chromedp.Do(ctx, chromedp.Click("#jobs-btn")))
	poll(t, ctx, "every job of the function", `document.querySelectorAll('#jobs tbody tr').length === 5 &&
		document.querySelector('#jobs tbody').textContent.includes('cancelled')`)
}

// The dashboard lists batches with their progress, and shows a batch
// complete with what became of its callbacks once its jobs are done:
// on_complete fired, on_success skipped for a job cancelled (not
// "waiting", as the admin command and the API say too).
func TestDashboardBatches(t *testing.T) {
	ctx := browser(t)
	s := startServer(t)
	resp, err := http.Post(s.base+"/v1/batches", "application/json", strings.NewReader(
		`{"on_success": {"function": "dash_ok"}, "on_complete": {"function": "dash_done"}, "jobs": [{"function": "dash_b", "payload": "1"}, {"function": "dash_b", "payload": "2"}]}`))
	require.NoError(t, err)
	var created struct {
		Batch struct {
			ID string `json:"id"`
		} `json:"batch"`
	}
	require.Equal(t, http.StatusCreated, resp.StatusCode)
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&created))
	resp.Body.Close()

	require.NoError(t, chromedp.Do(ctx, chromedp.Navigate(s.base+"/"), chromedp.WaitVisible("#conn.on")))
	row := func(progress, state, callbacks string) string {
		return fmt.Sprintf(`(() => { const r = document.querySelector('tr[data-batch="%s"]');
			return r && r.children[1].textContent.trim() === %s && r.children[8].textContent === %s &&
				r.children[9].textContent === %s; })()`, created.Batch.ID, jsString(progress), jsString(state), jsString(callbacks))
	}
	waiting := "on_success dash_ok (waiting), on_complete dash_done (waiting)"
	poll(t, ctx, "the batch row", row("0/2", "closed", waiting))
	var g grabbed
	require.Equal(t, http.StatusOK, httpPost(t, s.base+"/v1/functions/dash_b/grab?wait=30s", "", &g))
	require.Equal(t, http.StatusNoContent, httpPost(t, s.base+"/v1/jobs/"+url.PathEscape(g.Handle)+"/complete?lease="+g.Lease, "", nil))
	poll(t, ctx, "one job done", row("1/2", "closed", waiting))
	require.Equal(t, http.StatusOK, httpPost(t, s.base+"/v1/functions/dash_b/grab?wait=30s", "", &g))
	req, err := http.NewRequest(http.MethodDelete, s.base+"/v1/jobs/"+url.PathEscape(g.Handle), nil)
	require.NoError(t, err)
	resp, err = http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusNoContent, resp.StatusCode)
	poll(t, ctx, "the batch complete", row("2/2", "complete", "on_success dash_ok (skipped), on_complete dash_done (fired)"))
}

// The job browser's actions are the API's, with the page's token: a
// read-only token's Cancel and Retry are refused with the API's reason
// and change nothing; an admin token's go through.
func TestDashboardActionsNeedTheAPIsScopes(t *testing.T) {
	ctx := browser(t)
	tokens := t.TempDir() + "/tokens"
	require.NoError(t, os.WriteFile(tokens, []byte("viewer read v-secret\nops admin o-secret\n"), 0o600))
	s := startServer(t, "--http-tokens", tokens)
	post := func(path, body string, v any) int {
		t.Helper()
		req, err := http.NewRequest(http.MethodPost, s.base+path, strings.NewReader(body))
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer o-secret")
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		if v != nil {
			require.NoError(t, json.NewDecoder(resp.Body).Decode(v))
		}
		return resp.StatusCode
	}
	var live, g grabbed
	require.Equal(t, http.StatusAccepted, post("/v1/functions/guarded/jobs", "keep me", &live))
	require.Equal(t, http.StatusAccepted, post("/v1/functions/doomed/jobs?attempts=1", "img", nil))
	require.Equal(t, http.StatusOK, post("/v1/functions/doomed/grab?wait=30s", "", &g))
	require.Equal(t, http.StatusNoContent, post("/v1/jobs/"+url.PathEscape(g.Handle)+"/fail?lease="+g.Lease, "", nil))

	useToken := func(tok string) {
		t.Helper()
		_, err := chromedp.Run(ctx, chromedp.Evaluate[any](`(() => { const i = document.querySelector('#token');
			i.value = `+jsString(tok)+`; i.dispatchEvent(new Event('change')); return null; })()`))
		require.NoError(t, err)
	}
	require.NoError(t, chromedp.Do(ctx, chromedp.Navigate(s.base+"/")))
	useToken("v-secret")
	require.NoError(t, chromedp.Do(ctx, chromedp.Navigate(s.base+"/#job="+url.QueryEscape(live.Handle)), chromedp.Reload()))
	poll(t, ctx, "the live job's record", `document.querySelector('#detail-state').textContent === 'queued'`)
	// freshState reloads the page, which reads the job's record from the
	// server again, and returns the state it shows.
	freshState := func() string {
		t.Helper()
		require.NoError(t, chromedp.Do(ctx, chromedp.Reload()))
		poll(t, ctx, "the record read again", `!['', '…'].includes(document.querySelector('#detail-state').textContent)`)
		return text(t, ctx, "#detail-state")
	}
	require.NoError(t, chromedp.Do(ctx, chromedp.Click("#detail-cancel")))
	poll(t, ctx, "the refusal", `document.querySelector('#detail-error').textContent.includes('do not include admin')`)
	require.Equal(t, "queued", freshState(), "a refused cancel changes nothing")

	require.NoError(t, chromedp.Do(ctx, chromedp.Navigate(s.base+"/#job="+url.QueryEscape(g.Handle))))
	poll(t, ctx, "the dead job's record", `document.querySelector('#detail-state').textContent === 'dead' &&
		!document.querySelector('#detail-retry').hidden`)
	require.NoError(t, chromedp.Do(ctx, chromedp.Click("#detail-retry")))
	poll(t, ctx, "the refusal", `document.querySelector('#detail-error').textContent.includes('do not include admin')`)
	require.Equal(t, "dead", freshState(), "a refused retry changes nothing")

	useToken("o-secret")
	require.NoError(t, chromedp.Do(ctx, chromedp.Click("#detail-retry")))
	poll(t, ctx, "the dead job queued again", `document.querySelector('#detail-state').textContent === 'queued'`)
	require.NoError(t, chromedp.Do(ctx, chromedp.Navigate(s.base+"/#job="+url.QueryEscape(live.Handle))))
	poll(t, ctx, "the live job's record", `document.querySelector('#detail-state').textContent === 'queued'`)
	require.NoError(t, chromedp.Do(ctx, chromedp.Click("#detail-cancel")))
	poll(t, ctx, "the job cancelled", `document.querySelector('#detail-state').textContent === 'cancelled'`)
}

// The job browser counts and lists jobs in every live state, among them a
// job waiting for another (after) to complete.
func TestDashboardCountsWaitingJobs(t *testing.T) {
	ctx := browser(t)
	s := startServer(t)
	var first struct{ Handle string }
	require.Equal(t, http.StatusAccepted, httpPost(t, s.base+"/v1/functions/stage1/jobs", "a", &first))
	var waiting struct{ Handle, State string }
	require.Equal(t, http.StatusAccepted, httpPost(t, s.base+"/v1/functions/stage2/jobs?after="+url.QueryEscape(first.Handle), "b", &waiting))
	require.Equal(t, "waiting", waiting.State)

	require.NoError(t, chromedp.Do(ctx, chromedp.Navigate(s.base+"/"), chromedp.WaitVisible("#conn.on")))
	counts := `#job-counts tr[data-function="stage2"]`
	poll(t, ctx, "the waiting job's count", `(() => { const r = document.querySelector(`+jsString(counts)+`);
		const td = r && r.querySelector('td[data-state="waiting"]');
		return td !== null && td.textContent === '1'; })()`)
	require.NoError(t, chromedp.Do(ctx, chromedp.Click(counts+` td[data-state="waiting"] a`)))
	poll(t, ctx, "the list of waiting jobs", `document.querySelector('#jobs-state').value === 'waiting' &&
		document.querySelectorAll('#jobs tbody tr').length === 1 &&
		document.querySelector('#jobs tbody').textContent.includes(`+jsString(waiting.Handle)+`)`)
}

// Following a job by its handle shows how a job that ended unwatched
// (submitted and run over the Gearman port) ended, and says so of a
// handle the server does not know instead of waiting forever.
func TestDashboardFollowsAnEndedJob(t *testing.T) {
	ctx := browser(t)
	s := startServer(t)
	gc := wire.Dial(t, s.gearman)
	gc.Send(gearman.SubmitJobBg, "ended", "", "p")
	cmd, args := gc.Read()
	require.Equal(t, gearman.JobCreated, cmd)
	handle := args[0]
	var g grabbed
	require.Equal(t, http.StatusOK, httpPost(t, s.base+"/v1/functions/ended/grab?wait=30s", "", &g))
	require.Equal(t, http.StatusNoContent, httpPost(t, s.base+"/v1/jobs/"+url.PathEscape(handle)+"/complete?lease="+g.Lease, "all done", nil))

	require.NoError(t, chromedp.Do(ctx, chromedp.Navigate(s.base+"/"), chromedp.WaitVisible("#conn.on"),
		chromedp.SendKeys("#lookup-handle", handle), chromedp.Click("#lookup-btn")))
	poll(t, ctx, "the ended job's outcome", `document.querySelector('#job-state').textContent === 'complete' &&
		document.querySelector('#job-result').textContent === 'all done'`)

	_, err := chromedp.Run(ctx, chromedp.Evaluate[any](`(() => { document.querySelector('#lookup-handle').value = ''; return null; })()`))
	require.NoError(t, err)
	require.NoError(t, chromedp.Do(ctx, chromedp.SendKeys("#lookup-handle", "H:e2e:999999"), chromedp.Click("#lookup-btn")))
	poll(t, ctx, "an unknown job", `document.querySelector('#job-handle').textContent === 'H:e2e:999999' &&
		document.querySelector('#job-state').textContent === 'unknown'`)
}

// A job's page shows its whole payload as it is, non-ASCII text included,
// and marks only a payload longer than the record keeps as cut.
func TestDashboardJobPayloadIsShownWhole(t *testing.T) {
	ctx := browser(t)
	s := startServer(t)
	var job struct{ Handle string }
	require.Equal(t, http.StatusAccepted, httpPost(t, s.base+"/v1/functions/text/jobs", "grüße, 世界", &job))
	require.Equal(t, http.StatusNoContent, doDelete(t, s.base+"/v1/jobs/"+url.PathEscape(job.Handle)))
	require.NoError(t, chromedp.Do(ctx, chromedp.Navigate(s.base+"/#job="+url.QueryEscape(job.Handle))))
	poll(t, ctx, "the cancelled job's payload, whole", `document.querySelector('#detail-state').textContent === 'cancelled' &&
		document.querySelector('#detail-payload').textContent === 'grüße, 世界'`)
}

func doDelete(t *testing.T, u string) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodDelete, u, nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	return resp.StatusCode
}

// A server knowing more functions than the overview carries (200) shows
// those it carries and says how many more there are.
func TestDashboardSaysHowManyFunctionsItLeavesOut(t *testing.T) {
	ctx := browser(t)
	s := startServer(t)
	for i := range 205 {
		resp, err := http.Post(fmt.Sprintf("%s/v1/functions/fn%03d/jobs", s.base, i), "text/plain", strings.NewReader("x"))
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, http.StatusAccepted, resp.StatusCode)
	}
	require.NoError(t, chromedp.Do(ctx, chromedp.Navigate(s.base+"/"), chromedp.WaitVisible("#conn.on")))
	poll(t, ctx, "the note on functions left out", `(() => { const p = document.querySelector('#functions-omitted');
		return !p.hidden && p.textContent.startsWith('5 more functions not shown'); })()`)
	poll(t, ctx, "200 function rows", `document.querySelectorAll('#functions tbody tr').length === 200`)
	require.Contains(t, text(t, ctx, "#summary"), "205 functions")
}

// The followed job's state uses the names of every other view: retry-wait
// between attempts (not "retry"), and its event log says why each run
// ended and when the job runs again. Purge all asks first: dismissing the
// question keeps every dead letter.
func TestDashboardStateNamesAndPurgeAll(t *testing.T) {
	ctx := browser(t)
	// The failed job waits at least 4 s for its retry (not the default
	// second), so that a loaded machine's page still sees it in retry-wait
	// before it is queued again; the second grab waits up to 30 s for it.
	cfg := filepath.Join(t.TempDir(), "gearwork.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte("functions:\n  wobbly:\n    backoff: 5s\n  shaky:\n    backoff: 1h\n"), 0o600))
	s := startServer(t, "--config", cfg)
	require.NoError(t, chromedp.Do(ctx, chromedp.Navigate(s.base+"/"), chromedp.WaitVisible("#conn.on")))
	follow := func(handle string) {
		t.Helper()
		_, err := chromedp.Run(ctx, chromedp.Evaluate[any](`(() => { document.querySelector('#lookup-handle').value = `+
			jsString(handle)+`; return null; })()`))
		require.NoError(t, err)
		require.NoError(t, chromedp.Do(ctx, chromedp.Click("#lookup-btn")))
		poll(t, ctx, "the job to be followed", `document.querySelector('#job-handle').textContent === `+jsString(handle)+
			` && document.querySelector('#job-state').textContent === 'queued'`)
	}
	var job struct{ Handle string }
	var g grabbed
	fail := func(fn, why string) {
		t.Helper()
		require.Equal(t, http.StatusOK, httpPost(t, s.base+"/v1/functions/"+fn+"/grab?wait=30s", "", &g))
		require.Equal(t, job.Handle, g.Handle)
		require.Equal(t, http.StatusNoContent, httpPost(t, s.base+"/v1/jobs/"+url.PathEscape(g.Handle)+"/fail?lease="+g.Lease, why, nil))
	}
	submit := func(u string) {
		t.Helper()
		resp, err := http.Post(u, "text/plain", strings.NewReader("x"))
		require.NoError(t, err)
		defer resp.Body.Close()
		require.Equal(t, http.StatusAccepted, resp.StatusCode)
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&job))
	}

	// The event log says why a run ended (a WORK_FAIL carries no data:
	// its reason is the record's "failed") and when the job runs again.
	submit(s.base + "/v1/functions/shaky/jobs?attempts=2")
	follow(job.Handle)
	fail("shaky", "")
	poll(t, ctx, "the reason of the retry", `document.querySelector('#job-state').textContent === 'retry-wait' &&
		[...document.querySelectorAll('#job-events li')].some((li) =>
			li.textContent.startsWith('retry: failed; attempt 1 of 2; runs again at '))`)
	// Its end says who cancelled it.
	require.Equal(t, http.StatusNoContent, doDelete(t, s.base+"/v1/jobs/"+url.PathEscape(job.Handle)))
	poll(t, ctx, "who cancelled it", `document.querySelector('#job-state').textContent === 'cancelled' &&
		[...document.querySelectorAll('#job-events li')].some((li) => /^fail: cancelled by http 127\.0\.0\.1:\d+$/.test(li.textContent))`)

	submit(s.base + "/v1/functions/wobbly/jobs?attempts=2")
	follow(job.Handle)
	fail("wobbly", "first try")
	poll(t, ctx, "the job waiting for its retry", `document.querySelector('#job-state').textContent === 'retry-wait'`)
	poll(t, ctx, "the exception of the retry", `[...document.querySelectorAll('#job-events li')].some((li) =>
		li.textContent.startsWith('retry: first try; attempt 1 of 2; runs again at '))`)
	fail("wobbly", "second try")
	poll(t, ctx, "the job to end dead", `document.querySelector('#job-state').textContent === 'dead'`)

	// Purge all, dismissed, then confirmed.
	deadRows := `document.querySelectorAll('#dead tbody tr[data-handle]').length`
	poll(t, ctx, "the dead letter row", deadRows+` === 1`)
	_, err := chromedp.Run(ctx, chromedp.Evaluate[any](`(() => { window.asked = ''; window.confirm = (q) => { window.asked = q; return false; }; return null; })()`))
	require.NoError(t, err)
	require.NoError(t, chromedp.Do(ctx, chromedp.Click("#dead-purge-all")))
	poll(t, ctx, "the question", `window.asked.includes('dead letter')`)
	resp, err := http.Get(s.base + "/v1/dead-letters")
	require.NoError(t, err)
	var dl struct {
		DeadLetters []struct{ Handle string } `json:"dead_letters"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&dl))
	resp.Body.Close()
	require.Len(t, dl.DeadLetters, 1, "a dismissed purge purges nothing")
	_, err = chromedp.Run(ctx, chromedp.Evaluate[any](`(() => { window.confirm = () => true; return null; })()`))
	require.NoError(t, err)
	require.NoError(t, chromedp.Do(ctx, chromedp.Click("#dead-purge-all")))
	poll(t, ctx, "the dead letters to go", deadRows+` === 0`)
}

// A dead letter's Purge and a dead job's Delete ask first, naming the job:
// dismissing the question keeps the dead letter (and the record), which
// can still be retried; confirming removes it.
func TestDashboardAsksBeforePurgeAndDelete(t *testing.T) {
	ctx := browser(t)
	s := startServer(t)
	var dead []string
	for range 2 {
		var job struct{ Handle string }
		require.Equal(t, http.StatusAccepted, httpPost(t, s.base+"/v1/functions/doomed/jobs?attempts=1", "x", &job))
		var g grabbed
		require.Equal(t, http.StatusOK, httpPost(t, s.base+"/v1/functions/doomed/grab?wait=30s", "", &g))
		require.Equal(t, job.Handle, g.Handle)
		require.Equal(t, http.StatusNoContent, httpPost(t, s.base+"/v1/jobs/"+url.PathEscape(g.Handle)+"/fail?lease="+g.Lease, "no", nil))
		dead = append(dead, job.Handle)
	}
	deadLetters := func() []string {
		t.Helper()
		resp, err := http.Get(s.base + "/v1/dead-letters")
		require.NoError(t, err)
		defer resp.Body.Close()
		var dl struct {
			DeadLetters []struct{ Handle string } `json:"dead_letters"`
		}
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&dl))
		var hs []string
		for _, d := range dl.DeadLetters {
			hs = append(hs, d.Handle)
		}
		return hs
	}
	require.ElementsMatch(t, dead, deadLetters())
	answer := func(yes bool) {
		t.Helper()
		_, err := chromedp.Run(ctx, chromedp.Evaluate[any](fmt.Sprintf(
			`(() => { window.asked = ''; window.confirm = (q) => { window.asked = q; return %t; }; return null; })()`, yes)))
		require.NoError(t, err)
	}

	require.NoError(t, chromedp.Do(ctx, chromedp.Navigate(s.base+"/"), chromedp.WaitVisible("#conn.on")))
	deadRows := `document.querySelectorAll('#dead tbody tr[data-handle]').length`
	poll(t, ctx, "both dead letter rows", deadRows+` === 2`)
	purge := `#dead tbody tr[data-handle=` + jsString(dead[0]) + `] button.purge`
	answer(false)
	require.NoError(t, chromedp.Do(ctx, chromedp.Click(purge)))
	poll(t, ctx, "the question naming the dead letter", `window.asked.includes(`+jsString(dead[0])+`)`)
	require.ElementsMatch(t, dead, deadLetters(), "a dismissed Purge purges nothing")
	answer(true)
	require.NoError(t, chromedp.Do(ctx, chromedp.Click(purge)))
	poll(t, ctx, "the purged row to go", deadRows+` === 1`)
	require.Equal(t, dead[1:], deadLetters())

	// Delete of the other dead job, from its page.
	require.NoError(t, chromedp.Do(ctx, chromedp.Navigate(s.base+"/#job="+url.QueryEscape(dead[1]))))
	poll(t, ctx, "the dead job's record", `document.querySelector('#detail-state').textContent === 'dead' &&
		!document.querySelector('#detail-delete').hidden`)
	answer(false)
	require.NoError(t, chromedp.Do(ctx, chromedp.Click("#detail-delete")))
	poll(t, ctx, "the question naming the job", `window.asked.includes(`+jsString(dead[1])+`) && window.asked.includes('dead letter')`)
	require.Equal(t, dead[1:], deadLetters(), "a dismissed Delete keeps the dead letter")
	resp, err := http.Get(s.base + "/v1/jobs/" + url.PathEscape(dead[1]))
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode, "a dismissed Delete keeps the record")
	answer(true)
	require.NoError(t, chromedp.Do(ctx, chromedp.Click("#detail-delete")))
	poll(t, ctx, "the record to be gone", `document.querySelector('#detail-state').textContent === 'unknown'`)
	require.Empty(t, deadLetters())
}

// A job's page lists every field GET /v1/jobs/{handle} gives (but those
// it shows apart: state, payload, result, history), under the same names:
// a job waiting for its retry and a cancelled one.
func TestDashboardJobShowsEveryField(t *testing.T) {
	ctx := browser(t)
	// The failed job waits an hour for its retry, so that the page shows
	// it in retry-wait however long the browser takes (the default backoff
	// of a second ran out before it under load).
	cfg := filepath.Join(t.TempDir(), "gearwork.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte("functions:\n  fields:\n    backoff: 1h\n"), 0o600))
	s := startServer(t, "--config", cfg)
	var retrying, cancelled struct{ Handle string }
	require.Equal(t, http.StatusAccepted, httpPost(t, s.base+"/v1/functions/fields/jobs?attempts=3&unique=u-1&ordering-key=k", "x", &retrying))
	var g grabbed
	require.Equal(t, http.StatusOK, httpPost(t, s.base+"/v1/functions/fields/grab?wait=30s", "", &g))
	require.Equal(t, retrying.Handle, g.Handle)
	require.Equal(t, http.StatusNoContent, httpPost(t, s.base+"/v1/jobs/"+url.PathEscape(g.Handle)+"/fail?lease="+g.Lease, "disk full", nil))
	require.Equal(t, http.StatusAccepted, httpPost(t, s.base+"/v1/functions/fields/jobs?run-at=2100-01-01T00:00:00Z", "y", &cancelled))
	req, err := http.NewRequest("DELETE", s.base+"/v1/jobs/"+url.PathEscape(cancelled.Handle), nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Less(t, resp.StatusCode, 300)

	var waiting struct{ Handle string }
	require.Equal(t, http.StatusAccepted, httpPost(t, s.base+"/v1/functions/fields/jobs?after="+url.QueryEscape(retrying.Handle), "z", &waiting))

	require.NoError(t, chromedp.Do(ctx, chromedp.Navigate(s.base+"/"), chromedp.WaitVisible("#conn.on")))
	for _, h := range []string{retrying.Handle, cancelled.Handle, waiting.Handle} {
		resp, err := http.Get(s.base + "/v1/jobs/" + url.PathEscape(h))
		require.NoError(t, err)
		var rec map[string]any
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&rec))
		resp.Body.Close()
		require.NoError(t, chromedp.Do(ctx, chromedp.Navigate(s.base+"/#job="+url.QueryEscape(h))))
		poll(t, ctx, "the job's record", `document.querySelector('#detail-state').textContent === `+jsString(rec["state"].(string)))
		names, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](
			`[...document.querySelectorAll('#detail-fields dt')].map((dt) => dt.textContent)`))
		require.NoError(t, err)
		var want []string
		for k := range rec {
			switch k {
			case "handle", "state", "history", "result", "result_text", "result_truncated",
				"payload_preview", "payload_preview_text", "payload_size":
				continue
			}
			want = append(want, strings.ReplaceAll(k, "_", " "))
		}
		require.ElementsMatch(t, want, names, "%s: %v", h, rec)
	}
	// The jobs a waiting job waits for are links to their records.
	poll(t, ctx, "the link to the job waited for", `[...document.querySelectorAll('#detail-fields dd a')].some((a) =>
		a.textContent === `+jsString(retrying.Handle)+` && a.getAttribute('href') === `+jsString("#job="+url.QueryEscape(retrying.Handle))+`)`)
}
