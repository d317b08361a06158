package hostile_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/gearman"
	"github.com/gearwork/gearwork/internal/broker"
	"github.com/gearwork/gearwork/internal/gearmantest/wire"
	"github.com/gearwork/gearwork/internal/testserver"
	"github.com/gearwork/gearwork/internal/testwait"
)

// canDoMany registers names on c in one write, then sends ECHO_REQ, and
// returns the ERROR packets' codes and texts received before ECHO_RES.
func canDoMany(t *testing.T, c *wire.Conn, names []string) (codes, texts []string) {
	t.Helper()
	var buf bytes.Buffer
	for _, n := range names {
		buf.Write(wire.Request(gearman.CanDo, n))
	}
	buf.Write(wire.Request(gearman.EchoReq, "end"))
	c.Write(buf.Bytes())
	for {
		p, raw := c.Next()
		switch p.Command {
		case gearman.EchoRes:
			return codes, texts
		case gearman.Error:
			codes = append(codes, string(p.Arg(0)))
			texts = append(texts, string(p.Arg(1)))
		default:
			t.Fatalf("unexpected %s", wire.Readable(raw))
		}
	}
}

// TestFunctionFloodIsBounded names functions the way a hostile peer
// would, with the default limits: every distinct name a worker registers
// or a client submits to is kept (about a kilobyte each) until "drop
// function", and a worker's every GRAB_JOB and PRE_SLEEP looks through all
// of its functions under the broker's lock. One connection registering a
// hundred thousand names made other clients' submits take 20 ms instead
// of 0.03 ms while it sent GRAB_JOB, and a few hundred thousand names
// took hundreds of megabytes that stayed after the peers left.
func TestFunctionFloodIsBounded(t *testing.T) {
	srv := testserver.Start(t, "--http", "127.0.0.1:0")
	httpBase := "http://" + srv.HTTPAddr(t)

	// One connection may register DefaultMaxWorkerFunctions functions;
	// the next is ignored (CAN_DO has no answer, and an ERROR would make
	// a libgearman worker exit) and counted.
	w := wire.Dial(t, srv.Addr)
	names := make([]string, broker.DefaultMaxWorkerFunctions+1)
	for i := range names {
		names[i] = fmt.Sprintf("w-%05d", i)
	}
	codes, _ := canDoMany(t, w, names)
	require.Empty(t, codes)
	require.Equal(t, 1.0, srv.Metric(t, "gearwork_worker_functions_refused_total"))
	// Registering a function it has already is no new function.
	codes, _ = canDoMany(t, w, names[:1])
	require.Empty(t, codes)
	require.Equal(t, 1.0, srv.Metric(t, "gearwork_worker_functions_refused_total"))
	adm := wire.Dial(t, srv.Addr)
	var registered []string
	for _, l := range adm.AdminList("workers") {
		if _, fns, ok := strings.Cut(l, " : "); ok && fns != "" {
			registered = strings.Fields(fns)
		}
	}
	require.Len(t, registered, broker.DefaultMaxWorkerFunctions)
	require.NotContains(t, registered, names[len(names)-1])

	// Many connections together may hold DefaultMaxFunctions functions
	// with their workers; beyond that, while every known function holds
	// something, every new name is refused, on every path that would
	// create one, while known functions keep working.
	known := broker.DefaultMaxWorkerFunctions // the first worker's
	const perConn = 1000
	var holders []*wire.Conn
	for c := 0; known+perConn*c < broker.DefaultMaxFunctions+perConn; c++ {
		conn := wire.Dial(t, srv.Addr)
		holders = append(holders, conn)
		batch := make([]string, perConn)
		for i := range batch {
			batch[i] = fmt.Sprintf("c%03d-%04d", c, i)
		}
		codes, _ := canDoMany(t, conn, batch)
		require.Empty(t, codes, "a CAN_DO beyond the limit is ignored")
	}
	require.Len(t, adm.AdminList("status"), broker.DefaultMaxFunctions)

	cl := wire.Dial(t, srv.Addr)
	cmd, args := cl.Call(gearman.SubmitJobBg, "brand-new", "", "x")
	require.Equal(t, gearman.Error, cmd, "%q", args)
	require.Contains(t, args[1], "too many functions")
	cmd, _ = cl.Call(gearman.SubmitJobBg, "w-00001", "", "x")
	require.Equal(t, gearman.JobCreated, cmd, "a known function takes jobs")
	cl.Write([]byte("create function brand-new\n"))
	require.True(t, strings.HasPrefix(cl.Line(), "ERR TOO_MANY_FUNCTIONS "))
	cl.Write([]byte("maxqueue brand-new 5\n"))
	require.True(t, strings.HasPrefix(cl.Line(), "ERR TOO_MANY_FUNCTIONS "))

	for _, path := range []string{"/v1/functions/brand-new/jobs", "/v1/functions/brand-new/grab?wait=0s"} {
		resp, err := http.Post(httpBase+path, "application/octet-stream", strings.NewReader("x"))
		require.NoError(t, err)
		var problem struct{ Type, Detail string }
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&problem))
		require.NoError(t, resp.Body.Close())
		require.Equal(t, http.StatusServiceUnavailable, resp.StatusCode, "%s: %+v", path, problem)
		require.Contains(t, problem.Type, "too-many-functions", path)
	}

	// Once a worker leaves, the functions only it held hold nothing: a
	// new name makes the server forget the one idle longest, without
	// "drop function". (The server may take a moment to see the
	// connection close.)
	require.NoError(t, holders[0].NC.Close())
	testwait.Until(t, "brand-new is accepted", func() bool {
		cmd, _ := cl.Call(gearman.SubmitJobBg, "brand-new", "", "x")
		return cmd == gearman.JobCreated
	})
	status := adm.AdminList("status")
	require.Len(t, status, broker.DefaultMaxFunctions)
	listed := make(map[string]bool, len(status))
	for _, l := range status {
		listed[strings.Fields(l)[0]] = true
	}
	require.True(t, listed["brand-new"])
	require.False(t, listed["c000-0000"], "the function idle longest is forgotten")
	require.True(t, listed["c000-0001"], "one is forgotten per new name")
	require.True(t, listed["c001-0000"], "a function a worker holds is kept")
	require.True(t, srv.Alive())
}

