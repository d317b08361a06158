package gearmanapi

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/gearman"
	"github.com/gearwork/gearwork/internal/gearmantest/wire"
	"github.com/gearwork/gearwork/internal/testlog"
)

// parked reports whether the server's connection from the client c is
// parked (waiting without a goroutine).
func (tb *secBundle) parked(c *client) bool {
	return tb.serverSide(c, func(sc *conn) bool {
		tb.srv.parker.mu.Lock()
		defer tb.srv.parker.mu.Unlock()
		return sc.parkSlot >= 0
	})
}

// waitParked waits until the server's connections from cs are parked.
func (tb *secBundle) waitParked(t *testing.T, cs ...*client) {
	t.Helper()
	for _, c := range cs {
		require.Eventually(t, func() bool { return tb.parked(c) }, time.Minute, time.Millisecond)
	}
}

// submitToParkedWorker submits the server's first job, of function fn,
// through sub and checks that the parked sleeping worker w gets its NOOP
// without being woken; w then grabs the job, whose handle it returns.
func (tb *secBundle) submitToParkedWorker(t *testing.T, sub, w *client, fn string) string {
	t.Helper()
	sub.Send(gearman.SubmitJob, fn, "", "job")
	sub.expectCreated(0)
	w.Expect(gearman.Noop)
	require.True(t, tb.parked(w), "writing to a parked connection does not wake it")
	w.Send(gearman.GrabJob)
	cmd, args := w.Read()
	require.Equal(t, gearman.JobAssign, cmd)
	return args[0]
}

// TestIdleConnectionsPark checks that idle connections, including ones
// that never sent anything, park without a goroutine and that everything
// a connection can meet while parked resumes it correctly: a request, an
// event written to it, the peer closing, the server dropping it, and the
// server closing (the test's cleanup, checked for leaked goroutines by
// goleak in TestMain).
func TestIdleConnectionsPark(t *testing.T) {
	t.Parallel()
	tb := setupListener(t, Config{IdleRelease: 10 * time.Millisecond, MaxOutput: 1 << 20}, nil)
	a, silent, w, leaving, lingering := tb.dial(t), tb.dial(t), tb.dial(t), tb.dial(t), tb.dial(t)
	a.echo("a")
	tb.srv.mu.Lock()
	require.NotNil(t, tb.srv.parker, "epoll is available on Linux")
	tb.srv.mu.Unlock()
	w.Send(gearman.CanDo, "sleepy")
	w.Send(gearman.PreSleep)
	tb.waitParked(t, a, silent, w, leaving, lingering)

	// A request wakes a parked connection, which parks again.
	for i := range 20 {
		a.Send(gearman.EchoReq, strings.Repeat("e", i*100))
		a.Expect(gearman.EchoRes, strings.Repeat("e", i*100))
		tb.waitParked(t, a)
	}
	// So does the first request of a connection that has sent nothing.
	silent.echo("first")

	// Output for a parked connection is written while it stays parked: a
	// submit wakes the sleeping worker with NOOP.
	submitter := tb.dial(t)
	jobHandle := tb.submitToParkedWorker(t, submitter, w, "sleepy")

	// The peer closing a parked connection ends it.
	before := tb.srv.Connections()
	leaving.NC.Close()
	require.Eventually(t, func() bool { return tb.srv.Connections() == before-1 }, time.Minute, time.Millisecond)

	// A parked client that does not read its results is dropped as a
	// slow reader once its output exceeds MaxOutput; the drop resumes it,
	// so that it ends.
	before = tb.srv.Connections()
	lingering.Send(gearman.SubmitJob, "sleepy", "", "job 2")
	lingering.expectCreated(1)
	tb.waitParked(t, lingering)
	w.Send(gearman.GrabJob)
	cmd, args := w.Read()
	require.Equal(t, gearman.JobAssign, cmd)
	chunk := strings.Repeat("d", 256<<10)
	for range 400 {
		if tb.srv.Connections() < before {
			break
		}
		w.Send(gearman.WorkData, args[0], chunk)
	}
	require.Eventually(t, func() bool { return tb.srv.Connections() == before-1 }, time.Minute, time.Millisecond)

	// Everyone else still works.
	w.Send(gearman.WorkComplete, jobHandle, "done")
	submitter.Expect(gearman.WorkComplete, jobHandle, "done")
	a.echo("still here")
}

