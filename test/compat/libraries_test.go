package compat

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/internal/testwait"
)

// Tests that run Gearman client libraries written elsewhere against
// gearwork: each library's own test suite where its package ships one,
// pointed at a gearwork server, and a scenario script otherwise.
// scripts/deps.sh installs the Node packages (testdata/node/package.json
// and package-lock.json, with npm ci) into a cache directory and downloads the Go modules
// (testdata/golib/*/go.mod) into the module cache.

// sourceRE finds the "// source: MODULE@VERSION" line of a go.mod under
// testdata/golib: the library whose tests run.
var sourceRE = regexp.MustCompile(`(?m)^// source: (\S+)$`)

// needPath fails the test when a file or directory that scripts/deps.sh
// provides is missing, or skips it when GEARWORK_ALLOW_SKIP=1.
func needPath(t *testing.T, path, what string) {
	t.Helper()
	if _, err := os.Stat(path); err == nil {
		return
	}
	if os.Getenv("GEARWORK_ALLOW_SKIP") == "1" {
		t.Skipf("%s is missing at %s (run scripts/deps.sh); skipped because GEARWORK_ALLOW_SKIP=1", what, path)
	}
	t.Fatalf("%s is missing at %s: run scripts/deps.sh (or set GEARWORK_ALLOW_SKIP=1 to skip)", what, path)
}

// nodeModules returns the node_modules directory that scripts/deps.sh
// fills: $GEARWORK_NODE_CACHE, by default the user cache directory's
// gearwork/node.
func nodeModules(t *testing.T) string {
	t.Helper()
	need(t, "node")
	dir := os.Getenv("GEARWORK_NODE_CACHE")
	if dir == "" {
		cache, err := os.UserCacheDir()
		require.NoError(t, err)
		dir = filepath.Join(cache, "gearwork", "node")
	}
	mods := filepath.Join(dir, "node_modules")
	needPath(t, filepath.Join(mods, "abraxas", "package.json"), "the Node packages of testdata/node/package.json")
	return mods
}

// goLibrary is a Go client library whose own tests run against gearwork.
type goLibrary struct {
	// dir is its directory under testdata/golib, whose go.mod names the
	// module version on a "// source:" line.
	dir string
	// copy lists the library's directories the tests need.
	copy []string
	// pkg is the package whose tests run, and run the tests to run.
	pkg string
	run []string
	// args are extra arguments for its test binary.
	args []string
}

// clientTimeout is the 1 s that the clients of gearman-go and g2 wait for
// each answer (JOB_CREATED, ECHO_RES, STATUS_RES) before they give up with
// ErrLostConn, and what prepare makes of it: on a loaded machine a
// background submit's fsync (--sync always) alone can take longer, and
// none of the tests run waits for that timeout to pass.
var clientTimeout = strings.NewReplacer("DefaultTimeout time.Duration = time.Second",
	"DefaultTimeout time.Duration = 60 * time.Second")

// prepare copies the library's directories (with the module file from
// testdata) into a temporary directory, with 127.0.0.1:4730 in its files
// replaced by addr and its client's answer timeout raised (clientTimeout),
// and returns that directory.
func (l goLibrary) prepare(t *testing.T, addr string) string {
	t.Helper()
	goBin := need(t, "go")
	modDir := testdata("golib", l.dir)
	gomod, err := os.ReadFile(filepath.Join(modDir, "go.mod"))
	require.NoError(t, err)
	m := sourceRE.FindSubmatch(gomod)
	require.NotNil(t, m, "testdata/golib/%s/go.mod names no source", l.dir)
	source := string(m[1])
	dl := exec.Command(goBin, "mod", "download", "-json", source)
	dl.Dir = modDir
	dl.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GOWORK=off")
	out, err := dl.Output()
	var mod struct{ Dir, Error string }
	if err == nil {
		err = json.Unmarshal(out, &mod)
	}
	if err != nil || mod.Dir == "" {
		needPath(t, "", source+" in the module cache ("+mod.Error+")")
	}
	src := t.TempDir()
	for _, d := range l.copy {
		require.NoError(t, os.CopyFS(filepath.Join(src, d), os.DirFS(filepath.Join(mod.Dir, d))))
	}
	for _, f := range []string{"go.mod", "go.sum"} {
		data, err := os.ReadFile(filepath.Join(modDir, f))
		if errors.Is(err, fs.ErrNotExist) && f == "go.sum" {
			continue // a library without dependencies
		}
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(src, f), data, 0o644))
	}
	raised := false
	require.NoError(t, filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		patched := clientTimeout.Replace(strings.ReplaceAll(string(data), "127.0.0.1:4730", addr))
		if patched == string(data) {
			return nil
		}
		raised = raised || strings.Contains(patched, "DefaultTimeout time.Duration = 60 * time.Second")
		return os.WriteFile(path, []byte(patched), 0o644)
	}))
	require.True(t, raised, "the client's answer timeout of %s is raised", l.dir)
	return src
}

