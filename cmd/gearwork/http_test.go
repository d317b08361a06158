package main

import (
	"flag"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestHTTPAllowedHostsFromFlagAndEnvironment(t *testing.T) {
	load := func(args ...string) []string {
		t.Helper()
		var f httpFlags
		fs := flag.NewFlagSet("serve", flag.ContinueOnError)
		f.register(fs)
		require.NoError(t, parseFlags(fs, args))
		h, err := f.load(tlsFiles{}, time.Second, false)
		require.NoError(t, err)
		return h.cfg.AllowedHosts
	}
	require.Empty(t, load())
	require.Equal(t, []string{"gw.example", "proxy.internal"}, load("--http-allowed-hosts", "gw.example, proxy.internal,"))
	t.Setenv("GEARWORK_HTTP_ALLOWED_HOSTS", "from-env.example")
	require.Equal(t, []string{"from-env.example"}, load())
	require.Equal(t, []string{"flag.example"}, load("--http-allowed-hosts=flag.example"), "a flag wins over the environment")
}
