package main

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/client"
	"github.com/gearwork/gearwork/internal/gearmantest"
	"github.com/gearwork/gearwork/internal/testserver"
	"github.com/gearwork/gearwork/internal/testwait"
	"github.com/gearwork/gearwork/worker"
)

// TestVersionFlag: --version, -v and "version" print the version, the
// commit and the Go version the binary was built with.
func TestVersionFlag(t *testing.T) {
	t.Parallel()
	var first string
	for _, arg := range []string{"--version", "-v", "version"} {
		out, errOut, code := gw(t, arg)
		require.Equal(t, 0, code, errOut)
		require.Regexp(t, `^gearwork \S+ \(commit \S+, go1\.\d+\S* \S+/\S+\)\n$`, out, arg)
		require.Contains(t, out, runtime.Version(), "the test and the binary are built by the same Go")
		if first == "" {
			first = out
		}
		require.Equal(t, first, out, arg)
	}
}

// TestVersionFromBuildInfo: a binary installed from a module version
// reports that version and its commit; a local build the source tree's
// version and the VCS revision.
func TestVersionFromBuildInfo(t *testing.T) {
	t.Parallel()
	v := versionFrom(&debug.BuildInfo{GoVersion: "go1.99.1", Main: debug.Module{Version: "v1.2.3"}})
	require.Equal(t, versionInfo{Version: "v1.2.3", Commit: "unknown", Go: "go1.99.1"}, v)
	v = versionFrom(&debug.BuildInfo{GoVersion: "go1.99.1", Main: debug.Module{Version: "v0.0.0-20261206120000-abcdef123456"}})
	require.Equal(t, "abcdef123456", v.Commit)
	v = versionFrom(&debug.BuildInfo{GoVersion: "go1.99.1", Main: debug.Module{Version: "(devel)"},
		Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "0123abcd"}, {Key: "vcs.modified", Value: "true"}}})
	require.Equal(t, versionInfo{Version: version, Commit: "0123abcd-dirty", Go: "go1.99.1"}, v)
	require.Equal(t, "gearwork "+version+" (commit unknown, "+runtime.Version()+" "+runtime.GOOS+"/"+runtime.GOARCH+")", versionFrom(nil).String())
}

// TestHelpOfEveryCommand: each --help shows flags as the docs write them
// (--flag), no hidden alias, and the one exit code table; it exits 0.
func TestHelpOfEveryCommand(t *testing.T) {
	t.Parallel()
	out, _, code := gw(t, "--help")
	require.Equal(t, 0, code)
	require.Contains(t, out, exitTable)
	for _, c := range commands() {
		_, errOut, code := gw(t, c.name, "--help")
		require.Equal(t, 0, code, c.name)
		require.Contains(t, errOut, "Usage: gearwork "+c.name, c.name)
		require.True(t, strings.HasSuffix(errOut, exitTable), "%s --help ends with the exit code table:\n%s", c.name, errOut)
		for _, l := range strings.Split(errOut, "\n") {
			require.False(t, strings.HasPrefix(l, "  -") && !strings.HasPrefix(l, "  --"), "%s --help: single-dash flag %q", c.name, l)
		}
		if c.name != "version" {
			require.Contains(t, errOut, "\n  --", c.name)
		}
	}
	_, errOut, _ := gw(t, "bench", "--help")
	require.Contains(t, errOut, "  --servers host:port")
	require.NotContains(t, errOut, "  --server ", "the old name is a hidden alias")
	_, errOut, _ = gw(t, "admin", "--help")
	require.NotContains(t, errOut, "until a restart")
	require.Contains(t, errOut, "survives a restart")
}

