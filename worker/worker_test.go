package worker_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/gearwork/gearwork/client"
	"github.com/gearwork/gearwork/internal/broker"
	"github.com/gearwork/gearwork/internal/gearmantest"
	"github.com/gearwork/gearwork/internal/testwait"
	"github.com/gearwork/gearwork/worker"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// status returns the server's view of one function.
func status(b *broker.Broker, fn string) broker.FunctionStatus {
	for _, f := range b.Status(context.Background()) {
		if f.Name == fn {
			return f
		}
	}
	return broker.FunctionStatus{Name: fn}
}

func TestConcurrencyLimit(t *testing.T) {
	t.Parallel()
	srv := gearmantest.Start(t)
	c := gearmantest.NewClient(t, srv.Addr())
	ctx := testwait.Context(t)
	for i := range 12 {
		_, err := c.SubmitBackground(ctx, client.Request{Function: "limited", Payload: []byte(strconv.Itoa(i))})
		require.NoError(t, err)
	}
	var active, peak, done atomic.Int32
	release := make(chan struct{})
	w := gearmantest.NewWorker(t, worker.Config{Servers: []string{srv.Addr()}, Concurrency: 3})
	w.HandleFunc("limited", func(context.Context, *worker.Job) ([]byte, error) {
		n := active.Add(1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		<-release
		active.Add(-1)
		done.Add(1)
		return nil, nil
	})
	require.NoError(t, w.Start(context.Background()))
	testwait.Until(t, "three running jobs", func() bool { return active.Load() == 3 })
	// The server agrees: three running, nine waiting, and the worker
	// holds no grab beyond its limit.
	st := status(srv.Broker(), "limited")
	require.Equal(t, 3, st.Running)
	require.Equal(t, 12, st.Total)
	close(release)
	testwait.Until(t, "all jobs done", func() bool { return done.Load() == 12 })
	require.Equal(t, int32(3), peak.Load())
}

func TestGracefulShutdownFinishesRunningJobs(t *testing.T) {
	t.Parallel()
	srv := gearmantest.Start(t)
	c := gearmantest.NewClient(t, srv.Addr())
	ctx := testwait.Context(t)
	started := make(chan struct{}, 2)
	release := make(chan struct{})
	var cancelled atomic.Bool
	w := gearmantest.NewWorker(t, worker.Config{Servers: []string{srv.Addr()}, Concurrency: 2})
	w.HandleFunc("work", func(ctx context.Context, j *worker.Job) ([]byte, error) {
		started <- struct{}{}
		<-release
		cancelled.Store(ctx.Err() != nil)
		return append([]byte("done "), j.Payload...), nil
	})
	require.NoError(t, w.Start(context.Background()))
	var tasks []*client.Task
	for i := range 3 {
		task, err := c.Submit(ctx, client.Request{Function: "work", Payload: []byte(strconv.Itoa(i))})
		require.NoError(t, err)
		tasks = append(tasks, task)
	}
	<-started
	<-started
	shutdown := make(chan error)
	go func() { shutdown <- w.Shutdown(ctx) }()
	testwait.Until(t, "the shutdown to begin", func() bool { return worker.Draining(w) })
	close(release)
	require.NoError(t, <-shutdown)
	require.False(t, cancelled.Load(), "a graceful shutdown does not cancel running jobs")
	// The results were sent before Shutdown returned; the server forwards
	// them to the client.
	for _, task := range tasks[:2] {
		res, err := task.Wait(ctx)
		require.NoError(t, err)
		require.Contains(t, []string{"done 0", "done 1"}, string(res))
	}
	select {
	case <-tasks[2].Done():
		t.Fatal("the third job ran although the worker was shutting down")
	default:
	}
	// The server sees the worker leave once it reads the closed connection.
	testwait.Until(t, "the server to drop the worker", func() bool { return status(srv.Broker(), "work").Workers == 0 })
	st := status(srv.Broker(), "work")
	require.Equal(t, 1, st.Total, "the job that never started is still queued")
	require.Equal(t, 1, st.Queued[1])
	require.NoError(t, w.Shutdown(ctx), "a second Shutdown is harmless")
	w.Stop()
}

func TestShutdownDeadlineCancelsJobs(t *testing.T) {
	t.Parallel()
	srv := gearmantest.Start(t)
	c := gearmantest.NewClient(t, srv.Addr())
	ctx := testwait.Context(t)
	started := make(chan struct{})
	causes := make(chan error, 1)
	w := gearmantest.NewWorker(t, worker.Config{Servers: []string{srv.Addr()}})
	w.HandleFunc("stuck", func(ctx context.Context, _ *worker.Job) ([]byte, error) {
		close(started)
		<-ctx.Done()
		causes <- context.Cause(ctx)
		return nil, ctx.Err()
	})
	require.NoError(t, w.Start(context.Background()))
	_, err := c.SubmitBackground(ctx, client.Request{Function: "stuck"})
	require.NoError(t, err)
	<-started
	expired, cancel := context.WithCancel(context.Background())
	cancel()
	require.ErrorIs(t, w.Shutdown(expired), context.Canceled)
	require.ErrorIs(t, <-causes, worker.ErrStopped)
	w.Stop()
	// The server took the job back for another worker.
	testwait.Until(t, "the job to be queued again", func() bool {
		st := status(srv.Broker(), "stuck")
		return st.Running == 0 && st.Queued[1] == 1
	})
}

// TestTimeoutFails: a job that runs past its function's Timeout has its
// context cancelled with ErrTimeout. Gearwork then fails the job, as the
// protocol describes CAN_DO_TIMEOUT: the client gets WORK_FAIL and the job
// does not run again (no retry policy). gearmand 1.1.20 takes the job
// back and runs it again instead.
func TestTimeoutFails(t *testing.T) {
	t.Parallel()
	for _, kind := range []struct {
		name  string
		start func(t *testing.T) string
		// retried: the server runs the job a second time.
		retried bool
	}{
		{"gearwork", func(t *testing.T) string { return gearmantest.Start(t).Addr() }, false},
		{"gearmand", func(t *testing.T) string { return gearmantest.StartGearmand(t).Addr }, true},
	} {
		t.Run(kind.name, func(t *testing.T) {
			t.Parallel()
			addr := kind.start(t)
			var attempts atomic.Int32
			causes := make(chan error, 1)
			w := gearmantest.NewWorker(t, worker.Config{Servers: []string{addr}})
			w.Register(worker.Function{Name: "slow", Timeout: time.Second, Handler: worker.HandlerFunc(
				func(ctx context.Context, _ *worker.Job) ([]byte, error) {
					if attempts.Add(1) == 1 {
						<-ctx.Done()
						causes <- context.Cause(ctx)
						return nil, ctx.Err()
					}
					return []byte("second try"), nil
				})})
			require.NoError(t, w.Start(context.Background()))
			c := gearmantest.NewClient(t, addr)
			res, err := c.Do(testwait.Context(t), client.Request{Function: "slow"})
			require.ErrorIs(t, <-causes, worker.ErrTimeout)
			if kind.retried {
				require.NoError(t, err)
				require.Equal(t, "second try", string(res))
				require.Equal(t, int32(2), attempts.Load())
				return
			}
			require.ErrorIs(t, err, client.ErrJobFailed)
			require.Equal(t, int32(1), attempts.Load())
		})
	}
}

func TestSeveralServersAndReconnect(t *testing.T) {
	t.Parallel()
	a, b := gearmantest.Start(t), gearmantest.Start(t)
	var mu sync.Mutex
	seen := map[string]string{}
	w := gearmantest.NewWorker(t, worker.Config{Servers: []string{a.Addr(), b.Addr()}, Concurrency: 2, ClientID: "multi"})
	w.HandleFunc("where", func(_ context.Context, j *worker.Job) ([]byte, error) {
		mu.Lock()
		seen[string(j.Payload)] = j.Server
		mu.Unlock()
		return []byte(j.Server), nil
	})
	require.NoError(t, w.Start(context.Background()))
	ctx := testwait.Context(t)
	for _, s := range []*gearmantest.Server{a, b} {
		res, err := gearmantest.NewClient(t, s.Addr()).Do(ctx, client.Request{Function: "where", Payload: []byte(s.Addr())})
		require.NoError(t, err)
		require.Equal(t, s.Addr(), string(res))
	}
	require.Equal(t, map[string]string{a.Addr(): a.Addr(), b.Addr(): b.Addr()}, seen)
	var ids []string
	for _, wi := range a.Broker().Workers() {
		if len(wi.Functions) > 0 {
			ids = append(ids, wi.ClientID)
		}
	}
	require.Equal(t, []string{"multi"}, ids)

	// After a restart the worker comes back and registers again.
	require.NoError(t, a.Restart())
	testwait.Until(t, "the worker to reconnect", func() bool { return status(a.Broker(), "where").Workers == 1 })
	c := gearmantest.NewClient(t, a.Addr())
	res, err := c.Do(ctx, client.Request{Function: "where", Payload: []byte("again")})
	require.NoError(t, err)
	require.Equal(t, a.Addr(), string(res))
}

func TestWorkerAgainstGearmand(t *testing.T) {
	t.Parallel()
	g := gearmantest.StartGearmand(t)
	w := gearmantest.NewWorker(t, worker.Config{Servers: []string{g.Addr}, Concurrency: 4})
	var runs atomic.Int32
	w.HandleFunc("count", func(_ context.Context, j *worker.Job) ([]byte, error) {
		runs.Add(1)
		return j.Payload, nil
	})
	require.NoError(t, w.Start(context.Background()))
	c := gearmantest.NewClient(t, g.Addr)
	ctx := testwait.Context(t)
	for i := range 50 {
		_, err := c.SubmitBackground(ctx, client.Request{Function: "count", Payload: []byte(strconv.Itoa(i))})
		require.NoError(t, err)
	}
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			res, err := c.Do(ctx, client.Request{Function: "count", Payload: []byte(strconv.Itoa(i))})
			if err != nil || string(res) != strconv.Itoa(i) {
				t.Errorf("job %d: %q, %v", i, res, err)
			}
		})
	}
	wg.Wait()
	testwait.Until(t, "all 70 jobs", func() bool { return runs.Load() == 70 })
}