// TestParkedConnectionGetsHeldSubmitAnswers: a client whose background
// submits wait for the store goes idle and parks with their answers
// outstanding; the answers are still written, in order, when the store
// write ends, and the connection serves its next request.
func TestParkedConnectionGetsHeldSubmitAnswers(t *testing.T) {
	t.Parallel()
	tb, st := setupSlowStore(t, Config{IdleRelease: 10 * time.Millisecond})
	c := tb.dial(t)
	c.submitBg("f", "1", "2")
	tb.waitParked(t, c)
	close(st.release)
	c.expectCreated(0, 1)
	c.echo("after")
}

// TestParkAndWakeRace drives many connections through park and wake with
// requests timed around the idle threshold, so that input often arrives
// while the janitor kicks a reader, while it parks, or just after: every
// request must be answered, and a sleeping worker must get every NOOP and
// job however its connection stands.
func TestParkAndWakeRace(t *testing.T) {
	t.Parallel()
	tb := setupListener(t, Config{IdleRelease: 5 * time.Millisecond}, nil)
	const (
		clients = 6
		rounds  = 40
	)
	var wg sync.WaitGroup
	for i := range clients {
		c := tb.dial(t)
		rng := rand.New(rand.NewPCG(uint64(i), 1))
		wg.Go(func() {
			for r := range rounds {
				time.Sleep(time.Duration(rng.IntN(15000)) * time.Microsecond) // pacing, not waiting
				msg := fmt.Sprintf("c%d r%d", i, r)
				c.echo(msg)
			}
		})
	}
	w, sub := tb.dial(t), tb.dial(t)
	w.Send(gearman.CanDo, "race")
	rng := rand.New(rand.NewPCG(99, 1))
	for r := range rounds {
		w.Send(gearman.GrabJob)
		w.Expect(gearman.NoJob)
		w.Send(gearman.PreSleep)
		time.Sleep(time.Duration(rng.IntN(15000)) * time.Microsecond) // pacing, not waiting
		sub.Send(gearman.SubmitJobBg, "race", "", strconv.Itoa(r))
		sub.Expect(gearman.JobCreated, handle(r))
		w.Expect(gearman.Noop)
		time.Sleep(time.Duration(rng.IntN(15000)) * time.Microsecond) // pacing, not waiting
		w.Send(gearman.GrabJob)
		cmd, args := w.Read()
		require.Equal(t, gearman.JobAssign, cmd)
		require.Equal(t, strconv.Itoa(r), args[2])
		w.Send(gearman.WorkComplete, args[0], "")
	}
	wg.Wait()
	require.Zero(t, tb.srv.LimitStats().ReadTimeouts)
}

// TestParkerFailureResumesParkedConnections: when the parker's epoll
// instance fails (here: closed under it), every parked connection resumes
// on a goroutine of its own and keeps working, later idle connections stay
// on their goroutine, and the server still closes cleanly.
func TestParkerFailureResumesParkedConnections(t *testing.T) {
	t.Parallel()
	tb := setupListener(t, Config{IdleRelease: 10 * time.Millisecond}, nil)
	w, c := tb.dial(t), tb.dial(t)
	w.Send(gearman.CanDo, "f")
	w.Send(gearman.PreSleep)
	c.echo("a")
	tb.waitParked(t, w, c)
	tb.srv.mu.Lock()
	p := tb.srv.parker
	tb.srv.mu.Unlock()
	require.NoError(t, p.f.Close())
	<-p.done
	require.False(t, tb.parked(w))
	require.False(t, tb.parked(c))

	later := tb.dial(t)
	later.echo("later")
	require.Eventually(t, func() bool { return allReleased(tb.srv) }, time.Minute, time.Millisecond, "idle connections release their reader without parking")
	sub := tb.dial(t)
	sub.Send(gearman.SubmitJob, "f", "", "x")
	sub.expectCreated(0)
	w.Expect(gearman.Noop)
	w.Send(gearman.GrabJob)
	cmd, _ := w.Read()
	require.Equal(t, gearman.JobAssign, cmd)
	c.echo("b")
	later.echo("again")
}

