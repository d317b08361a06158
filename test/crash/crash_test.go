package crash

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/gearman"
	"github.com/gearwork/gearwork/internal/gearmantest/wire"
	"github.com/gearwork/gearwork/internal/testserver"
	"github.com/gearwork/gearwork/internal/testwait"
)

func TestMain(m *testing.M) { testserver.Main(m) }

// Load and time bounds of the test.
const (
	submitters   = 4
	workers      = 3
	submitPeriod = 2 * time.Millisecond // per submitter
	// workPeriod paces each worker so that, with these numbers, jobs come
	// in faster than they are done and a backlog is queued at each crash.
	workPeriod   = 3 * time.Millisecond
	minUptime    = 200 * time.Millisecond
	maxUptime    = 1200 * time.Millisecond
	drainTimeout = 2 * time.Minute
	function     = "crash"
	// holdAcks is how many jobs are acknowledged while the workers hold
	// off before each kill. With --sync none or interval a kill may lose
	// the jobs in the write-ahead log block being filled, which can be
	// every job not completed yet when few are: holdAcksLossy jobs fill
	// more than two blocks, so that some of them reach the kernel however
	// the kill falls and a later lifetime completes them.
	holdAcks      = 20
	holdAcksLossy = 1000
	holdTimeout   = 30 * time.Second
)

// walBlock is the size of the blocks in which Pebble hands its write-ahead
// log to the kernel when nothing syncs it: with --sync none (and between
// the syncs of --sync interval) a SIGKILL loses at most the log records in
// the block being filled.
const walBlock = 32 << 10

// TestCrashRecovery submits background jobs at a steady rate while workers
// complete them, kills the server with SIGKILL at random moments and
// restarts it CRASH_K times (default 3), lets everything drain, and checks
// that every job acknowledged with JOB_CREATED was completed at least once.
// Each job that completed has exactly one record (the admin command
// jobs), which says complete: a job was never both done and queued.
//
// A job may run twice only across a crash (it was running, or finished but
// its delete was not yet on disk); two runs within one server lifetime are
// a bug. Before each kill the workers stop grabbing until more jobs have
// been acknowledged, so every kill finds acknowledged jobs queued, and some
// of them must be completed by a later server lifetime.
//
// With --sync interval:50ms and none (subtests, CRASH_K_LOSSY kills each,
// default 2) acknowledged jobs may be lost, but only within the bounds
// docs/durability.md gives: what sits in Pebble's log buffer at the kill,
// at most one 32 KiB block per kill, and with interval only jobs
// acknowledged within the last interval (plus slack for a busy machine).
func TestCrashRecovery(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test skipped in -short mode")
	}
	k := envInt(t, "CRASH_K", 3)
	lossyK := envInt(t, "CRASH_K_LOSSY", 2)
	for _, tc := range []struct {
		sync  string
		kills int
		// window: with interval, a lost job was acknowledged at most this
		// long before the kill (0: no such bound).
		window time.Duration
	}{
		{sync: "always", kills: k},
		{sync: "interval:50ms", kills: lossyK, window: 50*time.Millisecond + time.Second},
		{sync: "none", kills: lossyK},
	} {
		t.Run("sync="+tc.sync, func(t *testing.T) {
			if tc.kills == 0 {
				t.Skip("CRASH_K_LOSSY=0")
			}
			r := crashRun(t, tc.sync, tc.kills)
			require.Positive(t, r.acked, "no job was acknowledged")
			if tc.sync == "always" {
				require.Zero(t, r.refused, "submits answered with ERROR")
			}
			for i, n := range r.pendingAtKill {
				require.Positive(t, n, "kill %d found no acknowledged job queued or running: the test proved nothing", i+1)
			}
			require.Positive(t, r.completedLater,
				"no acknowledged job was completed by a later server lifetime than the one that acknowledged it")
			require.Zero(t, r.dupesWithinRun, "jobs ran twice without a crash in between, e.g. %v", r.dupeSample)
			// Every job that completed has one record: none was recorded
			// done and also queued (it would have run again and have two),
			// none completed without one. (Beyond history_max the oldest
			// records are forgotten.)
			require.Empty(t, r.recordedTwice, "jobs recorded done that were also queued and ran again")
			if r.records < 10000 {
				require.Equal(t, r.completed+r.completedUnacked, r.records, "completed jobs and their records; without one: %v", r.unrecorded)
			}
			if tc.sync == "always" {
				require.Zero(t, r.lost, "acknowledged jobs never completed, e.g. %v", r.lostSample)
				return
			}
			// Lossy modes: only jobs acknowledged by a server that was
			// killed, within the buffer (and interval) of that kill.
			require.Zero(t, r.lostAtStop, "jobs acknowledged by the server that was stopped gracefully were lost")
			for i, b := range r.lostBytesPerKill {
				require.LessOrEqual(t, b, walBlock,
					"kill %d lost %d jobs holding %d bytes of function, unique and payload: more than one %d-byte log block",
					i+1, r.lostPerKill[i], b, walBlock)
			}
			if tc.window > 0 {
				require.LessOrEqual(t, r.oldestLost, tc.window,
					"a lost job was acknowledged %v before its kill: more than the interval allows", r.oldestLost)
			}
			t.Logf("--sync %s: %d acknowledged jobs lost over %d kills (%v per kill, %v bytes of job data), the oldest acknowledged %v before its kill",
				tc.sync, r.lost, tc.kills, r.lostPerKill, r.lostBytesPerKill, r.oldestLost.Round(time.Millisecond))
		})
	}
}

