package hostile_test

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/gearman"
	"github.com/gearwork/gearwork/internal/gearmantest/wire"
	"github.com/gearwork/gearwork/internal/testserver"
	"github.com/gearwork/gearwork/internal/testwait"
)

// TestDeadLettersKeepTheirPayloadsOnDisk fails forty background jobs of
// 8 MiB each. A function keeps up to 10,000 dead letters, and no budget
// counts their payloads (--max-queued-bytes counts live jobs,
// --memory-budget queued ones), so with the default store they stay on
// disk: kept in memory, forty of 10 MB took the server past 1 GB. A dead
// letter queued again is handed out with its whole payload.
func TestDeadLettersKeepTheirPayloadsOnDisk(t *testing.T) {
	const (
		jobs     = 40
		size     = 8 << 20
		ceiling  = 160 << 20 // bytes of Go heap
		function = "doomed"
	)
	// The default store, on disk.
	srv := startHeapMeasured(t, "--store", "pebble:"+filepath.Join(t.TempDir(), "data"), "--sync", "none")
	c := wire.Dial(t, srv.Addr)
	w := wire.Dial(t, srv.Addr)
	w.Send(gearman.CanDo, function)
	payload := func(i int) string { return strings.Repeat(string(rune('a'+i%26)), size) }
	var handles []string
	for i := range jobs {
		c.Send(gearman.SubmitJobBg, function, "", payload(i))
		h := c.ExpectCmd(gearman.JobCreated)[0]
		w.Send(gearman.GrabJob)
		assigned := w.ExpectCmd(gearman.JobAssign)
		require.Equal(t, h, assigned[0])
		w.Send(gearman.WorkFail, h)
		handles = append(handles, h)
	}
	w.Send(gearman.EchoReq, "sync") // the last WORK_FAIL is handled
	w.Expect(gearman.EchoRes, "sync")
	require.Len(t, c.AdminList("deadletters "+function), jobs)

	// The Go heap, not the RSS: the store's memtables (outside the heap,
	// bounded by the store) take a few hundred MiB of RSS of their own
	// after such writes.
	heap := waitHeapAtMost(t, srv, ceiling)
	t.Logf("Go heap %.0f MiB with %d dead letters of %d MiB", heap/(1<<20), jobs, size>>20)

	last := len(handles) - 1
	c.Write([]byte("deadletter retry " + handles[last] + "\n"))
	require.Equal(t, "OK 1\n", c.Line())
	w.Send(gearman.GrabJob)
	assigned := w.ExpectCmd(gearman.JobAssign)
	require.Equal(t, handles[last], assigned[0])
	require.Len(t, assigned[2], size)
	require.True(t, assigned[2] == payload(last), "the retried job's payload")
}

// startHeapMeasured starts a server (with args) whose Go heap the test
// reads with waitHeapAtMost: without the race detector, which multiplies
// its memory, and with the HTTP API, which serves /metrics.
func startHeapMeasured(t *testing.T, args ...string) *testserver.Server {
	t.Helper()
	return testserver.StartPlain(t, append(args, "--http", "127.0.0.1:0")...)
}

// waitHeapAtMost waits until the Go heap that srv reports in its /metrics
// (go_memstats_heap_alloc_bytes) is at most ceiling bytes, as the server
// frees memory in its own time, and returns it.
func waitHeapAtMost(t *testing.T, srv *testserver.Server, ceiling float64) float64 {
	t.Helper()
	var heap float64
	testwait.Until(t, "the heap to shrink", func() bool {
		heap = srv.Metric(t, "go_memstats_heap_alloc_bytes")
		return heap <= ceiling
	})
	return heap
}
