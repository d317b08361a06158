package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/internal/store/postgres/pgtest"
	"github.com/gearwork/gearwork/internal/testserver"
	"github.com/gearwork/gearwork/internal/testwait"
	"github.com/gearwork/gearwork/worker"
)

// gwOK runs gearwork with args, requires it to succeed and returns its
// output.
func gwOK(t *testing.T, args ...string) string {
	t.Helper()
	out, errOut, code := gw(t, args...)
	require.Equal(t, 0, code, "%v: %s", args, errOut)
	return out
}

// TestBatchCommands runs "gearwork admin batch create/close/ID" and
// "gearwork submit --batch" against a real "gearwork serve" on a Pebble
// store, with a Go worker that runs the jobs and the callback.
func TestBatchCommands(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, "--store", "pebble:"+t.TempDir())
	s := "--servers=" + srv.Addr

	var mu sync.Mutex
	var callbacks []string
	cliWorker(t, srv.Addr, "batch-worker", map[string]worker.HandlerFunc{
		"b_row": func(context.Context, *worker.Job) ([]byte, error) { return nil, nil },
		"b_done": func(_ context.Context, j *worker.Job) ([]byte, error) {
			mu.Lock()
			defer mu.Unlock()
			callbacks = append(callbacks, string(j.Payload))
			return nil, nil
		},
	})

	created := gwOK(t, "admin", s, "batch", "create", "on_complete=b_done")
	require.Regexp(t, `^batch \d+\n$`, created)
	id := strings.TrimSpace(strings.TrimPrefix(created, "batch "))
	for _, p := range []string{"1", "2"} {
		require.Regexp(t, `^H:\S+\n$`, gwOK(t, "submit", s, "--batch", id, "b_row", p))
	}
	require.Regexp(t, `^H:\S+\n$`, gwOK(t, "submit", s, "--batch", id, "--unique", "row-3", "b_row", "3"))
	gwOK(t, "admin", s, "batch", "close", id)

	testwait.Until(t, "the on_complete callback", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(callbacks) > 0
	})
	var rows []map[string]any
	require.NoError(t, json.Unmarshal([]byte(gwOK(t, "admin", s, "batch", id, "--json")), &rows))
	require.Len(t, rows, 1)
	for k, v := range map[string]any{"batch": id, "closed": true, "complete": true, "total": 3.0, "succeeded": 3.0,
		"failed": 0.0, "dead": 0.0, "on_complete": "b_done (fired)"} {
		require.Equal(t, v, rows[0][k], k)
	}
	mu.Lock()
	require.Len(t, callbacks, 1)
	require.Contains(t, callbacks[0], `"total":3,"succeeded":3`)
	mu.Unlock()
	require.Contains(t, gwOK(t, "admin", s, "batch", id), "ON_COMPLETE  b_done (fired)")

	_, errOut, code := gw(t, "submit", s, "--batch", id, "b_row", "late")
	require.NotEqual(t, 0, code)
	require.Contains(t, errOut, "batch has completed")
	_, errOut, code = gw(t, "submit", s, "--batch", "x", "b_row")
	require.Equal(t, exitUsage, code)
	require.Contains(t, errOut, "--batch")
	_, errOut, code = gw(t, "admin", s, "batch", "99")
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "UNKNOWN_BATCH")
}

