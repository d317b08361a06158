package http_test

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/gearman"
	"github.com/gearwork/gearwork/internal/gearmantest/wire"
	"github.com/gearwork/gearwork/internal/testwait"
)

// TestRunsEndedWithoutAResultCountAsFailed runs one job past its
// CAN_DO_TIMEOUT and one whose worker disconnects while it holds it.
// Neither run brought a result: each is a failed run in
// gearwork_jobs_failed_total, by the kind its record names (outcome
// timeout, worker vanished), and in the failed counters of
// GET /v1/functions that the dashboard's Failed column adds up.
func TestRunsEndedWithoutAResultCountAsFailed(t *testing.T) {
	s := startServer(t)
	ctx := testwait.Context(t)
	endRunsWithoutAResult(t, s)

	timeout := `gearwork_jobs_failed_total{function="fr_slow",kind="timeout"}`
	vanished := `gearwork_jobs_failed_total{function="fr_gone",kind="vanished"}`
	testwait.Until(t, "both failed runs counted", func() bool {
		m := metrics(t, ctx, s.base)
		return m[timeout] == 1 && m[vanished] == 1
	})
	m := metrics(t, ctx, s.base)
	require.Equal(t, 1.0, m[`gearwork_jobs_retried_total{function="fr_gone"}`], "the vanished worker's job runs again")
	require.Equal(t, 1.0, m[`gearwork_jobs_dead_total{function="fr_slow"}`], "the timed-out job is a dead letter")
	for _, kind := range []string{"fail", "exception", "vanished"} {
		require.Zero(t, m[`gearwork_jobs_failed_total{function="fr_slow",kind="`+kind+`"}`], kind)
	}

	var fns struct {
		Functions []struct {
			Name       string `json:"name"`
			Failed     uint64 `json:"failed"`
			Exceptions uint64 `json:"exceptions"`
			TimedOut   uint64 `json:"timed_out"`
			Vanished   uint64 `json:"vanished"`
		} `json:"functions"`
	}
	curlJSON(t, ctx, &fns, s.base+"/v1/functions?function=fr_slow&function=fr_gone")
	got := map[string][4]uint64{}
	for _, f := range fns.Functions {
		got[f.Name] = [4]uint64{f.Failed, f.Exceptions, f.TimedOut, f.Vanished}
	}
	require.Equal(t, map[string][4]uint64{"fr_slow": {0, 0, 1, 0}, "fr_gone": {0, 0, 0, 1}}, got)
}

// TestDashboardFailedColumnCountsEveryKind shows the runs of
// endRunsWithoutAResult in the dashboard's Failed column: a run past its
// timeout and one whose worker vanished are failed runs, as WORK_FAIL is.
func TestDashboardFailedColumnCountsEveryKind(t *testing.T) {
	ctx := browser(t)
	s := startServer(t)
	endRunsWithoutAResult(t, s)
	testwait.Until(t, "both failed runs counted", func() bool {
		m := metrics(t, testwait.Context(t), s.base)
		return m[`gearwork_jobs_failed_total{function="fr_slow",kind="timeout"}`] == 1 &&
			m[`gearwork_jobs_failed_total{function="fr_gone",kind="vanished"}`] == 1
	})
	require.NoError(t, chromedp.Do(ctx, chromedp.Navigate(s.base+"/"), chromedp.WaitVisible("#conn.on")))
	require.Equal(t, "Failed", text(t, ctx, "#functions thead th:nth-child(9)"))
	for _, fn := range []string{"fr_slow", "fr_gone"} {
		poll(t, ctx, fn+"'s failed run", `(() => { const r = document.querySelector('tr[data-function="`+fn+`"]');
			return r && r.children[8].textContent === '1'; })()`)
	}
}

// endRunsWithoutAResult runs a background job of fr_slow past its
// CAN_DO_TIMEOUT (1 s: it becomes a dead letter whose error is "timed
// out") and one of fr_gone whose worker disconnects while it holds it
// (it is taken back and queued again).
func endRunsWithoutAResult(t *testing.T, s *server) {
	t.Helper()
	c := wire.Dial(t, s.gearman)
	slow := wire.Dial(t, s.gearman)
	slow.Send(gearman.CanDoTimeout, "fr_slow", "1")
	c.Send(gearman.SubmitJobBg, "fr_slow", "", "x")
	c.ExpectCmd(gearman.JobCreated)
	slow.Send(gearman.GrabJob)
	slow.ExpectCmd(gearman.JobAssign)

	gone := wire.Dial(t, s.gearman)
	gone.Send(gearman.CanDo, "fr_gone")
	c.Send(gearman.SubmitJobBg, "fr_gone", "", "x")
	c.ExpectCmd(gearman.JobCreated)
	gone.Send(gearman.GrabJob)
	gone.ExpectCmd(gearman.JobAssign)
	require.NoError(t, gone.NC.Close())
}

// metrics reads every sample of the server's /metrics, by name with its
// labels.
func metrics(t *testing.T, ctx context.Context, base string) map[string]float64 {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/metrics", nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		require.NoError(t, err, fmt.Sprintf("metric line %q", line))
		out[line[:i]] = v
	}
	require.NoError(t, sc.Err())
	return out
}
