package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/client"
	"github.com/gearwork/gearwork/internal/gearmantest"
	"github.com/gearwork/gearwork/internal/testserver"
	"github.com/gearwork/gearwork/internal/testwait"
	"github.com/gearwork/gearwork/worker"
)

// TestClientCommands builds the gearwork binary (once per test process)
// and runs submit, work and admin against servers started here: Gearwork
// in process and Debian's gearmand.
func TestClientCommands(t *testing.T) {
	t.Parallel()
	bin := testserver.Binary(t)

	for _, kind := range cliServerKinds {
		t.Run("submit/"+kind.name, func(t *testing.T) { t.Parallel(); testSubmitCommand(t, kind) })
		t.Run("admin/"+kind.name, func(t *testing.T) { t.Parallel(); testAdminCommand(t, kind) })
	}
	t.Run("work", func(t *testing.T) { t.Parallel(); testWorkCommand(t, bin) })
	t.Run("admin shutdown", func(t *testing.T) { t.Parallel(); testAdminShutdown(t, bin) })
}

func testSubmitCommand(t *testing.T, kind cliServerKind) {
	srv := kind.start(t)
	cliWorker(t, srv.addr, "", map[string]worker.HandlerFunc{
		"upper": func(_ context.Context, j *worker.Job) ([]byte, error) {
			_ = j.SendStatus(1, 2)
			_ = j.SendData([]byte("chunk:"))
			_ = j.SendWarning([]byte("careful"))
			return bytes.ToUpper(j.Payload), nil
		},
		"fail": func(context.Context, *worker.Job) ([]byte, error) { return nil, errors.New("no") },
		"throw": func(_ context.Context, j *worker.Job) ([]byte, error) {
			return nil, &worker.Exception{Data: append([]byte("bad "), j.Payload...)}
		},
	})
	s := "--servers=" + srv.addr

	out, errOut, code := gw(t, "submit", s, "--priority", "high", "upper", "hello")
	require.Equal(t, 0, code, errOut)
	require.Equal(t, "chunk:HELLO", out)
	require.Equal(t, "status: 1/2\nwarning: careful\n", errOut)

	// The payload from stdin, the server from the environment.
	out, _, code = gwInput(t, "from stdin", []string{"GEARWORK_SERVERS=" + srv.addr}, "submit", "upper", "-")
	require.Equal(t, 0, code)
	require.Equal(t, "chunk:FROM STDIN", out)

	_, errOut, code = gw(t, "submit", s, "fail", "x")
	require.Equal(t, exitJobFailed, code)
	if srv.ours != nil {
		// WORK_FAIL says nothing of why; the job's record does.
		require.Regexp(t, `gearwork: job H:\S+ failed after 1 attempt\n$`, errOut)
	} else {
		require.Contains(t, errOut, "job failed")
	}

	_, errOut, code = gw(t, "submit", s, "throw", "x")
	require.Equal(t, exitException, code)
	require.Contains(t, errOut, "exception: bad x\n")

	_, errOut, code = gw(t, "submit", s, "--priority", "urgent", "upper")
	require.Equal(t, exitUsage, code)
	require.Contains(t, errOut, "unknown priority")

	// Background, waiting until the job ends: Gearwork reports the outcome
	// from the job's record, gearmand keeps none.
	out, errOut, code = gw(t, "submit", s, "--background", "--wait", "--poll=10ms", "upper", "bg")
	require.Equal(t, 0, code, errOut)
	if srv.ours != nil {
		require.Regexp(t, `^H:\S+\nBG$`, out, "the handle, then the result")
		require.True(t, strings.HasSuffix(errOut, "status: complete\n"), errOut)
		_, errOut, code = gw(t, "submit", s, "--background", "--wait", "--poll=10ms", "throw", "bg")
		require.Equal(t, exitFailed, code, "a failed background job is a dead letter: %s", errOut)
		require.Contains(t, errOut, "status: dead\n")
		require.Contains(t, errOut, "dead after 1 attempt: bad bg\n")
	} else {
		require.Regexp(t, `^H:\S+\n$`, out)
		require.True(t, strings.HasSuffix(errOut, "status: done\n"), errOut)
	}

	// A job that no worker takes is reported queued, without a progress
	// its worker never reported, until --timeout. The timeout counts the
	// submit and the first look at the job too, which a loaded machine
	// can take more than a second for: it is generous.
	_, errOut, code = gw(t, "submit", s, "--background", "--wait", "--poll=10ms", "--timeout=5s", "nobody_works_this", "x")
	require.Equal(t, exitUnreachable, code, errOut)
	require.True(t, strings.HasPrefix(errOut, "status: queued\n"), errOut)
	// One that waits for its time is reported as its record says
	// (gearmand's GET_STATUS cannot tell it from a queued one).
	_, errOut, code = gw(t, "submit", s, "--at", "2099-01-02T03:04:05Z", "--wait", "--poll=10ms", "--timeout=5s", "later", "w")
	require.Equal(t, exitUnreachable, code, errOut)
	want := "status: queued\n"
	if srv.ours != nil {
		want = "status: scheduled\n"
	}
	require.True(t, strings.HasPrefix(errOut, want), errOut)

	// A scheduled job is held by the server until its time.
	out, errOut, code = gw(t, "submit", s, "--at", "2099-01-02T03:04:05Z", "--unique", "sched-1", "later", "x")
	require.Equal(t, 0, code, errOut)
	handle := strings.TrimSpace(out)
	st, err := gearmantest.NewClient(t, srv.addr).Status(context.Background(), client.Job{Handle: handle, Server: srv.addr})
	require.NoError(t, err)
	require.Equal(t, client.Status{Known: true}, st)
	_, _, code = gw(t, "submit", s, "--at", "tomorrow", "later")
	require.Equal(t, exitUsage, code)

	// No server.
	_, errOut, code = gw(t, "submit", "--servers=127.0.0.1:1", "upper", "x")
	require.Equal(t, exitUnreachable, code)
	require.Contains(t, errOut, "no server available")

	if srv.ours != nil {
		// A refused submit: the queue is full.
		_, _, code = gw(t, "admin", s, "maxqueue", "capped", "1")
		require.Equal(t, 0, code)
		_, _, code = gw(t, "submit", s, "--background", "capped")
		require.Equal(t, 0, code)
		_, errOut, code = gw(t, "submit", s, "--background", "capped")
		require.Equal(t, exitRefused, code)
		require.Contains(t, errOut, "QUEUE_ERROR")
	}
}

