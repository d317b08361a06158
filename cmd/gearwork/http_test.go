package main

import (
	"flag"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/internal/testcert"
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

func TestHTTPAnswersToItsCertificateNames(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := testcert.NewCA(t, "servers")
	cert, key := ca.Client(t, "gw", "gw.example", "*.gw.example").WriteFiles(t, dir, "server")
	h, err := httpFlags{addr: "127.0.0.1:0", allowedHosts: "proxy.example"}.load(tlsFiles{cert: cert, key: key}, time.Second, false)
	require.NoError(t, err)
	require.Equal(t, []string{"proxy.example", "gw.example", "*.gw.example"}, h.cfg.AllowedHosts)
}
