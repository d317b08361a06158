package httpapi

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/gearman"
	"github.com/gearwork/gearwork/internal/broker"
	"github.com/gearwork/gearwork/internal/gearmanapi"
	"github.com/gearwork/gearwork/internal/gearmantest/wire"
	"github.com/gearwork/gearwork/internal/testwait"
)

// recBundle is a broker with both front ends: Gearman and HTTP.
type recBundle struct {
	*testBundle
	gearAd string
}

// setupRecords is setupBroker (with logs discarded) with a Gearman front
// end on the same broker too.
func setupRecords(t *testing.T, bcfg broker.Config) *recBundle {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	bcfg.Logger = log
	tb := setupBroker(t, bcfg)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	api := gearmanapi.New(gearmanapi.Config{Broker: tb.b, Logger: log, Version: "gearwork-test"})
	served := make(chan error, 1)
	go func() { served <- api.Serve(context.Background(), ln) }()
	t.Cleanup(func() { // before setupBroker's cleanup, which stops the broker
		api.Close()
		<-served
	})
	return &recBundle{testBundle: tb, gearAd: ln.Addr().String()}
}

// gconn is a raw Gearman connection with this file's helpers.
type gconn struct{ *wire.Conn }

func (tb *recBundle) dial(t *testing.T) *gconn {
	t.Helper()
	return &gconn{wire.Dial(t, tb.gearAd)}
}

// submitBG submits a background job over Gearman and returns its handle.
func (c *gconn) submitBG(fn, payload string) string {
	c.T.Helper()
	c.Send(gearman.SubmitJobBg, fn, "", payload)
	cmd, args := c.Read()
	require.Equal(c.T, gearman.JobCreated, cmd)
	return args[0]
}

// grab takes the next job as a worker registered for fn and returns its
// handle.
func (c *gconn) grab(fn string) string {
	c.T.Helper()
	c.Send(gearman.CanDo, fn)
	c.Send(gearman.GrabJob)
	cmd, args := c.Read()
	require.Equal(c.T, gearman.JobAssign, cmd, "args %q", args)
	return args[0]
}

func (tb *recBundle) getJob(t *testing.T, handle string) (int, jobJSON) {
	t.Helper()
	resp, err := http.Get(tb.ts.URL + "/v1/jobs/" + url.PathEscape(handle))
	require.NoError(t, err)
	defer resp.Body.Close()
	var j jobJSON
	if resp.StatusCode == http.StatusOK {
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&j))
	}
	return resp.StatusCode, j
}

