package crash

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/gearman"
	"github.com/gearwork/gearwork/internal/gearmantest/wire"
	"github.com/gearwork/gearwork/internal/testserver"
)

// TestCrashDuringReplay queues jobs, kills the server with SIGKILL, then
// starts it again and kills it while it replays the store (after a
// growing delay, from at once to about when it listens), several times,
// and checks that the last start finds every job, with its payload,
// exactly once.
func TestCrashDuringReplay(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test skipped in -short mode")
	}
	const jobs = 6000
	dir := filepath.Join(t.TempDir(), "data")
	args := []string{"--store", "pebble:" + dir, "--handle-prefix", "H:replay:", "--memory-budget", "0"}
	srv := testserver.Start(t, args...)
	c := wire.Dial(t, srv.Addr)
	handles := make(map[string]string, jobs) // handle -> payload
	for i := 0; i < jobs; i += 500 {
		var batch []byte
		for k := i; k < i+500; k++ {
			unique := ""
			if k%3 == 0 {
				unique = "u" + strconv.Itoa(k)
			}
			batch = append(batch, wire.Request(gearman.SubmitJobBg, "replay", unique, "payload-"+strconv.Itoa(k))...)
		}
		c.Write(batch)
		for k := i; k < i+500; k++ {
			handles[c.ExpectCmd(gearman.JobCreated)[0]] = "payload-" + strconv.Itoa(k)
		}
	}
	require.Len(t, handles, jobs)
	srv.Kill()

	// Starts killed during the replay: the process gets SIGKILL after a
	// delay, whether it listens by then or not.
	for i, delay := range []time.Duration{0, 10 * time.Millisecond, 30 * time.Millisecond, 60 * time.Millisecond, 120 * time.Millisecond, 250 * time.Millisecond} {
		cmd := exec.Command(testserver.Binary(t), append([]string{"serve", "--listen", "127.0.0.1:0", "--http", "off"}, args...)...)
		cmd.Env = testserver.Env()
		testserver.DieWithTests(cmd)
		require.NoError(t, cmd.Start(), "start %d", i+1)
		time.Sleep(delay)
		require.NoError(t, cmd.Process.Kill())
		_ = cmd.Wait()
	}

	srv = testserver.Start(t, args...)
	t.Logf("the last start: %s", regexp.MustCompile(`startup=\S+`).FindString(srv.Log()))
	c = wire.Dial(t, srv.Addr)
	c.Send(gearman.CanDo, "replay")
	got := make(map[string]string, jobs)
	grabs := make([]byte, 0, 500*gearman.HeaderSize)
	for range 500 {
		grabs = append(grabs, wire.Request(gearman.GrabJobUniq)...)
	}
	for len(got) < jobs {
		c.Write(grabs)
		var done []byte
		for range 500 {
			args := c.ExpectCmd(gearman.JobAssignUniq)
			_, twice := got[args[0]]
			require.False(t, twice, "job %s handed out twice", args[0])
			got[args[0]] = args[3]
			done = append(done, wire.Request(gearman.WorkComplete, args[0], "")...)
		}
		c.Write(done)
	}
	c.Send(gearman.GrabJobUniq)
	c.ExpectCmd(gearman.NoJob)
	require.Equal(t, handles, got, fmt.Sprintf("the %d jobs after the restarts killed during replay", jobs))
}
