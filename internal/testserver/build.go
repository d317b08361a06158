package testserver

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

// BuildCommand returns the "go build" command that writes the gearwork
// binary to out. When the tests run with the race detector (as make test
// runs them) the binary is built with it too, so that the end-to-end tests
// look for data races in the server as well; run it with Env.
func BuildCommand(out string) *exec.Cmd {
	args := []string{"build"}
	if raceEnabled {
		args = append(args, "-race")
	}
	return exec.Command("go", append(args, "-o", out, "github.com/gearwork/gearwork/cmd/gearwork")...)
}

// Env is the environment for a server built by BuildCommand: the tests'
// own, and GORACE=halt_on_error=1 so that a data race ends the server
// (exit status 66) and the test that started it notices.
func Env() []string {
	return append(os.Environ(), "GORACE=halt_on_error=1")
}

// A build of the binary: race as BuildCommand chooses, plain without the
// race detector (for tests that measure the server's memory).
type build struct {
	once sync.Once
	path string
	err  error
}

var race, plain build

func (b *build) get(t testing.TB, instrumented bool) string {
	t.Helper()
	b.once.Do(func() {
		dir, err := os.MkdirTemp("", "gearwork-bin-")
		if err != nil {
			b.err = err
			return
		}
		b.path = filepath.Join(dir, "gearwork")
		cmd := BuildCommand(b.path)
		if !instrumented {
			cmd = exec.Command("go", "build", "-o", b.path, "github.com/gearwork/gearwork/cmd/gearwork")
		}
		if out, err := cmd.CombinedOutput(); err != nil {
			b.err = fmt.Errorf("go build: %w\n%s", err, out)
		}
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}

// Binary builds gearwork once per test process with BuildCommand (into a
// temporary directory removed by Cleanup) and returns its path.
func Binary(t testing.TB) string {
	t.Helper()
	return race.get(t, true)
}

// PlainBinary is Binary without the race detector, for tests that measure
// the server's memory (the detector multiplies it).
func PlainBinary(t testing.TB) string {
	t.Helper()
	return plain.get(t, false)
}

// Main runs the package's tests, then removes the binaries (Cleanup) and
// runs the other cleanups given, and exits. Call it from TestMain:
//
//	func TestMain(m *testing.M) { testserver.Main(m, pgtest.Cleanup) }
func Main(m *testing.M, cleanups ...func()) {
	code := m.Run()
	Cleanup()
	for _, c := range cleanups {
		c()
	}
	os.Exit(code)
}

// Cleanup removes the binaries built by Binary and PlainBinary; call it
// from TestMain (or use Main).
func Cleanup() {
	for _, b := range []*build{&race, &plain} {
		if b.path != "" {
			os.RemoveAll(filepath.Dir(b.path))
		}
	}
}

// Run runs the binary with args to completion (bounded by ctx) and
// returns its combined output and exit code. A "serve" gets "--store
// memory:" first (a --store among args wins), so that tests do not share
// the default data directory.
func Run(ctx context.Context, t testing.TB, args ...string) (string, int) {
	t.Helper()
	if len(args) > 0 && args[0] == "serve" {
		args = append([]string{"serve", "--store", "memory:"}, args[1:]...)
	}
	cmd := exec.CommandContext(ctx, Binary(t), args...)
	cmd.Env = Env()
	out, err := cmd.CombinedOutput()
	if err != nil && cmd.ProcessState == nil {
		t.Fatal(err)
	}
	return string(out), cmd.ProcessState.ExitCode()
}