func envInt(t *testing.T, name string, def int) int {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	require.NoError(t, err, name)
	return n
}

// crashRun runs the load against a server with --sync syncMode, kills and
// restarts it kills times, drains, and reports what the ledger shows.
func crashRun(t *testing.T, syncMode string, kills int) report {
	h := newHarness(t, filepath.Join(t.TempDir(), "data"))
	h.sync = syncMode
	// CRASH_MEMORY_BUDGET passes --memory-budget, e.g. 0 to keep every
	// payload on disk and read it back when the job is handed out.
	h.budget = os.Getenv("CRASH_MEMORY_BUDGET")
	h.start()
	defer h.stopServer()

	ctx, stopLoad := context.WithCancel(context.Background())
	waitSubmitters := group(submitters, func(i int) { h.submitLoop(ctx, i) })
	workCtx, stopWork := context.WithCancel(context.Background())
	waitWorkers := group(workers, func(int) { h.workLoop(workCtx, []string{function}, h.ranJob) })

	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	for i := range kills {
		uptime := minUptime + time.Duration(rng.Int64N(int64(maxUptime-minUptime)))
		select {
		case <-time.After(uptime):
		case <-h.exited():
			t.Fatalf("server exited before the kill: %s", h.srv.Log())
		}
		// Workers stop grabbing until more jobs are acknowledged, so
		// that acknowledged jobs are queued at the kill however fast the
		// workers are.
		if syncMode == "always" {
			h.holdUntilAcked(holdAcks)
		} else {
			h.holdUntilAcked(holdAcksLossy)
		}
		queued, running, _ := h.status()
		pending := h.kill()
		t.Logf("crash %d/%d after %v: %d acknowledged so far, %d of them not completed; about %d queued and %d running at the kill",
			i+1, kills, uptime.Round(time.Millisecond), h.ackedCount(), pending, queued, running)
		h.start()
	}
	stopLoad()
	waitSubmitters()

	// Drain: wait until every acknowledged job has completed or, where
	// losses are allowed, until the server holds no job any more (what is
	// missing then was lost).
	deadline := time.Now().Add(drainTimeout)
	for {
		h.mu.Lock()
		if h.missingLocked() > 0 {
			h.waitLocked(time.Now().Add(200 * time.Millisecond)) // or a change
		}
		missing := h.missingLocked()
		h.mu.Unlock()
		if missing == 0 || !time.Now().Before(deadline) {
			break
		}
		if syncMode != "always" {
			if queued, running, _ := h.status(); queued == 0 && running == 0 {
				break
			}
		}
	}
	stopWork()
	h.closeConns()
	waitWorkers()
	h.waitWorkersGone(t)
	records := h.endedRecords(t)
	h.stopServer()

	r := h.report()
	r.records = len(records)
	for handle, n := range records {
		if n > 1 {
			r.recordedTwice = append(r.recordedTwice, handle)
		}
	}
	h.mu.Lock()
	for handle, c := range h.done {
		if records[handle] > 0 {
			continue
		}
		when := "in the last lifetime"
		if c.gen <= len(h.kills) {
			when = fmt.Sprintf("%v before kill %d", h.kills[c.gen-1].Sub(c.at).Round(time.Microsecond), c.gen)
		}
		r.unrecorded = append(r.unrecorded, handle+" completed "+when)
	}
	h.mu.Unlock()
	t.Logf("crash test --sync %s: kills=%d acknowledged=%d completed=%d lost=%d duplicated=%d (across a crash: %d, within one run: %d) "+
		"refused=%d unanswered=%d completed-unacknowledged=%d completed-in-a-later-lifetime=%d records=%d recorded-twice=%d",
		syncMode, kills, r.acked, r.completed, r.lost, r.dupes, r.dupesAcrossCrash, r.dupesWithinRun, r.refused, r.unanswered,
		r.completedUnacked, r.completedLater, r.records, len(r.recordedTwice))
	return r
}