// TestIdleTLSConnectionsPark: TLS connections park like plain ones once
// their handshake is done, and a parked one wakes for a request, has
// events written to it while parked, and parks again. A connection whose
// handshake is slower than the idle threshold is not kicked out of it.
func TestIdleTLSConnectionsPark(t *testing.T) {
	t.Parallel()
	tb, clientCfg := setupTLS(t, Config{IdleRelease: 10 * time.Millisecond})
	dialTLS := func() *client {
		nc, err := tls.Dial("tcp", tb.addr, clientCfg)
		require.NoError(t, err)
		return &client{wire.New(t, nc)}
	}

	// A handshake that starts after several idle thresholds still works.
	raw := tb.dial(t)
	waitJanitor(t, tb.srv, 50*time.Millisecond)
	slow := tls.Client(raw.NC, clientCfg)
	require.NoError(t, slow.Handshake())
	slowC := &client{wire.New(t, slow)}
	slowC.echo("slow")

	a, silent, w, sub := dialTLS(), dialTLS(), dialTLS(), dialTLS()
	a.echo("a")
	w.Send(gearman.CanDo, "tls")
	w.Send(gearman.PreSleep)
	tb.waitParked(t, a, silent, w, slowC)
	for i := range 10 {
		msg := strings.Repeat("t", i*2000)
		a.echo(msg)
		tb.waitParked(t, a)
	}
	silent.echo("first")

	h := tb.submitToParkedWorker(t, sub, w, "tls")
	w.Send(gearman.WorkComplete, h, "done")
	sub.Expect(gearman.WorkComplete, h, "done")
}

// TestParkerBacksOffWhenWaitingFails: a wait on the epoll instance that
// keeps failing (injected) is logged once and retried after growing
// pauses, not in a loop; meanwhile parked connections are resumed and
// nothing parks, and once waiting works again connections park again.
func TestParkerBacksOffWhenWaitingFails(t *testing.T) {
	t.Parallel()
	var logs testlog.Buffer
	tb := setupListener(t, Config{IdleRelease: 10 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))}, nil)
	c := tb.dial(t)
	c.echo("a")
	tb.waitParked(t, c)

	tb.srv.mu.Lock()
	p := tb.srv.parker
	tb.srv.mu.Unlock()
	var waits failSwitch
	waits.on.Store(true)
	wait := epollWaitFunc(func(epfd int, events []syscall.EpollEvent, msec int) (int, error) {
		if waits.fail() {
			return 0, syscall.EINVAL
		}
		return syscall.EpollWait(epfd, events, msec)
	})
	p.wait.Store(&wait)

	// The request makes the epoll instance readable; the wait fails, and
	// the parked connection is resumed and answers.
	c.echo("b")
	// Pauses of 10, 20, 40 and 80 ms at least between the first five
	// attempts; a loop that spins makes them within microseconds.
	waits.requireBackoff(t, 5, 150*time.Millisecond, "the parker must back off")
	require.Equal(t, 1, strings.Count(logs.String(), "waiting for parked connections failed"), logs.String())

	// Meanwhile nothing parks, and connections keep working.
	later := tb.dial(t)
	for _, cl := range []*client{c, later} {
		cl.echo("meanwhile")
	}
	require.Eventually(t, func() bool { return allReleased(tb.srv) }, time.Minute, time.Millisecond)
	require.False(t, tb.parked(c))
	require.False(t, tb.parked(later))

	// Once waiting works again, idle connections park again.
	waits.on.Store(false)
	require.Eventually(t, func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return !p.suspended
	}, time.Minute, time.Millisecond)
	fresh := tb.dial(t)
	fresh.echo("fresh")
	tb.waitParked(t, fresh)
	c.echo("c")
	tb.waitParked(t, c)
}
