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
// parses it (gearmand does the same). Function names with control
// characters other than tab (which Perl's Gearman::Client puts between
// its prefix and a function name) are refused; client ids and uniques
// are shown with them as \xNN.
func TestAdminAnswersCannotBeForged(t *testing.T) {
	srv := testserver.Start(t, "--http", "127.0.0.1:0")
	w := wire.Dial(t, srv.Addr)
	w.Send(gearman.SetClientID, "evil\n.\n")
	w.Send(gearman.CanDo, "real\t99\t99\t99\nfake")
	w.Expect(gearman.Error, "INVALID_FUNCTION_NAME", "function name must not contain control characters but tab")
	w.Send(gearman.CanDo, "ok")
	w.Send(gearman.SubmitJobBg, "x\ny", "", "payload")
	w.Expect(gearman.Error, "INVALID_FUNCTION_NAME", "function name must not contain control characters but tab")
	w.Send(gearman.SubmitJobBg, "ok", "u\n.\n", "payload")
	w.ExpectCmd(gearman.JobCreated)
	later := wire.Dial(t, srv.Addr) // a worker listed after the evil one
	later.Send(gearman.SetClientID, "later")
	later.Send(gearman.CanDo, "ok")
	later.Send(gearman.EchoReq, "sync")
	later.Expect(gearman.EchoRes, "sync")

	adm := wire.Dial(t, srv.Addr)
	require.Equal(t, []string{"ok\t1\t0\t2"}, adminLines(t, adm, "status"))
	workers := adminLines(t, adm, "workers")
	require.Contains(t, strings.Join(workers, "\n"), ` evil\x0a.\x0a : ok`)
	require.Contains(t, strings.Join(workers, "\n"), " later : ok", "the workers after it are listed")
	for _, l := range workers {
		require.Regexp(t, `^\d+ \S+ \S+ :( |$)`, l, "every line of workers is a worker")
	}
	require.Equal(t, []string{`u\x0a.\x0a`}, adminLines(t, adm, "show unique jobs"))

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
		c.Send(cmd, "mapper", "", "sum\nfake", "", "p")
		c.Expect(gearman.Error, "INVALID_FUNCTION_NAME", "reducer: function name must not contain control characters but tab")
	}
	c.Send(gearman.SubmitReduceJobBg, "mapper", "", "sum", "", "p")
	c.ExpectCmd(gearman.JobCreated)
	w := wire.Dial(t, srv.Addr)
	w.Send(gearman.CanDo, "mapper")
	w.Send(gearman.GrabJobAll)
	require.Equal(t, "sum", w.ExpectCmd(gearman.JobAssignAll)[3], "the reducer reaches the worker")
}
