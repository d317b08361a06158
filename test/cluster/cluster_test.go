package cluster

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/gearman"
	"github.com/gearwork/gearwork/internal/gearmantest/wire"
	"github.com/gearwork/gearwork/internal/store/postgres/pgtest"
	"github.com/gearwork/gearwork/internal/testserver"
)

func TestMain(m *testing.M) { testserver.Main(m, pgtest.Cleanup) }

// freePort returns a loopback port that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// server is one "gearwork serve" process; restarting keeps its port.
type server struct {
	t     *testing.T
	store string
	addr  string
	// extra are more arguments of gearwork serve.
	extra []string
	mu    sync.Mutex
	srv   *testserver.Server // the running (or last) process
	// earlier holds the logs of the processes before srv.
	earlier strings.Builder
}

// start starts a new process on the server's port; it is stopped when the
// test ends.
func (s *server) start() {
	s.t.Helper()
	srv := testserver.Start(s.t, append([]string{"--listen", s.addr, "--store", s.store, "--log-level", "info"}, s.extra...)...)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv != nil {
		s.earlier.WriteString(s.srv.Log())
	}
	s.srv = srv
}

// logText returns what the server's processes logged so far.
func (s *server) logText() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.earlier.String() + s.srv.Log()
}

// startCluster starts n servers on store, each with the extra arguments of
// gearwork serve; they are stopped when the test ends, and their logs
// shown if it failed.
func startCluster(t *testing.T, store string, n int, extra ...string) []*server {
	t.Helper()
	servers := make([]*server, n)
	for i := range servers {
		servers[i] = &server{t: t, store: store, addr: fmt.Sprintf("127.0.0.1:%d", freePort(t)), extra: extra}
		servers[i].start()
	}
	t.Cleanup(func() {
		if t.Failed() {
			for i, s := range servers {
				t.Logf("server %d log:\n%s", i, s.logText())
			}
		}
	})
	return servers
}

// kill sends SIGKILL and waits for the process to be gone.
func (s *server) kill() {
	s.mu.Lock()
	srv := s.srv
	s.mu.Unlock()
	srv.Kill()
}

// stop asks for a normal stop (SIGTERM) and waits.
func (s *server) stop() {
	s.mu.Lock()
	srv := s.srv
	s.mu.Unlock()
	srv.Stop()
}

// execution is one delivery of a job to a worker.
type execution struct {
	server int
	gen    int64 // the server's incarnation (restart count)
}

// ledger records what clients got acknowledged and what workers ran.
type ledger struct {
	mu       sync.Mutex
	acked    map[string]bool
	runs     map[string][]execution
	finished atomic.Int64 // acknowledged jobs that ran at least once
}

func (l *ledger) ack(id string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.acked[id] = true
	if len(l.runs[id]) > 0 {
		l.finished.Add(1)
	}
}

func (l *ledger) ran(id string, e execution) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.runs[id] = append(l.runs[id], e)
	if len(l.runs[id]) == 1 && l.acked[id] {
		l.finished.Add(1)
	}
}

// runClient submits ids prefix-0 … prefix-(n-1) as background jobs to the
// server at addr in pipelined batches, reconnecting when the server goes
// away. Jobs answered with JOB_CREATED are acknowledged; others (the
// connection died first, or ERROR) are not and need not run.
func runClient(ctx context.Context, addr, prefix string, n int, l *ledger, progress *atomic.Int64) error {
	const batch = 40
	var c *wire.Stream
	for i := 0; i < n; {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if c == nil {
			var err error
			if c, err = wire.DialStream(addr); err != nil {
				time.Sleep(50 * time.Millisecond) // the server is restarting
				continue
			}
		}
		end := min(i+batch, n)
		var submits []byte
		for k := i; k < end; k++ {
			submits = append(submits, wire.Request(gearman.SubmitJobBg, "work", "", prefix+strconv.Itoa(k))...)
		}
		_ = c.Write(submits) // a failed write shows as a failed read
		for k := i; k < end; k++ {
			p, err := c.Next()
			if err != nil {
				c.Close()
				c = nil
				break
			}
			if p.Command == gearman.JobCreated {
				l.ack(prefix + strconv.Itoa(k))
				progress.Add(1)
			}
		}
		i = end
	}
	if c != nil {
		c.Close()
	}
	return nil
}

// runWorker grabs and completes "work" jobs from the server at addr until
// ctx ends, reconnecting when the server goes away.
func runWorker(ctx context.Context, addr string, server int, gen *atomic.Int64, l *ledger) {
	for ctx.Err() == nil {
		c, err := wire.DialStream(addr)
		if err != nil {
			time.Sleep(50 * time.Millisecond)
			continue
		}
		stop := context.AfterFunc(ctx, func() { c.Close() })
		g := gen.Load()
		_ = workLoop(c, server, g, l)
		stop()
		c.Close()
	}
}

