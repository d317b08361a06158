package crash

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/internal/testserver"
	"github.com/gearwork/gearwork/internal/testwait"
)

// httpDo sends a request to the server's HTTP API and returns the status
// and the body.
func httpDo(t *testing.T, method, url, body string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(testwait.Context(t), method, url, strings.NewReader(body))
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err, "%s %s", method, url)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, b
}

// httpJSON is httpDo for an answer with a JSON object, decoded into a map.
func httpJSON(t *testing.T, method, url, body string, want int) map[string]any {
	t.Helper()
	code, b := httpDo(t, method, url, body)
	require.Equal(t, want, code, "%s %s: %s", method, url, b)
	var m map[string]any
	require.NoError(t, json.Unmarshal(b, &m), "%s %s: %s", method, url, b)
	return m
}

// TestCrashAfterForgettingARecord forgets the records of ended jobs with
// DELETE /v1/jobs/{handle}/record, some while the record is only in the
// store and one while it may still wait for its write, kills the server
// with SIGKILL right after the last 204, and checks that no forgotten
// record is back after the restart, while the records that were not
// forgotten are.
func TestCrashAfterForgettingARecord(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test skipped in -short mode")
	}
	dir := filepath.Join(t.TempDir(), "data")
	args := []string{"--store", "pebble:" + dir, "--handle-prefix", "H:forget:", "--http", "127.0.0.1:0"}
	srv := testserver.Start(t, args...)
	base := "http://" + srv.HTTPAddr(t)

	// Jobs run by an HTTP worker.
	run := func() string {
		h := httpJSON(t, "POST", base+"/v1/functions/f/jobs", "x", http.StatusAccepted)["handle"].(string)
		job := httpJSON(t, "POST", base+"/v1/functions/f/grab?wait=10s", "", http.StatusOK)
		require.Equal(t, h, job["handle"])
		code, b := httpDo(t, "POST", base+"/v1/jobs/"+h+"/complete?lease="+job["lease"].(string), "done")
		require.Equal(t, http.StatusNoContent, code, "%s", b)
		return h
	}
	var forgotten, kept []string
	for range 4 {
		forgotten = append(forgotten, run())
		kept = append(kept, run())
	}
	// Each record is read once from the store (which syncs it), so that
	// the forgets find them there.
	for _, h := range append(slices.Concat(forgotten, kept), run()) {
		testwait.Until(t, "the record of "+h, func() bool {
			code, _ := httpDo(t, "GET", base+"/v1/jobs/"+h, "")
			return code == http.StatusOK
		})
	}
	// And one whose record may not be written yet.
	forgotten = append(forgotten, run())
	for _, h := range forgotten {
		code, b := httpDo(t, "DELETE", base+"/v1/jobs/"+h+"/record", "")
		require.Equal(t, http.StatusNoContent, code, "forget %s: %s", h, b)
	}
	srv.Kill()

	srv = testserver.Start(t, args...)
	base = "http://" + srv.HTTPAddr(t)
	for _, h := range forgotten {
		code, b := httpDo(t, "GET", base+"/v1/jobs/"+h, "")
		require.Equal(t, http.StatusNotFound, code, "the forgotten record of %s after the restart: %s", h, b)
	}
	for _, h := range kept {
		require.Equal(t, "complete", httpJSON(t, "GET", base+"/v1/jobs/"+h, "", http.StatusOK)["state"], "record %s", h)
	}
}

// TestCrashAfterAWaitedResult submits jobs with ?wait= while an HTTP
// worker completes them, and kills the server with SIGKILL as soon as a
// submit is answered 200 with the job's record: the restarted server must
// tell the same (complete, with the result), not run the job again.
func TestCrashAfterAWaitedResult(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test skipped in -short mode")
	}
	dir := filepath.Join(t.TempDir(), "data")
	args := []string{"--store", "pebble:" + dir, "--handle-prefix", "H:waited:", "--http", "127.0.0.1:0"}
	for round := range 3 {
		srv := testserver.Start(t, args...)
		base := "http://" + srv.HTTPAddr(t)
		worked := make(chan error, 1)
		go func() { worked <- completeOne(base, "w", "result") }()
		rec := httpJSON(t, "POST", base+"/v1/functions/w/jobs?wait=30s", "x", http.StatusOK)
		srv.Kill()
		require.NoError(t, <-worked)
		require.Equal(t, "complete", rec["state"], "round %d: the waited submit's answer", round)
		h := rec["handle"].(string)

		srv = testserver.Start(t, args...)
		base = "http://" + srv.HTTPAddr(t)
		after := httpJSON(t, "GET", base+"/v1/jobs/"+h, "", http.StatusOK)
		require.Equal(t, "complete", after["state"], "round %d: job %s, answered complete before the kill, after the restart", round, h)
		require.Equal(t, "result", after["result_text"], "round %d: job %s", round, h)
		srv.Kill()
	}
}

// completeOne grabs a job of fn as an HTTP worker and completes it with
// result (a goroutine's worker: it returns what went wrong).
func completeOne(base, fn, result string) error {
	resp, err := http.Post(base+"/v1/functions/"+fn+"/grab?wait=30s", "", nil)
	if err != nil {
		return err
	}
	var job struct{ Handle, Lease string }
	err = json.NewDecoder(resp.Body).Decode(&job)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		return fmt.Errorf("grab: %d %v", resp.StatusCode, err)
	}
	resp, err = http.Post(base+"/v1/jobs/"+job.Handle+"/complete?lease="+job.Lease, "", strings.NewReader(result))
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		return fmt.Errorf("complete: %d", resp.StatusCode)
	}
	return nil
}