// test runs the library's tests in src and requires each of l.run to pass.
func (l goLibrary) test(t *testing.T, src string) {
	t.Helper()
	args := append([]string{"test", "-count=1", "-v", "-timeout", "90s",
		"-run", "^(" + strings.Join(l.run, "|") + ")$", "./" + l.pkg + "/"}, l.args...)
	p := startProcIn(t, src, []string{"GOFLAGS=-mod=mod", "GOWORK=off"}, need(t, "go"), args...)
	got, err := p.wait(t)
	require.NoError(t, err, "the tests of %s failed:\n%s\n%s", l.dir, got, p.stderr.String())
	for _, name := range l.run {
		require.Contains(t, got, "--- PASS: "+name+" ", "%s's %s", l.dir, name)
	}
}

// TestG2ClientSuite runs the client tests of github.com/appscode/g2 (Go)
// against gearwork, among them TestClientDoCron (SUBMIT_JOB_SCHED) and
// TestClientDoAt (SUBMIT_JOB_EPOCH); TestClientDo needs a worker for
// "scheduledJobTest", here the gearman tool. Left out: TestPoolDoBg,
// TestPoolDo and TestPoolStatus, because g2's Pool.Do and Pool.DoBg take
// the client's mutex and then call Client.do, which takes it again: they
// deadlock before sending anything, against any server. TestToEpoch
// expects its authors' time zone and talks to no server. (g2's worker
// tests do not compile: worker_disconnect_test.go declares a variable it
// never uses.)
func TestG2ClientSuite(t *testing.T) {
	t.Parallel()
	lib := goLibrary{dir: "g2", copy: []string{"client", filepath.Join("pkg", "runtime")}, pkg: "client",
		run: []string{"TestClientAddServer", "TestClientEcho", "TestClientDoBg", "TestClientDoCron",
			"TestClientDoAt", "TestClientDo", "TestClientStatus", "TestClientClose", "TestAutoInc",
			"TestPoolAdd", "TestPoolEcho", "TestPoolClose", "TestValidateAndGet"}}
	s := startGearwork(t)
	src := lib.prepare(t, s.addr)
	gearmanCLI(t, s, "", "-w", "-f", "scheduledJobTest", "--", "cat")
	waitStatus(t, s, "scheduledJobTest", funcStatus{Workers: 1})
	lib.test(t, src)
	// TestClientDoCron's and TestClientDoAt's jobs are known to the server
	// and wait for their time.
	require.Equal(t, funcStatus{Total: 2, Workers: 1}, status(t, s)["scheduledJobTest"])
}

// TestGearmanGoClientSuite runs the client integration tests of
// github.com/mikespook/gearman-go (Go) against gearwork, among them
// TestClientMultiDo, which sends 1000 jobs to the library's own Perl
// worker (example/pl/worker_multi.pl: 20 Gearman::Worker processes);
// "ToUpper" is served by the gearman tool. Left out: TestPoolDoBg,
// TestPoolDo and TestPoolStatus, which deadlock in the library against any
// server (the same double lock as g2's, which forked from it). Its worker
// tests read their -integration flag before it is parsed, so they never
// talk to a server.
func TestGearmanGoClientSuite(t *testing.T) {
	t.Parallel()
	lib := goLibrary{dir: "gearman-go", copy: []string{"client", filepath.Join("example", "pl")}, pkg: "client",
		run: []string{"TestClientAddServer", "TestClientEcho", "TestClientDoBg", "TestClientDoBgWithId",
			"TestClientDoBgWithIdFailsIfNoId", "TestClientDo", "TestClientDoWithId",
			"TestClientDoWithIdFailsIfNoId", "TestClientDoWithIdCheckSameHandle",
			"TestClientDoWithIdCheckDifferentHandleOnDifferentJobs", "TestClientMultiDo",
			"TestClientStatus", "TestClientClose", "TestAutoInc", "TestPoolAdd", "TestPoolEcho", "TestPoolClose"},
		args: []string{"-integration"}}
	s := startGearwork(t)
	src := lib.prepare(t, s.addr)
	perl := need(t, "perl")
	// worker_multi.pl forks its workers: it runs in a process group of its
	// own, which is killed when the test ends.
	pl := startProcWith(t, func(cmd *exec.Cmd) { cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} },
		perl, filepath.Join(src, "example", "pl", "worker_multi.pl"))
	t.Cleanup(func() { _ = syscall.Kill(-pl.cmd.Process.Pid, syscall.SIGKILL) })
	gearmanCLI(t, s, "", "-w", "-f", "ToUpper", "--", "tr", "a-z", "A-Z")
	waitStatus(t, s, "ToUpper", funcStatus{Workers: 1})
	testwait.Until(t, "the 20 Perl workers", func() bool { return status(t, s)["PerlToUpper"].Workers == 20 })
	lib.test(t, src)
}

