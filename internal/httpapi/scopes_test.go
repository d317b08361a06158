package httpapi

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/internal/broker"
)

// TestRouteTableScopes walks the route table with tokens configured:
// every route but the public ones needs a token with its scope; no route
// that changes state is open to the read scope; and whatever shows a
// payload, a result or an error text needs a token with the read scope
// at least (the Gearman port's read grant), found by looking for them in
// every GET answer rather than trusting the table.
func TestRouteTableScopes(t *testing.T) {
	t.Parallel()
	const (
		payload = "SECRET-PAYLOAD"
		errText = "SECRET-ERROR"
		result  = "SECRET-RESULT"
	)
	tokens := map[Scope]string{ScopeRead: "t-read", ScopeSubmit: "t-submit", ScopeWork: "t-work", ScopeAdmin: "t-admin",
		ScopeMetrics: "t-metrics"}
	tb := setup(t, func(c *Config) {
		for s, secret := range tokens {
			c.Tokens = append(c.Tokens, NewToken(secret, secret, s))
		}
		c.Tokens = append(c.Tokens, NewToken("all-but", "t-all-but-read", ScopeSubmit|ScopeWork))
	})
	admin := []string{"Authorization", "Bearer t-admin"}
	w := newTestWorker(t, tb.b, "victim")
	dead := decode[jobJSON](t, tb.do(t, "POST", "/v1/functions/victim/jobs?attempts=1", strings.NewReader(payload), admin...))
	a := w.grab(t)
	require.NoError(t, tb.b.Finish(w.sess, a.Seq, broker.Exception, []byte(errText)))
	done := decode[jobJSON](t, tb.do(t, "POST", "/v1/functions/victim/jobs", strings.NewReader("fine"), admin...))
	a = w.grab(t)
	require.NoError(t, tb.b.Finish(w.sess, a.Seq, broker.Complete, []byte(result)))
	// A batch whose callback carries private data.
	batch, err := tb.b.CreateBatch(context.Background(), broker.BatchParams{
		OnComplete: broker.Callback{Function: "victim", Payload: []byte(payload)}})
	require.NoError(t, err)

	// get sends one request and returns its status and what of the body
	// arrives within a second (event streams do not end).
	get := func(rt route, token string) (int, string) {
		t.Helper()
		path := strings.NewReplacer("{fn}", "victim", "{file}", "app.js", "{$}", "", "{id}", strconv.FormatUint(batch, 10)).Replace(rt.pattern)
		handle := done.Handle
		if strings.Contains(path, "dead-letters") {
			handle = dead.Handle
		}
		path = strings.ReplaceAll(path, "{handle}", handle)
		if strings.HasSuffix(path, "/grab") {
			path += "?wait=1ms"
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, rt.method, tb.ts.URL+path, strings.NewReader(""))
		require.NoError(t, err)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := tb.ts.Client().Do(req)
		require.NoError(t, err, rt.method+" "+path)
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil && !errors.Is(err, context.DeadlineExceeded) {
			require.NoError(t, err)
		}
		return resp.StatusCode, string(body)
	}
	secret := func(body string) bool {
		return strings.Contains(body, payload) || strings.Contains(body, errText) || strings.Contains(body, result) ||
			strings.Contains(body, "U0VDUkVU") // base64 of "SECRET"
	}

	var shown int
	for _, rt := range tb.srv.routes {
		label := rt.method + " " + rt.pattern
		if rt.method != http.MethodGet {
			require.NotContains(t, []Scope{scopeNone, ScopeRead}, rt.scope, "%s changes state but needs no write scope", label)
			continue
		}
		status, body := get(rt, "t-admin")
		require.Less(t, status, 300, label)
		if secret(body) {
			shown++
			require.NotContains(t, []Scope{scopeNone, ScopeMetrics}, rt.scope, "%s shows private data without the read scope", label)
		}
	}
	require.GreaterOrEqual(t, shown, 3, "the job, its events and the dead letters show private data to an admin")

	for _, rt := range tb.srv.routes {
		label := rt.method + " " + rt.pattern
		if rt.scope == scopeNone {
			status, body := get(rt, "")
			require.Less(t, status, 300, label)
			require.False(t, secret(body), label)
			continue
		}
		status, _ := get(rt, "")
		require.Equal(t, http.StatusUnauthorized, status, label)
		for secretToken, granted := range map[string]Scope{"t-read": ScopeRead | ScopeMetrics, "t-submit": ScopeSubmit,
			"t-work": ScopeWork, "t-all-but-read": ScopeSubmit | ScopeWork, "t-metrics": ScopeMetrics} {
			if granted&rt.scope != 0 {
				continue
			}
			status, body := get(rt, secretToken)
			require.Equal(t, http.StatusForbidden, status, "%s with scopes %s", label, granted)
			require.False(t, secret(body), label)
		}
		status, _ = get(rt, tokens[rt.scope])
		require.NotContains(t, []int{http.StatusUnauthorized, http.StatusForbidden}, status, "%s with the %s scope", label, rt.scope)
	}
}

