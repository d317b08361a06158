package hostile_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/gearman"
	"github.com/gearwork/gearwork/internal/gearmantest/wire"
	"github.com/gearwork/gearwork/internal/testserver"
)

// TestAdminAnswersCannotBeForged: the text admin protocol separates
// fields with tabs and lines with newlines, and ends a list with a line
// ".". A peer that named a function "real\t99\t99\t99\nfake" showed a
// made-up function with 99 jobs in "status", and a client id "evil\n.\n"
// ended "workers" early, hiding the workers after it from whatever
// parses it (gearmand does the same). Function names take any bytes, as
// in gearmand; every admin answer shows function names, client ids and
// uniques with their control characters as \xNN (and, in "workers",
// whose functions end at spaces, spaces in function names as \x20).
func TestAdminAnswersCannotBeForged(t *testing.T) {
	srv := testserver.Start(t, "--http", "127.0.0.1:0")
	const forged = "real\t99\t99\t99\nfake"
	w := wire.Dial(t, srv.Addr)
	w.Send(gearman.SetClientID, "evil\n.\n")
	w.Send(gearman.CanDo, forged)
	w.Send(gearman.CanDo, "ok")
	w.Send(gearman.CanDo, "two words")
	w.Send(gearman.SubmitJobBg, "x\ny", "", "payload")
	w.ExpectCmd(gearman.JobCreated)
	w.Send(gearman.SubmitJobBg, "ok", "u\n.\n", "payload")
	w.ExpectCmd(gearman.JobCreated)
	later := wire.Dial(t, srv.Addr) // a worker listed after the evil one
	later.Send(gearman.SetClientID, "later")
	later.Send(gearman.CanDo, "ok")
	later.Send(gearman.EchoReq, "sync")
	later.Expect(gearman.EchoRes, "sync")

	adm := wire.Dial(t, srv.Addr)
	require.ElementsMatch(t, []string{"ok\t1\t0\t2", `real\x0999\x0999\x0999\x0afake` + "\t0\t0\t1",
		"two words\t0\t0\t1", `x\x0ay` + "\t1\t0\t0"}, adm.AdminList("status"))
	for _, l := range adm.AdminList("prioritystatus") {
		require.Len(t, strings.Split(l, "\t"), 5, "%q", l)
	}
	workers := adm.AdminList("workers")
	require.Contains(t, strings.Join(workers, "\n"), ` evil\x0a.\x0a : `)
	require.Contains(t, strings.Join(workers, "\n"), ` real\x0999\x0999\x0999\x0afake`)
	require.Contains(t, strings.Join(workers, "\n"), ` two\x20words`)
	require.Contains(t, strings.Join(workers, "\n"), " later : ok", "the workers after it are listed")
	for _, l := range workers {
		require.Regexp(t, `^\d+ \S+ \S+ :( |$)`, l, "every line of workers is a worker")
	}
	require.Equal(t, []string{`u\x0a.\x0a`}, adm.AdminList("show unique jobs"))
	for _, l := range adm.AdminList("show maxqueue") {
		require.Len(t, strings.Split(l, "\t"), 4, "%q", l)
	}
	for _, l := range adm.AdminList("show policy") {
		require.Len(t, strings.Split(l, "\t"), 4, "%q", l)
	}

	// The worker serves the function it registered.
	c := wire.Dial(t, srv.Addr)
	c.Send(gearman.SubmitJob, forged, "", "p")
	h := c.ExpectCmd(gearman.JobCreated)[0]
	w.Send(gearman.GrabJob)
	a := w.ExpectCmd(gearman.JobAssign)
	require.Equal(t, forged, a[1])
	w.Send(gearman.WorkComplete, a[0], "done")
	c.Expect(gearman.WorkComplete, h, "done")

	// Over HTTP, where names are typed into paths, the stricter rule
	// holds.
	resp, err := http.Post("http://"+srv.HTTPAddr(t)+"/v1/functions/x%0Ay/jobs", "text/plain", strings.NewReader("p"))
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	require.Equal(t, http.StatusBadRequest, resp.StatusCode, "a function name with a newline over HTTP")
}

// TestReducerNamesAreFunctionNames: SUBMIT_REDUCE_JOB's reducer is kept
// with the job (and stored) beside its payload, outside
// --max-queued-bytes: twenty jobs with 10 MB reducer names took 460 MB
// of a server whose budget for queued payloads was 1 MiB. A reducer name
// is a function name, and follows their rules.
func TestReducerNamesAreFunctionNames(t *testing.T) {
	srv := testserver.Start(t, "--max-queued-bytes", "1MiB")
	c := wire.Dial(t, srv.Addr)
	for _, cmd := range []gearman.Command{gearman.SubmitReduceJob, gearman.SubmitReduceJobBg} {
		c.Send(cmd, "mapper", "", strings.Repeat("r", 4<<20), "", "p")
		c.Expect(gearman.Error, "INVALID_FUNCTION_NAME", "reducer: function name must be 1 to 511 bytes")
	}
	c.Send(gearman.SubmitReduceJobBg, "mapper", "", "sum", "", "p")
	c.ExpectCmd(gearman.JobCreated)
	w := wire.Dial(t, srv.Addr)
	w.Send(gearman.CanDo, "mapper")
	w.Send(gearman.GrabJobAll)
	require.Equal(t, "sum", w.ExpectCmd(gearman.JobAssignAll)[3], "the reducer reaches the worker")
}