// A job submitted over Gearman has one record from submit to its end,
// read over HTTP: completed, failed, exception, dead and cancelled, with
// its attempts; a cancelled job stays cancelled and background, and its
// worker's WORK_STATUS, WORK_DATA, WORK_WARNING and WORK_COMPLETE are
// accepted without an answer.
func TestJobRecordsOfGearmanJobs(t *testing.T) {
	t.Parallel()
	tb := setupRecords(t, broker.Config{Policies: map[string]broker.Policy{"dies": {MaxAttempts: 1}}})
	client := tb.dial(t)
	worker := tb.dial(t)
	worker.Send(gearman.SetClientID, "w1")

	finish := func(fn, payload string, cmd gearman.Command, data ...string) string {
		h := client.submitBG(fn, payload)
		code, live := tb.getJob(t, h)
		require.Equal(t, http.StatusOK, code)
		require.Equal(t, "queued", live.State)
		require.False(t, live.Final)
		require.Equal(t, h, worker.grab(fn))
		worker.Send(cmd, append([]string{h}, data...)...)
		// The record is there once the worker's packet was handled: an
		// echo after it proves that.
		worker.Send(gearman.EchoReq, "x")
		c, _ := worker.Read()
		require.Equal(t, gearman.EchoRes, c)
		return h
	}

	h := finish("ok", "in", gearman.WorkComplete, "the result")
	_, rec := tb.getJob(t, h)
	require.Equal(t, "complete", rec.State)
	require.True(t, rec.Final)
	require.Equal(t, "the result", *rec.ResultText)
	require.True(t, *rec.Background)
	require.Equal(t, "in", *rec.PayloadPreviewText)
	require.Len(t, rec.History, 1)
	require.Equal(t, "complete", rec.History[0].Outcome)
	require.Equal(t, "w1", rec.History[0].Worker)
	require.NotNil(t, rec.Finished)

	// A background job that fails without a policy is a dead letter.
	h = finish("bad", "in", gearman.WorkFail)
	_, rec = tb.getJob(t, h)
	require.Equal(t, "dead", rec.State)
	require.Len(t, rec.History, 1)
	require.Equal(t, "failed", rec.History[0].Outcome)

	// Foreground jobs end failed or with an exception.
	fg := func(cmd gearman.Command, data ...string) jobJSON {
		client.Send(gearman.SubmitJob, "fg", "", "in")
		c, args := client.Read()
		require.Equal(t, gearman.JobCreated, c)
		h := args[0]
		require.Equal(t, h, worker.grab("fg"))
		worker.Send(cmd, append([]string{h}, data...)...)
		c, _ = client.Read()
		require.Equal(t, gearman.WorkFail, c, "the client learns the outcome")
		_, rec := tb.getJob(t, h)
		require.False(t, *rec.Background)
		return rec
	}
	rec = fg(gearman.WorkFail)
	require.Equal(t, "failed", rec.State)
	require.Equal(t, "failed", rec.History[0].Outcome)
	rec = fg(gearman.WorkException, "disk full")
	require.Equal(t, "exception", rec.State)
	require.Equal(t, "disk full", rec.LastError)
	require.Equal(t, "disk full", rec.History[0].Error)

	h = finish("dies", "in", gearman.WorkException, "gave up")
	_, rec = tb.getJob(t, h)
	require.Equal(t, "dead", rec.State)
	require.Equal(t, uint32(1), *rec.Attempts)
	require.Equal(t, "gave up", rec.LastError)
	require.Len(t, rec.History, 1)
	require.Equal(t, "w1", rec.History[0].Worker)

	// Cancel a running job over HTTP.
	h = client.submitBG("slow", "in")
	require.Equal(t, h, worker.grab("slow"))
	req, err := http.NewRequest(http.MethodDelete, tb.ts.URL+"/v1/jobs/"+url.PathEscape(h), nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusNoContent, resp.StatusCode)
	_, rec = tb.getJob(t, h)
	require.Equal(t, "cancelled", rec.State)
	require.True(t, *rec.Background, "background never changes")
	require.True(t, strings.HasPrefix(rec.CancelledBy, "http "), rec.CancelledBy)
	require.NotNil(t, rec.CancelledAt)

	worker.Send(gearman.WorkStatus, h, "1", "2")
	worker.Send(gearman.WorkData, h, "d")
	worker.Send(gearman.WorkWarning, h, "w")
	worker.Send(gearman.WorkComplete, h, "late")
	worker.Send(gearman.EchoReq, "sync")
	cmd, args := worker.Read()
	require.Equal(t, gearman.EchoRes, cmd, "no ERROR before it: %q", args)
	_, rec = tb.getJob(t, h)
	require.Equal(t, "cancelled", rec.State, "the state never flips after the end")

	// A queued job cancelled stays cancelled too.
	h = client.submitBG("idle", "in")
	require.NoError(t, tb.b.CancelJob(context.Background(), []byte(h)))
	_, rec = tb.getJob(t, h)
	require.Equal(t, "cancelled", rec.State)
	require.Equal(t, "admin", rec.CancelledBy)
}