func TestSendAfterEnd(t *testing.T) {
	t.Parallel()
	srv := gearmantest.Start(t)
	kept := make(chan *worker.Job, 1)
	w := gearmantest.NewWorker(t, worker.Config{Servers: []string{srv.Addr()}})
	w.HandleFunc("keep", func(_ context.Context, j *worker.Job) ([]byte, error) {
		kept <- j
		return nil, nil
	})
	require.NoError(t, w.Start(context.Background()))
	_, err := gearmantest.NewClient(t, srv.Addr()).Do(testwait.Context(t), client.Request{Function: "keep"})
	require.NoError(t, err)
	j := <-kept
	require.ErrorIs(t, j.SendData([]byte("late")), worker.ErrJobEnded)
}

func TestLifecycle(t *testing.T) {
	t.Parallel()
	srv := gearmantest.Start(t)
	w := gearmantest.NewWorker(t, worker.Config{Servers: []string{srv.Addr()}})
	w.Stop() // before Start
	require.NoError(t, w.Shutdown(context.Background()))
	require.Error(t, w.Start(context.Background()), "no function registered")

	// Start and stop repeatedly while jobs flow.
	c := gearmantest.NewClient(t, srv.Addr())
	ctx := testwait.Context(t)
	for i := range 10 {
		w := gearmantest.NewWorker(t, worker.Config{Servers: []string{srv.Addr()}, Concurrency: 2})
		w.HandleFunc("cycle", func(_ context.Context, j *worker.Job) ([]byte, error) { return j.Payload, nil })
		require.NoError(t, w.Start(context.Background()))
		require.Error(t, w.Start(context.Background()), "already started")
		_, err := c.SubmitBackground(ctx, client.Request{Function: "cycle", Payload: []byte(fmt.Sprint(i))})
		require.NoError(t, err)
		if i%2 == 0 {
			w.Stop()
		} else {
			require.NoError(t, w.Shutdown(ctx))
		}
		w.Stop()
	}

	// Cancelling Start's context stops the worker too.
	runCtx, cancel := context.WithCancel(context.Background())
	w = gearmantest.NewWorker(t, worker.Config{Servers: []string{srv.Addr()}})
	w.HandleFunc("cycle", func(_ context.Context, j *worker.Job) ([]byte, error) { return nil, nil })
	require.NoError(t, w.Start(runCtx))
	testwait.Until(t, "the worker to register", func() bool { return status(srv.Broker(), "cycle").Workers == 1 })
	cancel()
	testwait.Until(t, "the worker to disconnect", func() bool { return status(srv.Broker(), "cycle").Workers == 0 })
	w.Stop()
}

func TestRegisterAfterStart(t *testing.T) {
	t.Parallel()
	srv := gearmantest.Start(t)
	w := gearmantest.NewWorker(t, worker.Config{Servers: []string{srv.Addr()}})
	w.HandleFunc("first", func(context.Context, *worker.Job) ([]byte, error) { return []byte("1"), nil })
	require.NoError(t, w.Start(context.Background()))
	testwait.Until(t, "the worker to register", func() bool { return status(srv.Broker(), "first").Workers == 1 })
	w.HandleFunc("second", func(context.Context, *worker.Job) ([]byte, error) {
		return nil, &worker.Exception{Data: []byte("nope")}
	})
	_, err := gearmantest.NewClient(t, srv.Addr()).Do(testwait.Context(t), client.Request{Function: "second"})
	var exc *client.ExceptionError
	require.True(t, errors.As(err, &exc), "got %v", err)
	require.Equal(t, "nope", string(exc.Data))
}
