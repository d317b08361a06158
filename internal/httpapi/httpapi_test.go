package httpapi

import (
	"bufio"
	"compress/gzip"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/gearwork/gearwork/internal/broker"
	"github.com/gearwork/gearwork/internal/store/postgres/pgtest"
	"github.com/gearwork/gearwork/internal/testwait"
)

// TestMain checks for leaked goroutines once the tests have run and the
// PostgreSQL server of the shared-mode tests (pgtest) has stopped.
func TestMain(m *testing.M) { goleak.VerifyTestMain(stopPostgresAfter{m}) }

// stopPostgresAfter runs the tests, then stops the PostgreSQL server of
// the shared-mode tests.
type stopPostgresAfter struct{ m *testing.M }

func (s stopPostgresAfter) Run() int {
	defer pgtest.Cleanup()
	return s.m.Run()
}

type testBundle struct {
	b   *broker.Broker
	srv *Server
	ts  *httptest.Server
}

func setup(t *testing.T, mod ...func(*Config)) *testBundle {
	t.Helper()
	return setupBroker(t, broker.Config{}, mod...)
}

// setupBroker is setup with a broker configuration (policies).
func setupBroker(t *testing.T, bcfg broker.Config, mod ...func(*Config)) *testBundle {
	t.Helper()
	bcfg.HandlePrefix = "H:test:"
	b := broker.New(bcfg)
	require.NoError(t, b.Start(context.Background()))
	cfg := Config{Broker: b, KeepAlive: time.Hour}
	for _, f := range mod {
		f(&cfg)
	}
	srv := New(cfg)
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(func() {
		ts.CloseClientConnections()
		require.NoError(t, srv.Shutdown(context.Background()))
		ts.Close()
		b.Stop()
	})
	return &testBundle{b: b, srv: srv, ts: ts}
}

func (tb *testBundle) do(t *testing.T, method, path string, body io.Reader, hdr ...string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, tb.ts.URL+path, body)
	require.NoError(t, err)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := tb.ts.Client().Do(req)
	require.NoError(t, err)
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func decode[T any](t *testing.T, resp *http.Response) T {
	t.Helper()
	var v T
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&v))
	return v
}

func requireProblem(t *testing.T, resp *http.Response, status int, detailContains string) problem {
	t.Helper()
	require.Equal(t, status, resp.StatusCode)
	require.Equal(t, "application/problem+json", resp.Header.Get("Content-Type"))
	p := decode[problem](t, resp)
	require.Equal(t, status, p.Status)
	require.NotEmpty(t, p.Type)
	require.Contains(t, p.Detail, detailContains)
	return p
}

// testWorker is a worker session on the broker, as a Gearman worker
// connection would be.
type testWorker struct {
	b    *broker.Broker
	sess *broker.Session
	wake broker.NoopSignal
}

func newTestWorker(t *testing.T, b *broker.Broker, fn string) *testWorker {
	t.Helper()
	w := &testWorker{b: b, wake: make(broker.NoopSignal, 1)}
	w.sess = b.NewSession("test-worker", w.wake)
	b.CanDo(w.sess, []byte(fn), 0)
	t.Cleanup(func() { b.CloseSession(w.sess) })
	return w
}

// submitAsClient submits p on a session of its own, as a Gearman client
// connection would, and returns the job's Seq. The session is closed when
// the test ends.
func submitAsClient(t *testing.T, b *broker.Broker, p broker.SubmitParams) uint64 {
	t.Helper()
	client := b.NewSession("gearman-client", make(broker.NoopSignal, 1))
	t.Cleanup(func() { b.CloseSession(client) })
	var seq uint64
	b.Submit(client, p, func(s uint64, _ bool, err error) {
		require.NoError(t, err)
		seq = s
	})
	return seq
}

// grab waits for a job, for at most 10 seconds.
func (w *testWorker) grab(t *testing.T) broker.Assignment {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		if a, ok := w.b.Grab(w.sess); ok {
			return a
		}
		w.b.PreSleep(w.sess)
		select {
		case <-w.wake:
		case <-deadline:
			t.Fatal("no job came")
		}
	}
}

func TestSubmitGetAndResult(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	resp := tb.do(t, "POST", "/v1/functions/resize/jobs?priority=high&unique=u1", strings.NewReader("\x00binary\xff"),
		"Content-Type", "application/octet-stream")
	require.Equal(t, http.StatusAccepted, resp.StatusCode)
	job := decode[jobJSON](t, resp)
	require.Regexp(t, `^H:test:\d+$`, job.Handle)
	require.Equal(t, "queued", job.State)
	require.True(t, *job.Created)
	require.Equal(t, "/v1/jobs/"+job.Handle, resp.Header.Get("Location"))

	got := decode[jobJSON](t, tb.do(t, "GET", resp.Header.Get("Location"), nil))
	require.Equal(t, "queued", got.State)
	require.Equal(t, "resize", got.Function)
	require.Equal(t, "high", got.Priority)
	require.Equal(t, "u1", got.Unique)
	require.True(t, *got.Background)

	// The same unique attaches to the live job.
	again := decode[jobJSON](t, tb.do(t, "POST", "/v1/functions/resize/jobs", strings.NewReader("other"), "Gearwork-Unique", "u1"))
	require.Equal(t, job.Handle, again.Handle)
	require.False(t, *again.Created)

	w := newTestWorker(t, tb.b, "resize")
	a := w.grab(t)
	require.Equal(t, []byte("\x00binary\xff"), a.Payload, "the payload is kept as bytes")
	got = decode[jobJSON](t, tb.do(t, "GET", "/v1/jobs/"+job.Handle, nil))
	require.Equal(t, "running", got.State)
	require.NoError(t, tb.b.WorkStatus(w.sess, a.Seq, 3, 4))
	got = decode[jobJSON](t, tb.do(t, "GET", "/v1/jobs/"+job.Handle, nil))
	require.Equal(t, progressJSON{3, 4}, *got.Progress)
	require.NoError(t, tb.b.Finish(w.sess, a.Seq, broker.Complete, []byte("small.png")))

	got = decode[jobJSON](t, tb.do(t, "GET", "/v1/jobs/"+job.Handle, nil))
	require.Equal(t, "complete", got.State)
	require.Equal(t, []byte("small.png"), got.Result)
	require.Equal(t, "small.png", *got.ResultText)
	require.NotNil(t, got.Finished)
}

func TestSubmitWaitReturnsResult(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	w := newTestWorker(t, tb.b, "echo")
	done := make(chan struct{})
	go func() {
		defer close(done)
		a := w.grab(t)
		_ = tb.b.Finish(w.sess, a.Seq, broker.Complete, append([]byte("echo:"), a.Payload...))
	}()
	resp := tb.do(t, "POST", "/v1/functions/echo/jobs?wait=30s", strings.NewReader("hi"))
	require.Equal(t, http.StatusOK, resp.StatusCode)
	job := decode[jobJSON](t, resp)
	require.Equal(t, "complete", job.State)
	require.Equal(t, "echo:hi", *job.ResultText)
	<-done
}

func TestSubmitWaitWithoutWorkerAnswers202(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	resp := tb.do(t, "POST", "/v1/functions/nobody/jobs?wait=20ms", strings.NewReader("x"))
	require.Equal(t, http.StatusAccepted, resp.StatusCode)
	require.Equal(t, "queued", decode[jobJSON](t, resp).State)
}

func TestSubmitFailureAndException(t *testing.T) {
	t.Parallel()
	// By default a failed background job is kept as a dead letter; with a
	// policy that keeps none, its record still says how it ended.
	for _, keep := range []bool{true, false} {
		var bcfg broker.Config
		if !keep {
			bcfg.DefaultPolicy.MaxDeadLetters = -1
		}
		tb := setupBroker(t, bcfg)
		w := newTestWorker(t, tb.b, "f")
		for _, tc := range []struct {
			outcome   broker.Outcome
			lastError string
		}{{broker.Fail, "failed"}, {broker.Exception, "why"}} {
			job := decode[jobJSON](t, tb.do(t, "POST", "/v1/functions/f/jobs", nil))
			a := w.grab(t)
			require.NoError(t, tb.b.Finish(w.sess, a.Seq, tc.outcome, []byte("why")))
			got := decode[jobJSON](t, tb.do(t, "GET", "/v1/jobs/"+url.PathEscape(job.Handle), nil))
			require.Equal(t, "dead", got.State)
			require.True(t, got.Final)
			require.Equal(t, tc.lastError, got.LastError)
			require.Len(t, got.History, 1)
		}
	}
}