// An HTTP worker that completes a job cancelled while it held the lease
// gets 409 with the job-cancelled problem type.
func TestHTTPWorkerOfCancelledJobGetsConflict(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	resp := tb.do(t, http.MethodPost, "/v1/functions/f/jobs", strings.NewReader("x"))
	resp.Body.Close()
	require.Equal(t, http.StatusAccepted, resp.StatusCode)
	resp = tb.do(t, http.MethodPost, "/v1/functions/f/grab?wait=5s", nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var g grabbedJSON
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&g))
	resp.Body.Close()

	resp = tb.do(t, http.MethodDelete, "/v1/jobs/"+url.PathEscape(g.Handle), nil)
	resp.Body.Close()
	require.Equal(t, http.StatusNoContent, resp.StatusCode)

	resp = tb.do(t, http.MethodPost, "/v1/jobs/"+url.PathEscape(g.Handle)+"/complete?lease="+g.Lease, strings.NewReader("r"))
	defer resp.Body.Close()
	require.Equal(t, http.StatusConflict, resp.StatusCode)
	var p problem
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&p))
	require.Equal(t, problemTypeBase+"job-cancelled", p.Type)
}

// An HTTP worker whose lease outlasts the job's timeout, reporting after
// the timeout has fired, gets 409 with the timed-out problem type for its
// status update and its result: the job failed (it is dead) and the
// result is dropped, which the worker must learn.
func TestHTTPWorkerOfTimedOutJobGetsConflict(t *testing.T) {
	t.Parallel()
	tb := setupRecords(t, broker.Config{Policies: map[string]broker.Policy{
		"slow": {Timeout: 50 * time.Millisecond, MaxAttempts: 1},
	}})
	resp := tb.do(t, http.MethodPost, "/v1/functions/slow/jobs", strings.NewReader("x"))
	resp.Body.Close()
	require.Equal(t, http.StatusAccepted, resp.StatusCode)
	resp = tb.do(t, http.MethodPost, "/v1/functions/slow/grab?wait=5s&lease=5m", nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	g := decode[grabbedJSON](t, resp)
	require.Eventually(t, func() bool {
		_, rec := tb.getJob(t, g.Handle)
		return rec.State == "dead"
	}, time.Minute, 10*time.Millisecond, "the job's timeout fires")

	for _, u := range []struct{ path, body string }{
		{"/status", `{"numerator":1,"denominator":2}`},
		{"/data", "d"},
		{"/complete", "result"},
	} {
		resp = tb.do(t, http.MethodPost, "/v1/jobs/"+url.PathEscape(g.Handle)+u.path+"?lease="+g.Lease, strings.NewReader(u.body))
		p := requireProblem(t, resp, http.StatusConflict, "timeout")
		require.Equal(t, problemTypeBase+"timed-out", p.Type, u.path)
	}
	_, rec := tb.getJob(t, g.Handle)
	require.Equal(t, "dead", rec.State, "the late result changes nothing")
}

// GET /v1/jobs pages through job records with its cursor, newest first,
// filtered by function and state.
func TestListJobsOverHTTP(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	w := newTestWorker(t, tb.b, "f")
	var handles []string
	for range 12 {
		job := decode[jobJSON](t, tb.do(t, "POST", "/v1/functions/f/jobs", strings.NewReader("p")))
		a := w.grab(t)
		require.NoError(t, tb.b.Finish(w.sess, a.Seq, broker.Complete, []byte("r")))
		handles = append(handles, job.Handle)
	}
	queued := decode[jobJSON](t, tb.do(t, "POST", "/v1/functions/f/jobs", strings.NewReader("p")))
	decode[jobJSON](t, tb.do(t, "POST", "/v1/functions/g/jobs", strings.NewReader("p")))

	var got []string
	cursor := ""
	for pages := 0; pages < 10; pages++ {
		page := decode[jobListJSON](t, tb.do(t, "GET", "/v1/jobs?function=f&limit=5&cursor="+url.QueryEscape(cursor), nil))
		for _, j := range page.Jobs {
			got = append(got, j.Handle)
		}
		if page.Next == "" {
			break
		}
		cursor = page.Next
	}
	want := []string{queued.Handle}
	for i := len(handles) - 1; i >= 0; i-- {
		want = append(want, handles[i])
	}
	require.Equal(t, want, got)

	page := decode[jobListJSON](t, tb.do(t, "GET", "/v1/jobs?state=queued", nil))
	require.Len(t, page.Jobs, 2)
	page = decode[jobListJSON](t, tb.do(t, "GET", "/v1/jobs?state=complete&limit=1", nil))
	require.Len(t, page.Jobs, 1)
	require.Equal(t, handles[len(handles)-1], page.Jobs[0].Handle)
	require.True(t, page.Jobs[0].Final)
	require.NotEmpty(t, page.Next)
	requireProblem(t, tb.do(t, "GET", "/v1/jobs?state=sleeping", nil), http.StatusBadRequest, "unknown state")
	requireProblem(t, tb.do(t, "GET", "/v1/jobs?limit=0", nil), http.StatusBadRequest, "limit")
}

// Retries count whoever watches the job: a Gearman-submitted job that
// fails twice under a retry policy adds 2 to gearwork_jobs_retried_total.
// A cron schedule's next tick is a metric.
func TestMetricsOfRetriesAndSchedules(t *testing.T) {
	t.Parallel()
	cron, err := broker.ParseCron("0 3 * * *", time.UTC)
	require.NoError(t, err)
	tb := setupRecords(t, broker.Config{
		Policies:  map[string]broker.Policy{"flaky": {MaxAttempts: 3, Backoff: broker.Backoff{Initial: time.Millisecond, Max: time.Millisecond}}},
		Schedules: []broker.Schedule{{Name: "nightly", Function: "report", Cron: cron}},
	})
	client := tb.dial(t)
	worker := tb.dial(t)
	h := client.submitBG("flaky", "x")
	worker.Send(gearman.CanDo, "flaky")
	for range 3 {
		// A retry waits out its backoff: sleep until the server wakes
		// the worker (NOOP), as a Gearman worker does.
		for {
			worker.Send(gearman.GrabJob)
			cmd, args := worker.Read()
			if cmd == gearman.JobAssign {
				require.Equal(t, h, args[0])
				break
			}
			require.Equal(t, gearman.NoJob, cmd)
			worker.Send(gearman.PreSleep)
			cmd, _ = worker.Read()
			require.Equal(t, gearman.Noop, cmd)
		}
		worker.Send(gearman.WorkFail, h)
	}
	worker.Send(gearman.EchoReq, "x")
	c, _ := worker.Read()
	require.Equal(t, gearman.EchoRes, c)
	resp, err := http.Get(tb.ts.URL + "/metrics")
	require.NoError(t, err)
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.NoError(t, err)
	text := string(body)
	require.Contains(t, text, `gearwork_jobs_retried_total{function="flaky"} 2`)
	require.Contains(t, text, `gearwork_jobs_by_state{function="flaky",state="dead"} 1`)
	require.Contains(t, text, `gearwork_schedule_next_tick_timestamp_seconds{function="report",schedule="nightly"} `)
}

// ?wait= answers with the job's record: a job out of attempts is dead with
// its attempts and last error; a job cancelled while the request waits is
// cancelled.
func TestWaitAnswersTheRecord(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	w := newTestWorker(t, tb.b, "f")
	type answer struct {
		code int
		job  jobJSON
	}
	wait := func(path string) <-chan answer {
		ch := make(chan answer, 1)
		go func() {
			resp, err := http.Post(tb.ts.URL+path, "text/plain", strings.NewReader("p"))
			if err != nil {
				ch <- answer{}
				return
			}
			defer resp.Body.Close()
			var j jobJSON
			_ = json.NewDecoder(resp.Body).Decode(&j)
			ch <- answer{resp.StatusCode, j}
		}()
		return ch
	}

	ch := wait("/v1/functions/f/jobs?wait=60s&attempts=1")
	a := w.grab(t)
	require.NoError(t, tb.b.WorkData(w.sess, a.Seq, []byte("no space left"), true))
	require.NoError(t, tb.b.Finish(w.sess, a.Seq, broker.Fail, nil))
	got := <-ch
	require.Equal(t, http.StatusOK, got.code)
	require.Equal(t, "dead", got.job.State)
	require.True(t, got.job.Final)
	require.Equal(t, uint32(1), *got.job.Attempts)
	require.Equal(t, "no space left", got.job.LastError, "the warning before WORK_FAIL is the error")
	require.Len(t, got.job.History, 1)

	ch = wait("/v1/functions/f/jobs?wait=60s")
	a = w.grab(t)
	resp := tb.do(t, http.MethodDelete, "/v1/jobs/"+url.PathEscape(tb.b.Handle(a.Seq)), nil)
	resp.Body.Close()
	require.Equal(t, http.StatusNoContent, resp.StatusCode)
	got = <-ch
	require.Equal(t, http.StatusOK, got.code)
	require.Equal(t, "cancelled", got.job.State)
	require.True(t, *got.job.Background)
}

// DELETE /v1/jobs/{handle}/record forgets an ended job's record; a live
// job has none to forget.
func TestForgetRecord(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	w := newTestWorker(t, tb.b, "f")
	job := decode[jobJSON](t, tb.do(t, "POST", "/v1/functions/f/jobs", strings.NewReader("p")))
	path := "/v1/jobs/" + url.PathEscape(job.Handle)
	requireProblem(t, tb.do(t, "DELETE", path+"/record", nil), http.StatusNotFound, "no record of an ended job")
	a := w.grab(t)
	require.NoError(t, tb.b.Finish(w.sess, a.Seq, broker.Complete, []byte("r")))
	require.Equal(t, "complete", decode[jobJSON](t, tb.do(t, "GET", path, nil)).State)
	resp := tb.do(t, "DELETE", path+"/record", nil)
	resp.Body.Close()
	require.Equal(t, http.StatusNoContent, resp.StatusCode)
	requireProblem(t, tb.do(t, "GET", path, nil), http.StatusNotFound, "no job")
	requireProblem(t, tb.do(t, "DELETE", path+"/record", nil), http.StatusNotFound, "no record")
}

// POST /v1/jobs/{handle}/retry runs a failed Gearman foreground job again
// as a new background job whose record names the old one; a complete or
// live job is refused with 409, an unknown one with 404.
func TestRetryJobOverHTTP(t *testing.T) {
	t.Parallel()
	tb := setupRecords(t, broker.Config{})
	client := tb.dial(t)
	worker := tb.dial(t)
	post := func(path string) *http.Response {
		t.Helper()
		resp, err := http.Post(tb.ts.URL+path, "text/plain", nil)
		require.NoError(t, err)
		return resp
	}

	client.Send(gearman.SubmitJobHigh, "resize", "img-7", "the picture")
	c, args := client.Read()
	require.Equal(t, gearman.JobCreated, c)
	old := args[0]
	require.Equal(t, old, worker.grab("resize"))
	worker.Send(gearman.WorkFail, old)
	c, _ = client.Read()
	require.Equal(t, gearman.WorkFail, c)

	resp := post("/v1/jobs/" + url.PathEscape(old) + "/retry")
	require.Equal(t, http.StatusAccepted, resp.StatusCode)
	var again jobJSON
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&again))
	resp.Body.Close()
	require.NotEqual(t, old, again.Handle)
	require.Equal(t, "/v1/jobs/"+url.PathEscape(again.Handle), resp.Header.Get("Location"))
	require.True(t, *again.Created)
	require.Equal(t, old, again.RetryOf)
	require.Equal(t, "queued", again.State)
	require.Equal(t, "high", again.Priority)
	require.Equal(t, "img-7", again.Unique)
	require.True(t, *again.Background)

	requireProblem(t, post("/v1/jobs/"+url.PathEscape(again.Handle)+"/retry"), http.StatusConflict, "has not ended")

	require.Equal(t, again.Handle, worker.grab("resize"))
	worker.Send(gearman.WorkComplete, again.Handle, "done")
	worker.Send(gearman.EchoReq, "x")
	c, _ = worker.Read()
	require.Equal(t, gearman.EchoRes, c)
	_, rec := tb.getJob(t, again.Handle)
	require.Equal(t, "complete", rec.State)
	require.Equal(t, old, rec.RetryOf, "the ended job's record names the job it ran again")
	_, rec = tb.getJob(t, old)
	require.Equal(t, "failed", rec.State, "the old record never changes")

	requireProblem(t, post("/v1/jobs/"+url.PathEscape(again.Handle)+"/retry"), http.StatusConflict, "is complete")
	requireProblem(t, post("/v1/jobs/H:test:99999/retry"), http.StatusNotFound, "no record")
}