// TestUnknownFlag: an unknown flag is one line of error and one line
// pointing to --help, with the usage exit code; the same for unknown
// commands.
func TestUnknownFlag(t *testing.T) {
	t.Parallel()
	for _, c := range commands() {
		out, errOut, code := gw(t, c.name, "--bogus")
		require.Equal(t, exitUsage, code, c.name)
		require.Empty(t, out)
		require.Equal(t, "gearwork "+c.name+": unknown flag --bogus\nRun \"gearwork "+c.name+" --help\" for its flags.\n", errOut)
	}
	_, errOut, code := gw(t, "serve", "--listen")
	require.Equal(t, exitUsage, code)
	require.Equal(t, "gearwork serve: flag --listen needs an argument\nRun \"gearwork serve --help\" for its flags.\n", errOut)
	_, errOut, code = gw(t, "bench", "--jobs", "many")
	require.Equal(t, exitUsage, code)
	require.Contains(t, errOut, `gearwork bench: invalid value "many" for --jobs`)
	_, errOut, code = gw(t, "frobnicate")
	require.Equal(t, exitUsage, code)
	require.Equal(t, "gearwork: unknown command \"frobnicate\"\nRun \"gearwork --help\" for the list of commands.\n", errOut)
}

// TestMissingArguments: submit and work say what is missing, and the
// commands that take flags only refuse an argument, each with the usage
// exit code and one line pointing to --help.
func TestMissingArguments(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"submit"}, "gearwork submit: missing the FUNCTION to submit the job to"},
		{[]string{"submit", "fn", "a", "b"}, `gearwork submit: unexpected argument "b" after the payload`},
		{[]string{"work"}, "gearwork work: missing the FUNCTION and the COMMAND"},
		{[]string{"work", "fn"}, "gearwork work: missing the COMMAND to run for each job of fn"},
		{[]string{"admin"}, "gearwork admin: missing command"},
		{[]string{"serve", "x"}, `gearwork serve: unexpected argument "x"`},
		{[]string{"migrate", "x"}, `gearwork migrate: unexpected argument "x"`},
		{[]string{"bench", "x"}, `gearwork bench: unexpected argument "x"`},
		{[]string{"health", "x"}, `gearwork health: unexpected argument "x"`},
		{[]string{"version", "x"}, `gearwork version: unexpected argument "x"`},
	} {
		out, errOut, code := gw(t, tc.args...)
		require.Equal(t, exitUsage, code, tc.args)
		require.Empty(t, out)
		require.True(t, strings.HasPrefix(errOut, tc.want), "%q: %s", tc.args, errOut)
		require.Len(t, strings.Split(strings.TrimSpace(errOut), "\n"), 2, "%q: the error and a pointer to --help, not the usage: %s", tc.args, errOut)
	}
}

// TestServeRejectsBadAddresses: every address flag is checked (host:port,
// port range, the host resolves) before the exposure check and before
// anything is logged, and the message names the flag and the value; so are
// the log format, sizes and the store flags.
func TestServeRejectsBadAddresses(t *testing.T) {
	t.Parallel()
	base := []string{"serve", "--store", "memory:", "--listen", "127.0.0.1:0", "--http", "off"}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--listen", "nonsense"}, `gearwork: invalid --listen "nonsense": want host:port`},
		{[]string{"--listen", "0.0.0.0:70000"}, `gearwork: invalid --listen "0.0.0.0:70000": port "70000" is not a number from 0 to 65535`},
		{[]string{"--listen", "no-such-host.invalid:4730"}, `gearwork: invalid --listen "no-such-host.invalid:4730": host "no-such-host.invalid" does not resolve`},
		{[]string{"--http", "127.0.0.1:http-api"}, `gearwork: invalid --http "127.0.0.1:http-api": port "http-api"`},
		{[]string{"--http", "0.0.0.0"}, `gearwork: invalid --http "0.0.0.0": want host:port`},
		{[]string{"--pprof", "localhost"}, `gearwork: invalid --pprof "localhost": want host:port`},
		{[]string{"--log-format", "xml"}, `gearwork: invalid --log-format "xml": use text or json`},
		{[]string{"--max-packet", "64 parsecs"}, `gearwork serve: invalid value "64 parsecs" for --max-packet`},
		// A job's payload and result are written together: PostgreSQL
		// refuses a message or value over 1 GB, Pebble a batch of 4 GiB.
		{[]string{"--max-packet", "1025MiB"}, `gearwork: invalid --max-packet 1025MiB: at most 1GiB`},
		{[]string{"--max-packet", "300MiB", "--store", "postgres://gw@127.0.0.1:1/gw"}, `gearwork: invalid --max-packet 300MiB: at most 256MiB with --store postgres://`},
		{[]string{"--store", "bogus:x"}, `gearwork: --store "bogus:x": unknown store`},
		{[]string{"--store", "pebble:"}, `gearwork: --store "pebble:": name a directory`},
		// Checked before anything starts, and without the password.
		{[]string{"--store", "postgres://gw:hunter2@db:abc/gw"}, `gearwork: --store: invalid PostgreSQL URL: invalid port ":abc" after host` + "\n"},
		{[]string{"--store", "postgres://gw:hunter2@db/gw?lease_ttl=0s"}, `gearwork: --store postgres://gw:xxxxx@db/gw?lease_ttl=0s: invalid lease_ttl "0s"`},
		{[]string{"--sync", "sometimes"}, `gearwork: invalid --sync "sometimes"`},
		{[]string{"--batch-retention", "-5s"}, `gearwork: invalid --batch-retention -5s: must be 0 (forever) or more`},
		{[]string{"--job-retries", "-1"}, `gearwork: invalid --job-retries -1: must be 0 (no limit) or more`},
		{[]string{"--handle-prefix", "H:" + strings.Repeat("x", 44) + ":"}, `gearwork: invalid --handle-prefix "H:` + strings.Repeat("x", 44) + `:": 47 bytes, at most 46`},
	} {
		out, errOut, code := gw(t, append(append([]string{}, base...), tc.args...)...)
		checkConfigError(t, tc.args, tc.want, out, errOut, code)
	}
	// GEARWORK_LOG_FORMAT is --log-format.
	out, errOut, code := gwInput(t, "", []string{"GEARWORK_LOG_FORMAT=yaml"}, base...)
	checkConfigError(t, "GEARWORK_LOG_FORMAT=yaml", `gearwork: invalid --log-format "yaml"`, out, errOut, code)
}