// TestNodeGearmanSuite runs the test suite of the npm package node-gearman
// 0.2.2 (nodeunit: connect and close, binary payloads both ways, a worker
// that fails, a job failed by the server, job timeouts) against gearwork.
// The suite connects to "localhost" on the default port; that is rewritten
// to the test server's address.
func TestNodeGearmanSuite(t *testing.T) {
	t.Parallel()
	mods := nodeModules(t)
	needPath(t, filepath.Join(mods, "nodeunit", "package.json"), "nodeunit (testdata/node/package.json)")
	s := startGearwork(t)
	pkg := t.TempDir()
	require.NoError(t, os.CopyFS(pkg, os.DirFS(filepath.Join(mods, "node-gearman"))))
	testFile := filepath.Join(pkg, "test", "test.js")
	data, err := os.ReadFile(testFile)
	require.NoError(t, err)
	patched := strings.ReplaceAll(string(data), `new Gearman("localhost")`, `new Gearman("`+s.host+`", `+s.port+`)`)
	require.Equal(t, 3, strings.Count(patched, s.host), "the suite's three connections point at the test server")
	require.NoError(t, os.WriteFile(testFile, []byte(patched), 0o644))

	// "Server fails jobs" closes its connection on a 300 ms timer; when the
	// machine is busy the library can then reconnect and emit a second
	// "connect", which calls the next setUp's callback twice and crashes
	// nodeunit ("Cannot read properties of undefined (reading 'value')"),
	// whatever the server. The same happens when a NOOP for the next test's
	// job reaches the previous test's connection after the suite closed it:
	// the library reconnects it and calls that test's setUp callback again.
	// "Timeout set but does not occur" gives its worker's 300 ms job a
	// 400 ms timeout: on a busy machine the 100 ms to spare can run out,
	// whatever the server. The suite gets five tries; every test must
	// pass (✔, its assertions counted by nodeunit) in one of them, and a
	// try that neither crashed nor missed that timeout must pass whole.
	node := need(t, "node")
	want := []string{
		"Test Connection - Check Instance",
		"Test Connection - Connect to Server",
		"Test Connection - Close connection",
		"Worker and Client - Send/Receive binary data",
		"Worker and Client - Worker fails",
		"Worker and Client - Server fails jobs",
		"Job timeout - Timeout event",
		"Job timeout - Timeout callback",
		"Job timeout - Timeout set but does not occur",
	}
	passed := map[string]bool{}
	for try := 1; try <= 5 && len(passed) < len(want); try++ {
		p := startProcIn(t, pkg, []string{"NODE_PATH=" + mods}, node, "run_tests.js")
		got, err := p.wait(t)
		crashed := err != nil && strings.Contains(p.stderr.String(), "reading 'value'")
		late := err == nil && strings.Count(got, "✖") == 1 && strings.Contains(got, "✖ Job timeout - Timeout set but does not occur")
		if !crashed && !late {
			require.NoError(t, err, "node-gearman's tests failed:\n%s\n%s", got, p.stderr.String())
			require.Contains(t, got, "OK: ")
			require.NotContains(t, got, "FAILURES")
		}
		for _, line := range strings.Split(got, "\n") {
			if name, ok := strings.CutPrefix(strings.TrimSpace(line), "✔ "); ok {
				passed[name] = true
			}
		}
		if len(passed) < len(want) {
			t.Logf("try %d: the suite's own timing failed it (nodeunit crashed on its timer race, or the 300 ms job missed its 400 ms timeout):\n%s", try, got)
		}
	}
	for _, name := range want {
		require.True(t, passed[name], "node-gearman's test %q passed in none of five tries", name)
	}
	require.Len(t, passed, len(want), "the suite ran the tests it is known to have: %v", passed)
}

// TestGearmanNodeSuite runs the mocha tests of the npm package gearman-node
// 2.0.13 (Clever's; test-worker-client and test-raceconditions: binary and
// JSON payloads, WORK_FAIL with and without a warning, WORK_DATA and
// WORK_STATUS before the complete, a worker that shuts down after its job
// while a second takes the next, and 100 jobs over 25 workers, half of them
// failing) against gearwork and gearmand, with coffee-script 1.6.3 and
// mocha 1.6.0 as its package asks for. Its test-reconnect talks to mock
// servers of its own and is left out.
func TestGearmanNodeSuite(t *testing.T) {
	t.Parallel()
	cleverSuite(t, "gearman-node", 18)
}

// TestGearmanCoffeeSuite runs the same mocha tests of the npm package
// gearman-coffee 2.0.2, gearman-node's forerunner (Clever's), whose
// receive splits a packet's arguments itself, one packet a chunk with the
// rest kept for the next, and reads WORK_WARNING's data as a string. Its
// suite lacks gearman-node's two tests that parse packets without a
// server. Its package asks for mocha 1.2; mocha 1.6.0 runs it.
func TestGearmanCoffeeSuite(t *testing.T) {
	t.Parallel()
	cleverSuite(t, "gearman-coffee", 16)
}

