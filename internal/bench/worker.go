package bench

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gearwork/gearwork/gearman"
)

// workerParams configures runWorker.
type workerParams struct {
	// grabs is how many GRAB_JOB_UNIQ the worker keeps in flight.
	grabs int
	// acked counts, over all workers, the WORK_COMPLETEs the server has
	// certainly processed. When it reaches target (if > 0), reached is
	// called once, by the worker whose acknowledgement got it there.
	acked   *atomic.Int64
	target  int64
	reached func()
	// stopping turns the read error that stops a worker into a clean end.
	stopping *atomic.Bool
	// jobFunc, if set, is called with each job's payload and returns the
	// WORK_COMPLETE data.
	jobFunc func(payload []byte) []byte
	prog    *progress
}

// runWorker works jobs on c, which has registered its function, until its
// connection is stopped (see stopWorkers) or fails.
//
// Every WORK_COMPLETE is followed by a GRAB_JOB_UNIQ on the same
// connection, and a server handles one connection's packets in order, so
// the answer to that grab (JOB_ASSIGN_UNIQ or NO_JOB) proves the server has
// processed the WORK_COMPLETE. That is how completions are acknowledged for
// background jobs, whose WORK_COMPLETE the server does not answer.
//
// When every grab in flight came back NO_JOB the worker sends PRE_SLEEP and
// waits for a NOOP before grabbing again: no polling.
func runWorker(c *conn, p workerParams) error {
	// pend holds, for each grab in flight (oldest first), how many
	// completions had been sent before it.
	pend := make([]int64, 0, p.grabs)
	var completes, acked int64
	sleeping := false
	grab := func() {
		pend = append(pend, completes)
		c.send(gearman.GrabJobUniq)
	}
	ack := func() error {
		if len(pend) == 0 {
			return fmt.Errorf("worker: answer to a GRAB_JOB_UNIQ that was not sent")
		}
		s := pend[0]
		pend = pend[:copy(pend, pend[1:])]
		if d := s - acked; d > 0 {
			acked = s
			p.prog.add(int(d))
			n := p.acked.Add(d)
			if p.target > 0 && n >= p.target && n-d < p.target {
				p.reached()
			}
		}
		return nil
	}
	for range p.grabs {
		grab()
	}
	for {
		pk, err := c.next()
		if err != nil {
			if p.stopping.Load() {
				return nil
			}
			return fmt.Errorf("worker: %w", err)
		}
		switch pk.Command {
		case gearman.JobAssignUniq, gearman.JobAssign, gearman.JobAssignAll:
			if err := ack(); err != nil {
				return err
			}
			handle := pk.Args[0]
			var result []byte
			if p.jobFunc != nil {
				result = p.jobFunc(pk.Args[len(pk.Args)-1])
			}
			c.send(gearman.WorkComplete, handle, result)
			completes++
			grab()
		case gearman.NoJob:
			if err := ack(); err != nil {
				return err
			}
			if len(pend) == 0 {
				c.send(gearman.PreSleep)
				sleeping = true
			}
		case gearman.Noop:
			// A NOOP while grabs are in flight is a late wake-up; ignore it.
			if sleeping {
				sleeping = false
				for range p.grabs {
					grab()
				}
			}
		default:
			return fmt.Errorf("worker: unexpected %s", pk.Command)
		}
	}
}

// dialWorker connects a worker and registers the run's function; the
// registration is processed when it returns.
func (r *run) dialWorker(ctx context.Context) (*conn, error) {
	c, err := r.dial(ctx, 16<<10)
	if err != nil {
		return nil, err
	}
	c.send(gearman.CanDo, r.fn)
	if err := c.echo(); err != nil {
		return nil, fmt.Errorf("worker: %w", err)
	}
	return c, nil
}

func (r *run) dialWorkers(ctx context.Context, n int) ([]*conn, error) {
	ws := make([]*conn, n)
	for i := range ws {
		c, err := r.dialWorker(ctx)
		if err != nil {
			return nil, err
		}
		ws[i] = c
	}
	return ws, nil
}

// stopWorkers makes the workers on ws return (without error).
func stopWorkers(ws []*conn, stopping *atomic.Bool) {
	stopping.Store(true)
	for _, c := range ws {
		_ = c.nc.SetReadDeadline(time.Unix(1, 0))
	}
}

// drainParams configures drainQueue.
type drainParams struct {
	workers, grabs int
	// total is how many jobs the queue holds (or will hold).
	total int
	// measure times the drain (begin/end of the run).
	measure bool
	// jobFunc is passed to each worker; see workerParams. newJobFunc, if
	// set, makes one per worker instead.
	newJobFunc func(i int) func(payload []byte) []byte
	// alongside run next to the workers (submitters of steady); the drain
	// fails if one fails.
	alongside []func() error
	// partial: the queue holds more than total jobs; the rest stays (the
	// workers may complete a few more than total) and the queue is not
	// checked to be empty.
	partial bool
}

// drainQueue starts workers on the run's function and returns when they
// have completed total jobs and the server acknowledged every completion.
func (r *run) drainQueue(ctx context.Context, p drainParams) error {
	ws, err := r.dialWorkers(ctx, p.workers)
	if err != nil {
		return err
	}
	var acked atomic.Int64
	var stopping atomic.Bool
	var endErr error
	var once sync.Once
	reached := func() {
		once.Do(func() {
			if p.measure {
				endErr = r.end(p.total)
			}
			stopWorkers(ws, &stopping)
		})
	}
	if p.measure {
		if err := r.begin(); err != nil {
			return err
		}
	}
	g := group{r: r}
	for i, c := range ws {
		wp := workerParams{grabs: p.grabs, acked: &acked, target: int64(p.total),
			reached: reached, stopping: &stopping, prog: r.prog}
		if p.newJobFunc != nil {
			wp.jobFunc = p.newJobFunc(i)
		}
		g.Go(func() error { return runWorker(c, wp) })
	}
	for _, f := range p.alongside {
		g.Go(f)
	}
	if err := g.Wait(); err != nil {
		return err
	}
	if endErr != nil {
		return endErr
	}
	if n := acked.Load(); n != int64(p.total) && !(p.partial && n > int64(p.total)) {
		return fmt.Errorf("workers completed %d jobs, want %d", n, p.total)
	}
	if p.partial {
		return nil
	}
	return r.checkEmpty(ctx)
}

// cleanup completes n jobs left queued by the scenario, untimed, unless the
// configuration says not to.
func (r *run) cleanup(ctx context.Context, n int) error {
	if r.cfg.NoCleanup || n == 0 {
		return nil
	}
	r.prog.start("cleanup", n)
	if err := r.drainQueue(ctx, drainParams{workers: r.cfg.Workers, grabs: 8, total: n}); err != nil {
		return fmt.Errorf("cleanup: %w", err)
	}
	return nil
}

// checkEmpty asks the server (admin "status") whether the run's function
// still has jobs queued or running.
func (r *run) checkEmpty(ctx context.Context) error {
	c, err := r.dial(ctx, 4<<10)
	if err != nil {
		return err
	}
	defer c.close()
	lines, err := c.adminLines("status")
	if err != nil {
		return fmt.Errorf("admin status: %w", err)
	}
	for _, l := range lines {
		f := strings.Split(l, "\t")
		if len(f) < 3 || f[0] != string(r.fn) {
			continue
		}
		if f[1] != "0" || f[2] != "0" {
			return fmt.Errorf("admin status shows %s jobs (%s running) left for %s, want none", f[1], f[2], r.fn)
		}
	}
	return nil
}
