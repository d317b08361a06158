package httpapi

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/internal/broker"
	"github.com/gearwork/gearwork/internal/testlog"
)

// TestUnknownQueryParameter: a query parameter the route does not document
// is refused with a problem naming it and the ones the route takes,
// before anything happens (no job is queued).
func TestUnknownQueryParameter(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	p := requireProblem(t, tb.do(t, "POST", "/v1/functions/f/jobs?priorty=high", strings.NewReader("x")),
		http.StatusBadRequest, `unknown query parameter "priorty"`)
	require.Equal(t, problemTypeBase+"unknown-parameter", p.Type)
	require.Contains(t, p.Detail, "priority")
	require.Zero(t, tb.b.JobCount(), "the refused submit queued nothing")
	requireProblem(t, tb.do(t, "POST", "/v1/functions/f/resume?until=1h", nil), http.StatusBadRequest, "takes none")
	requireProblem(t, tb.do(t, "GET", "/v1/workers?al=true", nil), http.StatusBadRequest, `"al"`)
	p = requireProblem(t, tb.do(t, "GET", "/v1/workers?all=maybe", nil), http.StatusBadRequest, `all "maybe": use true or false`)
	require.Equal(t, problemTypeBase+"invalid-option", p.Type)
	requireProblem(t, tb.do(t, "GET", "/v1/dead-letters?fn=x", nil), http.StatusBadRequest, "function, limit")

	// Documented parameters pass, in the query as the docs spell them.
	resp := tb.do(t, "POST", "/v1/functions/f/jobs?priority=high&unique=u1&attempts=3", strings.NewReader("x"))
	require.Equal(t, http.StatusAccepted, resp.StatusCode)
	require.Equal(t, http.StatusOK, tb.do(t, "GET", "/v1/workers?all=true", nil).StatusCode)
	// The dashboard's files are not API routes: a cache-busting query is fine.
	require.Equal(t, http.StatusOK, tb.do(t, "GET", "/assets/app.js?v=2", nil).StatusCode)
}

// TestEveryReadQueryParameterIsDocumented: the query parameters each
// handler reads are in openapi.json (else checkQuery would refuse them).
func TestEveryReadQueryParameterIsDocumented(t *testing.T) {
	t.Parallel()
	params := queryParams()
	for _, want := range []struct{ op, param string }{
		{"POST /v1/functions/{fn}/jobs", "wait"}, {"POST /v1/functions/{fn}/jobs", "priority"},
		{"POST /v1/functions/{fn}/jobs", "unique"}, {"POST /v1/functions/{fn}/jobs", "run-at"},
		{"POST /v1/functions/{fn}/jobs", "attempts"}, {"POST /v1/functions/{fn}/jobs", "timeout"},
		{"POST /v1/functions/{fn}/jobs", "ordering-key"},
		{"GET /v1/jobs/{handle}/events", "last-event-id"}, {"GET /v1/jobs/{handle}/events", "access_token"},
		{"GET /v1/stream", "access_token"}, {"GET /v1/workers", "all"},
		{"GET /v1/dead-letters", "function"}, {"GET /v1/dead-letters", "limit"}, {"DELETE /v1/dead-letters", "function"},
		{"POST /v1/functions/{fn}/pause", "until"}, {"POST /v1/functions/{fn}/grab", "wait"},
		{"POST /v1/functions/{fn}/grab", "lease"}, {"POST /v1/jobs/{handle}/complete", "lease"},
		{"POST /v1/jobs/{handle}/fail", "lease"}, {"POST /v1/jobs/{handle}/status", "lease"},
		{"POST /v1/jobs/{handle}/data", "lease"}, {"POST /v1/jobs/{handle}/data", "warning"},
	} {
		require.Contains(t, params[want.op], want.param, want.op)
	}
}

// TestPauseUnknownFunctionAndDuration: pausing or resuming a function the
// server does not know is a 404 problem and creates nothing; until= takes
// a duration as well as an RFC 3339 time.
func TestPauseUnknownFunctionAndDuration(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	p := requireProblem(t, tb.do(t, "POST", "/v1/functions/nosuch/pause", nil), http.StatusNotFound, `unknown function "nosuch"`)
	require.Equal(t, problemTypeBase+"function-not-found", p.Type)
	requireProblem(t, tb.do(t, "POST", "/v1/functions/nosuch/resume", nil), http.StatusNotFound, `unknown function "nosuch"`)
	fns := decode[struct{ Functions []functionJSON }](t, tb.do(t, "GET", "/v1/functions", nil))
	require.Empty(t, fns.Functions, "no phantom function")
	body := new(bytes.Buffer)
	resp := tb.do(t, "GET", "/metrics", nil)
	_, _ = body.ReadFrom(resp.Body)
	require.NotContains(t, body.String(), "nosuch")

	decode[jobJSON](t, tb.do(t, "POST", "/v1/functions/mail/jobs", nil))
	before := time.Now()
	require.Equal(t, http.StatusNoContent, tb.do(t, "POST", "/v1/functions/mail/pause?until=90m", nil).StatusCode)
	fns = decode[struct{ Functions []functionJSON }](t, tb.do(t, "GET", "/v1/functions", nil))
	require.True(t, fns.Functions[0].Paused)
	require.WithinRange(t, *fns.Functions[0].PausedUntil, before.Add(90*time.Minute-time.Second), time.Now().Add(90*time.Minute+time.Second))
}