// The final event of a job's stream carries the job's record: a dead
// job's "exception" says dead, with its attempts and error, and a
// cancelled job's "fail" says cancelled and by whom.
func TestFinalEventCarriesTheRecord(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	w := newTestWorker(t, tb.b, "pay")
	job := decode[jobJSON](t, tb.do(t, "POST", "/v1/functions/pay/jobs?attempts=1", strings.NewReader("order-1")))
	stream := tb.do(t, "GET", "/v1/jobs/"+job.Handle+"/events", nil)
	a := w.grab(t)
	require.NoError(t, tb.b.Finish(w.sess, a.Seq, broker.Exception, []byte("card declined")))
	evs := readEvents(t, stream.Body)
	last := evs[len(evs)-1]
	require.Equal(t, "exception", last.event)
	require.Equal(t, "card declined", *last.data.Text)
	require.NotNil(t, last.data.Job, "the final event carries the record")
	require.Equal(t, "dead", last.data.Job.State)
	require.True(t, last.data.Job.Final)
	require.Equal(t, uint32(1), *last.data.Job.Attempts)
	require.Equal(t, "card declined", last.data.Job.LastError)
	require.Len(t, last.data.Job.History, 1)

	job = decode[jobJSON](t, tb.do(t, "POST", "/v1/functions/idle/jobs", strings.NewReader("x")))
	stream = tb.do(t, "GET", "/v1/jobs/"+job.Handle+"/events", nil)
	resp := tb.do(t, http.MethodDelete, "/v1/jobs/"+url.PathEscape(job.Handle), nil)
	resp.Body.Close()
	require.Equal(t, http.StatusNoContent, resp.StatusCode)
	evs = readEvents(t, stream.Body)
	last = evs[len(evs)-1]
	require.Equal(t, "fail", last.event)
	require.NotNil(t, last.data.Job)
	require.Equal(t, "cancelled", last.data.Job.State)
	require.True(t, strings.HasPrefix(last.data.Job.CancelledBy, "http "), last.data.Job.CancelledBy)
}

