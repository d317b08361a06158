package cluster

import (
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/gearman"
	"github.com/gearwork/gearwork/internal/gearmantest/wire"
	"github.com/gearwork/gearwork/internal/store/postgres/pgtest"
	"github.com/gearwork/gearwork/internal/testwait"
)

// jobField returns one field of the admin "job HANDLE" answer at addr,
// or the error it was answered with.
func jobField(t *testing.T, addr, handle, field string) string {
	t.Helper()
	c := wire.Dial(t, addr)
	defer c.NC.Close()
	c.Write([]byte("job " + handle + "\r\n"))
	value := ""
	for {
		line := strings.TrimRight(c.Line(), "\r\n")
		if line == "." || strings.HasPrefix(line, "ERR ") {
			if line == "." {
				return value
			}
			return line
		}
		if k, v, _ := strings.Cut(line, "\t"); k == field {
			value = v
		}
	}
}

// known asks the server at addr for GET_STATUS of handle and reports
// whether the job is known (live somewhere).
func known(t *testing.T, addr, handle string) bool {
	t.Helper()
	c := wire.Dial(t, addr)
	defer c.NC.Close()
	c.Send(gearman.GetStatus, handle)
	return c.ExpectCmd(gearman.StatusRes)[1] == "1"
}

// adminOK sends an admin command whose answer must start with OK and
// returns it.
func adminOK(t *testing.T, addr, cmd string) string {
	t.Helper()
	answer := adminCall(t, addr, cmd, false)[0]
	require.True(t, strings.HasPrefix(answer, "OK"), "%s: %s", cmd, answer)
	return answer
}

