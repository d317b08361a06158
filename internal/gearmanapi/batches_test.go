package gearmanapi

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/gearman"
	"github.com/gearwork/gearwork/internal/broker"
	"github.com/gearwork/gearwork/internal/store/memory"
	"github.com/gearwork/gearwork/internal/testwait"
)

// submitRefused submits a background job with unique and checks the
// ERROR answer: its code, and text that contains want.
func submitRefused(t *testing.T, c *client, cmd gearman.Command, unique, code, want string) {
	t.Helper()
	c.Send(cmd, "fn", unique, "refused")
	got, args := c.Read()
	require.Equal(t, gearman.Error, got)
	require.Equal(t, code, args[0])
	require.Contains(t, args[1], want)
}

// ordinaryUnique submits a background job of another function with a
// unique that starts like the batch or dependency conventions but does not
// follow them (as a client that knows nothing of them may send): it is an
// ordinary unique, kept whole, so that the same unique again joins the
// job.
func ordinaryUnique(t *testing.T, c *client, unique string) {
	t.Helper()
	c.Send(gearman.SubmitJobBg, "other", unique, "x")
	cmd, args := c.Read()
	require.Equal(t, gearman.JobCreated, cmd, "%q", args)
	c.Send(gearman.SubmitJobBg, "other", unique, "x")
	c.Expect(gearman.JobCreated, args[0])
}

// A Gearman client creates a batch with an admin command, adds jobs by the
// unique "batch:ID[:UNIQUE]" and closes it; the callbacks reach a worker as
// ordinary jobs once the batch's jobs are done.
func TestBatchOverTheGearmanPort(t *testing.T) {
	t.Parallel()
	tb := setup(t, broker.Config{Store: memory.New()}, Config{})
	c := tb.dial(t)
	created := c.admin("batch create on_success=ok on_complete=done", false)
	require.Regexp(t, `^OK \d+\n$`, created)
	id := strings.TrimSpace(strings.TrimPrefix(created, "OK "))

	c.Send(gearman.SubmitJobBg, "fn", "batch:"+id, "a")
	c.Expect(gearman.JobCreated, handle(1))
	c.Send(gearman.SubmitJobBg, "fn", "batch:"+id+":u1", "b")
	c.Expect(gearman.JobCreated, handle(2))
	submitRefused(t, c, gearman.SubmitJob, "batch:"+id, "QUEUE_ERROR", "only background jobs")
	ordinaryUnique(t, c, "batch:nightly-report")
	submitRefused(t, c, gearman.SubmitJobBg, "batch:99", "QUEUE_ERROR", "batch not found")
	require.Equal(t, "OK\n", c.admin("batch close "+id, false))

	w := tb.dial(t)
	for _, fn := range []string{"fn", "ok", "done"} {
		w.Send(gearman.CanDo, fn)
	}
	w.Send(gearman.GrabJobUniq)
	w.Expect(gearman.JobAssignUniq, handle(1), "fn", "", "a")
	w.Send(gearman.WorkComplete, handle(1), "")
	w.Send(gearman.GrabJobUniq)
	w.Expect(gearman.JobAssignUniq, handle(2), "fn", "u1", "b")
	w.Send(gearman.WorkComplete, handle(2), "")

	got := map[string]broker.CallbackPayload{}
	testwait.Until(t, "both callbacks", func() bool {
		w.Send(gearman.GrabJob)
		cmd, args := w.Read()
		if cmd == gearman.NoJob {
			return false
		}
		require.Equal(t, gearman.JobAssign, cmd)
		var p broker.CallbackPayload
		require.NoError(t, json.Unmarshal([]byte(args[2]), &p))
		got[args[1]] = p
		w.Send(gearman.WorkComplete, args[0], "")
		return len(got) == 2
	})
	require.Equal(t, map[string]broker.CallbackPayload{
		"ok":   {Batch: id, Callback: "on_success", Total: 2, Succeeded: 2, Failures: []string{}},
		"done": {Batch: id, Callback: "on_complete", Total: 2, Succeeded: 2, Failures: []string{}},
	}, got)

	status := c.admin("batch "+id, true)
	for _, line := range []string{"closed\ttrue\n", "complete\ttrue\n", "total\t2\n", "succeeded\t2\n",
		"on_success\tok\tfired\n", "on_complete\tdone\tfired\n"} {
		require.Contains(t, status, line)
	}
	require.Equal(t, "ERR UNKNOWN_BATCH No+such+batch\r\n", c.admin("batch 99", true))
	require.Equal(t, "ERR UNKNOWN_BATCH No+such+batch\r\n", c.admin("jobs batch=99", true))
	require.Equal(t, "ERR INVALID_ARGUMENTS An+incomplete+set+of+arguments+was+sent+to+this+command+batch+create\r\n",
		c.admin("batch create on_success", false))
	// A callback's function follows the rule of a submit's.
	require.Equal(t, "ERR INVALID_ARGUMENTS callback+function+name+must+be+1+to+511+bytes\r\n",
		c.admin("batch create on_complete="+strings.Repeat("f", gearman.MaxFunctionSize+1), false))
	require.Regexp(t, `^OK \d+\n$`, c.admin("batch create on_complete="+strings.Repeat("f", gearman.MaxFunctionSize), false))
}