// cleverSuite runs test-worker-client and test-raceconditions of one of
// Clever's CoffeeScript packages (gearman-node, gearman-coffee) against
// gearwork and gearmand and requires all want tests to pass. The suite
// connects to localhost:4730; that is rewritten to the test server's
// address, and its debug output (every packet) is turned off.
func cleverSuite(t *testing.T, pkgName string, want int) {
	t.Helper()
	mods := nodeModules(t)
	needPath(t, filepath.Join(mods, pkgName, "package.json"), pkgName+" (testdata/node/package.json)")
	needPath(t, filepath.Join(mods, "mocha", "bin", "_mocha"), "mocha (testdata/node/package.json)")
	eachServer(t, func(t *testing.T, s *server) {
		pkg := t.TempDir()
		require.NoError(t, os.CopyFS(pkg, os.DirFS(filepath.Join(mods, pkgName))))
		tests := []string{filepath.Join("test", "test-worker-client.coffee"), filepath.Join("test", "test-raceconditions.coffee")}
		for _, f := range tests {
			path := filepath.Join(pkg, f)
			data, err := os.ReadFile(path)
			require.NoError(t, err)
			patched := strings.Replace(string(data), "  host: 'localhost'\n  port: 4730\n", "  host: '"+s.host+"'\n  port: "+s.port+"\n", 1)
			require.NotEqual(t, string(data), patched, "%s's options point at the test server", f)
			patched = strings.Replace(patched, "  debug: true\n", "  debug: false\n", 1)
			require.NoError(t, os.WriteFile(path, []byte(patched), 0o644))
		}
		// mocha 1.6's bin/mocha runs bin/_mocha in a child process and
		// hides its exit status; _mocha is run directly.
		args := append([]string{filepath.Join(mods, "mocha", "bin", "_mocha"), "-R", "spec", "--timeout", "60000",
			"--compilers", "coffee:coffee-script"}, tests...)
		p := startProcIn(t, pkg, []string{"NODE_PATH=" + mods, "NODE_ENV=test"}, need(t, "node"), args...)
		got, err := p.wait(t)
		require.NoError(t, err, "%s's tests failed:\n%s\n%s", pkgName, got, p.stderr.String())
		require.Contains(t, got, fmt.Sprintf("%d tests complete", want), "every test of the suite ran:\n%s", got)
		require.Equal(t, want, strings.Count(got, "✓"), "every test of the suite passed:\n%s", got)
	})
}

// TestGearmanNodeScenario: gearman-node 2.0.13's client and workers
// (testdata/node/gearman-node.js): a job completes; a worker registered
// with a 1000 ms timeout (CAN_DO_TIMEOUT) takes three seconds, and its
// client sees WORK_FAIL at the timeout (the test in gearman-node's suite
// that expects this is commented out; gearmand 1.1.20 hands the job to
// the next worker instead, item 22 of "Differences from gearmand"); then
// the server restarts on its address, the library reconnects the client
// and the workers (RESET_ABILITIES, CAN_DO, GRAB_JOB again) and a new job
// completes.
func TestGearmanNodeScenario(t *testing.T) {
	t.Parallel()
	mods := nodeModules(t)
	needPath(t, filepath.Join(mods, "gearman-node", "package.json"), "gearman-node (testdata/node/package.json)")
	s := startGearwork(t)
	// The scenario reads a line from stdin once the server is back: an
	// *os.File, so that no goroutine copies it.
	stdin, restarted, err := os.Pipe()
	require.NoError(t, err)
	t.Cleanup(func() { restarted.Close() })
	p := startProcWith(t, func(cmd *exec.Cmd) {
		cmd.Stdin = stdin
		cmd.Env = append(os.Environ(), "NODE_PATH="+mods)
	}, need(t, "node"), testdata("node", "gearman-node.js"), s.host, s.port)
	stdin.Close()
	testwait.Until(t, "the scenario to ask for the restart", func() bool {
		return strings.Contains(p.stderr.String(), "restart\n") || p.exited()
	})
	require.Equal(t, funcStatus{Workers: 1}, status(t, s)["gn_slow"], "the timed-out job is not run again")
	restartGearwork(t, s)
	_, err = restarted.Write([]byte("restarted\n"))
	require.NoError(t, err, "scenario stderr:\n%s", p.stderr.String())
	out, err := p.wait(t)
	require.NoError(t, err, "scenario stderr:\n%s", p.stderr.String())
	var got struct{ Events []string }
	require.NoError(t, json.Unmarshal([]byte(out), &got), "output %q", out)
	require.Equal(t, []string{"gn_up complete HELLO", "gn_slow fail", "restart", "gn_up complete AGAIN"}, got.Events)
}

