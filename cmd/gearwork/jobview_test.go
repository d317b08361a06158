package main

import (
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/internal/testserver"
)

// "gearwork admin job" shows every field GET /v1/jobs/{handle} shows,
// under the same names and with the same values and state words, and a
// field the job does not have as "-" (null in JSON), never as a blank:
// a job waiting for its retry (retries, max_attempts, last_error,
// retry_at), a scheduled one (run_at), a cancelled one (cancelled_by, cancelled_at), a complete
// one (result, payload_preview) and one waiting for others (after: the
// jobs it still waits for).
func TestAdminJobShowsWhatHTTPShows(t *testing.T) {
	t.Parallel()
	// The failed job waits an hour for its retry, so that it is in
	// retry-wait however long the machine takes to read both views.
	cfg := filepath.Join(t.TempDir(), "gearwork.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte("functions:\n  view:\n    backoff: 1h\n"), 0o600))
	srv := testserver.Start(t, "--http", "127.0.0.1:0", "--handle-prefix", "H:view:", "--config", cfg)
	base := "http://" + srv.HTTPAddr(t)
	post := func(path, body string, v any) int {
		t.Helper()
		resp, err := http.Post(base+path, "text/plain", strings.NewReader(body))
		require.NoError(t, err)
		defer resp.Body.Close()
		if v != nil && resp.StatusCode < 300 && resp.StatusCode != http.StatusNoContent {
			require.NoError(t, json.NewDecoder(resp.Body).Decode(v))
		}
		return resp.StatusCode
	}
	type grabbed struct{ Handle, Lease string }
	grab := func(fn string) grabbed {
		t.Helper()
		var g grabbed
		require.Equal(t, http.StatusOK, post("/v1/functions/"+fn+"/grab?wait=30s", "", &g))
		return g
	}
	submit := func(query string) string {
		t.Helper()
		var job struct{ Handle string }
		require.Equal(t, http.StatusAccepted, post("/v1/functions/view"+query, "img-7", &job))
		return job.Handle
	}

	retrying := submit("/jobs?attempts=3&unique=u-7")
	g := grab("view")
	require.Equal(t, retrying, g.Handle)
	require.Equal(t, http.StatusNoContent, post("/v1/jobs/"+url.PathEscape(g.Handle)+"/fail?lease="+g.Lease, "disk full", nil))

	scheduled := submit("/jobs?run-at=2100-01-01T00:00:00Z&priority=high")
	cancelled := submit("/jobs")
	req, err := http.NewRequest("DELETE", base+"/v1/jobs/"+url.PathEscape(cancelled), nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Less(t, resp.StatusCode, 300)

	complete := submit("/jobs")
	g = grab("view")
	require.Equal(t, complete, g.Handle)
	require.Equal(t, http.StatusNoContent, post("/v1/jobs/"+url.PathEscape(g.Handle)+"/complete?lease="+g.Lease, "done", nil))

	waiting := submit("/jobs?after=" + url.QueryEscape(scheduled) + "&after=" + url.QueryEscape(retrying))

	for _, tc := range []struct {
		handle string
		want   []string // fields the job must have in both views
	}{
		{waiting, []string{"state", "after", "submitted_at"}},
		{retrying, []string{"state", "retries", "attempts", "max_attempts", "last_error", "retry_at", "unique", "waiting_clients"}},
		{scheduled, []string{"state", "run_at", "priority", "retries", "submitted_at"}},
		{cancelled, []string{"state", "cancelled_by", "cancelled_at", "final", "payload_preview", "payload_size"}},
		{complete, []string{"state", "result", "final", "finished_at", "started_at", "history"}},
	} {
		resp, err := http.Get(base + "/v1/jobs/" + url.PathEscape(tc.handle))
		require.NoError(t, err)
		var web map[string]any
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&web))
		resp.Body.Close()

		out := gwOK(t, "admin", "--servers="+srv.Addr, "--json", "job", tc.handle)
		var rows []map[string]any
		require.NoError(t, json.Unmarshal([]byte(out), &rows), out)
		require.Len(t, rows, 1, out)
		cli := rows[0]

		for _, k := range tc.want {
			require.Contains(t, web, k, "HTTP: %s", tc.handle)
		}
		for k, v := range web {
			switch k {
			case "result_text", "payload_preview_text":
				// The CLI shows the bytes as text when they are UTF-8.
				continue
			case "result", "payload_preview":
				require.Equal(t, web[k+"_text"], cli[k], "%s %s", tc.handle, k)
				continue
			case "history":
				require.Len(t, cli[k], len(v.([]any)), "%s %s", tc.handle, k)
				continue
			}
			require.Contains(t, cli, k, "%s: the CLI lacks the field %s that HTTP shows (%v)", tc.handle, k, v)
			require.Equal(t, v, cli[k], "%s %s", tc.handle, k)
		}
		// A field HTTP leaves out is absent in the CLI's view too (or the
		// zero of a count or a flag).
		for k, v := range cli {
			if _, shown := web[k]; !shown && k != "server" { // the server asked
				require.Contains(t, []any{nil, false, 0.0}, v, "%s %s: HTTP does not show it", tc.handle, k)
			}
		}

		// The table: the same names in capitals, "-" for what is absent,
		// no blank value.
		table := gwOK(t, "admin", "--servers="+srv.Addr, "job", tc.handle)
		rec, _, _ := strings.Cut(table, "\n\n")
		for _, k := range []string{"RETRIES", "CANCELLED_AT", "LAST_ERROR", "RUN_AT", "MAX_ATTEMPTS", "STATE"} {
			require.Regexp(t, `(?m)^`+k+` +\S`, rec, tc.handle)
		}
		for _, line := range strings.Split(strings.TrimSpace(rec), "\n") {
			require.Regexp(t, `^[A-Z_]+ +\S`, line, "%s: a row with no value", tc.handle)
		}
	}

	one, other := regexp.QuoteMeta(scheduled), regexp.QuoteMeta(retrying)
	require.Regexp(t, `(?m)^AFTER +(`+one+` `+other+`|`+other+` `+one+`)$`,
		gwOK(t, "admin", "--servers="+srv.Addr, "job", waiting), "the jobs it waits for")

	// The list too: the names of GET /v1/jobs, and no error is null (a
	// "-" in the table), not an empty text.
	out := gwOK(t, "admin", "--servers="+srv.Addr, "--json", "jobs", "--function", "view")
	var rows []map[string]any
	require.NoError(t, json.Unmarshal([]byte(out), &rows), out)
	found := false
	for _, r := range rows {
		if r["handle"] == complete {
			found = true
			require.Contains(t, r, "last_error", out)
			require.Nil(t, r["last_error"], out)
			require.Contains(t, r, "submitted_at", out)
		}
	}
	require.True(t, found, out)
	require.Regexp(t, `(?m)^`+regexp.QuoteMeta(complete)+` +view +complete +\d+ +\S+ +\S+ +- +\S+$`,
		gwOK(t, "admin", "--servers="+srv.Addr, "jobs", "--function", "view"))
}
