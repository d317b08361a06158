package main

import (
	"net/url"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/internal/store/postgres/pgtest"
	"github.com/gearwork/gearwork/internal/testserver"
)

// TestStoreFlagsOfAnotherStore: a flag that only one kind of store reads,
// given a value other than its default for another (on the command line or in its variable), is a usage
// error rather than a setting that silently changes nothing; so is a flag
// of the HTTP API with --http off.
func TestStoreFlagsOfAnotherStore(t *testing.T) {
	t.Parallel()
	serve := func(store string, more ...string) []string {
		return append([]string{"serve", "--listen", "127.0.0.1:0", "--http", "off", "--store", store}, more...)
	}
	pebble := "pebble:" + filepath.Join(t.TempDir(), "data")
	for _, tc := range []struct {
		args []string
		env  string
		want string
	}{
		{serve("memory:", "--sync", "none"), "", "--sync applies to the Pebble store only, not to --store memory:"},
		{serve("memory:"), "GEARWORK_SYNC=interval:50ms", "--sync applies to the Pebble store only, not to --store memory:"},
		{serve("memory:", "--memory-budget", "1GiB"), "", "--memory-budget applies to the Pebble store only"},
		{serve("postgres://gw@db.invalid/gw", "--sync", "interval:50ms"), "", "--sync applies to the Pebble store only, not to --store postgres://"},
		{serve(pebble, "--insert-delay", "5ms"), "", "--insert-delay applies to the PostgreSQL store only, not to --store pebble:"},
		// The HTTP API's settings with the HTTP API off.
		{serve("memory:", "--http-tokens", "tokens.txt"), "", "--http-tokens configures the HTTP API, which --http off disables"},
		{serve("memory:"), "GEARWORK_HTTP_CORS=*", "--http-cors configures the HTTP API, which --http off disables"},
		{serve("memory:", "--http-max-connections-per-address", "8"), "", "--http-max-connections-per-address configures the HTTP API, which --http off disables"},
	} {
		var env []string
		if tc.env != "" {
			env = []string{tc.env}
		}
		out, errOut, code := gwInput(t, "", env, tc.args...)
		require.Equal(t, exitUsage, code, "%v %v: %s", tc.args, env, errOut)
		require.Empty(t, out)
		require.Contains(t, errOut, tc.want)
		require.NotContains(t, errOut, "level=", "refused before anything is logged")
	}
	// Where they apply, they are taken.
	srv := testserver.Start(t, "--store", pebble, "--sync", "none", "--memory-budget", "1GiB")
	require.Regexp(t, `msg="serve: listening" addr=\S+ store=pebble:\S+ sync=none `, srv.Log())
	mem := testserver.Start(t, "--store", "memory:")
	require.Regexp(t, `msg="serve: listening" addr=\S+ store=memory: jobs=0 `, mem.Log(), "no sync for a store that never syncs")
}

// TestServeLogsNoStorePassword: the "listening" line names the PostgreSQL
// store without the password of its URL.
func TestServeLogsNoStorePassword(t *testing.T) {
	t.Parallel()
	u, err := url.Parse(pgtest.Schema(t))
	require.NoError(t, err)
	password, ok := u.User.Password()
	if !ok {
		// A server that trusts its local clients ignores the password.
		password = "not-to-be-logged-8c1f"
		u.User = url.UserPassword(u.User.Username(), password)
	}
	srv := testserver.Start(t, "--store", u.String())
	require.Regexp(t, regexp.MustCompile(`msg="serve: listening" addr=\S+ store="postgres://\S+:xxxxx@`), srv.Log())
	require.NotContains(t, srv.Log(), password)
}

// TestStoreFlagsAtTheirDefaults: a flag of another store, or of the HTTP
// API with --http off, given its default value changes nothing and is
// taken, as before such flags were refused: an empty variable
// (GEARWORK_HTTP_TOKENS= from an environment template whose value is
// unset) or a script's --sync always whatever its --store. Not parallel:
// it sets variables the server inherits.
func TestStoreFlagsAtTheirDefaults(t *testing.T) {
	t.Setenv("GEARWORK_HTTP_TOKENS", "")
	t.Setenv("GEARWORK_MEMORY_BUDGET", "")
	t.Setenv("GEARWORK_INSERT_DELAY", "20ms")
	srv := testserver.Start(t, "--sync", "always")
	require.Regexp(t, `msg="serve: listening" addr=\S+ store=memory: jobs=0 `, srv.Log())
}