// TestAbraxasWorkerThrows: a Node worker on abraxas 2.1.10 whose function
// throws. abraxas sends WORK_EXCEPTION and then WORK_FAIL for the job;
// the client gets one error and the same worker runs the next job.
func TestAbraxasWorkerThrows(t *testing.T) {
	t.Parallel()
	mods := nodeModules(t)
	s := startGearwork(t)
	p := startProcIn(t, "", []string{"NODE_PATH=" + mods}, need(t, "node"), testdata("node", "abraxas.js"), s.addr)
	out, err := p.wait(t)
	require.NoError(t, err, "abraxas.js: %s", p.stderr.String())
	var got struct {
		ThrowErr *string  `json:"throwErr"`
		ThrowRes *string  `json:"throwRes"`
		Up       *string  `json:"up"`
		UpErr    *string  `json:"upErr"`
		Jobs     []string `json:"jobs"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &got), "output %q", out)
	require.NotNil(t, got.ThrowErr)
	require.Contains(t, *got.ThrowErr, "boom")
	require.Nil(t, got.ThrowRes)
	require.Nil(t, got.UpErr)
	require.NotNil(t, got.Up)
	require.Equal(t, "NEXT JOB", *got.Up)
	require.Equal(t, []string{"ab_throw", "ab_up"}, got.Jobs)
}

// TestAbraxasScenario: abraxas 2.1.10's client and worker
// (testdata/node/abraxas-features.js), side by side with gearmand: echo;
// submitJob at each priority; status and warn events; task.error; a worker
// with maxJobs 3 holding three jobs at once on one connection (six
// submitted at once); submitJobBg with a unique polled with getStatus
// until it is gone; and the admin commands status and workers, which
// abraxas sends as text on its client connection, between binary packets.
func TestAbraxasScenario(t *testing.T) {
	t.Parallel()
	mods := nodeModules(t)
	eachServer(t, func(t *testing.T, s *server) {
		p := startProcIn(t, "", []string{"NODE_PATH=" + mods}, need(t, "node"), testdata("node", "abraxas-features.js"), s.addr)
		out, err := p.wait(t)
		require.NoError(t, err, "abraxas-features.js: %s", p.stderr.String())
		var got struct {
			Echo       string
			Priorities []string
			Progress   []string
			Fail       string
			Concurrent struct {
				Results   []string
				MaxActive int
			}
			Background []string
			Status     map[string][]int
			Workers    []string
		}
		require.NoError(t, json.Unmarshal([]byte(out), &got), "output %q", out)
		require.Equal(t, "ping", got.Echo)
		require.Equal(t, []string{"VIA HIGH", "VIA NORMAL", "VIA LOW"}, got.Priorities)
		// The status's numbers reach the client as the worker wrote them,
		// fractions too.
		require.Equal(t, []string{"status 0.5", "status 0.33333333333333326", "warn careful", "complete done"}, got.Progress)
		require.Equal(t, "error", got.Fail)
		require.Equal(t, []string{"j0", "j1", "j2", "j3", "j4", "j5"}, got.Concurrent.Results)
		require.Equal(t, 3, got.Concurrent.MaxActive, "three jobs at once on one connection")
		// How often the poll sees each state depends on timing; the order
		// does not.
		require.NotEmpty(t, got.Background)
		require.Equal(t, "known=0 running=0", got.Background[len(got.Background)-1])
		require.Subset(t, []string{"known=1 running=0", "known=1 running=1", "known=0 running=0"}, got.Background)
		require.Equal(t, map[string][]int{"abx_bg": {0, 0, 1}, "abx_fail": {0, 0, 1}, "abx_progress": {0, 0, 1},
			"abx_slow": {0, 0, 1}, "abx_up": {0, 0, 1}}, got.Status)
		require.Equal(t, []string{"abx_bg abx_fail abx_progress abx_slow abx_up"}, got.Workers)
	})
}

// TestGearmanodeScenario: the npm package gearmanode 0.9.2, client and
// worker (testdata/node/gearmanode.js; its own tests are not in its npm
// package), on two servers (gearwork on Pebble and on memory) with
// round-robin load balancing: ECHO to each server, foreground jobs of
// every priority with WORK_DATA/WORK_STATUS/WORK_WARNING, WORK_FAIL,
// WORK_EXCEPTION (sent without OPTION_REQ, so the client sees a failure),
// JOB_ASSIGN_UNIQ, 3 MiB both ways, six jobs at once (the worker answers
// each job with PRE_SLEEP and waits for a NOOP before it grabs the next),
// and background jobs polled with GET_STATUS until they end.
//
// gearmand 1.1.20 breaks this client: its WORK_FAIL for a client without
// exceptions has a NUL after the handle (item 9 of "Differences from
// gearmand"), and gearmanode takes "handle\0" for an unknown job.
func TestGearmanodeScenario(t *testing.T) {
	t.Parallel()
	mods := nodeModules(t)
	needPath(t, filepath.Join(mods, "gearmanode", "package.json"), "gearmanode (testdata/node/package.json)")
	s1 := startGearwork(t)
	s2 := startGearwork(t, "--store", "memory:")
	p := startProcIn(t, "", []string{"NODE_PATH=" + mods}, need(t, "node"), testdata("node", "gearmanode.js"), s1.addr, s2.addr)
	out, err := p.wait(t)
	require.NoError(t, err, "gearmanode.js: %s", p.stderr.String())
	var got struct {
		Jobs    map[string][]string `json:"jobs"`
		Echo    []string            `json:"echo"`
		Servers map[string]string   `json:"servers"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &got), "output %q", out)
	require.Equal(t, []string{"ping " + s1.addr, "ping " + s2.addr}, got.Echo)
	want := map[string][]string{
		"upper":     {"complete:HELLO"},
		"progress":  {"data:part", "status:1/2", "warning:careful", "status:2/2", "complete:done"},
		"fail":      {"failed"},
		"exception": {"failed"},
		"uniq":      {"complete:u-1/payload"},
		"low":       {"complete:LOW"},
		"big":       {"complete:3 MiB upper"},
	}
	for i := 1; i <= 6; i++ {
		want[fmt.Sprint("burst", i)] = []string{fmt.Sprint("complete:B", i)}
	}
	for _, key := range []string{"bg1", "bg2"} {
		// How often the poll sees each state depends on timing; what it
		// sees, in order, does not.
		seen := got.Jobs[key]
		require.NotEmpty(t, seen, key)
		require.Contains(t, seen, "known running 1/3", key)
		require.Equal(t, "unknown 0/0", seen[len(seen)-1], key)
		delete(got.Jobs, key)
	}
	require.Empty(t, cmp.Diff(want, got.Jobs), "(-want +got)")
	// Round robin: the foreground jobs alternate between the servers.
	require.NotEqual(t, got.Servers["upper"], got.Servers["progress"])
	require.ElementsMatch(t, []string{s1.addr, s2.addr}, []string{got.Servers["burst1"], got.Servers["burst2"]})
}

