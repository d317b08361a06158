package http_test

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/internal/testwait"
)

// attackPage is what a hostile site serves: attack(target) tries to
// submit a job to "victim" and pause it on the server at target, with
// the requests any page may send without asking (fetch in no-cors mode,
// a form posted into a frame).
const attackPage = `<!doctype html><body><script>
async function attack(target) {
  const out = [];
  for (const [path, body] of [["/v1/functions/victim/jobs", "pwned"], ["/v1/functions/victim/pause", ""]]) {
    try {
      const r = await fetch(target + path, {method: "POST", mode: "no-cors", body, headers: {"Content-Type": "text/plain"}});
      out.push("sent " + r.type);
    } catch (e) {
      out.push("failed " + e);
    }
  }
  out.push(await new Promise(done => {
    const frame = document.createElement("iframe");
    frame.name = "sink";
    document.body.appendChild(frame);
    // The frame loads about:blank first; the answer to the form is of
    // another origin, whose location the page may not read.
    frame.onload = () => {
      try { frame.contentWindow.location.href; } catch (e) { done("form posted"); }
    };
    const form = document.createElement("form");
    form.method = "POST";
    form.action = target + "/v1/functions/victim/jobs";
    form.target = "sink";
    form.enctype = "text/plain";
    const input = document.createElement("input");
    input.name = "pwned";
    input.value = "1";
    form.appendChild(input);
    document.body.appendChild(form);
    form.submit();
  }));
  return out.join(", ");
}
</script></body>`

// functionState returns the "victim" (or other) function as the API
// lists it: its job total and whether it is paused; ok is false when the
// server does not know it.
func functionState(t *testing.T, base, name string) (total int, paused, ok bool) {
	t.Helper()
	resp, err := http.Get(base + "/v1/functions")
	require.NoError(t, err)
	defer resp.Body.Close()
	var list struct {
		Functions []struct {
			Name   string `json:"name"`
			Total  int    `json:"total"`
			Paused bool   `json:"paused"`
		} `json:"functions"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&list))
	for _, f := range list.Functions {
		if f.Name == name {
			return f.Total, f.Paused, true
		}
	}
	return 0, false, false
}

// Pages of other origins on the same machine, and a page that reaches
// the server through a name rebound to 127.0.0.1, cannot submit jobs or
// pause functions through the HTTP API; the dashboard, from the server's
// own origin (by IP address or by localhost), still can.
func TestOtherOriginsCannotDriveTheAPIInChromium(t *testing.T) {
	s := startServer(t, "--log-level", "debug")
	_, port, err := net.SplitHostPort(s.httpAddr)
	require.NoError(t, err)
	hostile := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = io.WriteString(w, attackPage)
	}))
	t.Cleanup(hostile.Close)
	_, hostilePort, err := net.SplitHostPort(hostile.Listener.Addr().String())
	require.NoError(t, err)
	ctx := browser(t, chromedp.Flag("host-resolver-rules", "MAP rebind.test 127.0.0.1"))

	// localhost is another site than 127.0.0.1; another port of
	// 127.0.0.1 is the same site but another origin.
	for _, page := range []string{"http://localhost:" + hostilePort + "/", "http://127.0.0.1:" + hostilePort + "/"} {
		require.NoError(t, chromedp.Do(ctx, chromedp.Navigate(page)), page)
		got, err := chromedp.Run(ctx, chromedp.Evaluate[string]("attack("+jsString(s.base)+")", chromedp.EvalAwaitPromise))
		require.NoError(t, err, page)
		require.Equal(t, "sent opaque, sent opaque, form posted", got, "the browser sent the requests from %s", page)
	}
	testwait.Until(t, "the server to refuse each of the six requests as cross-origin",
		func() bool { return strings.Count(s.Log(), "refused a cross-origin request") == 6 })

	// DNS rebinding: the page's origin is the server's address under a
	// hostile name, so the browser lets it read and send what it likes.
	rebound := "http://rebind.test:" + port
	require.NoError(t, chromedp.Do(ctx, chromedp.Navigate(rebound+"/")))
	require.Contains(t, text(t, ctx, "body"), "does not answer to the host", "the dashboard is not served under a rebound name")
	got, err := chromedp.Run(ctx, chromedp.Evaluate[string](`(async () => {
		const submit = await fetch("/v1/functions/victim/jobs", {method: "POST", body: "pwned"});
		const pause = await fetch("/v1/functions/victim/pause", {method: "POST"});
		const list = await fetch("/v1/functions");
		return [submit.status, pause.status, list.status].join(" ");
	})()`, chromedp.EvalAwaitPromise))
	require.NoError(t, err)
	require.Equal(t, "421 421 421", got)

	_, _, known := functionState(t, s.base, "victim")
	require.False(t, known, "no request of another origin reached the function")

	// The dashboard, opened as localhost, submits and pauses.
	require.NoError(t, chromedp.Do(ctx,
		chromedp.Navigate("http://localhost:"+port+"/"),
		chromedp.WaitVisible("#conn.on"),
		chromedp.SendKeys("#submit-fn", "own"),
		chromedp.SendKeys("#submit-payload", "from the dashboard"),
		chromedp.Click("#submit-btn"),
	))
	poll(t, ctx, "the submitted job to be followed", `document.querySelector('#job-state').textContent === 'queued'`)
	row := `tr[data-function="own"]`
	poll(t, ctx, "the function row", `document.querySelector('`+row+` button.pause') !== null`)
	require.NoError(t, chromedp.Do(ctx, chromedp.Click(row+" button.pause")))
	poll(t, ctx, "the function to show paused", `document.querySelector('`+row+` td.paused') !== null`)
	total, paused, known := functionState(t, s.base, "own")
	require.True(t, known)
	require.Equal(t, 1, total)
	require.True(t, paused)
}
