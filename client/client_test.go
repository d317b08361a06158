package client_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/client"
	"github.com/gearwork/gearwork/internal/gearmantest"
	"github.com/gearwork/gearwork/internal/testwait"
	"github.com/gearwork/gearwork/worker"
)

func TestForegroundUpdatesAndResult(t *testing.T) {
	t.Parallel()
	forEachServer(t, func(t *testing.T, addr string) {
		gearmantest.StartWorker(t, worker.Config{Servers: []string{addr}}, fn("upper", func(ctx context.Context, j *worker.Job) ([]byte, error) {
			require.NoError(t, j.SendStatus(1, 3))
			require.NoError(t, j.SendData([]byte("part1")))
			require.NoError(t, j.SendWarning([]byte("careful")))
			require.NoError(t, j.SendStatus(3, 3))
			return bytes.ToUpper(j.Payload), nil
		}))
		c := gearmantest.NewClient(t, addr)
		var got []client.Update
		for _, prio := range []client.Priority{client.PriorityNormal, client.PriorityHigh, client.PriorityLow} {
			got = got[:0]
			res, err := c.Do(testwait.Context(t), client.Request{Function: "upper", Payload: []byte("hello " + prio.String()),
				Priority: prio, UpdateFunc: func(u client.Update) { got = append(got, u) }})
			require.NoError(t, err)
			require.Equal(t, strings.ToUpper("hello "+prio.String()), string(res))
			want := []client.Update{
				{Kind: client.UpdateStatus, Numerator: 1, Denominator: 3},
				{Kind: client.UpdateData, Data: []byte("part1")},
				{Kind: client.UpdateWarning, Data: []byte("careful")},
				{Kind: client.UpdateStatus, Numerator: 3, Denominator: 3},
			}
			require.Empty(t, cmp.Diff(want, got), "updates (-want +got)")
		}
	})
}

func TestFailAndException(t *testing.T) {
	t.Parallel()
	forEachServer(t, func(t *testing.T, addr string) {
		gearmantest.StartWorker(t, worker.Config{Servers: []string{addr}},
			fn("fail", func(context.Context, *worker.Job) ([]byte, error) { return nil, errors.New("boom") }),
			fn("throw", func(_ context.Context, j *worker.Job) ([]byte, error) {
				return nil, fmt.Errorf("wrapped: %w", &worker.Exception{Data: []byte("bad input: " + string(j.Payload))})
			}),
			fn("panic", func(context.Context, *worker.Job) ([]byte, error) { panic("oops") }))
		c := gearmantest.NewClient(t, addr)

		_, err := c.Do(testwait.Context(t), client.Request{Function: "fail"})
		require.ErrorIs(t, err, client.ErrJobFailed)

		_, err = c.Do(testwait.Context(t), client.Request{Function: "throw", Payload: []byte("x")})
		var exc *client.ExceptionError
		require.ErrorAs(t, err, &exc)
		require.Equal(t, "bad input: x", string(exc.Data))
		require.NotEmpty(t, exc.Handle)

		_, err = c.Do(testwait.Context(t), client.Request{Function: "panic"})
		require.ErrorIs(t, err, client.ErrJobFailed)
	})
}

func TestBackgroundStatus(t *testing.T) {
	t.Parallel()
	forEachServer(t, func(t *testing.T, addr string) {
		release := make(chan struct{})
		c := gearmantest.NewClient(t, addr)
		ctx := testwait.Context(t)
		job, err := c.SubmitBackground(ctx, client.Request{Function: "slow", Unique: "slow-1", Payload: []byte("p")})
		require.NoError(t, err)
		require.Equal(t, addr, job.Server)
		require.NotEmpty(t, job.Handle)

		st, err := c.Status(ctx, job)
		require.NoError(t, err)
		require.Equal(t, client.Status{Known: true}, st)

		gearmantest.StartWorker(t, worker.Config{Servers: []string{addr}}, fn("slow", func(ctx context.Context, j *worker.Job) ([]byte, error) {
			require.NoError(t, j.SendStatus(2, 5))
			<-release
			return nil, nil
		}))
		testwait.Until(t, "the job to run with status 2/5", func() bool {
			st, err = c.Status(ctx, job)
			require.NoError(t, err)
			return st.Running && st.Numerator == 2
		})
		require.Equal(t, client.Status{Known: true, Running: true, Numerator: 2, Denominator: 5}, st)

		su, err := c.StatusUnique(ctx, "slow-1")
		require.NoError(t, err)
		require.True(t, su.Known)
		require.True(t, su.Running)
		require.Equal(t, uint32(2), su.Numerator)

		// A handle asked of every server (no Server given) is found too.
		st, err = c.Status(ctx, client.Job{Handle: job.Handle})
		require.NoError(t, err)
		require.True(t, st.Known)

		close(release)
		testwait.Until(t, "the job to be gone", func() bool {
			st, err = c.Status(ctx, job)
			require.NoError(t, err)
			return !st.Known
		})
		su, err = c.StatusUnique(ctx, "slow-1")
		require.NoError(t, err)
		require.False(t, su.Known)
	})
}