// checkConfigError checks that a serve command line failed as a
// configuration error: the usage exit code, the message first, nothing
// logged, no exposure refusal.
func checkConfigError(t *testing.T, args any, want, out, errOut string, code int) {
	t.Helper()
	require.Equal(t, exitUsage, code, "%q: %s", args, errOut)
	require.Empty(t, out)
	require.True(t, strings.HasPrefix(errOut, want), "%q:\n%s", args, errOut)
	require.NotContains(t, errOut, "refusing to listen", args)
	require.NotContains(t, errOut, "level=", "%q: nothing logged before the error", args)
}

// TestServeConfigErrorsComeFirst: a bad --config file is reported before
// any log line (the memory limit, the store), with the usage exit code.
func TestServeConfigErrorsComeFirst(t *testing.T) {
	t.Parallel()
	cfg := filepath.Join(t.TempDir(), "gearwork.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte("functions:\n  email:\n    max_atempts: 3\n"), 0o600))
	_, errOut, code := gw(t, "serve", "--listen", "127.0.0.1:0", "--http", "off",
		"--store", "pebble:"+filepath.Join(t.TempDir(), "data"), "--config", cfg)
	require.Equal(t, exitUsage, code, errOut)
	require.True(t, strings.HasPrefix(errOut, "gearwork: --config: "), errOut)
	require.Contains(t, errOut, "max_atempts")
	require.NotContains(t, errOut, "level=")
}

// TestServeSizesAndLogFormat: --max-packet takes the size syntax of
// --memory-budget (and is enforced), --log-format json makes every log
// line a JSON object, and the start says what --config set.
func TestServeSizesAndLogFormat(t *testing.T) {
	t.Parallel()
	cfg := filepath.Join(t.TempDir(), "gearwork.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte("defaults:\n  max_attempts: 3\nfunctions:\n  email: {max_attempts: 5}\n  resize: {backoff: 2s}\n"), 0o600))
	srv := testserver.Start(t, "--max-packet", "1KiB", "--config", cfg, "--log-format", "json")
	c := gearmantest.NewClient(t, srv.Addr)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := c.SubmitBackground(ctx, client.Request{Function: "sized", Payload: make([]byte, 900)})
	require.NoError(t, err)
	_, err = c.SubmitBackground(ctx, client.Request{Function: "sized", Payload: make([]byte, 2<<10)})
	require.Error(t, err, "a packet over --max-packet 1KiB is refused")
	srv.Stop()
	var loaded map[string]any
	for _, l := range strings.Split(strings.TrimSpace(srv.Log()), "\n") {
		var m map[string]any
		require.NoError(t, json.Unmarshal([]byte(l), &m), "not JSON: %s", l)
		require.Contains(t, m, "level")
		if m["msg"] == "serve: configuration file loaded" {
			loaded = m
		}
	}
	require.NotNil(t, loaded, srv.Log())
	require.Equal(t, cfg, loaded["file"])
	require.Equal(t, true, loaded["default_policy_set"])
	require.EqualValues(t, 2, loaded["functions_with_policies"])
	require.Equal(t, "email,resize", loaded["functions"])
	require.EqualValues(t, 0, loaded["schedules"])
}

func TestSizeFlag(t *testing.T) {
	t.Parallel()
	var n int
	v := sizeValue[int]{&n}
	for in, want := range map[string]int{"64MiB": 64 << 20, "67108864": 64 << 20, "16KiB": 16 << 10, "1GB": 1e9, "0": 0} {
		require.NoError(t, v.Set(in), in)
		require.Equal(t, want, n, in)
	}
	require.Error(t, v.Set("-1"))
	require.Error(t, v.Set("12 furlongs"))
	n = 64 << 20
	require.Equal(t, "64MiB", v.String())
	n = 1000
	require.Equal(t, "1000", v.String())
}

// TestGracefulStopRefusesHTTPSubmits: once a graceful stop (SIGUSR1)
// starts, HTTP submits are refused (503 shutting-down) as the Gearman port
// refuses connections, and a job still running at --shutdown-timeout is
// logged as taken back at the "shutdown deadline".
func TestGracefulStopRefusesHTTPSubmits(t *testing.T) {
	t.Parallel()
	// The deadline is long enough that a loaded machine still sees the
	// server draining before it stops.
	srv := testserver.Start(t, "--http", "127.0.0.1:0", "--shutdown-timeout", "15s")
	base := "http://" + srv.HTTPAddr(t)
	started, release := make(chan struct{}), make(chan struct{})
	cliWorker(t, srv.Addr, "", map[string]worker.HandlerFunc{
		"hold": func(ctx context.Context, _ *worker.Job) ([]byte, error) {
			close(started)
			select {
			case <-release:
			case <-ctx.Done():
			}
			return nil, nil
		},
	})
	t.Cleanup(func() { close(release) })
	resp, err := http.Post(base+"/v1/functions/hold/jobs", "text/plain", strings.NewReader("x"))
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusAccepted, resp.StatusCode)
	select {
	case <-started:
	case <-time.After(30 * time.Second):
		t.Fatal("the worker did not start the job")
	}

	require.NoError(t, syscall.Kill(srv.Pid(), syscall.SIGUSR1))
	testwait.Until(t, "/readyz to answer 503", func() bool {
		resp, err := http.Get(base + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusServiceUnavailable
	})
	resp, err = http.Post(base+"/v1/functions/hold/jobs", "text/plain", strings.NewReader("late"))
	require.NoError(t, err)
	var p struct{ Type string }
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&p))
	resp.Body.Close()
	require.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	require.True(t, strings.HasSuffix(p.Type, "/shutting-down"), p.Type)

	testwait.Until(t, "the server to stop after --shutdown-timeout", func() bool { return !srv.Alive() })
	log := srv.Log()
	require.Contains(t, log, "graceful stop timed out")
	require.Regexp(t, `msg="broker: job taken back" handle=\S+ reason="shutdown deadline"`, log)
	require.NotContains(t, log, `reason="worker disconnected"`)
}