func TestScheduledSubmit(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	at := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
	resp := tb.do(t, "POST", "/v1/functions/later/jobs", nil, "Gearwork-Run-At", at.Format(time.RFC3339))
	require.Equal(t, http.StatusAccepted, resp.StatusCode)
	job := decode[jobJSON](t, resp)
	require.Equal(t, "scheduled", job.State)
	got := decode[jobJSON](t, tb.do(t, "GET", "/v1/jobs/"+job.Handle, nil))
	require.Equal(t, at, *got.RunAt)
}

func TestCancel(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	job := decode[jobJSON](t, tb.do(t, "POST", "/v1/functions/f/jobs", nil))
	resp := tb.do(t, "DELETE", "/v1/jobs/"+job.Handle, nil)
	require.Equal(t, http.StatusNoContent, resp.StatusCode)
	got := decode[jobJSON](t, tb.do(t, "GET", "/v1/jobs/"+job.Handle, nil))
	require.Equal(t, "cancelled", got.State, "a cancelled job's record says so")
	require.True(t, *got.Background, "background never changes")
	require.Contains(t, got.CancelledBy, "http ")
	// The job has ended, and its record says so: a second cancel is a
	// conflict with that record, not a job that is not there.
	p := requireProblem(t, tb.do(t, "DELETE", "/v1/jobs/"+job.Handle, nil), http.StatusConflict, "already ended (cancelled)")
	require.Equal(t, problemTypeBase+"job-ended", p.Type)
	// A handle of this server with no job and no record is not found.
	p = requireProblem(t, tb.do(t, "DELETE", "/v1/jobs/"+tb.b.HandlePrefix()+"999999", nil), http.StatusNotFound, "no job")
	require.Equal(t, problemTypeBase+"job-not-found", p.Type)
}

func TestBatch(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	body := `{"function":"a","payload":"one"}
{"function":"a","payload":"two","color":"red"}

{"function":"b","payload_base64":"AAE=","priority":"low","unique":"k"}
{"function":"b","payload":"x","priority":"urgent"}
not json
{"function":"a","attempts":-5}
{"function":"c","run_at":4.1e1}
{"function":"c","run_at":41.5}
`
	resp := tb.do(t, "POST", "/v1/jobs:batch", strings.NewReader(body), "Content-Type", "application/x-ndjson")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, "application/x-ndjson", resp.Header.Get("Content-Type"))
	var lines []batchResult
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		var r batchResult
		require.NoError(t, json.Unmarshal(sc.Bytes(), &r))
		lines = append(lines, r)
	}
	require.Len(t, lines, 8)
	require.Equal(t, 1, lines[0].Line)
	require.Equal(t, "queued", lines[0].State)
	require.NotEmpty(t, lines[0].Handle)
	require.Equal(t, 2, lines[1].Line)
	require.Contains(t, lines[1].Error.Detail, `unknown field "color"`)
	require.Equal(t, 4, lines[2].Line, "blank lines keep their number")
	require.NotEmpty(t, lines[2].Handle)
	require.Contains(t, lines[3].Error.Detail, "urgent")
	require.Equal(t, http.StatusBadRequest, lines[4].Error.Status)
	require.Contains(t, lines[5].Error.Detail, "attempts")
	require.NotEmpty(t, lines[6].Handle, "Unix seconds written as a whole float")
	require.Nil(t, lines[6].Error)
	require.Contains(t, lines[7].Error.Detail, "whole number", "a fraction of a second is refused, not cut")

	w := newTestWorker(t, tb.b, "b")
	a := w.grab(t)
	require.Equal(t, []byte{0, 1}, a.Payload)

	requireProblem(t, tb.do(t, "POST", "/v1/jobs:batch", strings.NewReader("\n\n")), http.StatusBadRequest, "no jobs")
}

func TestBatchLimit(t *testing.T) {
	t.Parallel()
	tb := setup(t, func(c *Config) { c.MaxBatch = 2 })
	resp := tb.do(t, "POST", "/v1/jobs:batch", strings.NewReader(strings.Repeat(`{"function":"f"}`+"\n", 4)))
	require.Equal(t, http.StatusOK, resp.StatusCode)
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	lines := strings.Split(strings.TrimSpace(string(body)), "\n")
	require.Len(t, lines, 3, "two results, then the error line")
	require.Contains(t, lines[2], `"line":3`)
	require.Contains(t, lines[2], "at most 2 jobs")
	require.Equal(t, 2, tb.b.JobCount())
}

// sseEvent is one parsed server-sent event.
type sseEvent struct {
	id, event string
	data      eventData
}

// readEvents parses an event stream until it ends.
func readEvents(t *testing.T, body io.Reader) []sseEvent {
	t.Helper()
	var out []sseEvent
	var cur sseEvent
	sc := bufio.NewScanner(body)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if cur.event != "" {
				out = append(out, cur)
			}
			cur = sseEvent{}
		case strings.HasPrefix(line, "id: "):
			cur.id = line[4:]
		case strings.HasPrefix(line, "event: "):
			cur.event = line[7:]
		case strings.HasPrefix(line, "data: "):
			require.NoError(t, json.Unmarshal([]byte(line[6:]), &cur.data))
		}
	}
	return out
}

// firstEvent reads the first event of the job's stream, state.
func firstEvent(t *testing.T, tb *testBundle, handle string) sseEvent {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", tb.ts.URL+"/v1/jobs/"+handle+"/events", nil)
	require.NoError(t, err)
	resp, err := tb.ts.Client().Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	ev := readEvent(t, bufio.NewReader(resp.Body))
	require.Equal(t, "state", ev.event)
	return ev
}

// readEvent parses the next event of a stream that goes on.
func readEvent(t *testing.T, br *bufio.Reader) sseEvent {
	t.Helper()
	var cur sseEvent
	for {
		line, err := br.ReadString('\n')
		require.NoError(t, err)
		line = strings.TrimSuffix(line, "\n")
		switch {
		case line == "":
			if cur.event != "" {
				return cur
			}
		case strings.HasPrefix(line, "id: "):
			cur.id = line[4:]
		case strings.HasPrefix(line, "event: "):
			cur.event = line[7:]
		case strings.HasPrefix(line, "data: "):
			require.NoError(t, json.Unmarshal([]byte(line[6:]), &cur.data))
		}
	}
}

func kinds(evs []sseEvent) []string {
	var out []string
	for _, e := range evs {
		out = append(out, e.id+":"+e.event)
	}
	return out
}

func TestEventsStreamAndResume(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	job := decode[jobJSON](t, tb.do(t, "POST", "/v1/functions/f/jobs", strings.NewReader("p")))
	w := newTestWorker(t, tb.b, "f")
	a := w.grab(t)
	require.NoError(t, tb.b.WorkStatus(w.sess, a.Seq, 1, 3))
	require.NoError(t, tb.b.WorkData(w.sess, a.Seq, []byte("chunk"), false))

	// A stream open while the job runs sees the rest live.
	resp := tb.do(t, "GET", "/v1/jobs/"+job.Handle+"/events", nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, "text/event-stream", resp.Header.Get("Content-Type"))
	br := bufio.NewReader(resp.Body)
	// Read up to the data event before the worker goes on.
	for {
		line, err := br.ReadString('\n')
		require.NoError(t, err)
		if strings.HasPrefix(line, "event: data") {
			break
		}
	}
	require.NoError(t, tb.b.WorkData(w.sess, a.Seq, []byte("careful"), true))
	require.NoError(t, tb.b.WorkStatus(w.sess, a.Seq, 2, 3))
	require.NoError(t, tb.b.Finish(w.sess, a.Seq, broker.Complete, []byte("result")))
	rest := readEvents(t, br)
	require.Equal(t, []string{"4:warning", "5:status", "6:complete"}, kinds(rest))
	require.Equal(t, "result", *rest[2].data.Text)
	require.Equal(t, uint32(2), *rest[1].data.Numerator)

	// From the start: every event, beginning with the state.
	all := readEvents(t, tb.do(t, "GET", "/v1/jobs/"+job.Handle+"/events", nil).Body)
	require.Equal(t, []string{"1:state", "2:status", "3:data", "4:warning", "5:status", "6:complete"}, kinds(all))
	require.Equal(t, "queued", all[0].data.Job.State)
	require.Equal(t, "chunk", *all[2].data.Text)

	// Resume after event 3.
	resumed := readEvents(t, tb.do(t, "GET", "/v1/jobs/"+job.Handle+"/events", nil, "Last-Event-ID", "3").Body)
	require.Equal(t, []string{"4:warning", "5:status", "6:complete"}, kinds(resumed))

	// After the final event there is nothing more: 204 stops EventSource.
	resp = tb.do(t, "GET", "/v1/jobs/"+job.Handle+"/events", nil, "Last-Event-ID", "6")
	require.Equal(t, http.StatusNoContent, resp.StatusCode)

	requireProblem(t, tb.do(t, "GET", "/v1/jobs/H:test:999/events", nil), http.StatusNotFound, "H:test:999")
}

