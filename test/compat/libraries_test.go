package compat

import (
	"encoding/json"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// Tests that run Gearman client libraries written elsewhere against
// gearwork: each library's own test suite where its package ships one,
// pointed at a gearwork server, and a scenario script otherwise.
// scripts/deps.sh installs the Node packages (testdata/node/package.json)
// into a cache directory and downloads the Go modules
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

// TestG2ClientSuite runs the client tests of github.com/appscode/g2 (Go)
// against gearwork, among them TestClientDoCron (SUBMIT_JOB_SCHED) and
// TestClientDoAt (SUBMIT_JOB_EPOCH). The tests dial 127.0.0.1:4730, which
// is rewritten to the test server's address; TestClientDo needs a worker
// for "scheduledJobTest", here the gearman tool. Left out: TestPoolDoBg,
// TestPoolDo and TestPoolStatus, because g2's Pool.Do and Pool.DoBg take
// the client's mutex and then call Client.do, which takes it again: they
// deadlock before sending anything, against any server. (g2's worker tests
// do not compile: worker_disconnect_test.go declares a variable it never
// uses.)
func TestG2ClientSuite(t *testing.T) {
	t.Parallel()
	goBin := need(t, "go")
	modDir := testdata("golib", "g2")
	gomod, err := os.ReadFile(filepath.Join(modDir, "go.mod"))
	require.NoError(t, err)
	m := sourceRE.FindSubmatch(gomod)
	require.NotNil(t, m, "testdata/golib/g2/go.mod names no source")
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

	s := startGearwork(t)
	src := t.TempDir()
	for _, d := range []string{"client", filepath.Join("pkg", "runtime")} {
		require.NoError(t, os.CopyFS(filepath.Join(src, d), os.DirFS(filepath.Join(mod.Dir, d))))
	}
	for _, f := range []string{"go.mod", "go.sum"} {
		data, err := os.ReadFile(filepath.Join(modDir, f))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(src, f), data, 0o644))
	}
	tests, err := fs.Glob(os.DirFS(src), "client/*_test.go")
	require.NoError(t, err)
	for _, f := range tests {
		path := filepath.Join(src, f)
		data, err := os.ReadFile(path)
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(path, []byte(strings.ReplaceAll(string(data), "127.0.0.1:4730", s.addr)), 0o644))
	}

	gearmanCLI(t, s, "", "-w", "-f", "scheduledJobTest", "--", "cat")
	waitStatus(t, s, "scheduledJobTest", funcStatus{Workers: 1})
	run := []string{"TestClientAddServer", "TestClientEcho", "TestClientDoBg", "TestClientDoCron",
		"TestClientDoAt", "TestClientDo", "TestClientStatus", "TestClientClose", "TestAutoInc",
		"TestPoolAdd", "TestPoolEcho", "TestPoolClose", "TestValidateAndGet"}
	p := startProcIn(t, src, []string{"GOFLAGS=-mod=mod", "GOWORK=off"}, goBin,
		"test", "-count=1", "-v", "-timeout", "60s", "-run", "^("+strings.Join(run, "|")+")$", "./client/")
	got, err := p.wait(t)
	require.NoError(t, err, "g2's client tests failed:\n%s\n%s", got, p.stderr.String())
	for _, name := range run {
		require.Contains(t, got, "--- PASS: "+name+" ", "g2's %s", name)
	}
	// TestClientDoCron's job is known to the server and waits for its time.
	require.Equal(t, funcStatus{Total: 2, Workers: 1}, status(t, s)["scheduledJobTest"],
		"the DoCron and DoAt jobs wait for their time")
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
	// whatever the server. The suite gets three tries; every test must pass
	// in one of them.
	node := need(t, "node")
	var got string
	for try := 1; try <= 3; try++ {
		p := startProcIn(t, pkg, []string{"NODE_PATH=" + mods}, node, "run_tests.js")
		var err error
		got, err = p.wait(t)
		if err == nil || !strings.Contains(p.stderr.String(), "reading 'value'") {
			require.NoError(t, err, "node-gearman's tests failed:\n%s\n%s", got, p.stderr.String())
			break
		}
		t.Logf("try %d: nodeunit crashed on the suite's own timer race:\n%s", try, got)
	}
	require.Contains(t, got, "OK: ")
	require.NotContains(t, got, "FAILURES")
	require.Equal(t, 9, strings.Count(got, "✔"), "every test of the suite passed:\n%s", got)
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