// group runs fn(0) to fn(n-1) in goroutines and returns a function that
// waits for them.
func group(n int, fn func(i int)) (wait func()) {
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { fn(i) })
	}
	return wg.Wait
}

// harness runs the server and records what clients and workers saw.
type harness struct {
	t      *testing.T
	dir    string
	sync   string // --sync
	budget string // --memory-budget, if set

	// mu guards everything below; cond is signalled on every change.
	mu   sync.Mutex
	cond *sync.Cond
	srv  *testserver.Server // nil between a kill and the next start
	addr string
	gen  int // server lifetime, 1 for the first start
	// acked: uniques acknowledged with JOB_CREATED, with the server
	// lifetime that acknowledged them and when.
	acked   map[string]bool
	ackGen  map[string]int
	ackTime map[string]time.Time
	// kills: when each killed lifetime (gen i+1) ended; pendingAtKill:
	// acknowledged jobs not yet completed at each kill.
	kills         []time.Time
	pendingAtKill []int
	// hold: workers grab nothing while it is set.
	hold bool
	// runs: for each unique, the server lifetimes in which a worker
	// completed it.
	runs map[string][]int
	// done: for each handle a worker completed, the server lifetime and
	// time of its last completion.
	done       map[string]completion
	refused    int
	unanswered int
	conns      map[net.Conn]bool
	stopped    bool
}

func newHarness(t *testing.T, dir string) *harness {
	h := &harness{t: t, dir: dir,
		acked: map[string]bool{}, ackGen: map[string]int{}, ackTime: map[string]time.Time{},
		runs: map[string][]int{}, done: map[string]completion{}, conns: map[net.Conn]bool{}}
	h.cond = sync.NewCond(&h.mu)
	return h
}

// start starts the server (a new lifetime) and waits until it listens.
func (h *harness) start() {
	h.t.Helper()
	args := []string{"--store", "pebble:" + h.dir, "--handle-prefix", "H:crash:", "--sync", h.sync}
	if h.budget != "" {
		args = append(args, "--memory-budget", h.budget)
	}
	srv := testserver.Start(h.t, args...)
	h.mu.Lock()
	h.srv, h.addr = srv, srv.Addr
	h.gen++
	h.cond.Broadcast()
	h.mu.Unlock()
}

// exited is closed when the running server exits.
func (h *harness) exited() <-chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.srv.Done()
}

// kill ends the server with SIGKILL, waits for it to exit, records the
// kill, lets the workers grab again, and returns how many acknowledged
// jobs were not completed at the kill.
func (h *harness) kill() int {
	h.mu.Lock()
	srv := h.srv
	h.srv = nil
	h.mu.Unlock()
	srv.Kill()
	h.mu.Lock()
	defer h.mu.Unlock()
	pending := h.missingLocked()
	h.kills = append(h.kills, time.Now())
	h.pendingAtKill = append(h.pendingAtKill, pending)
	h.hold = false
	h.cond.Broadcast()
	return pending
}

// holdUntilAcked stops the workers from grabbing and waits until n more
// jobs have been acknowledged (failing the test if that takes longer than
// holdTimeout).
func (h *harness) holdUntilAcked(n int) {
	h.t.Helper()
	deadline := time.Now().Add(holdTimeout)
	h.mu.Lock()
	defer h.mu.Unlock()
	h.hold = true
	want := len(h.acked) + n
	for len(h.acked) < want && time.Now().Before(deadline) {
		h.waitLocked(deadline)
	}
	if len(h.acked) < want {
		h.t.Errorf("only %d of %d jobs acknowledged within %v while the workers held off", len(h.acked)-want+n, n, holdTimeout)
	}
}