// TestNpmGearmanScenario: the npm package gearman 2.1.0, client and
// worker (testdata/node/gearman.js; its own tests only encode and decode
// packets), side by side with gearmand: ECHO, foreground jobs with a
// unique and each priority, WORK_DATA/WORK_STATUS/WORK_WARNING,
// OPTION_REQ exceptions then WORK_EXCEPTION, a background job,
// GET_STATUS and GET_STATUS_UNIQUE, SET_CLIENT_ID. Its worker registers
// "upper" with CAN_DO_TIMEOUT, whose timeout this library sends as a
// binary number (see TestRawCanDoTimeoutNotANumber).
func TestNpmGearmanScenario(t *testing.T) {
	t.Parallel()
	mods := nodeModules(t)
	needPath(t, filepath.Join(mods, "gearman", "package.json"), "gearman (testdata/node/package.json)")
	eachServer(t, func(t *testing.T, s *server) {
		p := startProcIn(t, "", []string{"NODE_PATH=" + mods}, need(t, "node"), testdata("node", "gearman.js"), s.addr)
		out, err := p.wait(t)
		require.NoError(t, err, "gearman.js: %s", p.stderr.String())
		var got struct {
			Events []string `json:"events"`
			Worker []string `json:"worker"`
		}
		require.NoError(t, json.Unmarshal([]byte(out), &got), "output %q", out)
		require.Equal(t, []string{"echo ping", "created", "complete HELLO",
			"created", "data part", "status 1/2", "warning careful", "complete done",
			"option exceptions", "created", "exception exploded",
			"created", "status_res known=1 running=0", "status_res_unique bg-1 known=1"}, got.Events)
		// The library makes up a unique for a job that has none.
		require.Len(t, got.Worker, 3)
		require.Equal(t, "upper u-1 hello", got.Worker[0])
		require.Regexp(t, `^stream [0-9a-z]+ go$`, got.Worker[1])
		require.Regexp(t, `^stream [0-9a-z]+ explode$`, got.Worker[2])
	})
}

// startProcIn is startProc with a working directory ("" for the test's)
// and extra environment variables.
func startProcIn(t *testing.T, dir string, env []string, name string, args ...string) *proc {
	t.Helper()
	p := startProcWith(t, func(cmd *exec.Cmd) {
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), env...)
	}, name, args...)
	return p
}

// buildScenario builds the Go program testdata/golib/gearman-go-worker/main.go
// (a worker scenario) with the module of testdata/golib/<dir>, with
// gearman-go's worker package replaced by workerPkg, in a temporary
// directory and returns the binary's path. A library missing from the
// module cache fails the test (skips it with GEARWORK_ALLOW_SKIP=1).
func buildScenario(t *testing.T, dir, workerPkg string) string {
	t.Helper()
	goBin := need(t, "go")
	src := t.TempDir()
	require.NoError(t, os.CopyFS(src, os.DirFS(testdata("golib", dir))))
	main, err := os.ReadFile(testdata("golib", "gearman-go-worker", "main.go"))
	require.NoError(t, err)
	const gearmanGoWorker = `"github.com/mikespook/gearman-go/worker"`
	require.Contains(t, string(main), gearmanGoWorker)
	main = []byte(strings.Replace(string(main), gearmanGoWorker, strconv.Quote(workerPkg), 1))
	require.NoError(t, os.WriteFile(filepath.Join(src, "main.go"), main, 0o644))
	env := []string{"GOFLAGS=-mod=mod", "GOWORK=off", "GOPROXY=off"}
	bin := filepath.Join(t.TempDir(), dir)
	p := startProcIn(t, src, env, goBin, "build", "-o", bin, ".")
	if _, err := p.wait(t); err != nil {
		if strings.Contains(p.stderr.String(), "GOPROXY=off") {
			needPath(t, "", "the modules of testdata/golib/"+dir+" in the module cache ("+p.stderr.String()+")")
		}
		require.NoError(t, err, "building testdata/golib/%s:\n%s", dir, p.stderr.String())
	}
	return bin
}

// TestGearmanGoWorker runs a scenario (testdata/golib/gearman-go-worker)
// on the worker package of github.com/mikespook/gearman-go, whose own
// tests never talk to a server; see workerScenario.
func TestGearmanGoWorker(t *testing.T) {
	t.Parallel()
	workerScenario(t, buildScenario(t, "gearman-go-worker", "github.com/mikespook/gearman-go/worker"))
}

// TestG2Worker runs the same scenario on the worker package of
// github.com/appscode/g2 (a fork of gearman-go's), whose own tests do
// not compile.
func TestG2Worker(t *testing.T) {
	t.Parallel()
	workerScenario(t, buildScenario(t, "g2-worker", "github.com/appscode/g2/worker"))
}