// A batch with a job cancelled will never submit its on_success: every
// view says so (skipped), not that it waits; its on_complete was
// submitted (fired). While a job still runs, both wait.
func TestBatchCallbackStates(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, "--store", "memory:", "--http", "127.0.0.1:0")
	s := "--servers=" + srv.Addr
	base := "http://" + srv.HTTPAddr(t)
	id := strings.TrimSpace(strings.TrimPrefix(gwOK(t, "admin", s, "batch", "create", "on_success=cs_ok", "on_complete=cs_done"), "batch "))
	first := strings.TrimSpace(gwOK(t, "submit", s, "--batch", id, "cs_row", "1"))
	second := strings.TrimSpace(gwOK(t, "submit", s, "--batch", id, "cs_row", "2"))
	gwOK(t, "admin", s, "batch", "close", id)

	type callback struct{ Function, State string }
	views := func() (string, string, callback, callback) {
		t.Helper()
		var rows []map[string]any
		require.NoError(t, json.Unmarshal([]byte(gwOK(t, "admin", s, "batch", id, "--json")), &rows))
		resp, err := http.Get(base + "/v1/batches/" + id)
		require.NoError(t, err)
		defer resp.Body.Close()
		var b struct {
			OnSuccess  callback `json:"on_success"`
			OnComplete callback `json:"on_complete"`
		}
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&b))
		return rows[0]["on_success"].(string), rows[0]["on_complete"].(string), b.OnSuccess, b.OnComplete
	}
	ok, done, okHTTP, doneHTTP := views()
	require.Equal(t, "cs_ok (waiting)", ok)
	require.Equal(t, "cs_done (waiting)", done)
	require.Equal(t, callback{"cs_ok", "waiting"}, okHTTP)
	require.Equal(t, callback{"cs_done", "waiting"}, doneHTTP)

	gwOK(t, "admin", s, "cancel", first)
	ok, done, okHTTP, doneHTTP = views()
	require.Equal(t, "cs_ok (skipped)", ok, "a cancelled job: on_success never comes")
	require.Equal(t, "cs_done (waiting)", done, "a job is still to end")
	require.Equal(t, callback{"cs_ok", "skipped"}, okHTTP)
	require.Equal(t, callback{"cs_done", "waiting"}, doneHTTP)

	gwOK(t, "admin", s, "cancel", second)
	ok, done, okHTTP, doneHTTP = views()
	require.Equal(t, "cs_ok (skipped)", ok)
	require.Equal(t, "cs_done (fired)", done)
	require.Equal(t, callback{"cs_ok", "skipped"}, okHTTP)
	require.Equal(t, callback{"cs_done", "fired"}, doneHTTP)
}

// --batch-retention: a completed batch is forgotten once it has passed.
func TestBatchRetentionFlag(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, "--batch-retention", "1s")
	s := "--servers=" + srv.Addr
	out, errOut, code := gw(t, "admin", s, "batch", "create")
	require.Equal(t, 0, code, errOut)
	id := strings.TrimSpace(strings.TrimPrefix(out, "batch "))
	_, errOut, code = gw(t, "admin", s, "batch", "close", id)
	require.Equal(t, 0, code, errOut)
	out, errOut, code = gw(t, "admin", s, "batch", id)
	require.Equal(t, 0, code, errOut)
	require.Regexp(t, `COMPLETE +true`, out)
	testwait.Until(t, "the batch to be forgotten", func() bool {
		_, errOut, code := gw(t, "admin", s, "batch", id)
		return code == 1 && strings.Contains(errOut, "UNKNOWN_BATCH")
	})
}

// gearwork submit --after: a job waits for the one it names, and is
// cancelled when that one dies.
func TestSubmitAfter(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, "--store", "pebble:"+t.TempDir())
	s := "--servers=" + srv.Addr
	submit := func(args ...string) string {
		t.Helper()
		return strings.TrimSpace(gwOK(t, append([]string{"submit", s}, args...)...))
	}
	good := submit("--background", "s_after", "good")
	bad := submit("--background", "s_after", "bad")
	afterGood := submit("--after", good, "s_after", "after good")
	afterBad := submit("--after", bad, "s_after", "after bad")
	var mu sync.Mutex
	var ran []string
	cliWorker(t, srv.Addr, "after-worker", map[string]worker.HandlerFunc{
		"s_after": func(_ context.Context, j *worker.Job) ([]byte, error) {
			mu.Lock()
			defer mu.Unlock()
			ran = append(ran, string(j.Payload))
			if string(j.Payload) == "bad" {
				return nil, errors.New("bad")
			}
			return nil, nil
		},
	})
	testwait.Until(t, "the job after the good one", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return slices.Contains(ran, "after good")
	})
	var out string
	testwait.Until(t, "the job after the bad one to be cancelled", func() bool {
		out, _, _ = gw(t, "admin", s, "job", afterBad, "--json")
		return strings.Contains(out, `"state": "cancelled"`)
	})
	require.Contains(t, out, "dependency "+bad+" dead")
	mu.Lock()
	require.NotContains(t, ran, "after bad")
	mu.Unlock()
	require.NotEmpty(t, afterGood)

	_, errOut, code := gw(t, "submit", s, "--after", "nonsense", "s_after")
	require.Equal(t, exitUsage, code)
	require.Contains(t, errOut, "not a job handle")
	_, errOut, code = gw(t, "submit", s, "--after", good, "--batch", "1", "s_after")
	require.Equal(t, exitUsage, code)
	require.Contains(t, errOut, "cannot go together")
}

