package httpapi

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/internal/broker"
	"github.com/gearwork/gearwork/internal/store"
	"github.com/gearwork/gearwork/internal/store/pebble"
)

// gatedStore is a durable store whose writes wait for the test.
type gatedStore struct {
	mu      sync.Mutex
	jobs    map[uint64]store.Job
	entered chan struct{} // gets a value each time Save starts
	gate    chan struct{} // Save waits until it is closed
	failErr error
}

func (g *gatedStore) Save(_ context.Context, jobs []store.Job) error {
	g.entered <- struct{}{}
	<-g.gate
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.failErr != nil {
		return g.failErr
	}
	for _, j := range jobs {
		g.jobs[j.Seq] = j
	}
	return nil
}

func (g *gatedStore) Delete(context.Context, []uint64) error            { return nil }
func (g *gatedStore) Load(context.Context, func(store.Job) error) error { return nil }
func (g *gatedStore) Close() error                                      { return nil }
func (g *gatedStore) count() int                                        { g.mu.Lock(); defer g.mu.Unlock(); return len(g.jobs) }

var _ store.Store = (*gatedStore)(nil)

// serveOver starts a broker that keeps its jobs in st and an HTTP API over
// it; both stop when the test ends.
func serveOver(t *testing.T, st store.Store) *Server {
	t.Helper()
	b := broker.New(broker.Config{Store: st})
	require.NoError(t, b.Start(context.Background()))
	srv := New(Config{Broker: b})
	t.Cleanup(func() {
		require.NoError(t, srv.Shutdown(context.Background()))
		b.Stop()
	})
	return srv
}

func TestSubmitAnswersAfterTheStoreWrite(t *testing.T) {
	t.Parallel()
	st := &gatedStore{jobs: map[uint64]store.Job{}, entered: make(chan struct{}, 16), gate: make(chan struct{})}
	srv := serveOver(t, st)
	answered := make(chan int, 1)
	go func() {
		req := httptestRequest("POST", "/v1/functions/f/jobs", "x")
		rec := newRecorder()
		srv.Handler().ServeHTTP(rec, req)
		answered <- rec.Code
	}()
	<-st.entered
	select {
	case code := <-answered:
		t.Fatalf("answered %d while the store write was still in progress", code)
	default:
	}
	close(st.gate)
	require.Equal(t, http.StatusAccepted, <-answered)
	require.Equal(t, 1, st.count(), "acknowledged means stored")
}

func TestSubmitStoreFailureIs503(t *testing.T) {
	t.Parallel()
	st := &gatedStore{jobs: map[uint64]store.Job{}, entered: make(chan struct{}, 16), gate: make(chan struct{}),
		failErr: errors.New("disk full")}
	close(st.gate)
	srv := serveOver(t, st)
	rec := newRecorder()
	srv.Handler().ServeHTTP(rec, httptestRequest("POST", "/v1/functions/f/jobs", "x"))
	require.Equal(t, http.StatusServiceUnavailable, rec.Code)
	require.Contains(t, rec.Body.String(), "disk full")
	rec = newRecorder()
	srv.Handler().ServeHTTP(rec, httptestRequest("GET", "/readyz", ""))
	require.Equal(t, http.StatusServiceUnavailable, rec.Code)
	require.Contains(t, rec.Body.String(), "store write failed")
}

func TestBatchWithDurableStore(t *testing.T) {
	t.Parallel()
	st := &gatedStore{jobs: map[uint64]store.Job{}, entered: make(chan struct{}, 1024), gate: make(chan struct{})}
	close(st.gate)
	srv := serveOver(t, st)
	const n = 600
	rec := newRecorder()
	srv.Handler().ServeHTTP(rec, httptestRequest("POST", "/v1/jobs:batch", strings.Repeat(`{"function":"f","payload":"p"}`+"\n", n)))
	require.Equal(t, http.StatusOK, rec.Code)
	lines := strings.Split(strings.TrimSpace(rec.Body.String()), "\n")
	require.Len(t, lines, n)
	for _, l := range lines {
		require.Contains(t, l, `"state":"queued"`)
	}
	require.Equal(t, n, st.count())
}

func httptestRequest(method, path, body string) *http.Request {
	r := httptest.NewRequest(method, "http://127.0.0.1"+path, strings.NewReader(body))
	r.RemoteAddr = "127.0.0.1:1234"
	return r
}

func newRecorder() *httptest.ResponseRecorder { return httptest.NewRecorder() }