func TestEventsOfGearmanSubmittedJob(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	// A job submitted by another front end (a foreground Gearman client).
	seq := submitAsClient(t, tb.b, broker.SubmitParams{Function: []byte("g"), Payload: []byte("x")})
	resp := tb.do(t, "GET", "/v1/jobs/"+tb.b.Handle(seq)+"/events", nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	br := bufio.NewReader(resp.Body)
	for {
		line, err := br.ReadString('\n')
		require.NoError(t, err)
		if strings.HasPrefix(line, "data: ") {
			break // the state event is out: the hub watches the job
		}
	}
	w := newTestWorker(t, tb.b, "g")
	a := w.grab(t)
	require.NoError(t, tb.b.Finish(w.sess, a.Seq, broker.Exception, []byte("bad input")))
	rest := readEvents(t, br)
	require.Equal(t, []string{"2:exception"}, kinds(rest))
	require.Equal(t, "bad input", *rest[0].data.Text)
}

func TestHTTPWorker(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	grabbed := make(chan *http.Response, 1)
	go func() {
		req, _ := http.NewRequest("POST", tb.ts.URL+"/v1/functions/mail/grab?wait=30s&lease=1m", nil)
		resp, err := tb.ts.Client().Do(req)
		if err == nil {
			grabbed <- resp
		}
		close(grabbed)
	}()
	// Wait until the poll registered as a worker, then submit.
	require.Eventually(t, func() bool {
		for _, f := range tb.b.Status(context.Background()) {
			if f.Name == "mail" && f.Workers == 1 {
				return true
			}
		}
		return false
	}, 10*time.Second, time.Millisecond)
	job := decode[jobJSON](t, tb.do(t, "POST", "/v1/functions/mail/jobs", strings.NewReader("to: a@b")))
	resp := <-grabbed
	require.NotNil(t, resp)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	g := decode[grabbedJSON](t, resp)
	require.Equal(t, job.Handle, g.Handle)
	require.Equal(t, "to: a@b", *g.PayloadText)
	require.NotEmpty(t, g.Lease)

	base := "/v1/jobs/" + g.Handle
	requireProblem(t, tb.do(t, "POST", base+"/status", strings.NewReader(`{"numerator":1,"denominator":2}`)), http.StatusBadRequest, "lease")
	requireProblem(t, tb.do(t, "POST", base+"/status?lease=nope", strings.NewReader(`{"numerator":1,"denominator":2}`)), http.StatusConflict, "another lease")
	requireProblem(t, tb.do(t, "POST", base+"/status?lease="+g.Lease, strings.NewReader(`{"numerator":1,"denom":2}`)), http.StatusBadRequest, `unknown field "denom"`)
	require.Equal(t, http.StatusNoContent, tb.do(t, "POST", base+"/status", strings.NewReader(`{"numerator":1,"denominator":2}`), "Gearwork-Lease", g.Lease).StatusCode)
	require.Equal(t, http.StatusNoContent, tb.do(t, "POST", base+"/data?lease="+g.Lease+"&warning=true", strings.NewReader("slow smtp")).StatusCode)
	got := decode[jobJSON](t, tb.do(t, "GET", base, nil))
	require.Equal(t, "running", got.State)
	require.Equal(t, progressJSON{1, 2}, *got.Progress)
	require.Equal(t, http.StatusNoContent, tb.do(t, "POST", base+"/complete?lease="+g.Lease, strings.NewReader("sent")).StatusCode)
	got = decode[jobJSON](t, tb.do(t, "GET", base, nil))
	require.Equal(t, "complete", got.State)
	require.Equal(t, "sent", *got.ResultText)
	requireProblem(t, tb.do(t, "POST", base+"/complete?lease="+g.Lease, nil), http.StatusConflict, "no HTTP worker holds")

	evs := readEvents(t, tb.do(t, "GET", base+"/events", nil).Body)
	require.Equal(t, []string{"1:state", "2:status", "3:warning", "4:complete"}, kinds(evs))

	// An empty poll ends with 204.
	require.Equal(t, http.StatusNoContent, tb.do(t, "POST", "/v1/functions/mail/grab?wait=1ms", nil).StatusCode)
}

func TestHTTPWorkerLeaseExpiryRequeues(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	job := decode[jobJSON](t, tb.do(t, "POST", "/v1/functions/slow/jobs", strings.NewReader("x")))
	resp := tb.do(t, "POST", "/v1/functions/slow/grab?wait=10s&lease=1s", nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	g := decode[grabbedJSON](t, resp)
	require.Equal(t, job.Handle, g.Handle)
	// The lease runs out: the broker takes the job back and queues it.
	require.Eventually(t, func() bool {
		got := decode[jobJSON](t, tb.do(t, "GET", "/v1/jobs/"+job.Handle, nil))
		return got.State == "queued" && *got.Retries == 1
	}, 20*time.Second, 20*time.Millisecond)
	requireProblem(t, tb.do(t, "POST", "/v1/jobs/"+g.Handle+"/complete?lease="+g.Lease, nil), http.StatusConflict, "")
	// Another worker gets it.
	resp = tb.do(t, "POST", "/v1/functions/slow/grab?wait=10s", nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	g2 := decode[grabbedJSON](t, resp)
	require.Equal(t, job.Handle, g2.Handle)
	require.NotEqual(t, g.Lease, g2.Lease)
	require.Equal(t, http.StatusNoContent, tb.do(t, "POST", "/v1/jobs/"+g2.Handle+"/fail?lease="+g2.Lease, strings.NewReader("boom")).StatusCode)
	got := decode[jobJSON](t, tb.do(t, "GET", "/v1/jobs/"+job.Handle, nil))
	require.Equal(t, "dead", got.State, "out of attempts after an exception")
	require.Equal(t, "boom", got.LastError)
}

func TestProblems(t *testing.T) {
	t.Parallel()
	tb := setup(t, func(c *Config) { c.MaxBody = 16 })
	requireProblem(t, tb.do(t, "GET", "/v2/nothing", nil), http.StatusNotFound, "no route for GET /v2/nothing")
	resp := tb.do(t, "PUT", "/v1/functions", nil)
	requireProblem(t, resp, http.StatusMethodNotAllowed, "PUT is not allowed")
	require.Contains(t, resp.Header.Get("Allow"), "GET")
	requireProblem(t, tb.do(t, "POST", "/v1/functions/f/jobs", strings.NewReader(strings.Repeat("x", 17))),
		http.StatusRequestEntityTooLarge, "limit of 16 bytes")
	requireProblem(t, tb.do(t, "POST", "/v1/functions/f/jobs?priority=urgent", nil), http.StatusBadRequest, "urgent")
	requireProblem(t, tb.do(t, "POST", "/v1/functions/f/jobs?run-at=tomorrow", nil), http.StatusBadRequest, "RFC 3339")
	// A record could not say when such a job runs.
	requireProblem(t, tb.do(t, "POST", "/v1/functions/f/jobs?run-at=700000000000", nil), http.StatusBadRequest, "9999")
	requireProblem(t, tb.do(t, "POST", "/v1/functions/f/jobs?wait=forever", nil), http.StatusBadRequest, "duration")
	requireProblem(t, tb.do(t, "POST", "/v1/functions/f/jobs", nil, "Gearwork-Attempts", "many"), http.StatusBadRequest, "attempts")
	requireProblem(t, tb.do(t, "POST", "/v1/functions/f/jobs?timeout=-1s", nil), http.StatusBadRequest, "timeout")
	// 0 runs cannot be meant: leaving attempts out is how the function's
	// policy decides.
	requireProblem(t, tb.do(t, "POST", "/v1/functions/f/jobs?attempts=0", nil), http.StatusBadRequest, `attempts "0"`)
	require.Zero(t, tb.b.JobCount(), "the refused submits queued nothing")
	// JSON answers cannot carry bytes that are not UTF-8: such a unique or
	// ordering key would read back altered, so it is refused at submit.
	requireProblem(t, tb.do(t, "POST", "/v1/functions/f/jobs?unique=u%FF", nil), http.StatusBadRequest, "unique: not UTF-8")
	requireProblem(t, tb.do(t, "POST", "/v1/functions/f/jobs?ordering-key=k%C3", nil), http.StatusBadRequest, "ordering key: not UTF-8")
	// A unique is at most 64 bytes, as on the Gearman port: PostgreSQL
	// could not index a longer one (TestLongUniqueDoesNotFailOtherSubmits).
	requireProblem(t, tb.do(t, "POST", "/v1/functions/f/jobs?unique="+strings.Repeat("u", 65), nil),
		http.StatusBadRequest, "longer than 64 bytes")
	// Nor does it hold a NUL byte: a Gearman worker would read the unique
	// cut there, and the rest of it as the start of the payload.
	requireProblem(t, tb.do(t, "POST", "/v1/functions/f/jobs?unique=a%00b", nil), http.StatusBadRequest, "NUL")
	require.Zero(t, tb.b.JobCount(), "the refused submits queued nothing")
	requireProblem(t, tb.do(t, "GET", "/v1/jobs/nothandle", nil), http.StatusNotFound, "not a job handle")
	requireProblem(t, tb.do(t, "GET", "/v1/jobs/H:test:77", nil), http.StatusNotFound, "no job H:test:77")
	requireProblem(t, tb.do(t, "POST", "/v1/dead-letters/H:test:1/retry", nil), http.StatusNotFound, "no dead job")
	requireProblem(t, tb.do(t, "DELETE", "/v1/dead-letters/H:test:1", nil), http.StatusNotFound, "no dead job")
	requireProblem(t, tb.do(t, "GET", "/v1/dead-letters?limit=0", nil), http.StatusBadRequest, "limit")
	requireProblem(t, tb.do(t, "POST", "/v1/functions/f/pause?until=soon", nil), http.StatusBadRequest, "RFC 3339")
	requireProblem(t, tb.do(t, "POST", "/v1/functions/f/pause?until=-5m", nil), http.StatusBadRequest, "positive duration")
}

func TestNotImplementedWithoutLifecycle(t *testing.T) {
	t.Parallel()
	tb := setup(t, func(c *Config) { c.Lifecycle = Lifecycle{Results: BrokerLifecycle(c.Broker).Results} })
	for _, rt := range []struct{ method, path, missing string }{
		{"GET", "/v1/dead-letters", "dead letters"},
		{"POST", "/v1/dead-letters/H:test:1/retry", "dead letters"},
		{"DELETE", "/v1/dead-letters", "dead letters"},
		{"POST", "/v1/functions/f/pause", "pause"},
		{"POST", "/v1/functions/f/resume", "pause"},
	} {
		requireProblem(t, tb.do(t, rt.method, rt.path, nil), http.StatusNotImplemented, rt.missing)
	}
}

func TestAuthScopes(t *testing.T) {
	t.Parallel()
	tb := setup(t, func(c *Config) {
		c.Tokens = []Token{NewToken("reader", "r-secret", ScopeRead), NewToken("ci", "s-secret", ScopeSubmit|ScopeRead),
			NewToken("root", "a-secret", ScopeAdmin)}
	})
	requireProblem(t, tb.do(t, "GET", "/v1/functions", nil), http.StatusUnauthorized, "Bearer")
	requireProblem(t, tb.do(t, "GET", "/v1/functions", nil, "Authorization", "Bearer wrong"), http.StatusUnauthorized, "not valid")
	require.Equal(t, http.StatusOK, tb.do(t, "GET", "/v1/functions", nil, "Authorization", "Bearer r-secret").StatusCode)
	requireProblem(t, tb.do(t, "POST", "/v1/functions/f/jobs", nil, "Authorization", "Bearer r-secret"), http.StatusForbidden, "submit")
	resp := tb.do(t, "POST", "/v1/functions/f/jobs", nil, "Authorization", "Bearer s-secret")
	require.Equal(t, http.StatusAccepted, resp.StatusCode)
	job := decode[jobJSON](t, resp)
	requireProblem(t, tb.do(t, "POST", "/v1/functions/f/grab?wait=1ms", nil, "Authorization", "Bearer s-secret"), http.StatusForbidden, "work")
	require.Equal(t, http.StatusOK, tb.do(t, "POST", "/v1/functions/f/grab?wait=1ms", nil, "Authorization", "bearer a-secret").StatusCode,
		"admin implies work")
	require.Equal(t, http.StatusOK, tb.do(t, "GET", "/healthz", nil).StatusCode, "health needs no token")
	require.Equal(t, http.StatusOK, tb.do(t, "GET", "/", nil).StatusCode, "the dashboard page needs no token")
	// EventSource cannot send headers: the token may come as a query
	// parameter for event streams.
	resp = tb.do(t, "GET", "/v1/jobs/"+job.Handle+"/events?access_token=r-secret", nil, "Accept", "text/event-stream")
	require.Equal(t, http.StatusOK, resp.StatusCode)
}

func TestParseTokens(t *testing.T) {
	t.Parallel()
	toks, err := ParseTokens(strings.NewReader(`# comment
ci submit,read s3cret

ops admin sha256:` + strings.Repeat("ab", 32) + "\n"))
	require.NoError(t, err)
	require.Len(t, toks, 2)
	require.Equal(t, NewToken("ci", "s3cret", ScopeSubmit|ScopeRead), toks[0])
	require.Equal(t, ScopeAdmin, toks[1].Scopes)
	require.Equal(t, byte(0xab), toks[1].Hash[31])
	_, err = ParseTokens(strings.NewReader("x root s"))
	require.ErrorContains(t, err, `unknown scope "root"`)
	_, err = ParseTokens(strings.NewReader("x read sha256:zz"))
	require.ErrorContains(t, err, "64 hex digits")
}

func TestOnlyLoopbackWithoutTokens(t *testing.T) {
	t.Parallel()
	verified := &tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{{}}}}
	unverified := &tls.ConnectionState{PeerCertificates: []*x509.Certificate{{}}}
	status := func(tb *testBundle, remote string, state *tls.ConnectionState, hdr ...string) (int, string) {
		t.Helper()
		rec := httptest.NewRecorder()
		req := httptest.NewRequest("GET", "http://127.0.0.1/v1/functions", nil)
		req.RemoteAddr = remote
		req.TLS = state
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		tb.srv.Handler().ServeHTTP(rec, req)
		return rec.Code, rec.Body.String()
	}

	tb := setup(t)
	code, body := status(tb, "192.0.2.7:5555", nil)
	require.Equal(t, http.StatusForbidden, code)
	require.Contains(t, body, "only loopback clients")
	code, _ = status(tb, "[::1]:5555", nil)
	require.Equal(t, http.StatusOK, code)
	code, _ = status(tb, "192.0.2.7:5555", verified)
	require.Equal(t, http.StatusOK, code, "a client whose certificate the listener verified (mutual TLS)")
	code, _ = status(tb, "192.0.2.7:5555", unverified)
	require.Equal(t, http.StatusForbidden, code, "a certificate nobody verified is no identity")

	open := setup(t, func(c *Config) { c.AllowRemote = true })
	code, _ = status(open, "192.0.2.7:5555", nil)
	require.Equal(t, http.StatusOK, code, "AllowRemote (serve --insecure)")

	// With tokens, a token is needed whatever the certificate.
	tokens := setup(t, func(c *Config) {
		c.Tokens = []Token{NewToken("r", "r-secret", ScopeRead)}
		c.AllowRemote = true
	})
	code, _ = status(tokens, "192.0.2.7:5555", verified)
	require.Equal(t, http.StatusUnauthorized, code)
	code, _ = status(tokens, "192.0.2.7:5555", verified, "Authorization", "Bearer r-secret")
	require.Equal(t, http.StatusOK, code)
}

func TestCORSAndGzip(t *testing.T) {
	t.Parallel()
	tb := setup(t, func(c *Config) { c.CORSOrigins = []string{"https://app.example"} })
	resp := tb.do(t, "OPTIONS", "/v1/functions/f/jobs", nil, "Origin", "https://app.example",
		"Access-Control-Request-Method", "POST")
	require.Equal(t, http.StatusNoContent, resp.StatusCode)
	require.Equal(t, "https://app.example", resp.Header.Get("Access-Control-Allow-Origin"))
	require.Contains(t, resp.Header.Get("Access-Control-Allow-Headers"), "Gearwork-Priority")
	resp = tb.do(t, "GET", "/v1/functions", nil, "Origin", "https://evil.example")
	require.Empty(t, resp.Header.Get("Access-Control-Allow-Origin"))

	// The transport would decompress transparently; ask explicitly.
	resp = tb.do(t, "GET", "/v1/functions", nil, "Accept-Encoding", "gzip")
	require.Equal(t, "gzip", resp.Header.Get("Content-Encoding"))
	zr, err := gzip.NewReader(resp.Body)
	require.NoError(t, err)
	var v map[string]any
	require.NoError(t, json.NewDecoder(zr).Decode(&v))
	require.Contains(t, v, "functions")
	// Not for event streams.
	job := decode[jobJSON](t, tb.do(t, "POST", "/v1/functions/f/jobs", nil))
	resp = tb.do(t, "GET", "/v1/jobs/"+job.Handle+"/events", nil, "Accept-Encoding", "gzip")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Empty(t, resp.Header.Get("Content-Encoding"))
}

func TestFunctionsWorkersAndMetrics(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	w := newTestWorker(t, tb.b, "thumb")
	tb.b.SetClientID(w.sess, "thumbnailer")
	for range 3 {
		tb.do(t, "POST", "/v1/functions/thumb/jobs?priority=low", nil)
	}
	a := w.grab(t)
	require.NoError(t, tb.b.Finish(w.sess, a.Seq, broker.Complete, nil))

	fns := decode[struct{ Functions []functionJSON }](t, tb.do(t, "GET", "/v1/functions", nil))
	require.Len(t, fns.Functions, 1)
	f := fns.Functions[0]
	require.Equal(t, "thumb", f.Name)
	require.Equal(t, 2, f.Queued["low"])
	require.Equal(t, 1, f.Workers)
	require.Equal(t, uint64(3), f.Submitted)
	require.Equal(t, uint64(1), f.Completed)

	ws := decode[struct{ Workers []workerJSON }](t, tb.do(t, "GET", "/v1/workers", nil))
	require.Len(t, ws.Workers, 1)
	require.Equal(t, "thumbnailer", ws.Workers[0].ClientID)
	require.Equal(t, []string{"thumb"}, ws.Workers[0].Functions)

	resp := tb.do(t, "GET", "/metrics", nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	text := string(body)
	for _, want := range []string{
		`gearwork_jobs_submitted_total{function="thumb"} 3`,
		`gearwork_jobs_completed_total{function="thumb"} 1`,
		`gearwork_queue_depth{function="thumb",priority="low"} 2`,
		`gearwork_workers{function="thumb"} 1`,
		`gearwork_job_wait_seconds_count{function="thumb"} 1`,
		`gearwork_job_run_seconds_count{function="thumb"} 1`,
		`gearwork_http_requests_total{code="202",route="POST /v1/functions/{fn}/jobs"} 3`,
		`gearwork_connections{frontend="http"}`,
		`gearwork_store_commit_seconds_bucket`,
		`gearwork_jobs_by_state{function="thumb",state="queued"} 2`,
		`gearwork_jobs_by_state{function="thumb",state="complete"} 1`,
		`gearwork_oldest_queued_job_age_seconds{function="thumb"} `,
		`gearwork_job_records_memory_bytes `,
		`gearwork_job_records_evicted_total 0`,
		`gearwork_build_info{commit="unknown",goversion="go`,
	} {
		require.Contains(t, text, want)
	}
}

func TestHealth(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	require.Equal(t, http.StatusOK, tb.do(t, "GET", "/healthz", nil).StatusCode)
	require.Equal(t, http.StatusOK, tb.do(t, "GET", "/readyz", nil).StatusCode)
	tb.b.Drain()
	requireProblem(t, tb.do(t, "GET", "/readyz", nil), http.StatusServiceUnavailable, "draining")
}

func TestOpenAPIListsExactlyTheRoutes(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	resp := tb.do(t, "GET", "/openapi.json", nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var doc struct {
		OpenAPI string                                `json:"openapi"`
		Paths   map[string]map[string]json.RawMessage `json:"paths"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&doc))
	require.Equal(t, "3.1.0", doc.OpenAPI)

	inDoc := map[string]bool{}
	for path, ops := range doc.Paths {
		for method := range ops {
			inDoc[strings.ToUpper(method)+" "+path] = true
		}
	}
	inRouter := map[string]bool{}
	for _, rt := range tb.srv.routes {
		path := strings.ReplaceAll(rt.pattern, "{$}", "")
		inRouter[rt.method+" "+path] = true
	}
	for k := range inRouter {
		require.True(t, inDoc[k], "route %s is missing from openapi.json", k)
	}
	for k := range inDoc {
		require.True(t, inRouter[k], "openapi.json documents %s, which the router does not serve", k)
	}
	// And the router really answers each documented path with the route
	// it documents.
	for _, rt := range tb.srv.routes {
		path := strings.NewReplacer("{fn}", "f", "{handle}", "H:test:1", "{id}", "1", "{file}", "app.js", "{$}", "").Replace(rt.pattern)
		req := httptest.NewRequest(rt.method, path, nil)
		_, pattern := tb.srv.mux.Handler(req)
		require.Equal(t, rt.method+" "+rt.pattern, pattern)
	}
}

func TestDashboardIsEmbedded(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	resp := tb.do(t, "GET", "/", nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Contains(t, resp.Header.Get("Content-Type"), "text/html")
	page, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.NotContains(t, string(page), "http://", "no resource from elsewhere")
	require.NotContains(t, string(page), "https://", "no resource from elsewhere")
	resp = tb.do(t, "GET", "/assets/app.js", nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Contains(t, resp.Header.Get("Content-Type"), "javascript")
	requireProblem(t, tb.do(t, "GET", "/assets/missing.js", nil), http.StatusNotFound, "missing.js")
}

// Many streams open at once on a job that was not watched yet, while its
// worker reports: each sees a gap-free numbered log that ends with the
// final event, whoever started the watch.
func TestConcurrentStreamsOnUnwatchedJob(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	seq := submitAsClient(t, tb.b, broker.SubmitParams{Function: []byte("c"), Payload: []byte("x"), Background: true})
	w := newTestWorker(t, tb.b, "c")
	a := w.grab(t)
	const streams, updates = 8, 50
	results := make(chan []sseEvent, streams)
	for range streams {
		go func() {
			resp, err := tb.ts.Client().Get(tb.ts.URL + "/v1/jobs/" + tb.b.Handle(seq) + "/events")
			if err != nil {
				results <- nil
				return
			}
			defer resp.Body.Close()
			results <- readEvents(t, resp.Body)
		}()
	}
	// Let a few updates race with the streams' start, then wait until
	// every stream is open before the job finishes.
	for i := range updates {
		require.NoError(t, tb.b.WorkStatus(w.sess, a.Seq, uint32(i+1), updates))
		if i == 5 {
			require.Eventually(t, func() bool {
				f, ok := tb.srv.hub.remembered(seq)
				if !ok {
					return false
				}
				tb.srv.hub.mu.Lock()
				defer tb.srv.hub.mu.Unlock()
				return f.readers == streams
			}, 20*time.Second, time.Millisecond)
		}
	}
	require.NoError(t, tb.b.Finish(w.sess, a.Seq, broker.Complete, []byte("ok")))
	for range streams {
		evs := <-results
		require.NotEmpty(t, evs)
		require.Equal(t, "1", evs[0].id)
		require.Equal(t, "state", evs[0].event)
		for i, e := range evs {
			require.Equal(t, strconv.Itoa(i+1), e.id, "ids are gap-free")
		}
		last := evs[len(evs)-1]
		require.Equal(t, "complete", last.event)
		// The state snapshot plus the status events after it add up.
		snapNum := uint32(0)
		if p := evs[0].data.Job.Progress; p != nil {
			snapNum = p.Numerator
		}
		require.Equal(t, updates-int(snapNum), len(evs)-2, "no status event lost or repeated")
	}
}

func TestConcurrentWaitingSubmits(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	const jobs, workers = 40, 4
	stop := make(chan struct{})
	done := make(chan struct{})
	for range workers {
		w := newTestWorker(t, tb.b, "sq")
		go func() {
			defer func() { done <- struct{}{} }()
			for {
				a, ok := tb.b.Grab(w.sess)
				if !ok {
					tb.b.PreSleep(w.sess)
					select {
					case <-w.wake:
						continue
					case <-stop:
						return
					}
				}
				_ = tb.b.Finish(w.sess, a.Seq, broker.Complete, append([]byte("r"), a.Payload...))
			}
		}()
	}
	errs := make(chan error, jobs)
	for i := range jobs {
		go func() {
			resp, err := tb.ts.Client().Post(tb.ts.URL+"/v1/functions/sq/jobs?wait=60s", "text/plain", strings.NewReader(strconv.Itoa(i)))
			if err != nil {
				errs <- err
				return
			}
			defer resp.Body.Close()
			var j jobJSON
			if err := json.NewDecoder(resp.Body).Decode(&j); err != nil {
				errs <- err
				return
			}
			if resp.StatusCode != http.StatusOK || j.ResultText == nil || *j.ResultText != "r"+strconv.Itoa(i) {
				errs <- fmt.Errorf("job %d: status %d, %+v", i, resp.StatusCode, j)
				return
			}
			errs <- nil
		}()
	}
	for range jobs {
		require.NoError(t, <-errs)
	}
	close(stop)
	for range workers {
		<-done
	}
}

func TestStartStopStress(t *testing.T) {
	t.Parallel()
	b := broker.New(broker.Config{})
	require.NoError(t, b.Start(context.Background()))
	defer b.Stop()
	for i := range 20 {
		srv := New(Config{Broker: b})
		if i%3 == 0 {
			// Shutdown before Serve, then Serve refuses.
			require.NoError(t, srv.Shutdown(context.Background()))
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			require.NoError(t, err)
			require.ErrorIs(t, srv.Serve(context.Background(), ln), ErrServerClosed)
			ln.Close()
			continue
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		served := make(chan error, 1)
		go func() { served <- srv.Serve(context.Background(), ln) }()
		// A long poll and an event stream are open when it stops.
		polling := make(chan struct{})
		go func() {
			defer close(polling)
			resp, err := http.Post("http://"+ln.Addr().String()+"/v1/functions/s/grab?wait=1m", "", nil)
			if err == nil {
				resp.Body.Close()
			}
		}()
		require.Eventually(t, func() bool {
			_, polls := srv.leases.count()
			return polls == 1
		}, 10*time.Second, time.Millisecond)
		require.NoError(t, srv.Shutdown(context.Background()))
		require.NoError(t, srv.Shutdown(context.Background()), "a second Shutdown is a no-op")
		require.ErrorIs(t, <-served, ErrServerClosed)
		<-polling
	}
	require.Empty(t, b.Workers(), "every session of the HTTP servers is closed")
}

// A job that runs out of attempts becomes a dead letter: its stream ends
// with the failure, it is listed, it can be queued again (and then done),
// and purged.
func TestDeadLettersRetryAndPurge(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	w := newTestWorker(t, tb.b, "pay")
	job := decode[jobJSON](t, tb.do(t, "POST", "/v1/functions/pay/jobs?attempts=1", strings.NewReader("order-1")))
	a := w.grab(t)
	require.NoError(t, tb.b.Finish(w.sess, a.Seq, broker.Exception, []byte("card declined")))

	got := decode[jobJSON](t, tb.do(t, "GET", "/v1/jobs/"+job.Handle, nil))
	require.Equal(t, "dead", got.State)
	require.Equal(t, "card declined", got.LastError)
	require.Equal(t, uint32(1), *got.Attempts)
	evs := readEvents(t, tb.do(t, "GET", "/v1/jobs/"+job.Handle+"/events", nil).Body)
	require.Equal(t, []string{"1:state", "2:exception"}, kinds(evs))

	list := decode[struct {
		DeadLetters []struct {
			DeadLetter
			PayloadText string `json:"payload_text"`
		} `json:"dead_letters"`
	}](t, tb.do(t, "GET", "/v1/dead-letters?function=pay", nil))
	require.Len(t, list.DeadLetters, 1)
	d := list.DeadLetters[0]
	require.Equal(t, job.Handle, d.Handle)
	require.Equal(t, "card declined", d.Error)
	require.Equal(t, "order-1", d.PayloadText)
	require.Equal(t, 1, d.Attempts)
	fns := decode[struct{ Functions []functionJSON }](t, tb.do(t, "GET", "/v1/functions", nil))
	require.Equal(t, 1, fns.Functions[0].DeadLetters)
	require.Equal(t, uint64(1), fns.Functions[0].Dead)

	// Retry: queued again with the same handle; its stream starts over.
	resp := tb.do(t, "POST", "/v1/dead-letters/"+job.Handle+"/retry", nil)
	require.Equal(t, http.StatusAccepted, resp.StatusCode)
	require.Equal(t, "queued", decode[jobJSON](t, tb.do(t, "GET", "/v1/jobs/"+job.Handle, nil)).State)
	stream := tb.do(t, "GET", "/v1/jobs/"+job.Handle+"/events", nil)
	a = w.grab(t)
	require.Equal(t, job.Handle, tb.b.Handle(a.Seq))
	require.NoError(t, tb.b.Finish(w.sess, a.Seq, broker.Complete, []byte("paid")))
	evs = readEvents(t, stream.Body)
	require.Equal(t, "complete", evs[len(evs)-1].event)
	require.Equal(t, "paid", *evs[len(evs)-1].data.Text)

	// Two more dead ones, then purge one and the rest.
	var handles []string
	for i := range 2 {
		j := decode[jobJSON](t, tb.do(t, "POST", "/v1/functions/pay/jobs?attempts=1", strings.NewReader(strconv.Itoa(i))))
		a := w.grab(t)
		require.NoError(t, tb.b.Finish(w.sess, a.Seq, broker.Fail, nil))
		handles = append(handles, j.Handle)
	}
	p := decode[map[string]int](t, tb.do(t, "DELETE", "/v1/dead-letters/"+handles[0], nil))
	require.Equal(t, 1, p["purged"])
	requireProblem(t, tb.do(t, "DELETE", "/v1/dead-letters/"+handles[0], nil), http.StatusNotFound, "no dead job")
	p = decode[map[string]int](t, tb.do(t, "DELETE", "/v1/dead-letters", nil))
	require.Equal(t, 1, p["purged"])
	list.DeadLetters = nil
	require.Empty(t, decode[map[string][]DeadLetter](t, tb.do(t, "GET", "/v1/dead-letters", nil))["dead_letters"])
}

// A failed attempt that will run again is a "retry" event: the stream
// goes on to the final outcome. Per-job options show on the job.
func TestRetryEventAndJobOptions(t *testing.T) {
	t.Parallel()
	tb := setupBroker(t, broker.Config{DefaultPolicy: broker.Policy{Backoff: broker.Backoff{Initial: time.Millisecond, Max: time.Millisecond}}})
	job := decode[jobJSON](t, tb.do(t, "POST", "/v1/functions/flaky/jobs", strings.NewReader("x"),
		"Gearwork-Attempts", "3", "Gearwork-Timeout", "1m", "Gearwork-Ordering-Key", "acct-7"))
	got := decode[jobJSON](t, tb.do(t, "GET", "/v1/jobs/"+job.Handle, nil))
	require.Equal(t, 3, got.MaxAttempts)
	require.Equal(t, "acct-7", got.OrderingKey)
	stream := tb.do(t, "GET", "/v1/jobs/"+job.Handle+"/events", nil)
	w := newTestWorker(t, tb.b, "flaky")
	a := w.grab(t)
	require.NoError(t, tb.b.Finish(w.sess, a.Seq, broker.Exception, []byte("try again")))
	a = w.grab(t) // after the 1ms backoff
	require.Equal(t, job.Handle, tb.b.Handle(a.Seq))
	require.NoError(t, tb.b.Finish(w.sess, a.Seq, broker.Complete, []byte("ok")))
	evs := readEvents(t, stream.Body)
	require.Equal(t, []string{"1:state", "2:retry", "3:complete"}, kinds(evs))
	require.Equal(t, "try again", *evs[1].data.Text)
	fns := decode[struct{ Functions []functionJSON }](t, tb.do(t, "GET", "/v1/functions", nil))
	require.Equal(t, uint64(1), fns.Functions[0].Retried)
	require.Equal(t, uint64(1), fns.Functions[0].Completed)
	require.Equal(t, uint64(1), fns.Functions[0].Exceptions)
}

// Every run that ends without a result while the job will run again is a
// "retry" event, whatever ended it (WORK_FAIL, a worker that vanished, a
// timeout), and the event says why and what comes next: job, the job as
// it was when the run ended (its state, attempts, last error, when it
// runs again, the history).
func TestRetryEventSaysWhyTheRunEnded(t *testing.T) {
	t.Parallel()
	tb := setupBroker(t, broker.Config{DefaultPolicy: broker.Policy{Backoff: broker.Backoff{Initial: time.Millisecond, Max: time.Millisecond}}})
	job := decode[jobJSON](t, tb.do(t, "POST", "/v1/functions/flaky/jobs", strings.NewReader("x"),
		"Gearwork-Attempts", "4", "Gearwork-Timeout", "300ms"))
	stream := tb.do(t, "GET", "/v1/jobs/"+job.Handle+"/events", nil)
	w := newTestWorker(t, tb.b, "flaky")
	a := w.grab(t)
	require.NoError(t, tb.b.WorkData(w.sess, a.Seq, []byte("disk full"), true))
	require.NoError(t, tb.b.Finish(w.sess, a.Seq, broker.Fail, nil))
	gone := newTestWorker(t, tb.b, "flaky")
	w.b.CloseSession(w.sess)
	a = gone.grab(t)
	tb.b.CloseSession(gone.sess) // the worker vanished
	w = newTestWorker(t, tb.b, "flaky")
	a = w.grab(t) // and holds it past its timeout
	a = w.grab(t)
	require.NoError(t, tb.b.Finish(w.sess, a.Seq, broker.Complete, []byte("ok")))

	evs := readEvents(t, stream.Body)
	require.Equal(t, []string{"1:state", "2:warning", "3:retry", "4:retry", "5:retry", "6:complete"}, kinds(evs))
	for i, want := range []struct {
		outcome, lastError string
	}{{"failed", "disk full"}, {"worker vanished", "worker vanished"}, {"timeout", "timed out"}} {
		e := evs[2+i]
		require.NotNil(t, e.data.Job, "retry event %d says why", i+1)
		j := e.data.Job
		require.Equal(t, "retry-wait", j.State, "retry event %d", i+1)
		require.Equal(t, uint32(i+1), *j.Attempts)
		require.Equal(t, want.lastError, j.LastError)
		require.NotNil(t, j.RetryAt)
		require.Len(t, j.History, i+1)
		require.Equal(t, want.outcome, j.History[i].Outcome)
		require.Nil(t, e.data.Text, "no exception data")
	}
}

// The first event of a job submitted over HTTP, state, says the state the
// job was placed in, as GET /v1/jobs/{handle} and the submit's answer
// say: waiting for the jobs of after, blocked behind its ordering key,
// scheduled; not "queued" for all of them.
func TestFirstStateEventOfASubmitIsTheJobsState(t *testing.T) {
	t.Parallel()
	firstStateEvents(t, setup(t))
}

func firstStateEvents(t *testing.T, tb *testBundle) {
	// A submit that joins a job a Gearman client submitted: the job as it
	// is, not a guess ("attached", normal priority).
	client := tb.b.NewSession("gearman-client", make(broker.NoopSignal, 1))
	t.Cleanup(func() { tb.b.CloseSession(client) })
	created := make(chan uint64, 1)
	tb.b.Submit(client, broker.SubmitParams{Function: []byte("step"), Unique: []byte("joined"),
		Payload: []byte("0"), Priority: broker.High, Background: true}, func(seq uint64, _ bool, err error) {
		require.NoError(t, err)
		created <- seq
	})
	seq := <-created // once stored, with a durable store
	joined := decode[jobJSON](t, tb.do(t, "POST", "/v1/functions/step/jobs?unique=joined", strings.NewReader("0")))
	require.Equal(t, tb.b.Handle(seq), joined.Handle)
	require.False(t, *joined.Created)
	ev := firstEvent(t, tb, joined.Handle)
	require.Equal(t, "queued", ev.data.Job.State)
	require.Equal(t, "high", ev.data.Job.Priority)

	first := decode[jobJSON](t, tb.do(t, "POST", "/v1/functions/step/jobs?ordering-key=k", strings.NewReader("1")))
	for _, c := range []struct{ query, state string }{
		{"ordering-key=k", "blocked"},
		{"after=" + url.QueryEscape(first.Handle), "waiting"},
		{"run-at=2099-01-01T00:00:00Z", "scheduled"},
		{"ordering-key=other", "queued"},
	} {
		job := decode[jobJSON](t, tb.do(t, "POST", "/v1/functions/step/jobs?"+c.query, strings.NewReader("2")))
		require.Equal(t, c.state, job.State, c.query)
		got := decode[jobJSON](t, tb.do(t, "GET", "/v1/jobs/"+job.Handle, nil))
		require.Equal(t, c.state, got.State, c.query)
		ev := firstEvent(t, tb, job.Handle)
		require.Equal(t, c.state, ev.data.Job.State, "the state event of a job submitted with %s", c.query)
		require.Equal(t, got.Submitted, ev.data.Job.Submitted, c.query)
	}
}

// Each line of POST /v1/jobs:batch answers the state its job is in, as a
// single submit and GET /v1/jobs/{handle} do: waiting for the jobs of
// after, blocked behind its ordering key, and the state of the job a line
// joined; not queued (or "attached") for each.
func TestBatchLinesSayTheJobsState(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	first := decode[jobJSON](t, tb.do(t, "POST", "/v1/functions/b/jobs?unique=u1&run-at=2099-01-01T00:00:00Z", strings.NewReader("a")))
	body := strings.Join([]string{
		`{"function":"b2","after":["` + first.Handle + `"]}`,
		`{"function":"b3","ordering_key":"k"}`,
		`{"function":"b3","ordering_key":"k"}`,
		`{"function":"b","unique":"u1"}`,
		`{"function":"b4","run_at":"2099-01-01T00:00:00Z"}`,
	}, "\n") + "\n"
	resp := tb.do(t, "POST", "/v1/jobs:batch", strings.NewReader(body), "Content-Type", "application/x-ndjson")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var states []string
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		var l struct{ Handle, State string }
		require.NoError(t, json.Unmarshal(sc.Bytes(), &l))
		got := decode[jobJSON](t, tb.do(t, "GET", "/v1/jobs/"+l.Handle, nil))
		require.Equal(t, got.State, l.State, "line %d says what GET says", len(states)+1)
		states = append(states, l.State)
	}
	require.Equal(t, []string{"waiting", "queued", "blocked", "scheduled", "scheduled"}, states)
}

// A foreground job failed for its client after --job-retries takebacks
// names the reason as its attempts do, "worker vanished", in every view
// (it said "worker disconnected" as its last error, and "worker vanished"
// in its history).
func TestJobRetriesFailureNamesTheReasonOnce(t *testing.T) {
	t.Parallel()
	tb := setupBroker(t, broker.Config{JobRetries: 1})
	client := tb.b.NewSession("gearman-client", make(broker.NoopSignal, 1))
	t.Cleanup(func() { tb.b.CloseSession(client) })
	created := make(chan uint64, 1)
	tb.b.Submit(client, broker.SubmitParams{Function: []byte("flaky"), Payload: []byte("x")}, func(seq uint64, _ bool, err error) {
		require.NoError(t, err)
		created <- seq
	})
	seq := <-created
	w := newTestWorker(t, tb.b, "flaky")
	require.Equal(t, seq, w.grab(t).Seq)
	tb.b.CloseSession(w.sess) // the worker vanished: its one takeback
	got := decode[jobJSON](t, tb.do(t, "GET", "/v1/jobs/"+tb.b.Handle(seq), nil))
	require.Equal(t, "failed", got.State)
	require.Len(t, got.History, 1)
	require.Equal(t, "worker vanished", got.History[0].Outcome)
	require.Equal(t, "worker vanished", got.LastError)
}

// The attempts of a job an HTTP worker ran name that worker as those of a
// Gearman worker do: by its address, not only as "an HTTP worker".
func TestHTTPWorkerIsNamedInTheHistory(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	job := decode[jobJSON](t, tb.do(t, "POST", "/v1/functions/named/jobs", strings.NewReader("x")))
	var g struct{ Handle, Lease string }
	resp := tb.do(t, "POST", "/v1/functions/named/grab?wait=10s", nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&g))
	require.Equal(t, http.StatusNoContent, tb.do(t, "POST", "/v1/jobs/"+g.Handle+"/complete?lease="+g.Lease, nil).StatusCode)
	got := decode[jobJSON](t, tb.do(t, "GET", "/v1/jobs/"+job.Handle, nil))
	require.Len(t, got.History, 1)
	require.Regexp(t, `^http-worker@127\.0\.0\.1:\d+$`, got.History[0].Worker)
}

// A job waiting for others says which: after lists the jobs it still
// waits for, fewer as they complete, and none once it runs.
func TestWaitingJobSaysWhatItWaitsFor(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	a := decode[jobJSON](t, tb.do(t, "POST", "/v1/functions/first/jobs", strings.NewReader("a")))
	b := decode[jobJSON](t, tb.do(t, "POST", "/v1/functions/second/jobs", strings.NewReader("b")))
	c := decode[jobJSON](t, tb.do(t, "POST", "/v1/functions/last/jobs?after="+url.QueryEscape(a.Handle)+"&after="+url.QueryEscape(b.Handle), nil))
	got := decode[jobJSON](t, tb.do(t, "GET", "/v1/jobs/"+c.Handle, nil))
	require.Equal(t, "waiting", got.State)
	require.Equal(t, []string{a.Handle, b.Handle}, got.After)
	list := decode[struct{ Jobs []jobJSON }](t, tb.do(t, "GET", "/v1/jobs?state=waiting", nil))
	require.Len(t, list.Jobs, 1)
	require.Equal(t, []string{a.Handle, b.Handle}, list.Jobs[0].After, "the list shows it too")

	w := newTestWorker(t, tb.b, "first")
	require.NoError(t, tb.b.Finish(w.sess, w.grab(t).Seq, broker.Complete, nil))
	got = decode[jobJSON](t, tb.do(t, "GET", "/v1/jobs/"+c.Handle, nil))
	require.Equal(t, "waiting", got.State)
	require.Equal(t, []string{b.Handle}, got.After, "a completed dependency is no longer waited for")

	w = newTestWorker(t, tb.b, "second")
	require.NoError(t, tb.b.Finish(w.sess, w.grab(t).Seq, broker.Complete, nil))
	got = decode[jobJSON](t, tb.do(t, "GET", "/v1/jobs/"+c.Handle, nil))
	require.Equal(t, "queued", got.State)
	require.Empty(t, got.After)
}

// A job taken back because its HTTP worker's lease ran out says so in its
// record, apart from a run that ran past its timeout and from a worker
// that vanished: the attempt's outcome is timeout, its error (and the
// job's last error) "lease ran out".
func TestLeaseRunOutIsTheRecordedReason(t *testing.T) {
	t.Parallel()
	tb := setup(t, func(c *Config) { c.DefaultLease = 100 * time.Millisecond })
	job := decode[jobJSON](t, tb.do(t, "POST", "/v1/functions/leased/jobs", strings.NewReader("x")))
	resp := tb.do(t, "POST", "/v1/functions/leased/grab?wait=10s", nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var got jobJSON
	testwait.Until(t, "the job taken back", func() bool {
		got = decode[jobJSON](t, tb.do(t, "GET", "/v1/jobs/"+job.Handle, nil))
		return got.State == "queued"
	})
	require.Len(t, got.History, 1)
	require.Equal(t, "timeout", got.History[0].Outcome)
	require.Equal(t, "lease ran out", got.History[0].Error)
	require.Equal(t, "lease ran out", got.LastError)
	// The run ended without a result: a failed run of kind timeout, as
	// its outcome says.
	resp = tb.do(t, "GET", "/metrics", nil)
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.NoError(t, err)
	require.Contains(t, string(body), `gearwork_jobs_failed_total{function="leased",kind="timeout"} 1`)
}

func TestPauseAndResume(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	decode[jobJSON](t, tb.do(t, "POST", "/v1/functions/mail/jobs", nil))
	require.Equal(t, http.StatusNoContent, tb.do(t, "POST", "/v1/functions/mail/pause", nil).StatusCode)
	require.Equal(t, http.StatusNoContent, tb.do(t, "POST", "/v1/functions/mail/grab?wait=1ms", nil).StatusCode,
		"a paused function hands out nothing")
	fns := decode[struct{ Functions []functionJSON }](t, tb.do(t, "GET", "/v1/functions", nil))
	require.True(t, fns.Functions[0].Paused)
	require.Nil(t, fns.Functions[0].PausedUntil)
	require.Equal(t, http.StatusNoContent, tb.do(t, "POST", "/v1/functions/mail/resume", nil).StatusCode)
	require.Equal(t, http.StatusOK, tb.do(t, "POST", "/v1/functions/mail/grab?wait=10s", nil).StatusCode)
	until := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
	require.Equal(t, http.StatusNoContent, tb.do(t, "POST", "/v1/functions/mail/pause?until="+until.Format(time.RFC3339), nil).StatusCode)
	fns = decode[struct{ Functions []functionJSON }](t, tb.do(t, "GET", "/v1/functions", nil))
	require.Equal(t, until, *fns.Functions[0].PausedUntil)
	// An end that has passed is refused, and the pause stays as it was.
	requireProblem(t, tb.do(t, "POST", "/v1/functions/mail/pause?until=2020-01-01T00:00:00Z", nil),
		http.StatusBadRequest, "has passed")
	fns = decode[struct{ Functions []functionJSON }](t, tb.do(t, "GET", "/v1/functions", nil))
	require.True(t, fns.Functions[0].Paused)
	require.Equal(t, until, *fns.Functions[0].PausedUntil)
	body, err := io.ReadAll(tb.do(t, "GET", "/metrics", nil).Body)
	require.NoError(t, err)
	require.Contains(t, string(body), `gearwork_function_paused{function="mail"} 1`)
}

// With result retention, a completed background job's result stays
// readable from the broker after the HTTP server forgot its events.
func TestRetainedResult(t *testing.T) {
	t.Parallel()
	tb := setupBroker(t, broker.Config{Policies: map[string]broker.Policy{"render": {ResultRetention: time.Hour}}},
		func(c *Config) { c.MaxFeeds = 1 })
	w := newTestWorker(t, tb.b, "render")
	// The first job's events are forgotten when the second is watched.
	first := decode[jobJSON](t, tb.do(t, "POST", "/v1/functions/render/jobs", strings.NewReader("a")))
	a := w.grab(t)
	require.NoError(t, tb.b.Finish(w.sess, a.Seq, broker.Complete, []byte("a.png")))
	decode[jobJSON](t, tb.do(t, "POST", "/v1/functions/render/jobs", strings.NewReader("b")))
	_, remembered := tb.srv.hub.remembered(a.Seq)
	require.False(t, remembered)
	got := decode[jobJSON](t, tb.do(t, "GET", "/v1/jobs/"+first.Handle, nil))
	require.Equal(t, "complete", got.State)
	require.Equal(t, "a.png", *got.ResultText)
}

// TestMalformedChunkedBody sends a body whose chunk length is not hex: the
// client's mistake, answered with 400 and counted as such, never as a 500.
func TestMalformedChunkedBody(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	host := strings.TrimPrefix(tb.ts.URL, "http://")
	for _, path := range []string{"/v1/functions/f/jobs", "/v1/jobs:batch"} {
		conn, err := net.Dial("tcp", host)
		require.NoError(t, err)
		_, err = fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: %s\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n", path, host)
		require.NoError(t, err)
		require.NoError(t, conn.SetReadDeadline(time.Now().Add(30*time.Second)))
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		require.NoError(t, err)
		if path == "/v1/jobs:batch" && resp.StatusCode == http.StatusOK {
			// The batch answer is NDJSON; its one line is the problem.
			var line struct{ Error *problem }
			require.NoError(t, json.NewDecoder(resp.Body).Decode(&line))
			require.NotNil(t, line.Error)
			require.Equal(t, http.StatusBadRequest, line.Error.Status, "%+v", line.Error)
		} else {
			p := requireProblem(t, resp, http.StatusBadRequest, "request body")
			require.Equal(t, problemTypeBase+"invalid-body", p.Type)
		}
		resp.Body.Close()
		conn.Close()
	}
	resp := tb.do(t, "GET", "/metrics", nil)
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Contains(t, string(body), `gearwork_http_requests_total{code="400",route="POST /v1/functions/{fn}/jobs"} 1`)
	require.NotContains(t, string(body), `code="500"`)
}

// A submit that joined a job that already ended (its retained result)
// answers the job's final state with final set, as GET /v1/jobs/{handle}
// does: a state such as complete is never that of a live job.
func TestSubmitJoiningAnEndedJobSaysFinal(t *testing.T) {
	t.Parallel()
	tb := setupBroker(t, broker.Config{Policies: map[string]broker.Policy{"render": {ResultRetention: time.Hour}}})
	w := newTestWorker(t, tb.b, "render")
	first := decode[jobJSON](t, tb.do(t, "POST", "/v1/functions/render/jobs?unique=u1", strings.NewReader("a")))
	require.False(t, first.Final)
	a := w.grab(t)
	require.NoError(t, tb.b.Finish(w.sess, a.Seq, broker.Complete, []byte("a.png")))
	again := decode[jobJSON](t, tb.do(t, "POST", "/v1/functions/render/jobs?unique=u1", strings.NewReader("a")))
	require.Equal(t, first.Handle, again.Handle)
	require.False(t, *again.Created)
	require.Equal(t, "complete", again.State)
	require.True(t, again.Final, "complete is an end")
	got := decode[jobJSON](t, tb.do(t, "GET", "/v1/jobs/"+again.Handle, nil))
	require.Equal(t, got.State, again.State)
	require.Equal(t, got.Final, again.Final)

	// So does a batch's line.
	resp := tb.do(t, "POST", "/v1/jobs:batch", strings.NewReader(`{"function":"render","unique":"u1"}`+"\n"),
		"Content-Type", "application/x-ndjson")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var line struct {
		Handle, State string
		Final         bool
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&line))
	resp.Body.Close()
	require.Equal(t, first.Handle, line.Handle)
	require.Equal(t, "complete", line.State)
	require.True(t, line.Final, "complete is an end")
}