func testWorkCommand(t *testing.T, bin string) {
	srv := gearmantest.Start(t)
	dir := t.TempDir()
	script := `p=$(cat)
case "$p" in
fail) echo "bad thing" >&2; exit 3 ;;
progress) echo "status 1 2" >&3; echo "data part one" >&3; echo "nonsense" >&3; printf done ;;
slow*) touch "$DIR/started-$p"; while [ ! -e "$DIR/release" ]; do sleep 0.02; done; printf 'finished %s' "$p" ;;
*) printf '%s:%s' "$GEARWORK_FUNCTION" "$p" | tr a-z A-Z ;;
esac`
	cmd := exec.Command(bin, "work", "--servers="+srv.Addr(), "--concurrency=2", "--client-id=cli-worker",
		"shout", "--", "sh", "-c", script)
	cmd.Env = append(os.Environ(), "DIR="+dir)
	logLines, exited := startLogged(t, cmd)

	c := gearmantest.NewClient(t, srv.Addr())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := c.Do(ctx, client.Request{Function: "shout", Payload: []byte("abc")})
	require.NoError(t, err)
	require.Equal(t, "SHOUT:ABC", string(res))

	var warnings []string
	_, err = c.Do(ctx, client.Request{Function: "shout", Payload: []byte("fail"),
		UpdateFunc: func(u client.Update) { warnings = append(warnings, string(u.Data)) }})
	require.ErrorIs(t, err, client.ErrJobFailed)
	require.Equal(t, []string{"bad thing\n"}, warnings)

	// Progress and data on file descriptor 3.
	var updates []string
	res, err = c.Do(ctx, client.Request{Function: "shout", Payload: []byte("progress"),
		UpdateFunc: func(u client.Update) {
			updates = append(updates, fmt.Sprintf("%d %d/%d %s", u.Kind, u.Numerator, u.Denominator, u.Data))
		}})
	require.NoError(t, err)
	require.Equal(t, "done", string(res))
	require.Equal(t, []string{fmt.Sprintf("%d 1/2 ", client.UpdateStatus), fmt.Sprintf("%d 0/0 part one", client.UpdateData)}, updates)

	// A failing background job: its stderr is the dead letter's error.
	bg, err := c.SubmitBackground(ctx, client.Request{Function: "shout", Payload: []byte("fail")})
	require.NoError(t, err)
	testwait.Until(t, "the job to be a dead letter", func() bool {
		dls, err := srv.Broker().DeadLetters(ctx, "shout", 0)
		require.NoError(t, err)
		return len(dls) == 1
	})
	dls, err := srv.Broker().DeadLetters(ctx, "shout", 0)
	require.NoError(t, err)
	require.Equal(t, bg.Handle, dls[0].Handle)
	require.Equal(t, "bad thing\n", dls[0].LastError)
	require.Equal(t, "bad thing\n", dls[0].History[0].Error)
	// The worker's log line of a failure says why: the exit status and
	// the end of stderr, on the one line.
	failed := ""
	for l := range logLines {
		if strings.Contains(l, "worker: job failed") {
			failed = l
			break
		}
	}
	require.Contains(t, failed, "exit status 3")
	require.Contains(t, failed, `stderr ends \"bad thing\"`)

	// Two slow jobs run at once (--concurrency=2); SIGTERM lets them finish.
	var tasks []*client.Task
	for _, p := range []string{"slow1", "slow2"} {
		task, err := c.Submit(ctx, client.Request{Function: "shout", Payload: []byte(p)})
		require.NoError(t, err)
		tasks = append(tasks, task)
	}
	testwait.Until(t, "both slow jobs to start", func() bool {
		_, e1 := os.Stat(filepath.Join(dir, "started-slow1"))
		_, e2 := os.Stat(filepath.Join(dir, "started-slow2"))
		return e1 == nil && e2 == nil
	})
	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	stopping := false
	for l := range logLines {
		if stopping = strings.Contains(l, "work: stopping"); stopping {
			break
		}
	}
	require.True(t, stopping, "the worker logs that it is stopping")
	require.NoError(t, os.WriteFile(filepath.Join(dir, "release"), nil, 0o644))
	for i, task := range tasks {
		res, err := task.Wait(ctx)
		require.NoError(t, err)
		require.Equal(t, fmt.Sprintf("finished slow%d", i+1), string(res))
	}
	require.NoError(t, <-exited, "gearwork work exits 0 after a graceful stop")
}

