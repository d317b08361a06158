package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// goTestJSON runs "go test -json" on a throwaway module with the given
// test file and returns its output, so the checker reads what go test
// really writes.
func goTestJSON(t *testing.T, testFile string) []byte {
	t.Helper()
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module example.com/m\n\ngo 1.24\n"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "m_test.go"), []byte(testFile), 0o644))
	cmd := exec.Command("go", "test", "-json", "-count=1", ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod")
	out, _ := cmd.Output() // a failing test exits non-zero; the events tell
	return out
}

const skipping = `package m

import "testing"

func TestRuns(t *testing.T) { t.Log("quiet when passing") }

func TestNeedsTool(t *testing.T) { t.Skip("frobnicate is not installed") }

func TestParent(t *testing.T) {
	t.Run("sub", func(t *testing.T) { t.Skipf("needs %s", "PostgreSQL") })
}
`

func TestSkipsFailWithoutOptIn(t *testing.T) {
	t.Parallel()
	in := goTestJSON(t, skipping)
	var out bytes.Buffer
	require.Equal(t, 1, run(bytes.NewReader(in), &out, false), "%s", out.String())
	got := out.String()
	require.Contains(t, got, "ok  \texample.com/m")
	require.Contains(t, got, "== skipped tests: 2\n")
	require.Contains(t, got, "SKIP example.com/m TestNeedsTool: m_test.go:7: frobnicate is not installed\n")
	require.Contains(t, got, "SKIP example.com/m TestParent/sub: m_test.go:10: needs PostgreSQL\n")
	require.NotContains(t, got, "SKIP example.com/m TestParent:", "a parent whose subtest skipped ran")
	require.NotContains(t, got, "PASS\n", "plain go test prints no PASS line for a package")
	require.NotContains(t, got, "quiet when passing", "a passing test's output is not shown")
	require.NotContains(t, got, "=== RUN")

	out.Reset()
	var summary bytes.Buffer
	require.Equal(t, 0, runTo(bytes.NewReader(in), &out, &summary, true), "GEARWORK_ALLOW_SKIP=1 accepts skips: %s", out.String())
	require.Contains(t, out.String(), "SKIP example.com/m TestNeedsTool")
	require.Equal(t, "== skipped tests: 2\n"+
		"SKIP example.com/m TestNeedsTool: m_test.go:7: frobnicate is not installed\n"+
		"SKIP example.com/m TestParent/sub: m_test.go:10: needs PostgreSQL\n", summary.String(), "the summary alone, for the end of make test")
}

func TestFailureShowsItsOutput(t *testing.T) {
	t.Parallel()
	in := goTestJSON(t, `package m

import "testing"

func TestOK(t *testing.T) {}

func TestBroken(t *testing.T) { t.Fatal("this is why") }
`)
	var out bytes.Buffer
	require.Equal(t, 1, run(bytes.NewReader(in), &out, true))
	got := out.String()
	require.Contains(t, got, "--- FAIL: TestBroken")
	require.Contains(t, got, "m_test.go:7: this is why")
	require.Contains(t, got, "FAIL\texample.com/m")
	require.Contains(t, got, "== skipped tests: none\n")
}

func TestNoSkipsPass(t *testing.T) {
	t.Parallel()
	in := goTestJSON(t, "package m\n\nimport \"testing\"\n\nfunc TestOK(t *testing.T) {}\n")
	var out bytes.Buffer
	require.Equal(t, 0, run(bytes.NewReader(in), &out, false), "%s", out.String())
	require.Contains(t, out.String(), "== skipped tests: none\n")
}

func TestPanicShowsTheRunningTestsOutput(t *testing.T) {
	t.Parallel()
	in := goTestJSON(t, `package m

import "testing"

func TestPanics(t *testing.T) {
	t.Log("before the panic")
	panic("boom")
}
`)
	var out bytes.Buffer
	require.Equal(t, 1, run(bytes.NewReader(in), &out, true))
	require.Contains(t, out.String(), "panic: boom")
	require.Contains(t, out.String(), "FAIL\texample.com/m")
}