func TestPriorityOrder(t *testing.T) {
	t.Parallel()
	forEachServer(t, func(t *testing.T, addr string) {
		c := gearmantest.NewClient(t, addr)
		ctx := testwait.Context(t)
		for _, p := range []client.Priority{client.PriorityLow, client.PriorityNormal, client.PriorityHigh} {
			_, err := c.SubmitBackground(ctx, client.Request{Function: "order", Payload: []byte(p.String()), Priority: p})
			require.NoError(t, err)
		}
		var mu sync.Mutex
		var order []string
		gearmantest.StartWorker(t, worker.Config{Servers: []string{addr}}, fn("order", func(_ context.Context, j *worker.Job) ([]byte, error) {
			mu.Lock()
			order = append(order, string(j.Payload))
			mu.Unlock()
			return nil, nil
		}))
		testwait.Until(t, "three jobs", func() bool { mu.Lock(); defer mu.Unlock(); return len(order) == 3 })
		require.Equal(t, []string{"high", "normal", "low"}, order)
	})
}

func TestEpoch(t *testing.T) {
	t.Parallel()
	forEachServer(t, func(t *testing.T, addr string) {
		c := gearmantest.NewClient(t, addr)
		ctx := testwait.Context(t)
		ran := make(chan string, 2)
		gearmantest.StartWorker(t, worker.Config{Servers: []string{addr}}, fn("later", func(_ context.Context, j *worker.Job) ([]byte, error) {
			ran <- string(j.Payload)
			return nil, nil
		}))
		future, err := c.SubmitBackground(ctx, client.Request{Function: "later", Payload: []byte("future"), RunAt: time.Now().Add(time.Hour)})
		require.NoError(t, err)
		_, err = c.SubmitBackground(ctx, client.Request{Function: "later", Payload: []byte("past"), RunAt: time.Unix(1, 0)})
		require.NoError(t, err)
		require.Equal(t, "past", <-ran)
		st, err := c.Status(ctx, future)
		require.NoError(t, err)
		require.Equal(t, client.Status{Known: true}, st, "the future job waits")
		select {
		case p := <-ran:
			t.Fatalf("job %q ran early", p)
		default:
		}
	})
}

func TestInvalidRequests(t *testing.T) {
	t.Parallel()
	c := gearmantest.NewClient(t, "127.0.0.1:1")
	ctx := testwait.Context(t)
	for name, req := range map[string]client.Request{
		"no function":    {},
		"long function":  {Function: string(make([]byte, 512))},
		"long unique":    {Function: "f", Unique: string(make([]byte, 65))},
		"epoch priority": {Function: "f", RunAt: time.Now(), Priority: client.PriorityHigh},
	} {
		_, err := c.SubmitBackground(ctx, req)
		require.ErrorIs(t, err, client.ErrInvalidRequest, name)
	}
	_, err := c.Submit(ctx, client.Request{Function: "f", RunAt: time.Now()})
	require.ErrorIs(t, err, client.ErrInvalidRequest)
}

// TestCoalescedForeground submits the same unique twice on one connection:
// the server runs one job and answers both submits.
func TestCoalescedForeground(t *testing.T) {
	t.Parallel()
	forEachServer(t, func(t *testing.T, addr string) {
		c := gearmantest.NewClient(t, addr)
		ctx := testwait.Context(t)
		var updates [2][]string
		submit := func(i int) *client.Task {
			task, err := c.Submit(ctx, client.Request{Function: "once", Unique: "same", Payload: []byte("x"),
				UpdateFunc: func(u client.Update) { updates[i] = append(updates[i], string(u.Data)) }})
			require.NoError(t, err)
			return task
		}
		t1, t2 := submit(0), submit(1)
		require.Equal(t, t1.Job(), t2.Job())
		var runs atomic.Int32
		gearmantest.StartWorker(t, worker.Config{Servers: []string{addr}}, fn("once", func(_ context.Context, j *worker.Job) ([]byte, error) {
			runs.Add(1)
			require.NoError(t, j.SendData([]byte("d1")))
			require.NoError(t, j.SendData([]byte("d2")))
			return []byte("result"), nil
		}))
		for _, task := range []*client.Task{t1, t2} {
			res, err := task.Wait(ctx)
			require.NoError(t, err)
			require.Equal(t, "result", string(res))
		}
		require.Equal(t, int32(1), runs.Load())
		require.Equal(t, [2][]string{{"d1", "d2"}, {"d1", "d2"}}, updates)
	})
}