// TestErrorAnswersAreLogged: a client error (4xx) is logged at debug
// level with the route and the reason; a server error as a warning (an
// error for 500).
func TestErrorAnswersAreLogged(t *testing.T) {
	t.Parallel()
	var logs testlog.Buffer
	tb := setup(t, func(c *Config) {
		c.Logger = slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	requireProblem(t, tb.do(t, "POST", "/v1/functions/f/jobs?priority=urgent", nil), http.StatusBadRequest, "urgent")
	var found map[string]any
	for _, l := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		var m map[string]any
		require.NoError(t, json.Unmarshal([]byte(l), &m))
		if m["msg"] == "httpapi: error answer" {
			found = m
		}
	}
	require.NotNil(t, found, logs.String())
	require.Equal(t, "DEBUG", found["level"])
	require.EqualValues(t, 400, found["status"])
	require.Equal(t, "POST /v1/functions/{fn}/jobs", found["route"])
	require.Contains(t, found["error"], "urgent")

	// The level by status, with a logger that shows only warnings.
	var warn testlog.Buffer
	s := &Server{log: slog.New(slog.NewTextHandler(&warn, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	r := httptest.NewRequest("GET", "/v1/functions", nil)
	s.logProblem(r, "GET /v1/functions", 404, errorf(404, "x", "client mistake"))
	s.logProblem(r, "GET /v1/functions", 503, errorf(503, "x", "store down"))
	s.logProblem(r, "GET /v1/functions", 500, errorf(500, "x", "bug"))
	require.NotContains(t, warn.String(), "client mistake", "4xx is below warn")
	require.Contains(t, warn.String(), `level=WARN msg="httpapi: error answer" status=503`)
	require.Contains(t, warn.String(), `level=ERROR msg="httpapi: error answer" status=500`)
}

// TestOpenAPIDocument: every operation has an operationId, unique and
// usable as a method name; Redocly's linter accepts the document (the
// OpenAPI 3.1 structure and its operationId rules), and openapi-typescript
// generates client types from it that tsc compiles.
func TestOpenAPIDocument(t *testing.T) {
	t.Parallel()
	var doc struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	require.NoError(t, json.Unmarshal(openapiJSON, &doc))
	ids := map[string]string{}
	ident := regexp.MustCompile(`^[a-z][A-Za-z0-9]*$`)
	for path, ops := range doc.Paths {
		for method, raw := range ops {
			var op struct {
				OperationID string `json:"operationId"`
			}
			require.NoError(t, json.Unmarshal(raw, &op))
			where := strings.ToUpper(method) + " " + path
			require.Regexp(t, ident, op.OperationID, "%s: operationId", where)
			other, dup := ids[op.OperationID]
			require.False(t, dup, "operationId %s of %s is also %s's", op.OperationID, where, other)
			ids[op.OperationID] = where
		}
	}

	t.Run("tools", func(t *testing.T) {
		tools, err := filepath.Abs("../../tools/openapi")
		require.NoError(t, err)
		bin := filepath.Join(tools, "node_modules", ".bin")
		if _, err := os.Stat(filepath.Join(bin, "redocly")); err != nil {
			if os.Getenv("GEARWORK_ALLOW_SKIP") == "1" {
				t.Skip("the OpenAPI tools are not installed; skipped because GEARWORK_ALLOW_SKIP=1")
			}
			t.Fatal("the OpenAPI tools are not installed: run scripts/deps.sh (npm ci in tools/openapi), or set GEARWORK_ALLOW_SKIP=1 to skip")
		}
		spec, err := filepath.Abs("openapi.json")
		require.NoError(t, err)
		run := func(name string, args ...string) string {
			cmd := exec.Command(filepath.Join(bin, name), args...)
			cmd.Dir = tools
			cmd.Env = append(os.Environ(), "REDOCLY_TELEMETRY=off", "REDOCLY_SUPPRESS_UPDATE_NOTICE=true", "NO_COLOR=1")
			out, err := cmd.CombinedOutput()
			require.NoError(t, err, "%s %s:\n%s", name, strings.Join(args, " "), out)
			return string(out)
		}
		run("redocly", "lint", "--config", "redocly.yaml", spec)
		gen := filepath.Join(t.TempDir(), "gearwork.ts")
		run("openapi-typescript", spec, "-o", gen)
		src, err := os.ReadFile(gen)
		require.NoError(t, err)
		ops := string(src[strings.Index(string(src), "export interface operations {"):])
		for id := range ids {
			require.Contains(t, ops, "\n    "+id+": {", "the generated client has operation %s", id)
		}
		run("tsc", "--noEmit", "--strict", gen)
	})
}

// TestSubmitsRefusedWhileDraining: during a graceful stop no new job is
// accepted over HTTP, single or batch; reading still works.
func TestSubmitsRefusedWhileDraining(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	tb.b.Drain()
	p := requireProblem(t, tb.do(t, "POST", "/v1/functions/f/jobs", strings.NewReader("x")), http.StatusServiceUnavailable, "shutting down")
	require.Equal(t, problemTypeBase+"shutting-down", p.Type)
	requireProblem(t, tb.do(t, "POST", "/v1/jobs:batch", strings.NewReader(`{"function":"f"}`+"\n")), http.StatusServiceUnavailable, "shutting down")
	require.Zero(t, tb.b.JobCount())
	require.Equal(t, http.StatusOK, tb.do(t, "GET", "/v1/functions", nil).StatusCode)
}

// TestBooleanOptions: every boolean option of the API reads the same way:
// true or 1, false or 0, in any case; a query parameter without a value
// is true; anything else is refused with invalid-option.
func TestBooleanOptions(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	client := tb.b.NewSession("client", make(broker.NoopSignal, 1))
	t.Cleanup(func() { tb.b.CloseSession(client) })
	workers := func(query string) int {
		t.Helper()
		return len(decode[struct{ Workers []workerJSON }](t, tb.do(t, "GET", "/v1/workers"+query, nil)).Workers)
	}
	some, all := workers(""), workers("?all=true")
	require.Greater(t, all, some, "?all=true lists the client too")
	for query, want := range map[string]int{"?all=false": some, "?all=0": some, "?all=FALSE": some,
		"?all": all, "?all=": all, "?all=1": all, "?all=True": all} {
		require.Equal(t, want, workers(query), "GET /v1/workers%s", query)
	}
	for _, v := range []string{"t", "f", "yes", "2"} {
		p := requireProblem(t, tb.do(t, "GET", "/v1/workers?all="+v, nil), http.StatusBadRequest, `all "`+v+`": use true or false`)
		require.Equal(t, problemTypeBase+"invalid-option", p.Type)
	}

	// after-anyway, in the query or its header: a bare one is true (and
	// so refused without after).
	requireProblem(t, tb.do(t, "POST", "/v1/functions/fn/jobs?after-anyway", strings.NewReader("x")),
		http.StatusBadRequest, "after-anyway goes with after")
	requireProblem(t, tb.do(t, "POST", "/v1/functions/fn/jobs?after-anyway=t", strings.NewReader("x")),
		http.StatusBadRequest, `after-anyway "t": use true or false`)
	requireProblem(t, tb.do(t, "POST", "/v1/functions/fn/jobs", strings.NewReader("x"), "Gearwork-After-Anyway", "T"),
		http.StatusBadRequest, `Gearwork-After-Anyway "T": use true or false`)
	require.Zero(t, tb.b.JobCount(), "the refused submits queued nothing")

	// warning, on an HTTP worker's data.
	job := decode[jobJSON](t, tb.do(t, "POST", "/v1/functions/mail/jobs", strings.NewReader("x")))
	g := decode[grabbedJSON](t, tb.do(t, "POST", "/v1/functions/mail/grab?wait=10s", nil))
	require.Equal(t, job.Handle, g.Handle)
	base := "/v1/jobs/" + g.Handle
	requireProblem(t, tb.do(t, "POST", base+"/data?lease="+g.Lease+"&warning=t", strings.NewReader("w")),
		http.StatusBadRequest, `warning "t": use true or false`)
	require.Equal(t, http.StatusNoContent, tb.do(t, "POST", base+"/data?lease="+g.Lease+"&warning", strings.NewReader("w")).StatusCode)
	require.Equal(t, http.StatusNoContent, tb.do(t, "POST", base+"/data?lease="+g.Lease+"&warning=0", strings.NewReader("d")).StatusCode)
	require.Equal(t, http.StatusNoContent, tb.do(t, "POST", base+"/complete?lease="+g.Lease, nil).StatusCode)
	evs := readEvents(t, tb.do(t, "GET", base+"/events", nil).Body)
	require.Equal(t, []string{"1:state", "2:warning", "3:data", "4:complete"}, kinds(evs))
}
