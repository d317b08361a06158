package gearmanapi

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/gearman"
	"github.com/gearwork/gearwork/internal/broker"
)

// parked reports whether the server's connection from the client c is
// parked (waiting without a goroutine).
func (tb *secBundle) parked(c *client) bool {
	tb.srv.mu.Lock()
	defer tb.srv.mu.Unlock()
	for sc := range tb.srv.conns {
		if sc.remote != c.nc.LocalAddr().String() {
			continue
		}
		tb.srv.parker.mu.Lock()
		defer tb.srv.parker.mu.Unlock()
		return sc.parkSlot >= 0
	}
	return false
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
	a.send(gearman.EchoReq, "a")
	a.expect(gearman.EchoRes, "a")
	tb.srv.mu.Lock()
	require.NotNil(t, tb.srv.parker, "epoll is available on Linux")
	tb.srv.mu.Unlock()
	w.send(gearman.CanDo, "sleepy")
	w.send(gearman.PreSleep)
	for _, c := range []*client{a, silent, w, leaving, lingering} {
		require.Eventually(t, func() bool { return tb.parked(c) }, time.Minute, time.Millisecond)
	}

	// A request wakes a parked connection, which parks again.
	for i := range 20 {
		a.send(gearman.EchoReq, strings.Repeat("e", i*100))
		a.expect(gearman.EchoRes, strings.Repeat("e", i*100))
		require.Eventually(t, func() bool { return tb.parked(a) }, time.Minute, time.Millisecond)
	}
	// So does the first request of a connection that has sent nothing.
	silent.send(gearman.EchoReq, "first")
	silent.expect(gearman.EchoRes, "first")

	// Output for a parked connection is written while it stays parked: a
	// submit wakes the sleeping worker with NOOP.
	submitter := tb.dial(t)
	submitter.send(gearman.SubmitJob, "sleepy", "", "job")
	submitter.expect(gearman.JobCreated, handle(tb.testBundle, 0))
	w.expect(gearman.Noop)
	require.True(t, tb.parked(w), "writing to a parked connection does not wake it")
	w.send(gearman.GrabJob)
	cmd, args := w.read()
	require.Equal(t, gearman.JobAssign, cmd)
	jobHandle := args[0]

	// The peer closing a parked connection ends it.
	before := tb.srv.Connections()
	leaving.nc.Close()
	require.Eventually(t, func() bool { return tb.srv.Connections() == before-1 }, time.Minute, time.Millisecond)

	// A parked client that does not read its results is dropped as a
	// slow reader once its output exceeds MaxOutput; the drop resumes it,
	// so that it ends.
	before = tb.srv.Connections()
	lingering.send(gearman.SubmitJob, "sleepy", "", "job 2")
	lingering.expect(gearman.JobCreated, handle(tb.testBundle, 1))
	require.Eventually(t, func() bool { return tb.parked(lingering) }, time.Minute, time.Millisecond)
	w.send(gearman.GrabJob)
	cmd, args = w.read()
	require.Equal(t, gearman.JobAssign, cmd)
	chunk := strings.Repeat("d", 256<<10)
	for range 400 {
		if tb.srv.Connections() < before {
			break
		}
		w.send(gearman.WorkData, args[0], chunk)
	}
	require.Eventually(t, func() bool { return tb.srv.Connections() == before-1 }, time.Minute, time.Millisecond)

	// Everyone else still works.
	w.send(gearman.WorkComplete, jobHandle, "done")
	submitter.expect(gearman.WorkComplete, jobHandle, "done")
	a.send(gearman.EchoReq, "still here")
	a.expect(gearman.EchoRes, "still here")
}

// TestParkedConnectionGetsHeldSubmitAnswers: a client whose background
// submits wait for the store goes idle and parks with their answers
// outstanding; the answers are still written, in order, when the store
// write ends, and the connection serves its next request.
func TestParkedConnectionGetsHeldSubmitAnswers(t *testing.T) {
	t.Parallel()
	st := &slowStore{release: make(chan struct{})}
	tb := setupServer(t, broker.Config{Store: st}, Config{IdleRelease: 10 * time.Millisecond}, nil)
	c := tb.dial(t)
	c.send(gearman.SubmitJobBg, "f", "", "1")
	c.send(gearman.SubmitJobBg, "f", "", "2")
	require.Eventually(t, func() bool { return tb.parked(c) }, time.Minute, time.Millisecond)
	close(st.release)
	c.expect(gearman.JobCreated, handle(tb.testBundle, 0))
	c.expect(gearman.JobCreated, handle(tb.testBundle, 1))
	c.send(gearman.EchoReq, "after")
	c.expect(gearman.EchoRes, "after")
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
				c.send(gearman.EchoReq, msg)
				c.expect(gearman.EchoRes, msg)
			}
		})
	}
	w, sub := tb.dial(t), tb.dial(t)
	w.send(gearman.CanDo, "race")
	rng := rand.New(rand.NewPCG(99, 1))
	for r := range rounds {
		w.send(gearman.GrabJob)
		w.expect(gearman.NoJob)
		w.send(gearman.PreSleep)
		time.Sleep(time.Duration(rng.IntN(15000)) * time.Microsecond) // pacing, not waiting
		sub.send(gearman.SubmitJobBg, "race", "", strconv.Itoa(r))
		sub.expect(gearman.JobCreated, handle(tb.testBundle, r))
		w.expect(gearman.Noop)
		time.Sleep(time.Duration(rng.IntN(15000)) * time.Microsecond) // pacing, not waiting
		w.send(gearman.GrabJob)
		cmd, args := w.read()
		require.Equal(t, gearman.JobAssign, cmd)
		require.Equal(t, strconv.Itoa(r), args[2])
		w.send(gearman.WorkComplete, args[0], "")
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
	w.send(gearman.CanDo, "f")
	w.send(gearman.PreSleep)
	c.send(gearman.EchoReq, "a")
	c.expect(gearman.EchoRes, "a")
	for _, cl := range []*client{w, c} {
		require.Eventually(t, func() bool { return tb.parked(cl) }, time.Minute, time.Millisecond)
	}
	tb.srv.mu.Lock()
	p := tb.srv.parker
	tb.srv.mu.Unlock()
	require.NoError(t, p.f.Close())
	<-p.done
	require.False(t, tb.parked(w))
	require.False(t, tb.parked(c))

	later := tb.dial(t)
	later.send(gearman.EchoReq, "later")
	later.expect(gearman.EchoRes, "later")
	require.Eventually(t, func() bool { return allReleased(tb.srv) }, time.Minute, time.Millisecond, "idle connections release their reader without parking")
	sub := tb.dial(t)
	sub.send(gearman.SubmitJob, "f", "", "x")
	sub.expect(gearman.JobCreated, handle(tb.testBundle, 0))
	w.expect(gearman.Noop)
	w.send(gearman.GrabJob)
	cmd, _ := w.read()
	require.Equal(t, gearman.JobAssign, cmd)
	c.send(gearman.EchoReq, "b")
	c.expect(gearman.EchoRes, "b")
	later.send(gearman.EchoReq, "again")
	later.expect(gearman.EchoRes, "again")
}