// A Gearman client makes a job wait for others by the unique
// "after:SEQ,SEQ[:UNIQUE]"; a dependency that dies cancels it.
func TestAfterOverTheGearmanPort(t *testing.T) {
	t.Parallel()
	tb := setup(t, broker.Config{Store: memory.New(), Policies: map[string]broker.Policy{"fn": {MaxAttempts: 1}}}, Config{})
	c := tb.dial(t)
	seq := func(n int) string { return strings.TrimPrefix(handle(n), "H:test:") }
	c.Send(gearman.SubmitJobBg, "fn", "", "a")
	c.Expect(gearman.JobCreated, handle(0))
	c.Send(gearman.SubmitJobBg, "fn", "", "b")
	c.Expect(gearman.JobCreated, handle(1))
	c.Send(gearman.SubmitJobBg, "fn", "after:"+seq(0)+","+seq(1)+":mine", "c")
	c.Expect(gearman.JobCreated, handle(2))
	c.Send(gearman.SubmitJobBg, "fn", "after:"+seq(1), "d")
	c.Expect(gearman.JobCreated, handle(3))
	ordinaryUnique(t, c, "after:lunch")
	submitRefused(t, c, gearman.SubmitJobBg, "after:99", "QUEUE_ERROR", "no job H:test:99")
	// The unique's limit holds for the whole unique, its prefix included.
	long := "after:" + seq(0) + strings.Repeat(","+seq(0), 40)
	require.Greater(t, len(long), gearman.MaxUniqueSize)
	submitRefused(t, c, gearman.SubmitJobBg, long, "ARGUMENT_TOO_LARGE", "Unique value too large")
	submitRefused(t, c, gearman.SubmitJobBg, "after-unique:fn/"+strings.Repeat("u", 60), "ARGUMENT_TOO_LARGE", "Unique value too large")

	w := tb.dial(t)
	w.Send(gearman.CanDo, "fn")
	w.Send(gearman.GrabJobUniq)
	w.Expect(gearman.JobAssignUniq, handle(0), "fn", "", "a")
	w.Send(gearman.WorkComplete, handle(0), "")
	w.Send(gearman.GrabJobUniq)
	w.Expect(gearman.JobAssignUniq, handle(1), "fn", "", "b")
	w.Send(gearman.WorkException, handle(1), "boom") // dies: c and d are cancelled
	w.Send(gearman.GrabJob)
	w.Expect(gearman.NoJob)
	for _, n := range []int{2, 3} {
		got := c.admin("job "+handle(n), true)
		require.Contains(t, got, "state\tcancelled\n")
		require.Contains(t, got, "dependency "+handle(1)+" dead")
	}
}

// A Gearman client makes a job wait for one named by its function and
// unique, "after-unique:FUNCTION/UNIQUE"; a unique no live job has is
// refused, and one without the FUNCTION/ part is an ordinary unique.
func TestAfterUniqueOverTheGearmanPort(t *testing.T) {
	t.Parallel()
	tb := setup(t, broker.Config{Store: memory.New()}, Config{})
	c := tb.dial(t)
	c.Send(gearman.SubmitJobBg, "order", "order-7", "a")
	c.Expect(gearman.JobCreated, handle(0))
	c.Send(gearman.SubmitJobBg, "ship", "after-unique:order/order-7", "b")
	c.Expect(gearman.JobCreated, handle(1))
	c.Send(gearman.SubmitJobBg, "ship", "after-unique-anyway:order/order-7", "c")
	c.Expect(gearman.JobCreated, handle(2))
	ordinaryUnique(t, c, "after-unique:lunch")
	submitRefused(t, c, gearman.SubmitJobBg, "after-unique:order/order-8", "QUEUE_ERROR", `no live job of "order" has the unique "order-8"`)

	w := tb.dial(t)
	w.Send(gearman.CanDo, "order")
	w.Send(gearman.CanDo, "ship")
	w.Send(gearman.GrabJobUniq)
	w.Expect(gearman.JobAssignUniq, handle(0), "order", "order-7", "a")
	w.Send(gearman.WorkFail, handle(0))
	w.Send(gearman.GrabJobUniq)
	w.Expect(gearman.JobAssignUniq, handle(2), "ship", "", "c")
	w.Send(gearman.WorkComplete, handle(2), "")
	w.Send(gearman.GrabJob)
	w.Expect(gearman.NoJob)
	got := c.admin("job "+handle(1), true)
	require.Contains(t, got, "state\tcancelled\n")
	require.Contains(t, got, "dependency "+handle(0)+" dead")
}