// Every counter of /metrics says plainly that it counts since the server
// started: a restart starts it at 0.
func TestCountersSaySinceStart(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	w := newTestWorker(t, tb.b, "f")
	decode[jobJSON](t, tb.do(t, "POST", "/v1/functions/f/jobs", strings.NewReader("x")))
	a := w.grab(t)
	require.NoError(t, tb.b.Finish(w.sess, a.Seq, broker.Complete, nil))
	resp := tb.do(t, "GET", "/metrics", nil)
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.NoError(t, err)
	counters := 0
	for _, line := range strings.Split(string(body), "\n") {
		name, help, ok := strings.Cut(strings.TrimPrefix(line, "# HELP "), " ")
		if !ok || !strings.HasPrefix(line, "# HELP gearwork_") || !strings.HasSuffix(name, "_total") {
			continue
		}
		counters++
		require.Contains(t, help, "since the server started", name)
	}
	require.GreaterOrEqual(t, counters, 3, "%s", body)
}

// A job that ended before any event stream watched it (submitted over the
// Gearman port) has no event log, but its record: the stream answers it as
// a state event and the final event, carrying the record, and a client
// that saw them gets 204. A job without a record is not found.
func TestEventsOfAJobThatEndedUnwatched(t *testing.T) {
	t.Parallel()
	tb := setupRecords(t, broker.Config{})
	c := tb.dial(t)
	done := c.submitBG("unwatched", "p1")
	failed := c.submitBG("unwatched", "p2")
	wc := tb.dial(t)
	require.Equal(t, done, wc.grab("unwatched"))
	wc.Send(gearman.WorkComplete, done, "the result")
	require.Equal(t, failed, wc.grab("unwatched"))
	wc.Send(gearman.WorkException, failed, "it broke")
	testwait.Until(t, "both records", func() bool {
		code, j := tb.getJob(t, failed)
		return code == http.StatusOK && j.Final
	})

	evs := readEvents(t, tb.do(t, "GET", "/v1/jobs/"+done+"/events", nil).Body)
	require.Equal(t, []string{"1:state", "2:complete"}, kinds(evs))
	require.Equal(t, "complete", evs[0].data.Job.State)
	require.Equal(t, "the result", *evs[1].data.Text)
	evs = readEvents(t, tb.do(t, "GET", "/v1/jobs/"+failed+"/events", nil).Body)
	require.Equal(t, []string{"1:state", "2:exception"}, kinds(evs))
	require.Equal(t, "it broke", *evs[1].data.Text)
	require.NotNil(t, evs[1].data.Job)
	require.Equal(t, "dead", evs[1].data.Job.State)
	resp := tb.do(t, "GET", "/v1/jobs/"+done+"/events", nil, "Last-Event-ID", "2")
	require.Equal(t, http.StatusNoContent, resp.StatusCode)

	requireProblem(t, tb.do(t, "GET", "/v1/jobs/H:test:999999/events", nil), http.StatusNotFound, "its record is no longer kept")
}

