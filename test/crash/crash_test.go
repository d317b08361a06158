package crash

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/gearman"
)

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
	startTimeout = 60 * time.Second
	drainTimeout = 2 * time.Minute
	function     = "crash"
)

// TestCrashRecovery submits background jobs at a steady rate while workers
// complete them, kills the server with SIGKILL at random moments and
// restarts it CRASH_K times (default 3), lets everything drain, and checks
// that every job acknowledged with JOB_CREATED was completed at least once.
// A job may run twice only across a crash (it was running, or finished but
// its delete was not yet on disk); two runs within one server lifetime are
// a bug.
func TestCrashRecovery(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test skipped in -short mode")
	}
	k := 3
	if v := os.Getenv("CRASH_K"); v != "" {
		n, err := strconv.Atoi(v)
		require.NoError(t, err, "CRASH_K")
		k = n
	}
	// CRASH_SYNC runs the server with another --sync mode, to measure
	// what it loses; only the default "always" promises to lose nothing.
	syncMode := cmp.Or(os.Getenv("CRASH_SYNC"), "always")
	h := newHarness(t, buildServer(t), filepath.Join(t.TempDir(), "data"))
	h.sync = syncMode
	// CRASH_MEMORY_BUDGET passes --memory-budget, e.g. 0 to keep every
	// payload on disk and read it back when the job is handed out.
	h.budget = os.Getenv("CRASH_MEMORY_BUDGET")
	h.start()
	defer h.stopServer()

	ctx, stopLoad := context.WithCancel(context.Background())
	var subWG, workWG sync.WaitGroup
	for i := range submitters {
		subWG.Go(func() { h.submitLoop(ctx, i) })
	}
	workCtx, stopWork := context.WithCancel(context.Background())
	for range workers {
		workWG.Go(func() { h.workLoop(workCtx) })
	}

	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	for i := range k {
		uptime := minUptime + time.Duration(rng.Int64N(int64(maxUptime-minUptime)))
		select {
		case <-time.After(uptime):
		case <-h.failed:
			t.Fatalf("server failed: %s", h.tail())
		}
		queued, running := h.status()
		h.kill()
		t.Logf("crash %d/%d after %v: %d acknowledged so far; about %d queued and %d running at the kill",
			i+1, k, uptime.Round(time.Millisecond), h.ackedCount(), queued, running)
		h.start()
	}
	stopLoad()
	subWG.Wait()

	// Drain: wait until every acknowledged job has completed.
	deadline := time.Now().Add(drainTimeout)
	h.mu.Lock()
	for h.missingLocked() > 0 && time.Now().Before(deadline) {
		h.waitLocked(deadline)
	}
	h.mu.Unlock()
	stopWork()
	h.closeConns()
	workWG.Wait()
	h.stopServer()

	r := h.report()
	t.Logf("crash test: kills=%d acknowledged=%d completed=%d lost=%d duplicated=%d (across a crash: %d, within one run: %d) "+
		"refused=%d unanswered=%d completed-unacknowledged=%d",
		k, r.acked, r.completed, r.lost, r.dupes, r.dupesAcrossCrash, r.dupesWithinRun, r.refused, r.unanswered, r.completedUnacked)
	require.Positive(t, r.acked, "no job was acknowledged")
	if syncMode != "always" {
		t.Logf("--sync %s: %d acknowledged jobs lost (allowed in this mode)", syncMode, r.lost)
		return
	}
	require.Zero(t, r.lost, "acknowledged jobs never completed, e.g. %v", r.lostSample)
	require.Zero(t, r.dupesWithinRun, "jobs ran twice without a crash in between, e.g. %v", r.dupeSample)
}

// buildServer builds the gearwork binary into a temporary directory.
func buildServer(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "gearwork")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/gearwork/gearwork/cmd/gearwork")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "go build: %s", out)
	return bin
}

// harness runs the server and records what clients and workers saw.
type harness struct {
	t      *testing.T
	bin    string
	dir    string
	sync   string // --sync
	budget string // --memory-budget, if set

	failed chan struct{} // closed if a server start fails

	// mu guards everything below; cond is signalled on every change.
	mu   sync.Mutex
	cond *sync.Cond
	cmd  *exec.Cmd
	addr string
	gen  int // server lifetime, 1 for the first start
	logs []string
	// acked: uniques acknowledged with JOB_CREATED.
	acked map[string]bool
	// runs: for each unique, the server lifetimes in which a worker
	// completed it.
	runs       map[string][]int
	refused    int
	unanswered int
	conns      map[net.Conn]bool
	stopped    bool
}

func newHarness(t *testing.T, bin, dir string) *harness {
	h := &harness{t: t, bin: bin, dir: dir, failed: make(chan struct{}),
		acked: map[string]bool{}, runs: map[string][]int{}, conns: map[net.Conn]bool{}}
	h.cond = sync.NewCond(&h.mu)
	return h
}

var listeningRE = regexp.MustCompile(`msg="serve: listening" addr=(\S+)`)

// start starts the server and waits until it listens.
func (h *harness) start() {
	h.t.Helper()
	args := []string{"serve", "--listen", "127.0.0.1:0", "--store", "pebble:" + h.dir,
		"--handle-prefix", "H:crash:", "--sync", h.sync, "--http", "off"}
	if h.budget != "" {
		args = append(args, "--memory-budget", h.budget)
	}
	cmd := exec.Command(h.bin, args...)
	stderr, err := cmd.StderrPipe()
	require.NoError(h.t, err)
	require.NoError(h.t, cmd.Start())
	addrCh := make(chan string, 1)
	go h.readLog(stderr, addrCh)
	select {
	case addr := <-addrCh:
		h.mu.Lock()
		h.cmd, h.addr = cmd, addr
		h.gen++
		h.cond.Broadcast()
		h.mu.Unlock()
	case <-time.After(startTimeout):
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		close(h.failed)
		h.t.Fatalf("server did not start listening within %v: %s", startTimeout, h.tail())
	}
}