// lifecycleConfig gives each function of TestAdminLifecycleCommands the
// policy it needs.
const lifecycleConfig = `
functions:
  lc_fail:
    max_attempts: 2
    backoff: 1ms
    backoff_jitter: -1
  lc_done:
    result_retention: 1h
  lc_ordered:
    ordering: unique-prefix
schedules:
  - name: lc-nightly
    function: lc_report
    cron: "0 3 * * *"
`

// TestAdminLifecycleCommands runs the lifecycle subcommands of the gearwork
// binary against a real "gearwork serve" whose state is made by Gearman
// clients and workers: dead letters from a failing worker, retained
// results, ordering keys, a cron schedule, policies and pauses.
func TestAdminLifecycleCommands(t *testing.T) {
	t.Parallel()
	cfg := filepath.Join(t.TempDir(), "gearwork.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte(lifecycleConfig), 0o600))
	srv := testserver.Start(t, "--config", cfg, "--handle-prefix", "H:lc:")
	s := "--servers=" + srv.Addr
	// The context outlives every subtest, each of which runs the CLI many
	// times: on a loaded machine they took more than a minute together.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	admin := func(args ...string) (string, string, int) {
		t.Helper()
		return gw(t, append([]string{"admin", s}, args...)...)
	}
	ok := func(args ...string) string {
		t.Helper()
		out, errOut, code := admin(args...)
		require.Equal(t, 0, code, "%v: %s", args, errOut)
		require.Empty(t, errOut, args)
		return out
	}
	// fails runs admin with args and requires exit code 1 with want in
	// the error output.
	fails := func(want string, args ...string) {
		t.Helper()
		_, errOut, code := admin(args...)
		require.Equal(t, 1, code, "%v: %s", args, errOut)
		require.Contains(t, errOut, want, args)
	}
	// misused runs admin with args and requires the usage exit code; it
	// returns the error output.
	misused := func(args ...string) string {
		t.Helper()
		_, errOut, code := admin(args...)
		require.Equal(t, exitUsage, code, "%v: %s", args, errOut)
		return errOut
	}
	type row = map[string]any
	// deadHistory is the number of attempts in the dead letter's history,
	// or 0 while it is not a dead letter (a retried job runs again).
	deadHistory := func(handle string) int {
		t.Helper()
		out, _, code := admin("deadletter", "show", handle, "--json")
		if code != 0 {
			return 0
		}
		var rows []row
		require.NoError(t, json.Unmarshal([]byte(out), &rows), out)
		require.Len(t, rows, 1)
		return len(rows[0]["history"].([]any))
	}
	jsonRows := func(args ...string) []row {
		t.Helper()
		var rows []row
		out := ok(append(args, "--json")...)
		require.NoError(t, json.Unmarshal([]byte(out), &rows), out)
		return rows
	}

	c := gearmantest.NewClient(t, srv.Addr)
	cliWorker(t, srv.Addr, "lc-worker", map[string]worker.HandlerFunc{
		"lc_fail": func(context.Context, *worker.Job) ([]byte, error) {
			return nil, &worker.Exception{Data: []byte("disk\tfull")}
		},
		"lc_done": func(_ context.Context, j *worker.Job) ([]byte, error) {
			if string(j.Payload) == "binary" {
				return []byte{0xff, 0x00, 'x'}, nil
			}
			if strings.HasPrefix(string(j.Payload), "big") {
				return []byte(strings.Repeat("r", 5000)), nil
			}
			return []byte("done!\nsecond line"), nil
		},
	})

	t.Run("policy", func(t *testing.T) {
		out := ok("policy")
		lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
		require.Regexp(t, `^FUNCTION +SOURCE +STATE +SETTINGS$`, lines[0])
		require.Contains(t, lines, "*           default   -       -")
		require.Contains(t, lines, "lc_fail     explicit  active  max_attempts=2 backoff=1ms backoff_jitter=-1")
		require.Contains(t, lines, "lc_ordered  explicit  active  ordering=unique-prefix")

		rows := jsonRows("policy", "lc_fail")
		require.Len(t, rows, 1)
		require.Equal(t, "lc_fail", rows[0]["function"])
		require.Equal(t, "explicit", rows[0]["source"])
		require.Equal(t, "active", rows[0]["state"])
		settings := rows[0]["settings"].(map[string]any)
		require.Equal(t, "2", settings["max_attempts"])
		require.Equal(t, "1ms", settings["backoff"])
		require.Equal(t, "reject", settings["overflow"], "JSON has every key")
		require.Nil(t, jsonRows("policy")[0]["state"], "the default policy has no state")

		// A function the server does not know is refused, and not created.
		for _, args := range [][]string{{"policy", "lc_tuned", "max_attempts=5"}, {"pause", "lc_tuned"}, {"resume", "lc_tuned"}} {
			out, errOut, code := admin(args...)
			require.Equal(t, exitFailed, code, args)
			require.Empty(t, out)
			require.Equal(t, "gearwork admin: "+srv.Addr+": UNKNOWN_FUNCTION: unknown function lc_tuned\n", errOut)
		}
		require.NotContains(t, ok("status"), "lc_tuned")
		require.Equal(t, "OK\n", ok("create", "lc_tuned"))
		require.Equal(t, "OK\n", ok("policy", "lc_tuned", "max_attempts=5", "timeout=30s"))
		require.Equal(t, "lc_tuned  explicit  active  max_attempts=5 timeout=30s\n",
			strings.SplitN(ok("policy", "lc_tuned"), "\n", 2)[1])
		require.Equal(t, "OK\n", ok("policy", "lc_tuned", "reset"))
		require.Equal(t, "default", jsonRows("policy", "lc_tuned")[0]["source"])

		fails(`INVALID_ARGUMENTS: invalid policy: unknown key "speed"`, "policy", "lc_tuned", "speed=9")
		fails("max_attempts", "policy", "lc_tuned", "max_attempts=many")
		require.Contains(t, misused("policy", "lc_tuned", "fast"), `policy settings are KEY=VALUE, not "fast"`)
	})

	t.Run("pause", func(t *testing.T) {
		state := func() any { return jsonRows("policy", "lc_paused")[0]["state"] }
		require.Equal(t, "OK\n", ok("create", "lc_paused"))
		require.Equal(t, "OK\n", ok("pause", "lc_paused"))
		require.Equal(t, "paused", state())
		require.Equal(t, "OK\n", ok("pause", "lc_paused", "until", "30m"))
		require.Regexp(t, `^paused-until=\d{4}-`, state())
		require.Equal(t, "OK\n", ok("pause", "lc_paused", "until", "2099-01-02T03:04:05Z"))
		require.Equal(t, "paused-until=2099-01-02T03:04:05Z", state())
		require.Contains(t, misused("pause", "lc_paused", "until", "2020-01-01T00:00:00Z"),
			`pause until "2020-01-01T00:00:00Z": that time has passed`)
		require.Equal(t, "paused-until=2099-01-02T03:04:05Z", state(), "a refused pause leaves the pause")
		require.Equal(t, "OK\n", ok("resume", "lc_paused"))
		require.Equal(t, "active", state())

		for _, args := range [][]string{{"pause", "lc_paused", "until", "tomorrow"}, {"pause", "lc_paused", "-5m"},
			{"pause"}, {"pause", "a", "b", "c"}, {"resume"}} {
			misused(args...)
		}
	})

	t.Run("deadletters", func(t *testing.T) {
		job, err := c.SubmitBackground(ctx, client.Request{Function: "lc_fail", Unique: "img-7", Payload: []byte("/uploads/7.png")})
		require.NoError(t, err)
		dead := func() []row {
			var rows []row
			testwait.Until(t, "the job to die", func() bool {
				rows = jsonRows("deadletters", "lc_fail")
				return len(rows) == 1
			})
			return rows
		}
		rows := dead()
		require.Equal(t, job.Handle, rows[0]["handle"])
		require.Equal(t, "lc_fail", rows[0]["function"])
		require.Equal(t, "img-7", rows[0]["unique"])
		require.Equal(t, 2.0, rows[0]["attempts"])
		require.Equal(t, "disk\tfull", rows[0]["error"], "JSON has the error as sent")
		require.Regexp(t, `^\d{4}-\d\d-\d\dT`, rows[0]["died_at"], "named as in GET /v1/dead-letters")

		out := ok("deadletters")
		lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
		require.Len(t, lines, 2, out)
		require.Regexp(t, `^HANDLE +FUNCTION +UNIQUE +ATTEMPTS +DIED_AT +ERROR$`, lines[0])
		require.Regexp(t, `^H:lc:\d+ +lc_fail +img-7 +2 +\S+ +"disk\\tfull"$`, lines[1], "a tab in a cell is quoted")

		out = ok("deadletter", "show", job.Handle)
		require.Contains(t, out, "HANDLE    "+job.Handle+"\n")
		require.Contains(t, out, "FUNCTION  lc_fail\n")
		require.Contains(t, out, "PRIORITY  normal\n")
		require.Contains(t, out, "ATTEMPTS  2\n")
		require.Contains(t, out, "PAYLOAD   /uploads/7.png\n")
		require.Regexp(t, `\n\nATTEMPT +START +END +OUTCOME +ERROR\n1 +\S+ +\S+ +exception +"disk\\tfull"\n2 `, out)

		recs := jsonRows("deadletter", "show", job.Handle)
		require.Len(t, recs, 1)
		require.Equal(t, "/uploads/7.png", recs[0]["payload"])
		require.Equal(t, "img-7", recs[0]["unique"])
		hist := recs[0]["history"].([]any)
		require.Len(t, hist, 2)
		require.Equal(t, 1.0, hist[0].(row)["attempt"])
		require.Equal(t, "exception", hist[0].(row)["outcome"])
		require.Equal(t, "disk\tfull", hist[0].(row)["error"])

		// Retried, the job runs and dies again: its history grows.
		require.Equal(t, "1 dead letter queued again\n", ok("deadletter", "retry", job.Handle))
		testwait.Until(t, "the retried job to die again", func() bool {
			return deadHistory(job.Handle) == 4
		})
		require.Equal(t, "1 dead letter queued again\n", ok("deadletter", "retry", "all", "lc_fail"))
		testwait.Until(t, "the job to die a third time", func() bool {
			return deadHistory(job.Handle) == 6
		})
		require.Equal(t, "1 dead letter purged\n", ok("deadletter", "purge", "lc_fail"))
		require.Empty(t, jsonRows("deadletters", "lc_fail"))
		require.Equal(t, "0 dead letters purged\n", ok("deadletter", "purge", "lc_fail"))

		fails("UNKNOWN_JOB: no dead letter "+job.Handle, "deadletter", "show", job.Handle)
		fails("UNKNOWN_JOB", "deadletter", "retry", "H:lc:999999")
		misused("deadletter", "frob", "x")

		// A job without a unique has none in either view: "-" in a
		// table, null in JSON.
		anon, err := c.SubmitBackground(ctx, client.Request{Function: "lc_fail", Payload: []byte("/uploads/8.png")})
		require.NoError(t, err)
		rows = dead()
		require.Nil(t, rows[0]["unique"])
		require.Regexp(t, `\n\S+ +lc_fail +- +2 `, ok("deadletters", "lc_fail"))
		out = ok("deadletter", "show", anon.Handle)
		require.Contains(t, out, "UNIQUE    -\n")
		recs = jsonRows("deadletter", "show", anon.Handle)
		require.Nil(t, recs[0]["unique"])
		require.Equal(t, "1 dead letter purged\n", ok("deadletter", "purge", "lc_fail"))
	})

	t.Run("jobs", func(t *testing.T) {
		job, err := c.SubmitBackground(ctx, client.Request{Function: "lc_fail", Unique: "img-10", Payload: []byte("/uploads/10.png")})
		require.NoError(t, err)
		var rec []row
		testwait.Until(t, "the job's record to say dead", func() bool {
			rec = jsonRows("job", job.Handle)
			return len(rec) == 1 && rec[0]["state"] == "dead"
		})
		require.Equal(t, "lc_fail", rec[0]["function"])
		require.Equal(t, true, rec[0]["background"])
		require.Equal(t, 2.0, rec[0]["attempts"])
		require.Equal(t, "disk\tfull", rec[0]["last_error"])
		require.Equal(t, "/uploads/10.png", rec[0]["payload_preview"])
		hist := rec[0]["history"].([]any)
		require.Len(t, hist, 2)
		require.Equal(t, "exception", hist[1].(row)["outcome"])
		require.Equal(t, "lc-worker", hist[1].(row)["worker"])

		out := ok("job", job.Handle)
		require.Contains(t, out, "STATE             dead\n")
		require.Regexp(t, `\n\nATTEMPT +START +END +OUTCOME +WORKER +ERROR\n1 +\S+ +\S+ +exception +lc-worker +"disk\\tfull"\n`, out)

		rows := jsonRows("jobs", "--function", "lc_fail", "--state", "dead")
		require.NotEmpty(t, rows)
		require.Equal(t, job.Handle, rows[0]["handle"], "newest first")
		require.Equal(t, "disk\tfull", rows[0]["last_error"])
		next := ok("jobs", "--function", "lc_fail", "--limit", "1", "--cursor", rows[0]["cursor"].(string))
		require.NotContains(t, next, job.Handle, "the cursor goes on after its row")
		require.Regexp(t, `^HANDLE +FUNCTION +STATE +ATTEMPTS +SUBMITTED_AT +FINISHED_AT +LAST_ERROR +CURSOR\n`, next)

		// A record keeps the first 256 bytes of the payload and 4 KiB of
		// the result: the command says so, as the HTTP API does.
		big, err := c.SubmitBackground(ctx, client.Request{Function: "lc_done", Payload: []byte("big" + strings.Repeat("p", 297))})
		require.NoError(t, err)
		testwait.Until(t, "the big job's record to say complete", func() bool {
			rec = jsonRows("job", big.Handle)
			return len(rec) == 1 && rec[0]["state"] == "complete"
		})
		require.Equal(t, 300.0, rec[0]["payload_size"])
		require.Len(t, rec[0]["payload_preview"], 256)
		require.Equal(t, true, rec[0]["result_truncated"])
		require.Len(t, rec[0]["result"], 4096)
		out = ok("job", big.Handle)
		require.Contains(t, out, "\nPAYLOAD_SIZE      300\n")
		require.Contains(t, out, "\nRESULT_TRUNCATED  true\n")

		// As GET /v1/jobs/{handle} says it: the job may never have
		// existed (a mistyped handle), not only have expired.
		fails("UNKNOWN_JOB: no job H:lc:1: it never existed, or its record is no longer kept (see the policy keys history and history_max)\n",
			"job", "H:lc:1")
		fails("unknown state", "jobs", "--state", "sleeping")
		misused("status", "--state", "dead")

		// retry: a dead letter runs again under its handle; a failed
		// foreground job as a new job whose record names it.
		require.Equal(t, "dead letter "+job.Handle+" queued again\n", ok("retry", job.Handle))
		task, err := c.Submit(ctx, client.Request{Function: "lc_fail", Unique: "img-11", Payload: []byte("/uploads/11.png")})
		require.NoError(t, err)
		_, err = task.Wait(ctx)
		require.Error(t, err)
		fg := task.Job().Handle
		testwait.Until(t, "the foreground job's record to say exception", func() bool {
			rec = jsonRows("job", fg)
			return len(rec) == 1 && rec[0]["state"] == "exception"
		})
		out = ok("retry", fg)
		m := regexp.MustCompile(`^job ` + regexp.QuoteMeta(fg) + ` runs again as (H:lc:\d+)\n$`).FindStringSubmatch(out)
		require.NotNil(t, m, out)
		rec = jsonRows("job", m[1])
		require.Len(t, rec, 1)
		require.Equal(t, fg, rec[0]["retry_of"])
		require.Equal(t, "img-11", rec[0]["unique"])
		require.Equal(t, true, rec[0]["background"])
		fails("UNKNOWN_JOB: no record of job H:lc:1 is kept", "retry", "H:lc:1")
		misused("retry")
	})

	t.Run("result", func(t *testing.T) {
		text, err := c.SubmitBackground(ctx, client.Request{Function: "lc_done", Unique: "img-8", Payload: []byte("text")})
		require.NoError(t, err)
		bin2, err := c.SubmitBackground(ctx, client.Request{Function: "lc_done", Unique: "img-9", Payload: []byte("binary")})
		require.NoError(t, err)
		var out, errOut string
		var code int
		testwait.Until(t, "the result to be retained", func() bool {
			out, errOut, code = admin("result", text.Handle)
			return code == 0
		})
		require.Empty(t, errOut)
		require.Equal(t, "done!\nsecond line", out, "the data exactly as the worker sent it")
		require.Equal(t, "done!\nsecond line", ok("result", "unique:img-8"))
		require.Equal(t, []row{{"server": srv.Addr, "length": 17.0, "data": "done!\nsecond line"}},
			jsonRows("result", "unique:img-8"))

		testwait.Until(t, "the binary result to be retained", func() bool {
			_, _, code = admin("result", bin2.Handle)
			return code == 0
		})
		require.Equal(t, "\xff\x00x", ok("result", bin2.Handle))
		require.Equal(t, []row{{"server": srv.Addr, "length": 3.0, "data_base64": "/wB4"}}, jsonRows("result", bin2.Handle))

		fails("UNKNOWN_JOB: no retained result for unique:nosuch", "result", "unique:nosuch")
		misused("result")
	})

	t.Run("schedules", func(t *testing.T) {
		rows := jsonRows("schedules")
		require.Len(t, rows, 1)
		require.Equal(t, "lc-nightly", rows[0]["name"])
		require.Equal(t, "lc_report", rows[0]["function"])
		require.Equal(t, "0 3 * * *", rows[0]["spec"])
		next, err := time.Parse(time.RFC3339Nano, rows[0]["next"].(string))
		require.NoError(t, err)
		require.Equal(t, 3, next.Hour())
		out := ok("schedules")
		require.Regexp(t, `^NAME +FUNCTION +SPEC +LAST +NEXT\nlc-nightly +lc_report +0 3 \* \* \* +\S+ +\S+T03:00:00Z\n$`, out)
	})

	t.Run("ordering", func(t *testing.T) {
		first, err := c.SubmitBackground(ctx, client.Request{Function: "lc_ordered", Unique: "acct-42:1"})
		require.NoError(t, err)
		_, err = c.SubmitBackground(ctx, client.Request{Function: "lc_ordered", Unique: "acct-42:2"})
		require.NoError(t, err)
		_, err = c.SubmitBackground(ctx, client.Request{Function: "lc_ordered", Unique: "acct-42:3"})
		require.NoError(t, err)
		require.Equal(t, []row{{"server": srv.Addr, "function": "lc_ordered", "key": "acct-42", "head": first.Handle,
			"head_state": "queued", "waiting": 2.0}}, jsonRows("ordering", "lc_ordered"))
		require.Regexp(t, `^FUNCTION +KEY +HEAD +HEAD_STATE +WAITING\nlc_ordered +acct-42 +`+first.Handle+` +queued +2\n$`, ok("ordering"))
		misused("ordering", "a", "b")
	})
}