// waitHold waits while the workers are held off; false when ctx ends.
func (h *harness) waitHold(ctx context.Context) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	for h.hold && ctx.Err() == nil && !h.stopped {
		h.waitLocked(time.Now().Add(100 * time.Millisecond))
	}
	return ctx.Err() == nil
}

// stopServer stops the server gracefully (SIGTERM), killing it if it does
// not exit in time.
func (h *harness) stopServer() {
	h.mu.Lock()
	srv := h.srv
	h.srv = nil
	h.stopped = true
	h.cond.Broadcast()
	h.mu.Unlock()
	if srv != nil {
		srv.Stop()
	}
}

// waitLocked waits for a change, or until deadline.
func (h *harness) waitLocked(deadline time.Time) {
	t := time.AfterFunc(time.Until(deadline), func() {
		h.mu.Lock()
		h.cond.Broadcast()
		h.mu.Unlock()
	})
	h.cond.Wait()
	t.Stop()
}

// connect dials the server of a lifetime later than after (0: any),
// waiting for a restart when the current one is gone. It returns false
// when ctx ends or the test is over.
func (h *harness) connect(ctx context.Context, after int) (net.Conn, int, bool) {
	for {
		h.mu.Lock()
		for (h.gen <= after || h.srv == nil) && !h.stopped && ctx.Err() == nil {
			h.waitLocked(time.Now().Add(100 * time.Millisecond))
		}
		addr, gen, stopped := h.addr, h.gen, h.stopped
		h.mu.Unlock()
		if stopped || ctx.Err() != nil {
			return nil, 0, false
		}
		nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			after = gen // that server is gone: wait for the next one
			continue
		}
		h.mu.Lock()
		h.conns[nc] = true
		h.mu.Unlock()
		return nc, gen, true
	}
}

func (h *harness) release(nc net.Conn) {
	h.mu.Lock()
	delete(h.conns, nc)
	h.mu.Unlock()
	nc.Close()
}

// closeConns closes every client connection (to end blocked reads).
func (h *harness) closeConns() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.stopped = true
	for nc := range h.conns {
		nc.Close()
	}
	h.cond.Broadcast()
}

// submitLoop submits background jobs one at a time at a steady rate and
// records each acknowledgement.
func (h *harness) submitLoop(ctx context.Context, id int) {
	tick := time.NewTicker(submitPeriod)
	defer tick.Stop()
	n := 0
	h.eachConn(ctx, func(nc net.Conn, gen int) {
		c := wire.NewStream(nc)
		for ctx.Err() == nil {
			select {
			case <-ctx.Done():
			case <-tick.C:
			}
			n++
			u := fmt.Sprintf("s%d-%d", id, n)
			_ = nc.SetDeadline(time.Now().Add(30 * time.Second))
			err := c.Send(gearman.SubmitJobBg, function, u, u)
			var answer gearman.Packet
			if err == nil {
				answer, err = c.Next()
			}
			h.mu.Lock()
			switch {
			case err != nil:
				h.unanswered++
			case answer.Command == gearman.JobCreated:
				h.acked[u] = true
				h.ackGen[u] = gen
				h.ackTime[u] = time.Now()
			default:
				h.refused++
			}
			h.cond.Broadcast()
			h.mu.Unlock()
			if err != nil {
				break
			}
		}
	})
}

// eachConn runs fn on a connection to the current server, again on one to
// a later server each time fn returns (its server went away), and
// releases each connection, until ctx ends.
func (h *harness) eachConn(ctx context.Context, fn func(nc net.Conn, gen int)) {
	gen := 0
	for ctx.Err() == nil {
		nc, g, ok := h.connect(ctx, gen)
		if !ok {
			return
		}
		gen = g
		fn(nc, g)
		h.release(nc)
	}
}

// workLoop grabs and completes jobs of fns, calling ran with each job it
// completed and the server lifetime that happened in.
func (h *harness) workLoop(ctx context.Context, fns []string, ran func(job gearman.Packet, gen int)) {
	h.eachConn(ctx, func(nc net.Conn, gen int) { h.work(ctx, nc, gen, fns, ran) })
}

