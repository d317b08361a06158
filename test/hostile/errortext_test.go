package hostile_test

import (
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/gearman"
	"github.com/gearwork/gearwork/internal/gearmantest/wire"
	"github.com/gearwork/gearwork/internal/testserver"
)

// TestHugeExceptionsKeepFourKiBOfErrorText has a worker answer each job
// with a WORK_EXCEPTION of 8 MiB. The exception's data is the failed
// attempt's error text, which the attempt, the job's record and its dead
// letter each keep (in memory and in the store) for as long as they are
// kept, and the log line about the dead letter repeats: uncapped, twenty
// exceptions of 10 MB took the server from 26 MiB to 1.2 GB. Like a
// warning's, only the data's last 4 KiB are kept as the error text.
func TestHugeExceptionsKeepFourKiBOfErrorText(t *testing.T) {
	const (
		jobs     = 20
		size     = 8 << 20
		kept     = 4 << 10
		ceiling  = 256 << 10 // kB
		function = "explodes"
	)
	// Memory is measured: no race detector. The default store, on disk.
	srv := testserver.StartPlain(t, "--store", "pebble:"+filepath.Join(t.TempDir(), "data"), "--sync", "none")
	c := wire.Dial(t, srv.Addr)
	w := wire.Dial(t, srv.Addr)
	w.Send(gearman.CanDo, function)
	data := strings.Repeat("A", size-kept) + strings.Repeat("Z", kept)
	var handles []string
	for i := range jobs {
		c.Send(gearman.SubmitJobBg, function, "", strconv.Itoa(i))
		h := c.ExpectCmd(gearman.JobCreated)[0]
		w.Send(gearman.GrabJob)
		assigned := w.ExpectCmd(gearman.JobAssign)
		require.Equal(t, h, assigned[0])
		w.Send(gearman.WorkException, h, data)
		handles = append(handles, h)
	}
	w.Send(gearman.EchoReq, "done")
	w.Expect(gearman.EchoRes, "done")

	want := strconv.Quote(data[len(data)-kept:])
	for _, h := range handles {
		fields := map[string]string{}
		for _, l := range c.AdminList("job " + h) {
			k, v, _ := strings.Cut(l, "\t")
			if _, dup := fields[k]; !dup {
				fields[k] = v
			}
		}
		require.Equal(t, "dead", fields["state"], h)
		require.LessOrEqual(t, len(fields["error"]), len(want), "job %s keeps at most 4 KiB of its exception", h)
		require.Equal(t, want, fields["error"], "job %s keeps the last 4 KiB of its exception", h)
		dl := c.AdminList("deadletter show " + h)
		require.Contains(t, dl, "error\t"+want, "dead letter %s", h)
	}
	st := settledMemory(t, srv, ceiling, time.Minute)
	t.Logf("RSS %d kB, peak %d kB after %d exceptions of %d MiB", st["VmRSS"], st["VmHWM"], jobs, size>>20)
	require.LessOrEqual(t, st["VmRSS"], int64(ceiling), "failed jobs must not keep their exceptions' data")
	require.NotContains(t, srv.Log(), strings.Repeat("Z", kept+1))
	require.NotContains(t, srv.Log(), strings.Repeat("A", 64), "the log keeps no more than the error text")
}
