// Package testwait waits in tests for a condition that another goroutine or
// process makes true. It polls instead of sleeping for a guessed time; its
// deadline only catches hangs, so a slow machine never fails a test.
package testwait

import (
	"context"
	"testing"
	"time"
)

// Timeout bounds every wait: generous, since it only catches a condition
// that never comes.
const Timeout = time.Minute

// Context returns a context that ends after Timeout or when the test
// ends, for calls that take one: it only catches a call that never
// returns.
func Context(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	t.Cleanup(cancel)
	return ctx
}

// Until polls cond every few milliseconds until it holds, and fails t
// (naming what it waited for) when Timeout passes first. cond runs on the
// calling goroutine and may use t.
func Until(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(Timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