// ranJob records a completed job (JOB_ASSIGN_UNIQ) by its unique.
func (h *harness) ranJob(job gearman.Packet, gen int) {
	unique := string(job.Args[2])
	h.mu.Lock()
	h.runs[unique] = append(h.runs[unique], gen)
	h.done[string(job.Args[0])] = completion{gen: gen, at: time.Now()}
	h.cond.Broadcast()
	h.mu.Unlock()
}

// completion is when a worker completed a job: the server lifetime and
// the time.
type completion struct {
	gen int
	at  time.Time
}

func (h *harness) work(ctx context.Context, nc net.Conn, gen int, fns []string, ran func(gearman.Packet, int)) {
	pace := time.NewTicker(workPeriod)
	defer pace.Stop()
	c := wire.NewStream(nc)
	send := func(cmd gearman.Command, args ...string) error {
		_ = nc.SetWriteDeadline(time.Now().Add(30 * time.Second))
		return c.Send(cmd, args...)
	}
	next := func() (gearman.Packet, error) {
		_ = nc.SetReadDeadline(time.Now().Add(30 * time.Second))
		return c.Next()
	}
	for _, fn := range fns {
		if send(gearman.CanDo, fn) != nil {
			return
		}
	}
	for ctx.Err() == nil {
		if !h.waitHold(ctx) {
			return
		}
		if send(gearman.GrabJobUniq) != nil {
			return
		}
		p, err := next()
		if err != nil {
			return
		}
		switch p.Command {
		case gearman.NoJob:
			if send(gearman.PreSleep) != nil {
				return
			}
			// Wait for NOOP; a quiet server is asked again now and then.
			for {
				p, err = next()
				if errors.Is(err, os.ErrDeadlineExceeded) || (err == nil && p.Command == gearman.Noop) {
					break
				}
				if err != nil {
					return
				}
			}
		case gearman.JobAssignUniq:
			select { // the "work"
			case <-pace.C:
			case <-ctx.Done():
				return
			}
			if send(gearman.WorkComplete, string(p.Args[0]), "") != nil {
				return
			}
			ran(p, gen)
		default:
			return
		}
	}
}

// status returns the total and running jobs of the test's function and
// its workers from the "status" admin command (-1 if it cannot be read).
func (h *harness) status() (total, running, workers int) {
	h.mu.Lock()
	addr := h.addr
	h.mu.Unlock()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return -1, -1, -1
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := nc.Write([]byte("status\n")); err != nil {
		return -1, -1, -1
	}
	total, running, workers = -1, -1, 0
	sc := bufio.NewScanner(nc)
	for sc.Scan() && sc.Text() != "." {
		f := strings.Split(sc.Text(), "\t")
		if len(f) >= 4 && f[0] == function {
			total, _ = strconv.Atoi(f[1])
			running, _ = strconv.Atoi(f[2])
			workers, _ = strconv.Atoi(f[3])
		}
	}
	if sc.Err() != nil {
		return -1, -1, -1
	}
	return total, running, workers
}

// waitWorkersGone waits until the server has seen every worker connection
// of the test's function close: it has then handled every packet the
// workers sent before, their last WORK_COMPLETE included (a packet on one
// connection is not ordered with those on another, such as the admin
// command that lists the records).
func (h *harness) waitWorkersGone(t *testing.T) {
	t.Helper()
	testwait.Until(t, "the server to see the workers leave", func() bool {
		_, _, workers := h.status()
		return workers == 0
	})
}

// endedRecords pages through the job records of the function's ended
// jobs with the admin command jobs and counts the records of each handle.
func (h *harness) endedRecords(t *testing.T) map[string]int {
	t.Helper()
	h.mu.Lock()
	addr := h.addr
	h.mu.Unlock()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	require.NoError(t, err)
	defer nc.Close()
	sc := bufio.NewScanner(nc)
	counts := make(map[string]int)
	cursor := ""
	for {
		require.NoError(t, nc.SetDeadline(time.Now().Add(time.Minute)))
		before := cursor
		line := "jobs function=" + function + " state=complete limit=1000"
		if cursor != "" {
			line += " cursor=" + cursor
		}
		_, err := nc.Write([]byte(line + "\n"))
		require.NoError(t, err)
		n := 0
		for sc.Scan() && sc.Text() != "." {
			f := strings.Split(sc.Text(), "\t")
			require.Len(t, f, 8, "a line of %q: %q", line, sc.Text())
			counts[f[0]]++
			cursor = f[7]
			n++
		}
		require.NoError(t, sc.Err())
		if n < 1000 {
			return counts
		}
		require.NotEqual(t, before, cursor, "the page after cursor %q starts over", before)
	}
}

