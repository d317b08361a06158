package crash

import (
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/gearman"
	"github.com/gearwork/gearwork/internal/testserver"
)

// TestCrashAfterDropFunction drops two functions, one paused and one
// holding queued, unique, scheduled and waiting jobs, kills the server
// with SIGKILL right after the second OK, and checks that the restart
// tells what the OKs said: none of the dropped jobs is queued again (each
// is recorded cancelled), and the pause is gone, as it was before the
// kill.
func TestCrashAfterDropFunction(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test skipped in -short mode")
	}
	dir := filepath.Join(t.TempDir(), "data")
	args := []string{"--store", "pebble:" + dir, "--handle-prefix", "H:drop:"}
	srv := testserver.Start(t, args...)
	c := dialFeatures(t, srv)

	var handles []string
	for i := range 20 {
		handles = append(handles, c.submit(gearman.SubmitJobBg, "dropped", "", "x"+strconv.Itoa(i)))
	}
	handles = append(handles,
		c.submit(gearman.SubmitJobBg, "dropped", "u1", "x"),
		c.submit(gearman.SubmitJobEpoch, "dropped", "", strconv.FormatInt(time.Now().Add(time.Hour).Unix(), 10), "x"))
	// A job of "dropped" that waits for one of "other", which stays.
	other := c.submit(gearman.SubmitJobBg, "other", "", "x")
	handles = append(handles, c.submit(gearman.SubmitJobBg, "dropped", "after:"+strings.TrimPrefix(other, "H:drop:")+":w", "x"))
	c.ok("create function paused")
	c.ok("pause paused")
	c.ok("drop function paused")
	c.ok("drop function dropped")
	srv.Kill()

	srv = testserver.Start(t, args...)
	c = dialFeatures(t, srv)
	for _, l := range c.AdminList("status") {
		require.False(t, strings.HasPrefix(l, "dropped\t") && !strings.HasPrefix(l, "dropped\t0\t"),
			"the dropped function's jobs after the restart: %q", l)
	}
	require.NotContains(t, strings.Join(c.AdminList("show policy"), "\n"), "paused\t",
		"the dropped function's pause after the restart")
	for _, h := range handles {
		require.Equal(t, "cancelled", c.record(h)["state"], "job %s of the dropped function after the restart", h)
	}
	require.Equal(t, "queued", c.record(other)["state"])

	// Nothing of the dropped function is handed out.
	w := dialFeatures(t, srv)
	w.Send(gearman.CanDo, "dropped")
	handle, fn, _ := w.grab()
	require.Empty(t, handle, "a job of the dropped function (%s) after the restart", fn)
}
