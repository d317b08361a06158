package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/internal/testserver"
)

// TestPolicyResetReturnsToTheConfigFile: a policy changed at run time
// (admin policy FN KEY=VALUE) is stored and wins over the --config file,
// also after a restart; "policy FN reset" ends that, and the function
// follows its policy in the file again, at once and after a restart.
func TestPolicyResetReturnsToTheConfigFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "gearwork.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte("defaults:\n  max_dead_letters: 50\nfunctions:\n  resize:\n    max_attempts: 3\n"), 0o600))
	args := []string{"--store", "pebble:" + filepath.Join(dir, "data"), "--config", cfg}
	srv := testserver.Start(t, args...)
	settings := func(fn string) string {
		t.Helper()
		out, errOut, code := gw(t, "admin", "--servers", srv.Addr, "policy", fn)
		require.Equal(t, 0, code, errOut)
		lines := strings.Split(strings.TrimSpace(out), "\n")
		require.Len(t, lines, 2, out)
		return strings.Join(strings.Fields(lines[1])[1:], " ")
	}
	admin := func(args ...string) {
		t.Helper()
		out, errOut, code := gw(t, append([]string{"admin", "--servers", srv.Addr}, args...)...)
		require.Equal(t, 0, code, errOut)
		require.Equal(t, "OK\n", out)
	}
	restart := func() {
		t.Helper()
		srv.Stop()
		srv = testserver.Start(t, args...)
	}
	fromFile := "explicit active max_attempts=3 max_dead_letters=50"
	require.Equal(t, fromFile, settings("resize"))

	admin("policy", "resize", "max_attempts=7")
	require.Equal(t, "explicit active max_attempts=7 max_dead_letters=50", settings("resize"))
	restart()
	require.Equal(t, "explicit active max_attempts=7 max_dead_letters=50", settings("resize"), "the stored change wins over the file")

	admin("policy", "resize", "reset")
	require.Equal(t, fromFile, settings("resize"), "reset: the file's policy again")
	restart()
	require.Equal(t, fromFile, settings("resize"), "and after a restart")

	// A function without a policy in the file follows the defaults.
	admin("create", "thumb")
	admin("policy", "thumb", "max_attempts=2")
	admin("policy", "thumb", "reset")
	require.Equal(t, "default active max_dead_letters=50", settings("thumb"))
	restart()
	admin("create", "thumb")
	require.Equal(t, "default active max_dead_letters=50", settings("thumb"))
}