// TestClusterKeepsFeatureStateAcrossSIGKILL is the shared-mode
// counterpart of test/crash's TestCrashKeepsFeatureState: server a of two
// on one PostgreSQL stores one piece of state of each kind (runtime
// policies, pauses, a dead letter, a job waiting for its retry, a retained
// result, scheduled jobs, priorities, a unique shared by two submits, a
// cancelled job, a job waiting for another and a batch), is killed with
// SIGKILL right after the last answer, and server b, then a restarted,
// must show each as it was and hand out what a held.
func TestClusterKeepsFeatureStateAcrossSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL and two servers")
	}
	url := pgtest.Schema(t)
	s := startCluster(t, url+"&lease_ttl=2s", 2)
	a, b := s[0], s[1]
	for _, fn := range []string{"limited", "paused", "dies", "retries", "kept", "prio", "cancelled", "later", "batched"} {
		adminOK(t, a.addr, "create function "+fn)
	}
	adminOK(t, a.addr, "policy limited max_queue=3")
	adminOK(t, a.addr, "pause paused")
	adminOK(t, a.addr, "policy dies max_attempts=1")
	adminOK(t, a.addr, "policy retries max_attempts=3 backoff=1h backoff_max=1h backoff_jitter=-1")
	adminOK(t, a.addr, "policy kept result_retention=1h")

	c := wire.Dial(t, a.addr)
	submit := func(cmd gearman.Command, args ...string) string {
		t.Helper()
		c.Send(cmd, args...)
		return c.ExpectCmd(gearman.JobCreated)[0]
	}
	for i := range 3 {
		submit(gearman.SubmitJobBg, "limited", "l"+strconv.Itoa(i), "x")
	}
	paused := submit(gearman.SubmitJobBg, "paused", "p", "x")
	epoch := submit(gearman.SubmitJobEpoch, "later", "e", strconv.FormatInt(time.Now().Add(time.Hour).Unix(), 10), "x")
	low := submit(gearman.SubmitJobLowBg, "prio", "low", "low")
	normal := submit(gearman.SubmitJobBg, "prio", "normal", "normal")
	high := submit(gearman.SubmitJobHighBg, "prio", "high", "high")
	require.Equal(t, normal, submit(gearman.SubmitJobBg, "prio", "normal", "again"))
	cancelled := submit(gearman.SubmitJobBg, "cancelled", "c", "x")
	adminOK(t, a.addr, "cancel job "+cancelled)
	dies := submit(gearman.SubmitJobBg, "dies", "d", "x")
	retries := submit(gearman.SubmitJobBg, "retries", "r", "x")
	kept := submit(gearman.SubmitJobBg, "kept", "k", "x")
	waiting := submit(gearman.SubmitJobBg, "later", "after:"+seqOf(high)+":w", "x")
	batch := strings.TrimPrefix(adminOK(t, a.addr, "batch create on_complete=later"), "OK ")
	inBatch := submit(gearman.SubmitJobBg, "batched", "batch:"+batch, "x")
	adminOK(t, a.addr, "batch close "+batch)
	workOne(t, a.addr, "dies", gearman.WorkFail, "")
	workOne(t, a.addr, "retries", gearman.WorkFail, "")
	workOne(t, a.addr, "kept", gearman.WorkComplete, "the result")
	pollAdmin(t, a.addr, "deadletters dies", "the dead letter is stored", func(l []string) bool { return len(l) == 1 })
	testwait.Until(t, "the failed job to wait for its retry", func() bool { return jobField(t, a.addr, retries, "state") == "retry-wait" })
	require.Equal(t, []string{"OK 10", "the result"}, adminCall(t, a.addr, "result unique:k", false))
	testwait.Until(t, "b to answer the retained result", func() bool {
		return slices.Equal([]string{"OK 10", "the result"}, adminCall(t, b.addr, "result unique:k", false))
	})
	// The record of the cancelled job (which nobody held: it was
	// deleted from the database) is read by any server.
	testwait.Until(t, "b to answer the record of the cancelled job", func() bool { return jobField(t, b.addr, cancelled, "state") == "cancelled" })
	require.Equal(t, "cancelled", jobField(t, a.addr, cancelled, "state"))
	c.NC.Close()
	a.kill()

	for _, addr := range []string{b.addr} {
		policies := strings.Join(adminCall(t, addr, "show policy", true), "\n")
		require.Regexp(t, `(?m)^paused\t\w+\tpaused\t`, policies)
		require.Regexp(t, `(?m)^retries\texplicit\tactive\tmax_attempts=3 backoff=1h0m0s `, policies)
		require.Regexp(t, `(?m)^limited\texplicit\tactive\t.* max_queue=3 `, policies)
		dead := adminCall(t, addr, "deadletters dies", true)
		require.Len(t, dead, 1)
		require.True(t, strings.HasPrefix(dead[0], dies+"\t"), "%q", dead)
		require.Equal(t, []string{"OK 10", "the result"}, adminCall(t, addr, "result unique:k", false))
		require.Equal(t, kept, submitBgUnique(t, addr, "kept", "k", "x"))
		require.Equal(t, "cancelled", jobField(t, addr, cancelled, "state"))
		// The live jobs another server stored are known to every server.
		for _, h := range []string{epoch, waiting, retries, paused, inBatch} {
			require.True(t, known(t, addr, h), "job %s is known to %s", h, addr)
		}
		require.Equal(t, normal, submitBgUnique(t, addr, "prio", "normal", "again"))
		require.Contains(t, adminCall(t, addr, "batch "+batch, true), "pending\t1")
	}
	a.start()
	for _, addr := range []string{a.addr, b.addr} {
		require.Equal(t, []string{"OK 10", "the result"}, adminCall(t, addr, "result unique:k", false), addr)
		for _, h := range []string{epoch, waiting, retries, paused, inBatch} {
			// (It may count as running while the killed server's lease
			// on it lasts.)
			require.True(t, known(t, addr, h), "job %s is known to %s", h, addr)
		}
	}
	// A worker on b gets the jobs of prio by priority (once a's lease ran
	// out, they are anyone's), then the job that waited for the high one.
	w := wire.Dial(t, b.addr)
	w.Send(gearman.CanDo, "prio")
	var order []string
	for range 3 {
		args := w.NextJob()
		order = append(order, args[0])
		w.Send(gearman.WorkComplete, args[0], "")
	}
	require.Equal(t, []string{high, normal, low}, order)
	w.Send(gearman.CanDo, "later")
	require.Equal(t, waiting, w.NextJob()[0])
	require.Equal(t, "running", jobField(t, b.addr, waiting, "state"))
}
