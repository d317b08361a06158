package httpapi

import (
	"context"
	"errors"
	"io"
	"net/http"
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
	tokens := map[Scope]string{ScopeRead: "t-read", ScopeSubmit: "t-submit", ScopeWork: "t-work", ScopeAdmin: "t-admin"}
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

	// get sends one request and returns its status and what of the body
	// arrives within a second (event streams do not end).
	get := func(rt route, token string) (int, string) {
		t.Helper()
		path := strings.NewReplacer("{fn}", "victim", "{file}", "app.js", "{$}", "").Replace(rt.pattern)
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
			require.NotEqual(t, scopeNone, rt.scope, "%s shows private data without a token", label)
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
		for secretToken, granted := range map[string]Scope{"t-read": ScopeRead, "t-submit": ScopeSubmit,
			"t-work": ScopeWork, "t-all-but-read": ScopeSubmit | ScopeWork} {
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