// TestHealthCommand: the container health check exits 0 when the server is
// ready, 1 for another answer and 4 when nothing answers.
func TestHealthCommand(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, "--http", "127.0.0.1:0")
	base := "http://" + srv.HTTPAddr(t)
	out, errOut, code := gw(t, "health", "--url", base+"/readyz")
	require.Equal(t, 0, code, errOut)
	require.Equal(t, "200 {\"status\":\"ready\"}\n", out)
	_, _, code = gw(t, "health", "--url", base+"/nothing")
	require.Equal(t, exitFailed, code)
	_, _, code = gw(t, "health", "--url", "http://127.0.0.1:1/readyz")
	require.Equal(t, exitUnreachable, code)
	// A URL that names no server is a usage error, not an unreachable one.
	for _, bad := range []string{"nonsense", "127.0.0.1:4780/readyz", "ftp://127.0.0.1/readyz", "http:///readyz"} {
		out, errOut, code = gw(t, "health", "--url", bad)
		require.Equal(t, exitUsage, code, bad)
		require.Empty(t, out)
		require.Contains(t, errOut, `invalid --url "`+bad+`"`)
	}
}

// TestServeStoreInUse: a second server on a data directory in use says
// that another process holds the store's lock, and exits 1.
func TestServeStoreInUse(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "data")
	testserver.Start(t, "--store", "pebble:"+dir)
	out, errOut, code := gw(t, "serve", "--listen", "127.0.0.1:0", "--http", "off", "--store", "pebble:"+dir)
	require.Equal(t, 1, code, errOut)
	require.Empty(t, out)
	require.Contains(t, errOut, "gearwork: pebble store "+dir+" is in use by another process (its lock file "+filepath.Join(dir, "LOCK")+" is held)")
}

