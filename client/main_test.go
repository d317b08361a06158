package client_test

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/gearwork/gearwork/client"
	"github.com/gearwork/gearwork/internal/gearmantest"
	"github.com/gearwork/gearwork/worker"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

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

func newClient(t *testing.T, servers ...string) *client.Client {
	t.Helper()
	c, err := client.New(client.Config{Servers: servers, Logger: quiet,
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond})
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

// startWorker runs a worker with the given functions until the test ends.
func startWorker(t *testing.T, cfg worker.Config, fns ...worker.Function) *worker.Worker {
	t.Helper()
	cfg.Logger = quiet
	cfg.MinBackoff, cfg.MaxBackoff = 10*time.Millisecond, 50*time.Millisecond
	w, err := worker.New(cfg)
	require.NoError(t, err)
	for _, f := range fns {
		w.Register(f)
	}
	require.NoError(t, w.Start(context.Background()))
	t.Cleanup(w.Stop)
	return w
}

func fn(name string, f func(ctx context.Context, j *worker.Job) ([]byte, error)) worker.Function {
	return worker.Function{Name: name, Handler: worker.HandlerFunc(f)}
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}