func (h *harness) ackedCount() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.acked)
}

func (h *harness) missingLocked() int {
	n := 0
	for u := range h.acked {
		if len(h.runs[u]) == 0 {
			n++
		}
	}
	return n
}

type report struct {
	acked, completed, lost, dupes, dupesAcrossCrash, dupesWithinRun int
	refused, unanswered, completedUnacked                           int
	// completedLater: acknowledged jobs first completed by a later server
	// lifetime than the one that acknowledged them (they were stored).
	completedLater int
	// pendingAtKill: acknowledged jobs not completed at each kill.
	pendingAtKill []int
	// lostPerKill and lostBytesPerKill: the lost jobs acknowledged by each
	// killed lifetime, and the bytes of their function, unique and
	// payload; lostAtStop: lost jobs acknowledged by the last lifetime,
	// which was stopped gracefully; oldestLost: the longest time between
	// a lost job's acknowledgement and its kill.
	lostPerKill, lostBytesPerKill []int
	lostAtStop                    int
	oldestLost                    time.Duration
	lostSample, dupeSample        []string
	// records counts the job records of ended jobs the last lifetime
	// answers; recordedTwice lists the handles with more than one (a job
	// that was done and queued at once ran again after its record).
	records       int
	recordedTwice []string
	// unrecorded: completed handles without a record, and when they
	// completed.
	unrecorded []string
}

func (h *harness) report() report {
	h.mu.Lock()
	defer h.mu.Unlock()
	r := report{acked: len(h.acked), refused: h.refused, unanswered: h.unanswered,
		pendingAtKill:    slices.Clone(h.pendingAtKill),
		lostPerKill:      make([]int, len(h.kills)),
		lostBytesPerKill: make([]int, len(h.kills))}
	for u := range h.acked {
		if len(h.runs[u]) == 0 {
			r.lost++
			if len(r.lostSample) < 10 {
				r.lostSample = append(r.lostSample, u)
			}
			k := h.ackGen[u] - 1 // the kill that ended the lifetime that acknowledged it
			if k >= len(h.kills) {
				r.lostAtStop++
				continue
			}
			r.lostPerKill[k]++
			r.lostBytesPerKill[k] += len(function) + 2*len(u) // the payload is the unique
			r.oldestLost = max(r.oldestLost, h.kills[k].Sub(h.ackTime[u]))
		} else {
			r.completed++
			if slices.Min(h.runs[u]) > h.ackGen[u] {
				r.completedLater++
			}
		}
	}
	for u, gens := range h.runs {
		if !h.acked[u] {
			r.completedUnacked++
		}
		if len(gens) < 2 {
			continue
		}
		r.dupes++
		sorted := slices.Clone(gens)
		slices.Sort(sorted)
		if len(slices.Compact(sorted)) < len(gens) {
			r.dupesWithinRun++
			if len(r.dupeSample) < 10 {
				r.dupeSample = append(r.dupeSample, fmt.Sprintf("%s:%v", u, gens))
			}
		} else {
			r.dupesAcrossCrash++
		}
	}
	return r
}

// The batch scenario's functions and sizes.
const (
	batchFunction = "crash_batch"
	onSuccessFn   = "crash_batch_ok"
	onCompleteFn  = "crash_batch_done"
	batchJobs     = 8
)

// batchLedger records what the batch scenario's client and workers saw.
// Guarded by harness.mu.
type batchLedger struct {
	// closed: batches whose close was acknowledged, with the server
	// lifetime that acknowledged it.
	closed map[string]int
	// callbacks: per callback function and batch, the runs of its
	// callback jobs (handle and server lifetime).
	callbacks map[string]map[string][]callbackRun
	// waitingAtKill: closed batches whose callbacks had not both run, at
	// each kill.
	waitingAtKill []int
	// armed, when not nil, is closed (and cleared) once a worker has
	// completed a job of a closed batch: the kill comes right after, while
	// the server writes the job's end (and maybe the batch's callbacks).
	armed chan struct{}
}