// TestBadDurationsAndCounts: a duration or count that the flag cannot mean
// (a negative timeout, a poll interval of zero) is refused as a usage
// error naming the flag, before anything is sent or started, on the
// command line and in GEARWORK_* variables alike.
func TestBadDurationsAndCounts(t *testing.T) {
	t.Parallel()
	nowhere := "127.0.0.1:1"
	serve := []string{"serve", "--store", "memory:", "--listen", "127.0.0.1:0", "--http", "off"}
	for _, tc := range []struct {
		args []string
		env  string
		want string
	}{
		{[]string{"submit", "--servers", nowhere, "--timeout", "-1s", "fn", "x"}, "", `invalid value "-1s" for --timeout: must not be negative`},
		{[]string{"submit", "--servers", nowhere, "--background", "--wait", "--poll", "0", "fn", "x"}, "", `invalid value "0" for --poll: must be positive`},
		{[]string{"submit", "--servers", nowhere, "fn", "x"}, "GEARWORK_POLL=-5ms", `invalid GEARWORK_POLL="-5ms": must be positive`},
		{[]string{"admin", "--servers", nowhere, "--timeout", "0", "status"}, "", `invalid value "0" for --timeout: must be positive`},
		{[]string{"health", "--url", "http://" + nowhere + "/readyz", "--timeout", "-1s"}, "", `invalid value "-1s" for --timeout: must be positive`},
		{[]string{"work", "--servers", nowhere, "--timeout", "-1s", "fn", "--", "cat"}, "", `invalid value "-1s" for --timeout: must not be negative`},
		{[]string{"work", "--servers", nowhere, "--shutdown-timeout", "-1s", "fn", "--", "cat"}, "", `invalid value "-1s" for --shutdown-timeout: must not be negative`},
		{append(slices.Clone(serve), "--shutdown-timeout", "-1s"), "", `invalid value "-1s" for --shutdown-timeout: must not be negative`},
		{append(slices.Clone(serve), "--insert-delay", "-20ms"), "", `invalid value "-20ms" for --insert-delay: must not be negative`},
		{[]string{"serve", "--store", "memory:", "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--http-max-connections", "-1"}, "", `invalid --http-max-connections -1: must be 0 or more`},
		{[]string{"serve", "--store", "memory:", "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--metrics-max-functions", "-1"}, "", `invalid --metrics-max-functions -1: must be 0 or more`},
		{append(slices.Clone(serve), "--max-record-bytes", "100KiB"), "", `invalid --max-record-bytes 100KiB: must be 0 (no bound) or at least 1MiB`},
		{append(slices.Clone(serve), "--max-record-bytes", "-1"), "", `invalid value "-1" for --max-record-bytes`},
		{append(slices.Clone(serve), "--max-record-bytes", "lots"), "", `invalid value "lots" for --max-record-bytes`},
		// An empty server list is a mistake, not the default server.
		{[]string{"submit", "--servers", " ", "fn", "x"}, "", "--servers is empty"},
		{[]string{"work", "--servers", ",", "fn", "--", "cat"}, "", "--servers is empty"},
		{[]string{"admin", "status"}, "GEARWORK_SERVERS=", "--servers is empty"},
	} {
		var env []string
		if tc.env != "" {
			env = []string{tc.env}
		}
		out, errOut, code := gwInput(t, "", env, tc.args...)
		require.Equal(t, exitUsage, code, "%q %s: %s", tc.args, tc.env, errOut)
		require.Empty(t, out, tc.args)
		require.Contains(t, errOut, tc.want, tc.args)
	}
}