// TestJunkFunctionNamesDoNotLockOutNewOnes names functions by every path a
// peer has (CAN_DO, submits whose clients leave, "create function") until
// the server knows --max-functions of them, then leaves: the names hold
// nothing, and a new name is still accepted, the server forgetting idle
// ones to make room, where it used to refuse every new name from then on.
func TestJunkFunctionNamesDoNotLockOutNewOnes(t *testing.T) {
	const limit = 3000
	srv := testserver.Start(t, "--http", "off", "--max-functions", fmt.Sprint(limit))
	junk := func(prefix string, i int) string { return fmt.Sprintf("%s-%05d", prefix, i) }

	// A worker registers names and leaves.
	for c := range 2 {
		w := wire.Dial(t, srv.Addr)
		names := make([]string, limit/6)
		for i := range names {
			names[i] = junk(fmt.Sprintf("worker%d", c), i)
		}
		codes, _ := canDoMany(t, w, names)
		require.Empty(t, codes)
		require.NoError(t, w.NC.Close())
	}
	// A client submits foreground jobs to names and leaves: its jobs go
	// with it.
	cl := wire.Dial(t, srv.Addr)
	var buf bytes.Buffer
	for i := range limit / 3 {
		buf.Write(wire.Request(gearman.SubmitJob, junk("submit", i), "", "x"))
	}
	cl.Write(buf.Bytes())
	for range limit / 3 {
		p, raw := cl.Next()
		require.Equal(t, gearman.JobCreated, p.Command, wire.Readable(raw))
	}
	require.NoError(t, cl.NC.Close())
	// An admin creates functions until the server knows its limit.
	adm := wire.Dial(t, srv.Addr)
	buf.Reset()
	for i := range limit {
		buf.WriteString("create function " + junk("create", i) + "\n")
	}
	adm.Write(buf.Bytes())
	for range limit {
		require.Equal(t, "OK\r\n", adm.Line())
	}

	// New names are accepted, on every path, and their jobs run.
	testwait.Until(t, "the server knows its limit of functions", func() bool {
		return len(adm.AdminList("status")) == limit
	})
	c := wire.Dial(t, srv.Addr)
	for i := range 10 {
		cmd, args := c.Call(gearman.SubmitJobBg, junk("legit", i), "", "x")
		require.Equal(t, gearman.JobCreated, cmd, "%q", args)
	}
	w := wire.Dial(t, srv.Addr)
	codes, _ := canDoMany(t, w, []string{"legit-worker"})
	require.Empty(t, codes)
	cmd, args := c.Call(gearman.SubmitJobBg, "legit-worker", "", "x")
	require.Equal(t, gearman.JobCreated, cmd, "%q", args)
	cmd, args = w.Call(gearman.GrabJob)
	require.Equal(t, gearman.JobAssign, cmd, "%q", args)
	require.Equal(t, "legit-worker", args[1])
	status := adm.AdminList("status")
	require.Len(t, status, limit)
	// The functions of the queued jobs are kept.
	legit := 0
	for _, l := range status {
		if strings.HasPrefix(l, "legit-") {
			legit++
		}
	}
	require.Equal(t, 11, legit)
	require.True(t, srv.Alive())
}