// TestConcurrentRequests multiplexes many foreground and background
// requests over one connection and checks every answer reaches its caller.
func TestConcurrentRequests(t *testing.T) {
	t.Parallel()
	srv := gearmantest.Start(t)
	gearmantest.StartWorker(t, worker.Config{Servers: []string{srv.Addr()}, Concurrency: 8},
		fn("echo", func(_ context.Context, j *worker.Job) ([]byte, error) {
			if err := j.SendData(j.Payload); err != nil {
				return nil, err
			}
			return append([]byte("re:"), j.Payload...), nil
		}))
	c := gearmantest.NewClient(t, srv.Addr())
	ctx := testwait.Context(t)
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Go(func() {
			for i := range 40 {
				p := fmt.Sprintf("%d-%d", g, i)
				var data []byte
				res, err := c.Do(ctx, client.Request{Function: "echo", Payload: []byte(p),
					UpdateFunc: func(u client.Update) { data = u.Data }})
				if !(assertNoErr(t, err) && assertEq(t, "re:"+p, string(res)) && assertEq(t, p, string(data))) {
					return
				}
				if _, err := c.SubmitBackground(ctx, client.Request{Function: "bg-" + p}); !assertNoErr(t, err) {
					return
				}
				e, err := c.Echo(ctx, []byte(p))
				if !(assertNoErr(t, err) && assertEq(t, p, string(e))) {
					return
				}
			}
		})
	}
	wg.Wait()
}

// Non-fatal checks for goroutines other than the test's.
func assertNoErr(t *testing.T, err error) bool {
	if err != nil {
		t.Errorf("unexpected error: %v", err)
		return false
	}
	return true
}

func assertEq(t *testing.T, want, got string) bool {
	if want != got {
		t.Errorf("want %q, got %q", want, got)
		return false
	}
	return true
}

// startWithClient starts an in-process server and a client of it, and
// returns them with a context for the test's requests.
func startWithClient(t *testing.T) (*gearmantest.Server, *client.Client, context.Context) {
	t.Helper()
	srv := gearmantest.Start(t)
	return srv, gearmantest.NewClient(t, srv.Addr()), testwait.Context(t)
}

// requireEcho checks that the client's connection still pairs a request
// with its answer: an ECHO_REQ of data comes back as it was sent.
func requireEcho(t *testing.T, ctx context.Context, c *client.Client, data string) {
	t.Helper()
	e, err := c.Echo(ctx, []byte(data))
	require.NoError(t, err)
	require.Equal(t, data, string(e))
}

func TestContextCancelStopsWaiting(t *testing.T) {
	t.Parallel()
	_, c, testCtx := startWithClient(t)
	ctx, cancel := context.WithCancel(testCtx)
	task, err := c.Submit(ctx, client.Request{Function: "nobody-works-on-this"})
	require.NoError(t, err)
	done := make(chan error)
	go func() {
		_, err := task.Wait(ctx)
		done <- err
	}()
	cancel()
	require.ErrorIs(t, <-done, context.Canceled)
	_, err = c.Do(ctx, client.Request{Function: "x"})
	require.ErrorIs(t, err, context.Canceled)
	// The connection still works for others.
	requireEcho(t, testCtx, c, "still here")
}

func TestServerErrorAnswersSubmit(t *testing.T) {
	t.Parallel()
	srv, c, ctx := startWithClient(t)
	srv.Broker().SetMaxQueue("full", [3]int{1, 1, 1})
	_, err := c.SubmitBackground(ctx, client.Request{Function: "full"})
	require.NoError(t, err)
	_, err = c.SubmitBackground(ctx, client.Request{Function: "full"})
	var se *client.ServerError
	require.ErrorAs(t, err, &se)
	require.Equal(t, "QUEUE_ERROR", se.Code)
	// Later requests on the connection still pair with their answers.
	requireEcho(t, ctx, c, "after")
}