// TestAdminFlagsOfOtherCommands: a flag of one admin command given with
// another is a usage error that names the flag, before anything is sent.
func TestAdminFlagsOfOtherCommands(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--graceful", "status"}, "--graceful goes with shutdown"},
		{[]string{"status", "--graceful"}, "--graceful goes with shutdown"},
		{[]string{"--function", "f", "workers"}, "--function, --state, --batch, --limit and --cursor go with jobs"},
		// Words the text protocol cannot carry as they are.
		{[]string{"maxqueue", "", "5"}, `"": the admin protocol takes no empty argument`},
		{[]string{"cancel", "H:a b"}, `"H:a b": the admin protocol takes no empty argument and none with white space`},
		{[]string{"jobs", "--function", "a b"}, `"function=a b"`},
	} {
		out, errOut, code := gw(t, append([]string{"admin", "--servers", "127.0.0.1:1"}, tc.args...)...)
		require.Equal(t, exitUsage, code, "%v: %s", tc.args, errOut)
		require.Empty(t, out)
		require.Contains(t, errOut, tc.want, tc.args)
	}
}

// TestSubmitRequestsTheClientRefuses: a job the client cannot send as
// asked (--at with a priority, a unique over 64 bytes, no function name)
// is a usage error, exit 2, not "no server could be reached".
func TestSubmitRequestsTheClientRefuses(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--at", "2099-01-01T00:00:00Z", "--priority", "high", "fn", "x"}, "--at submits with normal priority"},
		{[]string{"--unique", strings.Repeat("u", 65), "fn", "x"}, "unique must be at most 64 bytes"},
		{[]string{"--background", "", "x"}, "function name must be 1 to"},
	} {
		out, errOut, code := gw(t, append([]string{"submit", "--servers", "127.0.0.1:1"}, tc.args...)...)
		require.Equal(t, exitUsage, code, "%v: %s", tc.args, errOut)
		require.Empty(t, out)
		require.Contains(t, errOut, tc.want, tc.args)
	}
	// gearwork work with such a function name says so (it panicked).
	for _, fn := range []string{"", strings.Repeat("f", 512)} {
		out, errOut, code := gw(t, "work", "--servers", "127.0.0.1:1", fn, "--", "cat")
		require.Equal(t, exitUsage, code, errOut)
		require.Empty(t, out)
		require.Contains(t, errOut, "a function name is 1 to 511 bytes")
		require.NotContains(t, errOut, "panic")
	}
}

// TestJobEnvironmentIsNotReadAsFlags: a gearwork command run by a command
// of gearwork work (which describes the job in GEARWORK_FUNCTION,
// GEARWORK_HANDLE and GEARWORK_UNIQUE) does not take those for its own
// --function or --unique: an admin query still works, and a follow-up job
// is not submitted under the running job's unique (it would have joined
// any live job with that unique).
func TestJobEnvironmentIsNotReadAsFlags(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	env := []string{"GEARWORK_FUNCTION=resize", "GEARWORK_HANDLE=H:parent:1", "GEARWORK_UNIQUE=parent-unique", "GEARWORK_SERVERS=" + srv.Addr}
	_, errOut, code := gwInput(t, "", env, "admin", "status")
	require.Equal(t, 0, code, errOut)
	out, errOut, code := gwInput(t, "", env, "submit", "--background", "follow_up", "x")
	require.Equal(t, 0, code, errOut)
	handle := strings.TrimSpace(out)
	out, errOut, code = gwInput(t, "", env, "admin", "--json", "job", handle)
	require.Equal(t, 0, code, errOut)
	require.NotContains(t, out, "parent-unique", "the follow-up job has no unique of its own")
}