// workerScenario runs a worker scenario binary: one worker (one job at a
// time; see main.go) on two servers (gearwork on Pebble and on memory),
// woken by NOOP from PRE_SLEEP, runs jobs that complete, stream
// WORK_DATA/WORK_WARNING/WORK_STATUS, fail, raise an exception
// (WORK_EXCEPTION; gearman-go's client sends no OPTION_REQ, so it sees
// WORK_FAIL), read their unique id (JOB_ASSIGN_UNIQ), carry over 1 MiB both
// ways and run in the background; its clients also use ECHO and
// GET_STATUS. Then the first server restarts on its address, the worker
// reconnects as the library offers (WorkerDisconnectError.Reconnect) and
// runs a new job.
func workerScenario(t *testing.T, bin string) {
	t.Helper()
	s1 := startGearwork(t)
	s2 := startGearwork(t, "--store", "memory:")
	// The scenario reads a line from stdin once the first server is
	// back: an *os.File, so that no goroutine copies it.
	stdin, restarted, err := os.Pipe()
	require.NoError(t, err)
	t.Cleanup(func() { restarted.Close() })
	p := startProc(t, stdin, bin, s1.addr, s2.addr)
	stdin.Close()
	testwait.Until(t, "the scenario to ask for the restart", func() bool {
		return strings.Contains(p.stderr.String(), "restart\n") || p.exited()
	})
	restartGearwork(t, s1)
	_, err = restarted.Write([]byte("restarted\n"))
	require.NoError(t, err, "scenario stderr:\n%s", p.stderr.String())
	out, err := p.wait(t)
	require.NoError(t, err, "scenario stderr:\n%s", p.stderr.String())
	type serverResult struct {
		Echo       string              `json:"echo"`
		Jobs       map[string][]string `json:"jobs"`
		Background string              `json:"background"`
	}
	var got struct {
		S1, S2       serverResult
		AfterRestart []string `json:"afterRestart"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &got), "output %q", out)
	for _, tag := range []string{"s1", "s2"} {
		want := serverResult{Echo: "ping " + tag, Background: tag, Jobs: map[string][]string{
			"upper":     {"complete:HELLO " + strings.ToUpper(tag)},
			"progress":  {"data:part-" + tag, "status:1/2", "warning:careful", "status:2/2", "complete:done"},
			"fail":      {"fail"},
			"exception": {"fail"},
			"uniq":      {"complete:uniq/id-" + tag + "/" + tag},
			"big":       {"complete:1 MiB upper"},
		}}
		r := got.S1
		if tag == "s2" {
			r = got.S2
		}
		require.Empty(t, cmp.Diff(want, r), "server %s (-want +got)", tag)
	}
	require.Equal(t, []string{"complete:AGAIN"}, got.AfterRestart)
}

// TestGearmanNodeBdaScenario: the npm package gearman-node-bda 0.10.1, a
// fork of gearmanode whose worker grabs only when told to
// (testdata/node/gearman-node-bda.js), side by side with gearmand: its
// grabJob(3) sends three GRAB_JOBs at once and so holds three background
// jobs (submitted LOW, NORMAL, HIGH before it registered) at once, handed
// out HIGH first; after each job it sends GRAB_JOB again, and PRE_SLEEP
// after each NO_JOB. Then WORK_DATA/STATUS/WARNING, WORK_FAIL and
// WORK_EXCEPTION (without OPTION_REQ: the client sees a failure; with
// OPTION_REQ "exceptions", the exception), 3 MiB
// both ways, twenty jobs at once on one client connection, two clients
// coalesced on one unique, and RESET_ABILITIES while the worker holds a
// job.
//
// gearmand 1.1.20 differs twice: its WORK_FAIL for a client without
// exceptions has a NUL after the handle (item 9 of "Differences from
// gearmand"), which this library takes for an unknown job, so the jobs
// that fail are left out there; and it takes a job back when its worker
// sends RESET_ABILITIES (item 28), answering the worker's WORK_COMPLETE
// with ERROR JOB_NOT_FOUND, so that the job stays queued for a worker that
// can do it.
func TestGearmanNodeBdaScenario(t *testing.T) {
	t.Parallel()
	mods := nodeModules(t)
	needPath(t, filepath.Join(mods, "gearman-node-bda", "package.json"), "gearman-node-bda (testdata/node/package.json)")
	eachServer(t, func(t *testing.T, s *server) {
		args := []string{testdata("node", "gearman-node-bda.js"), s.addr}
		if !s.isGearwork() {
			args = append(args, "nofail")
		}
		p := startProcIn(t, "", []string{"NODE_PATH=" + mods}, need(t, "node"), args...)
		out, err := p.wait(t)
		require.NoError(t, err, "gearman-node-bda.js: %s", p.stderr.String())
		// The library's logger writes to stdout too; the result is the
		// last line.
		lines := strings.Split(strings.TrimSpace(out), "\n")
		var got struct {
			Option       string
			Held         []string
			MaxHeld      int
			Jobs         map[string][]string
			Runs         map[string]int
			Echo         string
			Background   []string
			Keep         string
			AfterReset   string
			WorkerErrors []string
		}
		require.NoError(t, json.Unmarshal([]byte(lines[len(lines)-1]), &got), "output %q", out)
		require.Equal(t, "ping", got.Echo)
		require.Equal(t, "exceptions", got.Option)
		require.Equal(t, []string{"high", "normal", "low"}, got.Held, "three GRAB_JOBs at once get the jobs by priority")
		require.Equal(t, 3, got.MaxHeld, "three jobs at once on one worker connection")
		// How often the poll sees each state depends on timing; what it
		// sees, in order, does not.
		require.NotEmpty(t, got.Background)
		require.Equal(t, "known", got.Background[0])
		require.Equal(t, "unknown", got.Background[len(got.Background)-1])
		require.Subset(t, []string{"known", "known running", "unknown"}, got.Background)
		many := make([]string, 20)
		for i := range many {
			many[i] = fmt.Sprint("complete:M", i)
		}
		want := map[string][]string{
			"upper":    {"complete:HELLO"},
			"progress": {"data:part", "status:1/2", "warning:careful", "status:2/2", "complete:done"},
			"high":     {"complete:HIGH"},
			"big":      {"complete:3 MiB upper"},
			"many":     many,
			"coalesce": {"complete:once", "complete:once"},
			"after":    {"complete:after reset"},
			// A client with OPTION_REQ "exceptions".
			"optexception": {"exception:broken"},
		}
		runs := map[string]int{"held": 3, "upper": 23, "progress": 1, "coalesce": 1, "keep": 1, "after": 1, "exception": 1}
		if s.isGearwork() {
			want["fail"] = []string{"failed"}
			want["exception"] = []string{"failed"}
			runs["fail"], runs["exception"] = 1, 2
		}
		require.Empty(t, cmp.Diff(want, got.Jobs), "(-want +got)")
		require.Equal(t, runs, got.Runs, "each job ran once, the coalesced one too")
		require.Equal(t, "known", got.AfterReset, "a job of a function the worker reset waits")
		if s.isGearwork() {
			require.Equal(t, "unknown", got.Keep, "the job held across RESET_ABILITIES completed")
			require.Empty(t, got.WorkerErrors)
		} else {
			require.Equal(t, "known", got.Keep, "gearmand took the job back")
			require.Equal(t, []string{"JOB_NOT_FOUND"}, got.WorkerErrors)
		}
	})
}

// TestAbraxasTwoServers: abraxas 2.1.10 on two servers of a kind
// (testdata/node/abraxas-servers.js): a worker connection to both with
// maxJobs 2, woken by NOOP, grabs two jobs at once; "maxqueue abs_q 2"
// as a text command on each of its binary connections; 30 jobs at once
// from a client on both servers; three background jobs of abs_q on the
// first server, the third refused as the queue is full (gearmand 1.1.20
// answered OK to maxqueue for a function it did not know yet, and kept no
// limit: item 29 of "Differences from gearmand"). Then the first
// server stops: the client and the worker see it go, and ten jobs go to
// the second server. It starts again on its address: the worker connects
// again (its CAN_DO and PRE_SLEEP once more), and a client on that server
// alone gets a job done.
func TestAbraxasTwoServers(t *testing.T) {
	t.Parallel()
	mods := nodeModules(t)
	eachServer(t, func(t *testing.T, s1 *server) {
		s2 := startLike(t, s1)
		// The scenario reads a line from stdin after each stop and start:
		// an *os.File, so that no goroutine copies it.
		stdin, next, err := os.Pipe()
		require.NoError(t, err)
		t.Cleanup(func() { next.Close() })
		p := startProcWith(t, func(cmd *exec.Cmd) {
			cmd.Stdin = stdin
			cmd.Env = append(os.Environ(), "NODE_PATH="+mods)
		}, need(t, "node"), testdata("node", "abraxas-servers.js"), s1.addr, s2.addr)
		stdin.Close()
		asked := func(what string) {
			testwait.Until(t, "the scenario to ask for "+what, func() bool {
				return strings.Contains(p.stderr.String(), what+"\n") || p.exited()
			})
			require.False(t, p.exited(), "abraxas-servers.js exited: %s", p.stderr.String())
		}
		asked("stop")
		s1.stop(t)
		_, err = next.Write([]byte("stopped\n"))
		require.NoError(t, err)
		asked("restart")
		restartServer(t, s1)
		_, err = next.Write([]byte("started\n"))
		require.NoError(t, err)
		out, err := p.wait(t)
		require.NoError(t, err, "abraxas-servers.js: %s", p.stderr.String())
		var got struct {
			MaxActive   int
			MaxqueueSet []string
			Many        []string
			Maxqueue    []string
			Failover    []string
			Again       string
		}
		require.NoError(t, json.Unmarshal([]byte(out), &got), "output %q", out)
		many := make([]string, 30)
		for i := range many {
			many[i] = fmt.Sprint("JOB ", i)
		}
		failover := make([]string, 10)
		for i := range failover {
			failover[i] = fmt.Sprint("AFTER ", i)
		}
		require.Equal(t, 2, got.MaxActive, "two jobs at once on the worker")
		require.Equal(t, []string{"ok", "ok"}, got.MaxqueueSet, "OK to maxqueue on each connection")
		require.Equal(t, many, got.Many)
		if s1.isGearwork() {
			require.Equal(t, []string{"created", "created", "error Job queue is full"}, got.Maxqueue)
		} else {
			require.Equal(t, []string{"created", "created", "created"}, got.Maxqueue, "gearmand kept no limit")
		}
		require.Equal(t, failover, got.Failover)
		require.Equal(t, "BACK AGAIN", got.Again)
	})
}
