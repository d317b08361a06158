package crash

import (
	"encoding/json"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/internal/testserver"
	"github.com/gearwork/gearwork/internal/testwait"
)

// httpServer is a server with its HTTP API, restarted on the same data
// directory.
type httpServer struct {
	t    *testing.T
	args []string
	srv  *testserver.Server
	base string
}

func (s *httpServer) start() {
	s.srv = testserver.Start(s.t, s.args...)
	s.base = "http://" + s.srv.HTTPAddr(s.t)
}

// submit submits a background job of fn over HTTP and returns its handle.
func (s *httpServer) submit(fn, query string) string {
	return httpJSON(s.t, "POST", s.base+"/v1/functions/"+fn+"/jobs"+query, "x", http.StatusAccepted)["handle"].(string)
}

// grab takes a job of fn as an HTTP worker and returns its handle and
// lease.
func (s *httpServer) grab(fn string) (handle, lease string) {
	m := httpJSON(s.t, "POST", s.base+"/v1/functions/"+fn+"/grab?wait=30s", "", http.StatusOK)
	return m["handle"].(string), m["lease"].(string)
}

// state returns the state of a job's record (GET /v1/jobs/{handle}).
func (s *httpServer) state(handle string) string {
	return httpJSON(s.t, "GET", s.base+"/v1/jobs/"+handle, "", http.StatusOK)["state"].(string)
}

// TestCrashAfterHTTPChanges changes jobs over the HTTP API and kills the
// server with SIGKILL right after the last answer: a running job
// cancelled (204), a job out of attempts whose function keeps no dead letters
// retried as a new job (202), a function paused (204), and a job
// completed by an HTTP worker that another waits for (after=). After the
// restart the cancelled job stays cancelled, the retry is queued, the
// pause holds, and the waiting job waits exactly as long as the job it
// waits for: released if that job's completion was kept, still waiting
// if it runs again.
func TestCrashAfterHTTPChanges(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test skipped in -short mode")
	}
	dir := filepath.Join(t.TempDir(), "data")
	s := &httpServer{t: t, args: []string{"--store", "pebble:" + dir, "--handle-prefix", "H:httpc:", "--http", "127.0.0.1:0"}}
	s.start()
	for round := range 4 {
		r := strconv.Itoa(round)
		c := dialFeatures(t, s.srv)
		c.ok("create function once" + r)
		c.ok("policy once" + r + " max_attempts=1 max_dead_letters=-1")
		c.ok("create function paused" + r)
		c.NC.Close()

		// A job out of attempts, with no dead letter kept, retried
		// as a new job.
		failed := s.submit("once"+r, "")
		h, lease := s.grab("once" + r)
		require.Equal(t, failed, h)
		code, body := httpDo(t, "POST", s.base+"/v1/jobs/"+failed+"/fail?lease="+lease, "boom")
		require.Equal(t, http.StatusNoContent, code, "%s", body)
		testwait.Until(t, failed+" to end", func() bool { return s.state(failed) == "dead" })
		code, body = httpDo(t, "POST", s.base+"/v1/jobs/"+failed+"/retry", "")
		require.Equal(t, http.StatusAccepted, code, "%s", body)
		var retry struct{ Handle string }
		require.NoError(t, json.Unmarshal(body, &retry))
		require.NotEqual(t, failed, retry.Handle, "a new job")

		// A job that another waits for, completed by an HTTP worker.
		first := s.submit("first"+r, "")
		waiting := s.submit("then"+r, "?after="+first)
		h, lease = s.grab("first" + r)
		require.Equal(t, first, h)

		// A pause, and a running job cancelled.
		code, body = httpDo(t, "POST", s.base+"/v1/functions/paused"+r+"/pause", "")
		require.Equal(t, http.StatusNoContent, code, "%s", body)
		running := s.submit("run"+r, "")
		s.grab("run" + r)
		code, body = httpDo(t, "POST", s.base+"/v1/jobs/"+first+"/complete?lease="+lease, "done")
		require.Equal(t, http.StatusNoContent, code, "%s", body)
		code, body = httpDo(t, "DELETE", s.base+"/v1/jobs/"+running, "")
		require.Equal(t, http.StatusNoContent, code, "%s", body)
		s.srv.Kill()

		s.start()
		require.Equal(t, "cancelled", s.state(running), "round %d: the running job cancelled before the kill", round)
		require.Equal(t, "queued", s.state(retry.Handle), "round %d: the job the retry submitted", round)
		require.Equal(t, "dead", s.state(failed), "round %d: the failed job's record", round)
		c = dialFeatures(t, s.srv)
		require.Regexp(t, `(?m)^paused`+r+`\t\w+\tpaused\t`, strings.Join(c.AdminList("show policy"), "\n"), "round %d", round)
		c.NC.Close()
		switch st := s.state(first); st {
		case "complete":
			require.Equal(t, "queued", s.state(waiting), "round %d: the job waiting for %s, which completed", round, first)
		case "queued":
			require.Equal(t, "waiting", s.state(waiting), "round %d: the job waiting for %s, which runs again", round, first)
		default:
			t.Fatalf("round %d: %s is %s after the restart", round, first, st)
		}
	}
}
