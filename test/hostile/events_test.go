package hostile_test

import (
	"bufio"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/gearman"
	"github.com/gearwork/gearwork/internal/gearmantest/wire"
)

// TestEventLogsAreBoundedInBytes: a job watched over HTTP keeps its last
// 1024 events for streams that resume, and a worker may send WORK_DATA of
// up to --max-packet bytes each: forty-eight events of 8 MiB for one
// job, which a stream watched without reading, were all kept (384 MiB).
// The logs now keep at most 16 MiB of data per job (256 MiB for all), and
// a stream that falls behind is told what it missed.
func TestEventLogsAreBoundedInBytes(t *testing.T) {
	const (
		events  = 48
		size    = 8 << 20
		ceiling = 160 << 20 // bytes of Go heap
	)
	srv := startHeapMeasured(t)
	base := "http://" + srv.HTTPAddr(t)
	c := wire.Dial(t, srv.Addr)
	c.Send(gearman.SubmitJobBg, "watched", "", "p")
	h := c.ExpectCmd(gearman.JobCreated)[0]

	// A stream that reads the first event, then nothing.
	resp, err := http.Get(base + "/v1/jobs/" + h + "/events")
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	stream := bufio.NewReader(resp.Body)
	for {
		l, err := stream.ReadString('\n')
		require.NoError(t, err)
		if strings.HasPrefix(l, "event: state") {
			break
		}
	}

	w := wire.Dial(t, srv.Addr)
	w.Send(gearman.CanDo, "watched")
	w.Send(gearman.GrabJob)
	require.Equal(t, h, w.ExpectCmd(gearman.JobAssign)[0])
	data := strings.Repeat("d", size)
	for range events {
		w.Send(gearman.WorkData, h, data)
	}
	w.Send(gearman.EchoReq, "sync")
	w.Expect(gearman.EchoRes, "sync")

	heap := waitHeapAtMost(t, srv, ceiling)
	t.Logf("Go heap %.0f MiB after %d events of %d MiB", heap/(1<<20), events, size>>20)

	// A stream resuming after the state event is told that the events
	// it missed are gone, and gets the ones kept.
	req, err := http.NewRequest(http.MethodGet, base+"/v1/jobs/"+h+"/events", nil)
	require.NoError(t, err)
	req.Header.Set("Last-Event-ID", "1")
	resumed, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resumed.Body.Close()
	rd := bufio.NewReader(resumed.Body)
	var gap string
	for {
		l, err := rd.ReadString('\n')
		require.NoError(t, err)
		if strings.HasPrefix(l, ": ") && strings.Contains(l, "earlier events are no longer kept") {
			gap = l
		}
		if strings.HasPrefix(l, "event: data") {
			break
		}
	}
	require.NotEmpty(t, gap, "the resumed stream says events were let go")
	w.Send(gearman.WorkComplete, h, "done")
	require.True(t, srv.Alive())
}