type callbackRun struct {
	handle string
	gen    int
}

// TestCrashBatchCallbacksOnce builds batches over the Gearman port (admin
// "batch create", background jobs with the unique "batch:ID:...", "batch
// close") while workers run their jobs and callbacks, kills the server
// with SIGKILL at random moments and restarts it CRASH_K times (default
// 3), lets everything drain, and checks with the ledger that every batch
// whose close was acknowledged got each of its two callbacks submitted
// exactly once: one callback job (one handle) per batch and callback, run
// at least once, and more than once only across a crash.
func TestCrashBatchCallbacksOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test skipped in -short mode")
	}
	kills := envInt(t, "CRASH_K", 3)
	h := newHarness(t, filepath.Join(t.TempDir(), "data"))
	h.sync = "always"
	l := &batchLedger{closed: map[string]int{}, callbacks: map[string]map[string][]callbackRun{
		onSuccessFn: {}, onCompleteFn: {}}}
	h.start()
	defer h.stopServer()

	ctx, stopLoad := context.WithCancel(context.Background())
	workCtx, stopWork := context.WithCancel(context.Background())
	waitLoad := group(2, func(i int) { h.batchLoop(ctx, l, i) })
	waitWorkers := group(workers, func(int) {
		h.workLoop(workCtx, []string{batchFunction, onSuccessFn, onCompleteFn}, func(job gearman.Packet, gen int) {
			h.ranBatchJob(t, l, job, gen)
		})
	})
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 11))
	for i := range kills {
		select {
		case <-time.After(minUptime + time.Duration(rng.Int64N(int64(maxUptime-minUptime)))):
		case <-h.exited():
			t.Fatalf("server exited before the kill: %s", h.srv.Log())
		}
		h.mu.Lock()
		armed := make(chan struct{})
		l.armed = armed
		h.mu.Unlock()
		select {
		case <-armed:
		case <-time.After(holdTimeout):
			t.Fatalf("no job of a closed batch completed within %v", holdTimeout)
		}
		h.kill()
		h.mu.Lock()
		l.waitingAtKill = append(l.waitingAtKill, l.waitingLocked())
		t.Logf("crash %d/%d: %d batches closed, %d of them waiting for callbacks", i+1, kills, len(l.closed), l.waitingAtKill[i])
		h.mu.Unlock()
		h.start()
	}
	stopLoad()
	waitLoad()

	deadline := time.Now().Add(drainTimeout)
	h.mu.Lock()
	for (l.waitingLocked() > 0 || h.missingLocked() > 0) && time.Now().Before(deadline) {
		h.waitLocked(deadline)
	}
	h.mu.Unlock()
	stopWork()
	h.closeConns()
	waitWorkers()
	h.stopServer()

	h.mu.Lock()
	defer h.mu.Unlock()
	require.Positive(t, len(l.closed), "no batch was closed")
	require.Zero(t, h.missingLocked(), "acknowledged jobs of batches never ran")
	require.Zero(t, l.waitingLocked(), "closed batches whose callbacks never ran")
	waited := 0
	for _, n := range l.waitingAtKill {
		waited += n
	}
	require.Positive(t, waited, "no kill found a closed batch waiting for its callbacks: the test proved nothing")
	for fn, byBatch := range l.callbacks {
		for batch, runs := range byBatch {
			handles := map[string][]int{}
			for _, r := range runs {
				handles[r.handle] = append(handles[r.handle], r.gen)
			}
			require.Len(t, handles, 1, "batch %s: %s was submitted as %d jobs: %v", batch, fn, len(handles), runs)
			for handle, gens := range handles {
				seen := map[int]bool{}
				for _, g := range gens {
					require.False(t, seen[g], "batch %s: callback %s ran twice in server lifetime %d", batch, handle, g)
					seen[g] = true
				}
			}
		}
	}
	t.Logf("batch crash test: kills=%d batches closed=%d, callbacks run: on_success=%d on_complete=%d, batches waiting at each kill %v",
		kills, len(l.closed), len(l.callbacks[onSuccessFn]), len(l.callbacks[onCompleteFn]), l.waitingAtKill)
}

