package httpapi

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// TestRouteRulesCoverEveryRoute: every route says what it needs from the
// authorization rules (a route without an entry is refused to every
// client they decide for), and every entry is a route.
func TestRouteRulesCoverEveryRoute(t *testing.T) {
	t.Parallel()
	routes := map[string]bool{}
	for _, rt := range (&Server{}).routeTable() {
		key := rt.method + " " + rt.pattern
		routes[key] = true
		require.NotNil(t, routeRules[key], "%s has no entry in routeRules", key)
	}
	for key := range routeRules {
		require.True(t, routes[key], "routeRules has %s, which is no route", key)
	}
}
