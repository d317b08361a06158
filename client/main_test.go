package client_test

import (
	"context"
	"testing"

	"go.uber.org/goleak"

	"github.com/gearwork/gearwork/internal/gearmantest"
	"github.com/gearwork/gearwork/worker"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// serverKind starts one kind of job server and returns its address.
type serverKind struct {
	name  string
	start func(t *testing.T) string
}

// serverKinds are the servers a behaviour shared by every Gearman server
// is tested against: ours in process and Debian's C gearmand.
var serverKinds = []serverKind{
	{"gearwork", func(t *testing.T) string { return gearmantest.Start(t).Addr() }},
	{"gearmand", func(t *testing.T) string { return gearmantest.StartGearmand(t).Addr }},
}

// forEachServer runs test as a parallel subtest against each of
// serverKinds, with the address of a server started for it.
func forEachServer(t *testing.T, test func(t *testing.T, addr string)) {
	for _, kind := range serverKinds {
		t.Run(kind.name, func(t *testing.T) {
			t.Parallel()
			test(t, kind.start(t))
		})
	}
}

func fn(name string, f func(ctx context.Context, j *worker.Job) ([]byte, error)) worker.Function {
	return worker.Function{Name: name, Handler: worker.HandlerFunc(f)}
}
