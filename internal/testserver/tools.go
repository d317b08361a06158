package testserver

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"testing"
	"time"
)

// NeedCommand returns the path of a program the tests need (a Debian tool
// such as gearman, curl, openssl or chromium, or an absolute path such as
// /usr/sbin/gearmand). scripts/deps.sh installs them all, so a missing one
// fails the test; GEARWORK_ALLOW_SKIP=1 turns that into a skip for
// developers who run a part of the suite without them.
func NeedCommand(t testing.TB, program string) string {
	t.Helper()
	path, err := exec.LookPath(program)
	if err == nil {
		return path
	}
	if os.Getenv("GEARWORK_ALLOW_SKIP") == "1" {
		t.Skipf("%s is not installed (run scripts/deps.sh); skipped because GEARWORK_ALLOW_SKIP=1", program)
	}
	t.Fatalf("%s is not installed: run scripts/deps.sh (or set GEARWORK_ALLOW_SKIP=1 to skip)", program)
	return ""
}

// Curl runs "curl -sS --max-time 60" with args until it exits or ctx ends,
// and returns what it printed and its exit code: stdout when it succeeded,
// stdout then stderr with curl's own code (e.g. 35 or 56 for a refused
// handshake) when it failed. It fails the test if curl cannot run.
func Curl(ctx context.Context, t testing.TB, args ...string) (string, int) {
	t.Helper()
	bin := NeedCommand(t, "curl")
	out, err := exec.CommandContext(ctx, bin, append([]string{"-sS", "--max-time", "60"}, args...)...).Output()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		return string(out) + string(ee.Stderr), ee.ExitCode()
	case err != nil:
		t.Fatalf("curl %v: %v", args, err)
	}
	return string(out), 0
}

// GearmanCLI runs Debian's gearman tool (libgearman's client, or its
// worker with -w) against the server at addr (host:port) with args, for at
// most a minute, and returns what it wrote to stdout and stderr; err tells
// how it failed.
func GearmanCLI(t testing.TB, addr string, args ...string) (string, error) {
	t.Helper()
	bin := NeedCommand(t, "gearman")
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, append([]string{"-h", host, "-p", port}, args...)...).CombinedOutput()
	return string(out), err
}