// The event stream answered from a job's record carries the job's whole
// result while it is retained, as a stream that watched the job does;
// else the record's, cut to broker.HistoryResultCap bytes, and says so.
func TestEventsFromARecordCarryTheRetainedResult(t *testing.T) {
	t.Parallel()
	tb := setupRecords(t, broker.Config{Policies: map[string]broker.Policy{"retained": {ResultRetention: time.Hour}}})
	result := strings.Repeat("0123456789abcdef", 3*broker.HistoryResultCap/16) // longer than a record keeps
	c := tb.dial(t)
	retained := c.submitBG("retained", "p1")
	capped := c.submitBG("capped", "p2")
	wc := tb.dial(t)
	require.Equal(t, retained, wc.grab("retained"))
	wc.Send(gearman.WorkComplete, retained, result)
	require.Equal(t, capped, wc.grab("capped"))
	wc.Send(gearman.WorkComplete, capped, result)
	for _, h := range []string{retained, capped} {
		testwait.Until(t, "the record of "+h, func() bool {
			code, j := tb.getJob(t, h)
			return code == http.StatusOK && j.Final
		})
	}

	evs := readEvents(t, tb.do(t, "GET", "/v1/jobs/"+retained+"/events", nil).Body)
	require.Equal(t, []string{"1:state", "2:complete"}, kinds(evs))
	require.Equal(t, result, *evs[1].data.Text, "the retained result, whole")
	require.False(t, evs[1].data.Truncated)
	require.True(t, evs[1].data.Job.ResultTruncated, "the record itself keeps the start")

	evs = readEvents(t, tb.do(t, "GET", "/v1/jobs/"+capped+"/events", nil).Body)
	require.Equal(t, []string{"1:state", "2:complete"}, kinds(evs))
	require.Equal(t, result[:broker.HistoryResultCap], *evs[1].data.Text, "no result retained: the record's")
	require.True(t, evs[1].data.Truncated)
}

// A server alone that no longer follows events (it is shutting down) says
// so of a live job's event stream, and nothing of a shared store.
func TestEventsOfALiveJobWhileStopping(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	job := decode[jobJSON](t, tb.do(t, "POST", "/v1/functions/f/jobs", strings.NewReader("x")))
	tb.srv.hub.close()
	p := requireProblem(t, tb.do(t, "GET", "/v1/jobs/"+job.Handle+"/events", nil), http.StatusServiceUnavailable, "shutting down")
	require.NotContains(t, p.Detail, "shared")
	require.Contains(t, p.Detail, "queued")
}