// TestSubmitAfterUnique makes a job wait for one named by its function
// and unique, with gearwork submit and over HTTP, on each store (in
// shared mode the waiting job is in PostgreSQL only, and reads back as
// waiting); a unique no live job has is refused by the server.
func TestSubmitAfterUnique(t *testing.T) {
	t.Parallel()
	onEachStore(t, func(t *testing.T, srv *testserver.Server, s, base string) {
		gwOK(t, "submit", s, "--background", "--unique", "order-1", "s_order", "o")
		gwOK(t, "submit", s, "--after-unique", "s_order/order-1", "s_ship", "s")
		resp, err := http.Post(base+"/v1/functions/s_ship/jobs?after-unique="+url.QueryEscape("s_order/order-1"),
			"text/plain", strings.NewReader("h"))
		require.NoError(t, err)
		var job struct{ Handle, State string }
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&job))
		resp.Body.Close()
		require.Equal(t, http.StatusAccepted, resp.StatusCode)
		require.Equal(t, "waiting", job.State, "the answer to the submit")
		job.State = ""
		resp, err = http.Get(base + "/v1/jobs/" + url.PathEscape(job.Handle))
		require.NoError(t, err)
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&job))
		resp.Body.Close()
		require.Equal(t, "waiting", job.State)

		var mu sync.Mutex
		var ran []string
		record := func(_ context.Context, j *worker.Job) ([]byte, error) {
			mu.Lock()
			defer mu.Unlock()
			ran = append(ran, string(j.Payload))
			return nil, nil
		}
		cliWorker(t, srv.Addr, "after-unique-worker", map[string]worker.HandlerFunc{"s_order": record, "s_ship": record})
		testwait.Until(t, "the jobs after the order", func() bool {
			mu.Lock()
			defer mu.Unlock()
			return len(ran) == 3
		})
		mu.Lock()
		require.Equal(t, "o", ran[0], "the others ran after the order job")
		mu.Unlock()

		_, errOut, code := gw(t, "submit", s, "--after-unique", "s_order/order-2", "s_ship")
		require.NotZero(t, code)
		require.Contains(t, errOut, `no live job of "s_order" has the unique "order-2"`)
		_, errOut, code = gw(t, "submit", s, "--after-unique", "nonsense", "s_ship")
		require.Equal(t, exitUsage, code)
		require.Contains(t, errOut, "FUNCTION/UNIQUE")
		_, errOut, code = gw(t, "submit", s, "--after-unique", "s_order/order-1", "--unique", "mine", "s_ship")
		require.Equal(t, exitUsage, code)
		require.Contains(t, errOut, "cannot go together")
	})
}

// onEachStore runs fn in a parallel subtest per store kind, against a
// real "gearwork serve" on that store with its HTTP API on; s is the
// --servers flag and base the HTTP base URL.
func onEachStore(t *testing.T, fn func(t *testing.T, srv *testserver.Server, s, base string)) {
	t.Helper()
	for _, kind := range storeKinds {
		t.Run(kind.name, func(t *testing.T) {
			t.Parallel()
			srv := testserver.Start(t, "--store", kind.store(t), "--http", "127.0.0.1:0")
			fn(t, srv, "--servers="+srv.Addr, "http://"+srv.HTTPAddr(t))
		})
	}
}

// storeKinds are the stores a test runs a real server on, each giving
// the --store value for a test.
var storeKinds = []struct {
	name  string
	store func(t *testing.T) string
}{
	{"memory", func(*testing.T) string { return "memory:" }},
	{"pebble", func(t *testing.T) string { return "pebble:" + t.TempDir() }},
	{"postgres", func(t *testing.T) string { return pgtest.Schema(t) }},
}