func TestFailoverAndSpread(t *testing.T) {
	t.Parallel()
	a, b := gearmantest.Start(t), gearmantest.Start(t)
	c := gearmantest.NewClient(t, a.Addr(), b.Addr())
	ctx := testwait.Context(t)
	where := map[string]string{}
	for i := range 40 {
		u := "u" + strconv.Itoa(i)
		job, err := c.SubmitBackground(ctx, client.Request{Function: "spread", Unique: u})
		require.NoError(t, err)
		where[u] = job.Server
	}
	require.Equal(t, 40, a.Broker().JobCount()+b.Broker().JobCount())
	require.Greater(t, a.Broker().JobCount(), 5, "uniques spread over both servers")
	require.Greater(t, b.Broker().JobCount(), 5, "uniques spread over both servers")

	// The same unique goes to the same server again, from a new client
	// too (it coalesces there instead of creating a job elsewhere).
	c2 := gearmantest.NewClient(t, b.Addr(), a.Addr())
	for u, s := range where {
		job, err := c2.SubmitBackground(ctx, client.Request{Function: "spread", Unique: u})
		require.NoError(t, err)
		require.Equal(t, s, job.Server, u)
	}
	require.Equal(t, 40, a.Broker().JobCount()+b.Broker().JobCount())

	// With a down, everything lands on b. A request already on its way to
	// a when it went down fails with ErrConnLost (it may have been
	// accepted); the client notices the broken connection then.
	a.Close()
	// The probe's unique is one that went to a, so that the probe reaches
	// a's connection (a unique of b's would succeed at once, before the
	// client noticed anything, and the submits below could then still
	// find a's broken connection).
	probe := ""
	for u, s := range where {
		if s == a.Addr() {
			probe = u
			break
		}
	}
	testwait.Until(t, "the client to notice a is down", func() bool {
		_, err := c.SubmitBackground(ctx, client.Request{Function: "spread", Unique: probe})
		if err != nil {
			require.ErrorIs(t, err, client.ErrConnLost)
		}
		return err == nil
	})
	for i := range 40 {
		job, err := c.SubmitBackground(ctx, client.Request{Function: "failover", Unique: "f" + strconv.Itoa(i)})
		require.NoError(t, err)
		require.Equal(t, b.Addr(), job.Server)
		job, err = c.SubmitBackground(ctx, client.Request{Function: "failover"})
		require.NoError(t, err)
		require.Equal(t, b.Addr(), job.Server)
	}
	_, err := c.Echo(ctx, nil)
	require.NoError(t, err)
}

func TestNoServer(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	ln.Close()
	c := gearmantest.NewClient(t, addr)
	_, err = c.SubmitBackground(testwait.Context(t), client.Request{Function: "f"})
	require.ErrorIs(t, err, client.ErrNoServer)
	// In backoff the server is skipped without dialing.
	_, err = c.SubmitBackground(testwait.Context(t), client.Request{Function: "f"})
	require.ErrorIs(t, err, client.ErrNoServer)
}

func TestReconnectAfterRestart(t *testing.T) {
	t.Parallel()
	srv, c, ctx := startWithClient(t)
	_, err := c.SubmitBackground(ctx, client.Request{Function: "before"})
	require.NoError(t, err)
	require.NoError(t, srv.Restart())
	testwait.Until(t, "a submit to succeed after the restart", func() bool {
		_, err = c.SubmitBackground(ctx, client.Request{Function: "after"})
		return err == nil
	})
	require.Equal(t, 1, srv.Broker().JobCount())
}

// TestConnectionEndFailsWaiters: a task waiting for its foreground job
// fails when its connection ends, with ErrConnLost when the server goes
// away and with ErrClosed when the client is closed (and so do the
// client's later requests; a second Close is harmless).
func TestConnectionEndFailsWaiters(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		end  func(srv *gearmantest.Server, c *client.Client) error
		want error
	}{
		{"server gone", func(srv *gearmantest.Server, _ *client.Client) error { srv.Close(); return nil }, client.ErrConnLost},
		{"client closed", func(_ *gearmantest.Server, c *client.Client) error { return c.Close() }, client.ErrClosed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv, c, ctx := startWithClient(t)
			task, err := c.Submit(ctx, client.Request{Function: "never"})
			require.NoError(t, err)
			require.NoError(t, tc.end(srv, c))
			_, err = task.Wait(ctx)
			require.ErrorIs(t, err, tc.want)
			if tc.want == client.ErrClosed {
				_, err = c.SubmitBackground(ctx, client.Request{Function: "f"})
				require.ErrorIs(t, err, client.ErrClosed)
				require.NoError(t, c.Close())
			}
		})
	}
}

// A batch's errors come back as ErrBatch: an unknown batch on Gearwork,
// an unknown command on gearmand, which has no batches.
func TestBatchErrors(t *testing.T) {
	t.Parallel()
	forEachServer(t, func(t *testing.T, addr string) {
		c, err := client.New(client.Config{Servers: []string{addr}})
		require.NoError(t, err)
		defer c.Close()
		err = c.CloseBatch(testwait.Context(t), "12345")
		require.ErrorIs(t, err, client.ErrBatch)
		_, err = c.CreateBatch(testwait.Context(t), client.BatchOptions{OnSuccess: "a b"})
		require.ErrorIs(t, err, client.ErrInvalidRequest)
		require.ErrorIs(t, c.CloseBatch(testwait.Context(t), ""), client.ErrInvalidRequest)
	})
}