// waitingLocked counts the closed batches whose callbacks have not both
// run.
func (l *batchLedger) waitingLocked() int {
	n := 0
	for b := range l.closed {
		if len(l.callbacks[onSuccessFn][b]) == 0 || len(l.callbacks[onCompleteFn][b]) == 0 {
			n++
		}
	}
	return n
}

// ranBatchJob records a completed job of the batch scenario: a job of a
// batch by its unique, a callback by its batch.
func (h *harness) ranBatchJob(t *testing.T, l *batchLedger, job gearman.Packet, gen int) {
	fn := string(job.Args[1])
	if fn == batchFunction {
		h.ranJob(job, gen)
		batch := strings.Split(string(job.Args[2]), "-")[1] // the unique is l<loop>-<batch>-<n>
		h.mu.Lock()
		if _, closed := l.closed[batch]; closed && l.armed != nil {
			close(l.armed)
			l.armed = nil
		}
		h.mu.Unlock()
		return
	}
	var p struct {
		Batch     string `json:"batch"`
		Total     int    `json:"total"`
		Succeeded int    `json:"succeeded"`
		Failed    int    `json:"failed"`
		Dead      int    `json:"dead"`
	}
	if err := json.Unmarshal(job.Args[3], &p); err != nil {
		t.Errorf("callback %s has a payload that is not JSON: %q", job.Args[0], job.Args[3])
		return
	}
	if p.Failed != 0 || p.Dead != 0 || p.Succeeded != p.Total || p.Total < batchJobs {
		t.Errorf("callback %s of batch %s, whose jobs all succeeded, counts %s", job.Args[0], p.Batch, job.Args[3])
	}
	h.mu.Lock()
	l.callbacks[fn][p.Batch] = append(l.callbacks[fn][p.Batch], callbackRun{handle: string(job.Args[0]), gen: gen})
	h.cond.Broadcast()
	h.mu.Unlock()
}

// batchLoop builds batches one after the other: create, batchJobs jobs,
// close, each step acknowledged before the next. A step cut short by a
// kill is done again on the next server (the batch was stored when its
// create was acknowledged; a job submitted again coalesces by its unique
// or runs once more, in the same batch).
func (h *harness) batchLoop(ctx context.Context, l *batchLedger, id int) {
	batch, next := "", 0
	h.eachConn(ctx, func(nc net.Conn, gen int) {
		s := wire.NewStream(nc)
		for ctx.Err() == nil {
			_ = nc.SetDeadline(time.Now().Add(30 * time.Second))
			var err error
			switch {
			case batch == "":
				var line string
				if line, err = adminLine(s, "batch create on_success="+onSuccessFn+" on_complete="+onCompleteFn); err == nil {
					batch, next = strings.TrimPrefix(line, "OK "), 0
				}
			case next < batchJobs:
				u := fmt.Sprintf("l%d-%s-%d", id, batch, next)
				err = s.Send(gearman.SubmitJobBg, batchFunction, "batch:"+batch+":"+u, u)
				var answer gearman.Packet
				if err == nil {
					answer, err = s.Next()
				}
				if err == nil && answer.Command != gearman.JobCreated {
					err = fmt.Errorf("submit of %s answered %v %q", u, answer.Command, answer.Args)
				}
				if err == nil {
					h.mu.Lock()
					h.acked[u] = true
					h.ackGen[u] = gen
					h.cond.Broadcast()
					h.mu.Unlock()
					next++
				}
			default:
				if _, err = adminLine(s, "batch close "+batch); err == nil {
					h.mu.Lock()
					l.closed[batch] = gen
					h.cond.Broadcast()
					h.mu.Unlock()
					batch = ""
				}
			}
			if err != nil {
				break
			}
		}
	})
}

// adminLine sends an admin text line and returns its one-line answer,
// which must start with "OK".
func adminLine(s *wire.Stream, line string) (string, error) {
	if err := s.Write([]byte(line + "\n")); err != nil {
		return "", err
	}
	answer, err := s.R.ReadString('\n')
	if err != nil {
		return "", err
	}
	answer = strings.TrimRight(answer, "\r\n")
	if !strings.HasPrefix(answer, "OK") {
		return "", fmt.Errorf("%s: %s", line, answer)
	}
	return answer, nil
}
