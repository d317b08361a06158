package httpapi

import (
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/internal/broker"
)

// scrape returns /metrics and the functions its gearwork_ series name.
func scrape(t *testing.T, tb *testBundle) (string, map[string]bool) {
	t.Helper()
	resp := tb.do(t, "GET", "/metrics", nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	fns := make(map[string]bool)
	label := regexp.MustCompile(`[{,]function="([^"]*)"`)
	for _, line := range strings.Split(string(body), "\n") {
		if !strings.HasPrefix(line, "gearwork_") {
			continue
		}
		if m := label.FindStringSubmatch(line); m != nil {
			fns[m[1]] = true
		}
	}
	return string(body), fns
}

// A server knowing more functions than --metrics-max-functions exports
// series for that many, those holding something first, and says how many
// it left out; a function's histograms appear with their first
// observation.
func TestMetricsBoundFunctions(t *testing.T) {
	t.Parallel()
	tb := setup(t, func(c *Config) { c.MetricsMaxFunctions = 5 })
	for i := range 20 {
		require.NoError(t, tb.b.CreateFunction(fmt.Sprintf("fn%02d", i)))
	}
	for _, fn := range []string{"fn17", "fn18"} {
		require.Equal(t, http.StatusAccepted, tb.do(t, "POST", "/v1/functions/"+fn+"/jobs", strings.NewReader("x")).StatusCode)
	}
	newTestWorker(t, tb.b, "fn19")
	w := newTestWorker(t, tb.b, "fn10")
	require.Equal(t, http.StatusAccepted, tb.do(t, "POST", "/v1/functions/fn10/jobs", strings.NewReader("y")).StatusCode)

	text, fns := scrape(t, tb)
	require.Len(t, fns, 5, "functions exported: %v", fns)
	for _, fn := range []string{"fn10", "fn17", "fn18", "fn19"} {
		require.True(t, fns[fn], "%s holds something and is not exported: %v", fn, fns)
	}
	require.True(t, strings.Contains(text, "\ngearwork_metrics_functions_omitted 15\n"), "no gearwork_metrics_functions_omitted 15")
	require.Contains(t, text, `gearwork_queue_depth{function="fn17",priority="normal"} 1`)
	require.NotContains(t, text, `gearwork_job_run_seconds_count{function="fn10"}`)
	require.NotContains(t, text, `gearwork_job_wait_seconds_bucket{function="fn17"`)

	a := w.grab(t)
	require.NoError(t, tb.b.Finish(w.sess, a.Seq, broker.Complete, nil))
	text, fns = scrape(t, tb)
	require.Len(t, fns, 5, "functions exported: %v", fns)
	require.True(t, fns["fn10"])
	require.Contains(t, text, `gearwork_job_wait_seconds_count{function="fn10"} 1`)
	require.Contains(t, text, `gearwork_job_run_seconds_count{function="fn10"} 1`)
	require.Contains(t, text, `gearwork_job_run_seconds_bucket{function="fn10",le="+Inf"} 1`)
	require.NotContains(t, text, `gearwork_job_run_seconds_count{function="fn17"}`)
}

// MetricsMaxFunctions below 0 exports every function.
func TestMetricsUnboundFunctions(t *testing.T) {
	t.Parallel()
	tb := setup(t, func(c *Config) { c.MetricsMaxFunctions = -1 })
	for i := range 20 {
		require.NoError(t, tb.b.CreateFunction(fmt.Sprintf("fn%02d", i)))
	}
	text, fns := scrape(t, tb)
	require.Len(t, fns, 20)
	require.True(t, strings.Contains(text, "\ngearwork_metrics_functions_omitted 0\n"), "no gearwork_metrics_functions_omitted 0")
}

// A function name may hold any bytes (as in gearmand), but a Prometheus
// label value is UTF-8: a function whose name is not has no series of its
// own (it counts as omitted) instead of costing the scrape every other
// series.
func TestMetricsOfAFunctionNamedInAnyBytes(t *testing.T) {
	t.Parallel()
	tb := setup(t, func(c *Config) { c.MetricsMaxFunctions = -1 })
	newTestWorker(t, tb.b, "good")
	newTestWorker(t, tb.b, "bad\xff")
	text, fns := scrape(t, tb)
	require.True(t, fns["good"], "functions exported: %v", fns)
	require.Len(t, fns, 1, "functions exported: %v", fns)
	require.Contains(t, text, `gearwork_workers{function="good"} 1`)
	require.True(t, strings.Contains(text, "\ngearwork_metrics_functions_omitted 1\n"), "no gearwork_metrics_functions_omitted 1")
}