// TestCancelNeedsTheAdminScope: cancelling a job changes another party's
// job, so it needs what the Gearman port's "cancel job" needs (admin), not
// the submit scope any client has; a refused cancel leaves the job queued.
func TestCancelNeedsTheAdminScope(t *testing.T) {
	t.Parallel()
	tb := setup(t, func(c *Config) {
		c.Tokens = append(c.Tokens, NewToken("web", "t-submit", ScopeSubmit), NewToken("ops", "t-admin", ScopeAdmin))
	})
	job := decode[jobJSON](t, tb.do(t, "POST", "/v1/functions/f/jobs", nil, "Authorization", "Bearer t-submit"))
	requireProblem(t, tb.do(t, "DELETE", "/v1/jobs/"+job.Handle, nil, "Authorization", "Bearer t-submit"),
		http.StatusForbidden, "do not include admin")
	got := decode[jobJSON](t, tb.do(t, "GET", "/v1/jobs/"+job.Handle, nil, "Authorization", "Bearer t-admin"))
	require.Equal(t, "queued", got.State, "a refused cancel leaves the job alone")
	resp := tb.do(t, "DELETE", "/v1/jobs/"+job.Handle, nil, "Authorization", "Bearer t-admin")
	require.Equal(t, http.StatusNoContent, resp.StatusCode)
}

// TestMetricsScope: a token for a Prometheus scraper (the metrics scope)
// reads /metrics and nothing else; read and admin tokens read it too.
func TestMetricsScope(t *testing.T) {
	t.Parallel()
	tb := setup(t, func(c *Config) {
		c.Tokens = append(c.Tokens, NewToken("prom", "t-metrics", ScopeMetrics), NewToken("r", "t-read", ScopeRead),
			NewToken("ops", "t-admin", ScopeAdmin), NewToken("web", "t-submit", ScopeSubmit))
	})
	job := decode[jobJSON](t, tb.do(t, "POST", "/v1/functions/f/jobs", strings.NewReader("SECRET"), "Authorization", "Bearer t-submit"))
	for _, tok := range []string{"t-metrics", "t-read", "t-admin"} {
		resp := tb.do(t, "GET", "/metrics", nil, "Authorization", "Bearer "+tok)
		require.Equal(t, http.StatusOK, resp.StatusCode, tok)
	}
	requireProblem(t, tb.do(t, "GET", "/metrics", nil, "Authorization", "Bearer t-submit"), http.StatusForbidden, "metrics")
	for _, path := range []string{"/v1/jobs/" + job.Handle, "/v1/jobs", "/v1/dead-letters", "/v1/functions"} {
		requireProblem(t, tb.do(t, "GET", path, nil, "Authorization", "Bearer t-metrics"), http.StatusForbidden, "read")
	}
	scopes, err := ParseScopes("metrics")
	require.NoError(t, err)
	require.Equal(t, ScopeMetrics, scopes)
}
