package http_test

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"
)

// assetRequests returns how many dashboard assets (app.js, style.css)
// the server has served, from its /metrics.
func assetRequests(t *testing.T, base string) int {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	n := 0
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "gearwork_http_requests_total{") || !strings.Contains(line, `route="GET /assets/{file}"`) {
			continue
		}
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		require.NoError(t, err)
		n += int(v)
	}
	require.NoError(t, sc.Err())
	return n
}

// TestDashboardCannotBeFramedByOtherOrigins: a page of another site that
// shows the dashboard in a frame (invisible, under its own buttons) could
// have the user click the dashboard's pause, retry and purge buttons;
// the dashboard's own requests are same-origin, so the cross-origin check
// lets them through. The browser must refuse to render the dashboard in
// another origin's frame: the frame then never loads the dashboard's
// script.
func TestDashboardCannotBeFramedByOtherOrigins(t *testing.T) {
	s := startServer(t)
	hostile := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = io.WriteString(w, `<!doctype html><body>Win a prize!
<iframe src="`+s.base+`/" onload="window.framed = true" style="opacity:0.01"></iframe></body>`)
	}))
	t.Cleanup(hostile.Close)
	_, hostilePort, err := net.SplitHostPort(hostile.Listener.Addr().String())
	require.NoError(t, err)
	ctx := browser(t)

	require.NoError(t, chromedp.Do(ctx, chromedp.Navigate("http://localhost:"+hostilePort+"/")))
	// The frame's load event comes after its deferred script ran.
	poll(t, ctx, "the frame to load", `window.framed === true`)
	require.Zero(t, assetRequests(t, s.base), "the dashboard in another origin's frame must not run")

	// Opened directly, it loads its assets (which the count sees).
	require.NoError(t, chromedp.Do(ctx, chromedp.Navigate(s.base+"/"), chromedp.WaitVisible("#conn.on")))
	require.Positive(t, assetRequests(t, s.base))
}