// workLoop runs "work" jobs on c, recording each in l as run by server in
// its generation gen, until c fails.
func workLoop(c *wire.Stream, server int, gen int64, l *ledger) error {
	if err := c.Send(gearman.CanDo, "work"); err != nil {
		return err
	}
	return c.Work(func(id []byte) []byte {
		l.ran(string(id), execution{server: server, gen: gen})
		return nil
	})
}

// TestClusterSurvivesSIGKILL runs three servers on one PostgreSQL, a
// client and two workers on each, kills one server with SIGKILL while
// jobs flow and starts it again. Every acknowledged job must run; a job may
// run twice only if the killed server had handed it to a worker before it
// died.
func TestClusterSurvivesSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL and three servers")
	}
	url := pgtest.Schema(t)
	const nServers, perClient, workersPerServer, victim = 3, 1500, 2, 1
	servers := startCluster(t, url+"&lease_ttl=2s", nServers)
	gens := make([]*atomic.Int64, nServers)
	for i := range gens {
		gens[i] = &atomic.Int64{}
	}

	l := &ledger{acked: map[string]bool{}, runs: map[string][]execution{}}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	workCtx, stopWorkers := context.WithCancel(ctx)
	var workers sync.WaitGroup
	for i := range servers {
		for range workersPerServer {
			workers.Go(func() { runWorker(workCtx, servers[i].addr, i, gens[i], l) })
		}
	}
	var progress atomic.Int64
	var clients sync.WaitGroup
	for i := range servers {
		clients.Go(func() {
			_ = runClient(ctx, servers[i].addr, fmt.Sprintf("c%d-", i), perClient, l, &progress)
		})
	}

	// Kill the victim once a third of the jobs are in, then restart it.
	total := int64(nServers * perClient)
	for progress.Load() < total/3 && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
	require.NoError(t, ctx.Err(), "clients stalled before the kill")
	servers[victim].kill()
	killedGen := gens[victim].Load()
	gens[victim].Add(1)
	t.Logf("killed server %d after %d acknowledged jobs", victim, progress.Load())
	for ackedAtKill := progress.Load(); progress.Load() < ackedAtKill+total/10 && ctx.Err() == nil; {
		time.Sleep(10 * time.Millisecond) // the others carry on meanwhile
	}
	servers[victim].start()
	t.Logf("restarted server %d", victim)
	clients.Wait()

	// Every acknowledged job must run; wait for the last ones (the killed
	// server's jobs come back when its lease expires).
	l.waitFinished(ctx)
	// Submits whose answer was lost with the killed server may be stored
	// too: keep working until the database is empty, so that every stored
	// job has run and been deleted.
	rows := waitNoJobRows(ctx, t, url)
	stopWorkers()
	workers.Wait()
	require.Zero(t, rows, "every stored job ran and was deleted")

	l.mu.Lock()
	defer l.mu.Unlock()
	var missing, dups, badDups []string
	for id := range l.acked {
		if len(l.runs[id]) == 0 {
			missing = append(missing, id)
		}
	}
	for id, runs := range l.runs {
		if len(runs) < 2 {
			continue
		}
		dups = append(dups, id)
		inFlight := false
		for _, e := range runs {
			if e.server == victim && e.gen == killedGen {
				inFlight = true
			}
		}
		if !inFlight {
			badDups = append(badDups, id)
		}
	}
	t.Logf("acknowledged %d of %d submitted, ran %d distinct, %d ran more than once",
		len(l.acked), total, len(l.runs), len(dups))
	require.Empty(t, missing, "acknowledged jobs that never ran")
	require.Empty(t, badDups, "jobs that ran twice without having been in flight on the killed server")
	require.Greater(t, len(l.acked), int(total/2), "most submits are acknowledged")
}

// waitFinished waits until every acknowledged job has run, or ctx ends.
func (l *ledger) waitFinished(ctx context.Context) {
	for ctx.Err() == nil {
		l.mu.Lock()
		n, want := l.finished.Load(), int64(len(l.acked))
		l.mu.Unlock()
		if n == want {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitNoJobRows waits until gearwork_jobs is empty, or ctx ends, and
// returns the rows it last counted.
func waitNoJobRows(ctx context.Context, t *testing.T, url string) int {
	t.Helper()
	var rows int
	for ctx.Err() == nil {
		pgtest.QueryRow(t, url, `SELECT count(*) FROM gearwork_jobs`, &rows)
		if rows == 0 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	return rows
}
