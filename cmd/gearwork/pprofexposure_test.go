package main

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// TestServeRefusesExposedPprof: the profiling port has no authentication,
// and /debug/pprof/cmdline answers the command line, where a --store URL
// carries the PostgreSQL password (postgres://user:secret@host/db): a
// non-loopback --pprof is refused at start as the other ports are, unless
// --insecure accepts the risk. It was served to anyone who could reach it.
func TestServeRefusesExposedPprof(t *testing.T) {
	t.Parallel()
	out, errOut, code := gw(t, "serve", "--store", "memory:", "--listen", "127.0.0.1:0", "--http", "off",
		"--pprof", "0.0.0.0:0")
	require.Equal(t, exitUsage, code, errOut)
	require.Empty(t, out)
	require.Contains(t, errOut, "refusing to listen on 0.0.0.0:0 (--pprof) without authentication")
	require.Contains(t, errOut, "--pprof 127.0.0.1:6060")
	require.Contains(t, errOut, "--insecure")
}
