package httpapi

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/internal/broker"
	"github.com/gearwork/gearwork/internal/store/pebble"
)

// setupPebble is setup over a broker that keeps its jobs in a Pebble
// store.
func setupPebble(t *testing.T) *testBundle {
	t.Helper()
	st, err := pebble.Open(context.Background(), t.TempDir(), pebble.Options{CacheSize: 1 << 20, MemTableSize: 1 << 20})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, st.Close()) })
	return setupBroker(t, broker.Config{Store: st})
}

func TestBatchCreateRunAndCallbacksOverHTTP(t *testing.T) {
	t.Parallel()
	tb := setupPebble(t)
	resp := tb.do(t, "POST", "/v1/batches", strings.NewReader(`{
		"on_success": {"function": "ok", "payload": "report 7"},
		"on_complete": {"function": "done"},
		"jobs": [{"function": "fn", "payload": "a"}, {"function": "fn", "payload": "b"}, {"function": "bad name"}]}`),
		"Content-Type", "application/json")
	require.Equal(t, http.StatusCreated, resp.StatusCode)
	created := decode[batchCreatedJSON](t, resp)
	require.Equal(t, "/v1/batches/"+created.Batch.ID, resp.Header.Get("Location"))
	require.Len(t, created.Jobs, 3)
	require.Nil(t, created.Jobs[0].Error)
	require.Nil(t, created.Jobs[1].Error)
	require.NotNil(t, created.Jobs[2].Error, "a bad line does not stop the others")
	require.Equal(t, http.StatusBadRequest, created.Jobs[2].Error.Status)
	b := created.Batch
	require.True(t, b.Closed)
	require.Equal(t, [3]uint64{2, 2, 0}, [3]uint64{b.Total, b.Pending, b.Succeeded})

	fn := newTestWorker(t, tb.b, "fn")
	for range 2 {
		a := fn.grab(t)
		require.NoError(t, tb.b.Finish(fn.sess, a.Seq, broker.Complete, nil))
	}
	got := map[string]broker.CallbackPayload{}
	for _, name := range []string{"ok", "done"} {
		w := newTestWorker(t, tb.b, name)
		a := w.grab(t)
		var p broker.CallbackPayload
		require.NoError(t, json.Unmarshal(a.Payload, &p))
		got[name] = p
		require.NoError(t, tb.b.Finish(w.sess, a.Seq, broker.Complete, nil))
	}
	require.Equal(t, map[string]broker.CallbackPayload{
		"ok":   {Batch: b.ID, Callback: "on_success", Total: 2, Succeeded: 2, Failures: []string{}, Payload: "report 7"},
		"done": {Batch: b.ID, Callback: "on_complete", Total: 2, Succeeded: 2, Failures: []string{}},
	}, got)

	resp = tb.do(t, "GET", "/v1/batches/"+b.ID, nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	b = decode[batchJSON](t, resp)
	require.True(t, b.Complete)
	require.Equal(t, &callbackJSON{Function: "ok", Payload: "report 7", Fired: true, State: "fired"}, b.OnSuccess)
	require.Equal(t, &callbackJSON{Function: "done", Fired: true, State: "fired"}, b.OnComplete)

	// A completed batch takes no more jobs.
	resp = tb.do(t, "POST", "/v1/batches/"+b.ID+"/jobs", strings.NewReader(`{"function":"fn"}`+"\n"))
	require.Equal(t, http.StatusOK, resp.StatusCode)
	line := decode[batchResult](t, resp)
	require.NotNil(t, line.Error)
	require.Equal(t, http.StatusConflict, line.Error.Status)
	requireProblem(t, tb.do(t, "POST", "/v1/functions/fn/jobs?batch="+b.ID, strings.NewReader("x")),
		http.StatusConflict, "completed")

	resp = tb.do(t, "GET", "/v1/batches", nil)
	list := decode[struct{ Batches []batchJSON }](t, resp)
	require.Len(t, list.Batches, 1)
	require.Equal(t, b.ID, list.Batches[0].ID)
}

func TestBatchOpenNDJSONAddAndClose(t *testing.T) {
	t.Parallel()
	tb := setupPebble(t)
	resp := tb.do(t, "POST", "/v1/batches", strings.NewReader(
		`{"on_complete": {"function": "done"}, "open": true}`+"\n"+`{"function": "fn", "payload": "a"}`+"\n"),
		"Content-Type", "application/x-ndjson")
	require.Equal(t, http.StatusCreated, resp.StatusCode)
	created := decode[batchCreatedJSON](t, resp)
	id := created.Batch.ID
	require.False(t, created.Batch.Closed)
	require.Len(t, created.Jobs, 1)

	resp = tb.do(t, "POST", "/v1/functions/fn/jobs", strings.NewReader("b"), "Gearwork-Batch", id)
	require.Equal(t, http.StatusAccepted, resp.StatusCode)
	resp = tb.do(t, "POST", "/v1/batches/"+id+"/jobs", strings.NewReader(`{"function":"fn","payload":"c"}`+"\n"))
	require.Nil(t, decode[batchResult](t, resp).Error)

	resp = tb.do(t, "POST", "/v1/batches/"+id+"/close", nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	b := decode[batchJSON](t, resp)
	require.True(t, b.Closed)
	require.False(t, b.Complete)
	require.Equal(t, uint64(3), b.Pending)

	requireProblem(t, tb.do(t, "GET", "/v1/batches/99", nil), http.StatusNotFound, "batch not found")
	requireProblem(t, tb.do(t, "GET", "/v1/batches/x", nil), http.StatusBadRequest, "batch")
	requireProblem(t, tb.do(t, "POST", "/v1/batches", strings.NewReader(`{"on_success": {"function": ""}}`)),
		http.StatusBadRequest, "on_success")
	requireProblem(t, tb.do(t, "POST", "/v1/functions/fn/jobs?batch=99", strings.NewReader("x")),
		http.StatusNotFound, "batch not found")
}

// submitAccepted POSTs body to path (a submit), requires 202 and returns
// the job.
func (tb *testBundle) submitAccepted(t *testing.T, path, body string, hdr ...string) jobJSON {
	t.Helper()
	resp := tb.do(t, "POST", path, strings.NewReader(body), hdr...)
	require.Equal(t, http.StatusAccepted, resp.StatusCode)
	return decode[jobJSON](t, resp)
}

// A job submitted over HTTP after others waits for them; an unknown or
// failed dependency is refused with invalid-dependency.
func TestAfterOverHTTP(t *testing.T) {
	t.Parallel()
	tb := setupPebble(t)
	submit := func(path string, hdr ...string) jobJSON {
		t.Helper()
		return tb.submitAccepted(t, path, "x", hdr...)
	}
	a := submit("/v1/functions/fn/jobs")
	b := submit("/v1/functions/fn/jobs?after=" + url.QueryEscape(a.Handle))
	require.Equal(t, "waiting", b.State)
	resp := tb.do(t, "POST", "/v1/jobs:batch", strings.NewReader(`{"function":"fn","after":["`+a.Handle+`","`+b.Handle+`"]}`+"\n"))
	c := decode[batchResult](t, resp)
	require.Nil(t, c.Error)

	w := newTestWorker(t, tb.b, "fn")
	for _, want := range []string{a.Handle, b.Handle, c.Handle} {
		got := w.grab(t)
		require.Equal(t, want, tb.b.Handle(got.Seq))
		require.NoError(t, tb.b.Finish(w.sess, got.Seq, broker.Complete, nil))
	}

	requireProblem(t, tb.do(t, "POST", "/v1/functions/fn/jobs?after=H:test:99", strings.NewReader("x")),
		http.StatusBadRequest, "no job H:test:99")
	requireProblem(t, tb.do(t, "POST", "/v1/functions/fn/jobs", strings.NewReader("x"), "Gearwork-After", "nonsense"),
		http.StatusBadRequest, "not a job handle")
	requireProblem(t, tb.do(t, "POST", "/v1/functions/fn/jobs?after-anyway=maybe", strings.NewReader("x")),
		http.StatusBadRequest, "after-anyway")
	requireProblem(t, tb.do(t, "POST", "/v1/functions/fn/jobs?after-anyway=true", strings.NewReader("x")),
		http.StatusBadRequest, "after-anyway goes with after")

	// after repeated: the job waits for every job named.
	d := submit("/v1/functions/fn/jobs")
	e := submit("/v1/functions/fn/jobs")
	f := submit("/v1/functions/fn/jobs?after=" + url.QueryEscape(d.Handle) + "&after=" + url.QueryEscape(e.Handle))
	require.Equal(t, "waiting", f.State)
	got := w.grab(t)
	require.Equal(t, d.Handle, tb.b.Handle(got.Seq))
	require.NoError(t, tb.b.Finish(w.sess, got.Seq, broker.Complete, nil))
	got = w.grab(t)
	require.Equal(t, e.Handle, tb.b.Handle(got.Seq), "f waits for e too")
	require.NoError(t, tb.b.Finish(w.sess, got.Seq, broker.Complete, nil))
	got = w.grab(t)
	require.Equal(t, f.Handle, tb.b.Handle(got.Seq))
}

// A submit names the jobs it waits for by their uniques: of another
// function (FUNCTION/UNIQUE) or of its own, in the query, the header or
// a batch line; a unique no live job has is refused.
func TestAfterUniqueOverHTTP(t *testing.T) {
	t.Parallel()
	tb := setupPebble(t)
	submit := func(path, body string, hdr ...string) jobJSON {
		t.Helper()
		return tb.submitAccepted(t, path, body, hdr...)
	}
	order := submit("/v1/functions/order/jobs?unique=order-1", "o")
	ship := submit("/v1/functions/ship/jobs?after-unique="+url.QueryEscape("order/order-1"), "s")
	require.Equal(t, "waiting", ship.State)
	byHeader := submit("/v1/functions/ship/jobs", "h", "Gearwork-After-Unique", "order/order-1")
	require.Equal(t, "waiting", byHeader.State)
	resp := tb.do(t, "POST", "/v1/jobs:batch", strings.NewReader(
		`{"function":"order","payload":"p","after_unique":["order-1"]}`+"\n"))
	paid := decode[batchResult](t, resp)
	require.Nil(t, paid.Error)

	wo, ws := newTestWorker(t, tb.b, "order"), newTestWorker(t, tb.b, "ship")
	got := wo.grab(t)
	require.Equal(t, order.Handle, tb.b.Handle(got.Seq), "the others wait for it")
	require.NoError(t, tb.b.Finish(wo.sess, got.Seq, broker.Complete, nil))
	got = wo.grab(t)
	require.Equal(t, paid.Handle, tb.b.Handle(got.Seq))
	require.NoError(t, tb.b.Finish(wo.sess, got.Seq, broker.Complete, nil))
	for _, want := range []string{ship.Handle, byHeader.Handle} {
		got := ws.grab(t)
		require.Equal(t, want, tb.b.Handle(got.Seq))
		require.NoError(t, tb.b.Finish(ws.sess, got.Seq, broker.Complete, nil))
	}
	requireProblem(t, tb.do(t, "POST", "/v1/functions/ship/jobs?after-unique=order/order-9", strings.NewReader("x")),
		http.StatusBadRequest, `no live job of "order" has the unique "order-9"`)
	requireProblem(t, tb.do(t, "POST", "/v1/functions/ship/jobs?after-unique=order/", strings.NewReader("x")),
		http.StatusBadRequest, "names no unique")
}