// TestBatchFailedJobsListing lists a batch's failed jobs (dead letters,
// under the default policy), all of them, a page at a time, over HTTP
// (GET /v1/batches/{id}/jobs?state=dead) and with "gearwork admin batch
// ID --state dead", from a real "gearwork serve" on each store: the
// records of ended jobs carry their batch.
func TestBatchFailedJobsListing(t *testing.T) {
	t.Parallel()
	onEachStore(t, func(t *testing.T, srv *testserver.Server, s, base string) {
		var mu sync.Mutex
		var done []string
		cliWorker(t, srv.Addr, "listing-worker", map[string]worker.HandlerFunc{
			"bl_row": func(_ context.Context, j *worker.Job) ([]byte, error) {
				if strings.HasPrefix(string(j.Payload), "bad") {
					return nil, errors.New("bad row")
				}
				return nil, nil
			},
			"bl_done": func(_ context.Context, j *worker.Job) ([]byte, error) {
				mu.Lock()
				defer mu.Unlock()
				done = append(done, string(j.Payload))
				return nil, nil
			},
		})
		id := strings.TrimSpace(strings.TrimPrefix(gwOK(t, "admin", s, "batch", "create", "on_complete=bl_done"), "batch "))
		var bad []string
		for i := range 7 {
			p := fmt.Sprintf("good %d", i)
			if i%3 != 0 {
				p = fmt.Sprintf("bad %d", i)
			}
			h := strings.TrimSpace(gwOK(t, "submit", s, "--batch", id, "bl_row", p))
			if strings.HasPrefix(p, "bad") {
				bad = append(bad, h)
			}
		}
		outside := strings.TrimSpace(gwOK(t, "submit", s, "--background", "bl_row", "bad, outside the batch"))
		gwOK(t, "admin", s, "batch", "close", id)
		testwait.Until(t, "the on_complete callback", func() bool {
			mu.Lock()
			defer mu.Unlock()
			return len(done) > 0
		})
		mu.Lock()
		require.Contains(t, done[0], `"dead":4`)
		mu.Unlock()

		// Over HTTP, two at a time.
		var listed []string
		cursor := ""
		for range 10 {
			resp, err := http.Get(base + "/v1/batches/" + id + "/jobs?state=dead&limit=2&cursor=" + url.QueryEscape(cursor))
			require.NoError(t, err)
			require.Equal(t, http.StatusOK, resp.StatusCode)
			var page struct {
				Jobs []struct {
					Handle, State, Batch string
				}
				Next string `json:"next_cursor"`
			}
			require.NoError(t, json.NewDecoder(resp.Body).Decode(&page))
			resp.Body.Close()
			for _, j := range page.Jobs {
				require.Equal(t, []string{"dead", id}, []string{j.State, j.Batch}, j.Handle)
				listed = append(listed, j.Handle)
			}
			if cursor = page.Next; cursor == "" {
				break
			}
		}
		require.ElementsMatch(t, bad, listed)
		require.NotContains(t, listed, outside)
		resp, err := http.Get(base + "/v1/batches/999/jobs?state=dead")
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, http.StatusNotFound, resp.StatusCode)

		// With gearwork admin (the admin command "jobs batch=ID").
		var rows []map[string]any
		require.NoError(t, json.Unmarshal([]byte(gwOK(t, "admin", s, "batch", id, "--state", "dead", "--json")), &rows))
		var handles []string
		for _, r := range rows {
			handles = append(handles, r["handle"].(string))
		}
		require.ElementsMatch(t, bad, handles)
		out := gwOK(t, "admin", s, "jobs", "--batch", id, "--state", "complete")
		require.Equal(t, 3, strings.Count(out, "bl_row"), out)
	})
}

// Two servers on one PostgreSQL store: a queued job that no server has
// claimed is looked up by its handle on either, through the admin command
// and the HTTP API alike (not "no job": GET_STATUS knows it).
func TestSharedQueuedJobIsLookedUpOnEveryServer(t *testing.T) {
	t.Parallel()
	store := pgtest.Schema(t)
	a := testserver.Start(t, "--store", store, "--handle-prefix", "H:a:", "--http", "127.0.0.1:0")
	b := testserver.Start(t, "--store", store, "--handle-prefix", "H:b:", "--http", "127.0.0.1:0")
	out, errOut, code := gw(t, "submit", "--servers="+a.Addr, "--background", "--priority", "high", "nobody-yet", "p")
	require.Zero(t, code, errOut)
	handle := strings.TrimSpace(out)
	for _, srv := range []*testserver.Server{a, b} {
		out, errOut, code = gw(t, "admin", "--servers="+srv.Addr, "--json", "job", handle)
		require.Zero(t, code, "%s: %s", srv.Addr, errOut)
		var rows []map[string]any
		require.NoError(t, json.Unmarshal([]byte(out), &rows), out)
		require.Len(t, rows, 1)
		require.Equal(t, "queued", rows[0]["state"], out)
		require.Equal(t, "high", rows[0]["priority"], out)

		resp, err := http.Get("http://" + srv.HTTPAddr(t) + "/v1/jobs/" + handle)
		require.NoError(t, err)
		var job struct{ State, Function string }
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&job))
		resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode)
		require.Equal(t, "queued", job.State)
		require.Equal(t, "nobody-yet", job.Function)
	}
}