// readLog keeps the server's log and reports the listening address.
func (h *harness) readLog(r io.Reader, addrCh chan<- string) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	sent := false
	for sc.Scan() {
		line := sc.Text()
		h.mu.Lock()
		h.logs = append(h.logs, line)
		if len(h.logs) > 200 {
			h.logs = h.logs[len(h.logs)-200:]
		}
		h.mu.Unlock()
		if m := listeningRE.FindStringSubmatch(line); m != nil && !sent {
			addrCh <- m[1]
			sent = true
		}
	}
}

func (h *harness) tail() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return strings.Join(h.logs, "\n")
}

// kill ends the server with SIGKILL and waits for it to exit.
func (h *harness) kill() {
	h.mu.Lock()
	cmd := h.cmd
	h.cmd = nil
	h.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	_ = cmd.Wait()
}

// stopServer stops the server gracefully (SIGTERM), killing it if it does
// not exit in time.
func (h *harness) stopServer() {
	h.mu.Lock()
	cmd := h.cmd
	h.cmd = nil
	h.stopped = true
	h.cond.Broadcast()
	h.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		<-done
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
		for (h.gen <= after || h.cmd == nil) && !h.stopped && ctx.Err() == nil {
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
	n, gen := 0, 0
	for ctx.Err() == nil {
		nc, g, ok := h.connect(ctx, gen)
		if !ok {
			return
		}
		gen = g
		r := gearman.NewReader(nc, 4096)
		for ctx.Err() == nil {
			select {
			case <-ctx.Done():
			case <-tick.C:
			}
			n++
			u := fmt.Sprintf("s%d-%d", id, n)
			_ = nc.SetDeadline(time.Now().Add(30 * time.Second))
			_, err := nc.Write(gearman.AppendPacket(nil, gearman.MagicReq, gearman.SubmitJobBg,
				[]byte(function), []byte(u), []byte(u)))
			var f gearman.Frame
			if err == nil {
				err = r.Next(&f)
			}
			h.mu.Lock()
			switch {
			case err != nil:
				h.unanswered++
			case f.Packet.Command == gearman.JobCreated:
				h.acked[u] = true
			default:
				h.refused++
			}
			h.cond.Broadcast()
			h.mu.Unlock()
			if err != nil {
				break
			}
		}
		h.release(nc)
	}
}

// workLoop grabs and completes jobs, recording each completion with the
// server lifetime it happened in.
func (h *harness) workLoop(ctx context.Context) {
	gen := 0
	for ctx.Err() == nil {
		nc, g, ok := h.connect(ctx, gen)
		if !ok {
			return
		}
		gen = g
		h.work(ctx, nc, g)
		h.release(nc)
	}
}

func (h *harness) work(ctx context.Context, nc net.Conn, gen int) {
	pace := time.NewTicker(workPeriod)
	defer pace.Stop()
	r := gearman.NewReader(nc, 64<<10)
	send := func(cmd gearman.Command, args ...[]byte) error {
		_ = nc.SetWriteDeadline(time.Now().Add(30 * time.Second))
		_, err := nc.Write(gearman.AppendPacket(nil, gearman.MagicReq, cmd, args...))
		return err
	}
	next := func() (gearman.Packet, error) {
		var f gearman.Frame
		_ = nc.SetReadDeadline(time.Now().Add(30 * time.Second))
		if err := r.Next(&f); err != nil {
			return gearman.Packet{}, err
		}
		return f.Packet, nil
	}
	if send(gearman.CanDo, []byte(function)) != nil {
		return
	}
	for ctx.Err() == nil {
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
			handle, unique := slices.Clone(p.Args[0]), string(p.Args[2])
			select { // the "work"
			case <-pace.C:
			case <-ctx.Done():
				return
			}
			if send(gearman.WorkComplete, handle, nil) != nil {
				return
			}
			h.mu.Lock()
			h.runs[unique] = append(h.runs[unique], gen)
			h.cond.Broadcast()
			h.mu.Unlock()
		default:
			return
		}
	}
}

// status returns the total and running jobs of the test's function from
// the "status" admin command (-1 if it cannot be read).
func (h *harness) status() (total, running int) {
	h.mu.Lock()
	addr := h.addr
	h.mu.Unlock()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return -1, -1
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := nc.Write([]byte("status\n")); err != nil {
		return -1, -1
	}
	total, running = -1, -1
	sc := bufio.NewScanner(nc)
	for sc.Scan() && sc.Text() != "." {
		f := strings.Split(sc.Text(), "\t")
		if len(f) >= 3 && f[0] == function {
			total, _ = strconv.Atoi(f[1])
			running, _ = strconv.Atoi(f[2])
		}
	}
	return total, running
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
	lostSample, dupeSample                                          []string
}

func (h *harness) report() report {
	h.mu.Lock()
	defer h.mu.Unlock()
	r := report{acked: len(h.acked), refused: h.refused, unanswered: h.unanswered}
	for u := range h.acked {
		if len(h.runs[u]) == 0 {
			r.lost++
			if len(r.lostSample) < 10 {
				r.lostSample = append(r.lostSample, u)
			}
		} else {
			r.completed++
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