// A job replayed from the Pebble store after a restart answers when it was
// submitted, as it did before.
func TestReplayedJobShowsSubmitTime(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	openStore := func() *pebble.Store {
		st, err := pebble.Open(context.Background(), dir, pebble.Options{CacheSize: 1 << 20, MemTableSize: 1 << 20})
		require.NoError(t, err)
		return st
	}
	st := openStore()
	tb := setupBroker(t, broker.Config{Store: st})
	job := decode[jobJSON](t, tb.do(t, "POST", "/v1/functions/f/jobs", strings.NewReader("p")))
	before := decode[jobJSON](t, tb.do(t, "GET", "/v1/jobs/"+job.Handle, nil))
	require.NotNil(t, before.Submitted)
	tb.b.Stop()
	require.NoError(t, st.Close())

	st = openStore()
	t.Cleanup(func() { require.NoError(t, st.Close()) }) // after the broker stops
	tb = setupBroker(t, broker.Config{Store: st})
	after := decode[jobJSON](t, tb.do(t, "GET", "/v1/jobs/"+job.Handle, nil))
	require.Equal(t, "queued", after.State, "replayed")
	require.NotNil(t, after.Submitted, "a replayed job says when it was submitted")
	require.True(t, before.Submitted.Equal(*after.Submitted))
}

// After a restart, the functions a server knows only from what its store
// kept (a dead letter, the records of ended jobs) are listed with those
// counts by GET /v1/functions and /metrics, as the dead letters and the
// job list show them: an alert on gearwork_dead_letters must not miss a
// dead letter because its function has had no job since the restart.
func TestReplayedDeadLettersAndRecordsAreCounted(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	openStore := func() *pebble.Store {
		st, err := pebble.Open(context.Background(), dir, pebble.Options{CacheSize: 1 << 20, MemTableSize: 1 << 20})
		require.NoError(t, err)
		return st
	}
	st := openStore()
	tb := setupBroker(t, broker.Config{Store: st})
	type deadLettersJSON struct {
		DeadLetters []DeadLetter `json:"dead_letters"`
	}
	run := func(fn, query, outcome, body string) {
		decode[jobJSON](t, tb.do(t, "POST", "/v1/functions/"+fn+"/jobs"+query, strings.NewReader("p")))
		g := decode[grabbedJSON](t, tb.do(t, "POST", "/v1/functions/"+fn+"/grab?wait=10s", nil))
		resp := tb.do(t, "POST", "/v1/jobs/"+g.Handle+"/"+outcome+"?lease="+g.Lease, strings.NewReader(body))
		require.Equal(t, http.StatusNoContent, resp.StatusCode)
	}
	run("gone", "?attempts=1", "fail", "disk full")
	run("done", "", "complete", "ok")
	require.Len(t, decode[deadLettersJSON](t, tb.do(t, "GET", "/v1/dead-letters", nil)).DeadLetters, 1)
	tb.b.Stop()
	require.NoError(t, st.Close())

	st = openStore()
	t.Cleanup(func() { require.NoError(t, st.Close()) }) // after the broker stops
	tb = setupBroker(t, broker.Config{Store: st})
	require.Len(t, decode[deadLettersJSON](t, tb.do(t, "GET", "/v1/dead-letters", nil)).DeadLetters, 1, "replayed")
	fns := map[string]functionJSON{}
	for _, f := range decode[struct {
		Functions []functionJSON `json:"functions"`
	}](t, tb.do(t, "GET", "/v1/functions", nil)).Functions {
		fns[f.Name] = f
	}
	require.Contains(t, fns, "gone", "a function with a dead letter is listed")
	require.Equal(t, 1, fns["gone"].DeadLetters)
	require.Equal(t, map[string]int{"dead": 1}, fns["gone"].Jobs)
	require.Contains(t, fns, "done", "a function with kept records is listed")
	require.Equal(t, map[string]int{"complete": 1}, fns["done"].Jobs)
	require.Zero(t, fns["done"].Submitted, "counters count since the start")

	resp := tb.do(t, "GET", "/metrics", nil)
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Contains(t, string(body), "\ngearwork_dead_letters{function=\"gone\"} 1\n")
}

// With a durable store, a job runs while it is written: the first event of
// its stream says the state it was placed in all the same.
func TestFirstStateEventOfADurableSubmit(t *testing.T) {
	t.Parallel()
	st, err := pebble.Open(context.Background(), t.TempDir(), pebble.Options{CacheSize: 1 << 20, MemTableSize: 1 << 20})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, st.Close()) }) // after the broker stops
	firstStateEvents(t, setupBroker(t, broker.Config{Store: st}))
}
