package httpapi

import (
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/internal/auth"
)

// TestRouteRulesCoverEveryRoute: every route says what it needs from the
// authorization rules (a route without a rule is refused to every client
// they decide for).
func TestRouteRulesCoverEveryRoute(t *testing.T) {
	t.Parallel()
	for _, rt := range (&Server{}).routeTable() {
		require.NotNil(t, rt.rule, "%s %s has no rule", rt.method, rt.pattern)
	}
}

// TestRouteRulesDecideEveryRoute: for a client with a verified
// certificate, rules that grant it nothing leave it the routes that show
// what the Gearman port shows every connection, and refuse it every other
// route; rules that grant it everything refuse it none.
func TestRouteRulesDecideEveryRoute(t *testing.T) {
	t.Parallel()
	open := map[string]bool{
		"GET /v1/functions": true, "GET /v1/workers": true, "GET /metrics": true, "GET /healthz": true,
		"GET /readyz": true, "GET /openapi.json": true, "GET /{$}": true, "GET /assets/{file}": true,
	}
	nothing, err := auth.New(auth.Config{Rules: []auth.RuleConfig{
		{Match: auth.MatchConfig{CommonName: []string{"someone-else"}}, Allow: auth.Permissions{Admin: []string{"*"}}},
	}})
	require.NoError(t, err)
	every, err := auth.New(auth.Config{Rules: []auth.RuleConfig{{Match: auth.MatchConfig{Verified: true},
		Allow: auth.Permissions{Submit: []string{"*"}, Serve: []string{"*"}, Admin: []string{"*"}, Read: []string{"*"}}}}})
	require.NoError(t, err)
	cert := &x509.Certificate{Subject: pkix.Name{CommonName: "client"}}
	for _, rt := range (&Server{}).routeTable() {
		key := rt.method + " " + rt.pattern
		r := httptest.NewRequest(rt.method, "/", nil)
		r.RemoteAddr = "192.0.2.7:4730"
		r.TLS = &tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{cert}}, PeerCertificates: []*x509.Certificate{cert}}
		for _, name := range []string{"fn", "handle", "id", "file"} {
			r.SetPathValue(name, "x")
		}
		err := (&Server{cfg: Config{Rules: nothing}}).authorize(r, rt)
		if open[key] {
			require.NoError(t, err, "%s, granted nothing", key)
		} else {
			require.Error(t, err, "%s, granted nothing", key)
			require.Contains(t, err.Error(), "cn=client", key)
		}
		require.NoError(t, (&Server{cfg: Config{Rules: every}}).authorize(r, rt), "%s, granted everything", key)
	}
}