// TestAdminLifecycleCommandsOnGearmand checks that a server without the
// lifecycle commands (gearmand) gives a clear error and exit status 1.
func TestAdminLifecycleCommandsOnGearmand(t *testing.T) {
	t.Parallel()
	g := gearmantest.StartGearmand(t)
	for _, args := range [][]string{{"deadletters"}, {"policy"}, {"pause", "f"}, {"result", "H:x:1"}} {
		out, errOut, code := gw(t, append([]string{"admin", "--servers=" + g.Addr}, args...)...)
		require.Equal(t, 1, code, "%v: %s", args, errOut)
		require.Empty(t, out)
		require.Contains(t, errOut, "gearwork admin: "+g.Addr+": ", args)
	}
}

// A failure's log line carries the end of a long stderr, bounded, from
// the start of a character and without the newline that ends it.
func TestStderrEnd(t *testing.T) {
	t.Parallel()
	require.Equal(t, "", stderrEnd(nil, 8))
	require.Equal(t, "bad thing", stderrEnd([]byte("bad thing\n"), 512))
	require.Equal(t, "the end", stderrEnd([]byte(strings.Repeat("x", 5000)+"\nthe end\n"), 7))
	require.Equal(t, "éé", stderrEnd([]byte("ééé\n"), 5), "no half of a character")
}
