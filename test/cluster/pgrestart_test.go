package cluster

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/gearman"
	"github.com/gearwork/gearwork/internal/gearmantest/wire"
	"github.com/gearwork/gearwork/internal/store/postgres/pgtest"
)

// TestClusterSurvivesPostgresRestart runs two servers on a PostgreSQL of
// its own, a client and two workers on each, and restarts PostgreSQL
// while jobs flow: once with a crash (every PostgreSQL process killed, so
// that it recovers from its log), once with a fast shutdown. The servers
// stay up. Submits made while the database is away must be refused, never
// acknowledged and lost: every acknowledged job must run, and a job may
// run twice only when its submit was refused (it may have been handed to a
// worker, or stored, before the refusal) and the client submitted it
// again.
func TestClusterSurvivesPostgresRestart(t *testing.T) {
	// Each outage (a second) is shorter than lease_ttl.
	survivePostgresRestarts(t, []bool{true, false}, time.Second, 3000)
}

// TestClusterSurvivesPostgresOutageLongerThanTheLease is
// TestClusterSurvivesPostgresRestart with one outage of more than twice
// lease_ttl: every server's lease has expired when the database comes
// back, but no server may take that for the others' death, release their
// jobs and run them again (docs/postgres.md, "Leases").
func TestClusterSurvivesPostgresOutageLongerThanTheLease(t *testing.T) {
	survivePostgresRestarts(t, []bool{true}, 5*time.Second, 1500)
}

// survivePostgresRestarts runs the test of TestClusterSurvivesPostgresRestart
// with lease_ttl=2s: a restart of PostgreSQL for each of crashes (a crash
// when true, else a fast shutdown), each down for downtime, and perClient
// jobs submitted by each client.
func survivePostgresRestarts(t *testing.T, crashes []bool, downtime time.Duration, perClient int) {
	if testing.Short() {
		t.Skip("starts PostgreSQL and two servers")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	// synchronous_commit=on: a transaction PostgreSQL answered is in its
	// log, so its crash loses nothing that was committed.
	pg, err := pgtest.Start(ctx, pgtest.Options{Settings: []string{"synchronous_commit=on"}})
	require.NoError(t, err)
	defer pg.Stop()
	const nServers, workersPerServer = 2, 2
	servers := startCluster(t, pg.URL+"&lease_ttl=2s", nServers)
	gens := make([]*atomic.Int64, nServers)
	for i := range gens {
		gens[i] = &atomic.Int64{}
	}
	l := &ledger{acked: map[string]bool{}, runs: map[string][]execution{}}
	workCtx, stopWorkers := context.WithCancel(ctx)
	var workers sync.WaitGroup
	for i := range servers {
		for range workersPerServer {
			workers.Go(func() { runWorker(workCtx, servers[i].addr, i, gens[i], l) })
		}
	}
	var progress atomic.Int64
	var clients sync.WaitGroup
	refused, unanswered := make([]int, nServers), make([]int, nServers)
	var wasRefused sync.Map // ids answered with ERROR at least once
	for i := range servers {
		clients.Go(func() {
			refused[i], unanswered[i] = runTimedClient(ctx, servers[i].addr, fmt.Sprintf("c%d-", i), perClient, l, &progress, &wasRefused)
		})
	}
	total := int64(nServers * perClient)
	// The servers' registrations before the restarts: no server may take
	// another, which kept renewing once the database was back, for dead.
	var registered []int64
	for k, crash := range crashes {
		for progress.Load() < total*int64(k+1)/int64(2*len(crashes)) && ctx.Err() == nil {
			time.Sleep(10 * time.Millisecond)
		}
		require.NoError(t, ctx.Err(), "clients stalled before restart %d", k+1)
		if k == 0 {
			pgtest.QueryRow(t, pg.URL, `SELECT array_agg(id ORDER BY id) FROM gearwork_servers`, &registered)
			require.Len(t, registered, nServers, "the servers registered")
		}
		at := progress.Load()
		require.NoError(t, pg.Restart(ctx, crash, downtime), "restarting PostgreSQL")
		t.Logf("PostgreSQL restarted (crash %v) after %d acknowledged jobs; %d acknowledged since", crash, at, progress.Load()-at)
	}
	clients.Wait()
	t.Logf("refused %v, unanswered %v", refused, unanswered)
	require.Equal(t, []int{0, 0}, unanswered, "submits without an answer within %v", answerTimeout)

	l.waitFinished(ctx)
	rows := waitNoJobRows(ctx, t, pg.URL)
	stopWorkers()
	workers.Wait()
	for _, s := range servers {
		require.True(t, s.srv.Alive(), "a server exited:\n%s", s.logText())
	}
	var still []int64
	pgtest.QueryRow(t, pg.URL, `SELECT coalesce(array_agg(id ORDER BY id), '{}') FROM gearwork_servers`, &still)
	require.Equal(t, registered, still, "no server lost its lease to another while both were up")

	l.mu.Lock()
	defer l.mu.Unlock()
	var missing, dups, badDups []string
	for id := range l.acked {
		if len(l.runs[id]) == 0 {
			missing = append(missing, id)
		}
	}
	for id, runs := range l.runs {
		if len(runs) > 1 {
			dups = append(dups, fmt.Sprintf("%s:%v", id, runs))
			if _, ok := wasRefused.Load(id); !ok {
				badDups = append(badDups, fmt.Sprintf("%s:%v", id, runs))
			}
		}
	}
	t.Logf("acknowledged %d of %d submitted, ran %d distinct, %d ran more than once (a refused submit may have been stored, and was submitted again): %v",
		len(l.acked), total, len(l.runs), len(dups), dups[:min(len(dups), 10)])
	require.Empty(t, missing, "acknowledged jobs that never ran")
	require.Empty(t, badDups, "jobs that ran twice although their submit was never refused")
	require.Zero(t, rows, "every stored job ran and was deleted")
	require.Greater(t, len(l.acked), int(total/2), "most submits are acknowledged")
}

// answerTimeout bounds the wait for the answer to a submit: while the
// database is away a server answers ERROR at once, or within the time
// it takes to notice.
const answerTimeout = 30 * time.Second

// runTimedClient is runClient with a deadline on each answer, which
// submits again, after a pause, what was answered with ERROR (as a client
// does while the database is away). It counts the submits answered with
// ERROR (refused) and those left without an answer (unanswered, the
// connection is then dropped and they are submitted again).
func runTimedClient(ctx context.Context, addr, prefix string, n int, l *ledger, progress *atomic.Int64, wasRefused *sync.Map) (refused, unanswered int) {
	const batch = 40
	var c *wire.Stream
	var again []string // ids to submit again
	next := 0
	for (next < n || len(again) > 0) && ctx.Err() == nil {
		if c == nil {
			var err error
			if c, err = wire.DialStream(addr); err != nil {
				time.Sleep(50 * time.Millisecond)
				continue
			}
		}
		ids := again
		again = nil
		for ; len(ids) < batch && next < n; next++ {
			ids = append(ids, prefix+strconv.Itoa(next))
		}
		var submits []byte
		for _, id := range ids {
			submits = append(submits, wire.Request(gearman.SubmitJobBg, "work", "", id)...)
		}
		_ = c.NC.SetDeadline(time.Now().Add(answerTimeout))
		_ = c.Write(submits)
		for k, id := range ids {
			p, err := c.Next()
			if err != nil {
				unanswered += len(ids) - k
				again = append(again, ids[k:]...)
				c.Close()
				c = nil
				break
			}
			if p.Command == gearman.JobCreated {
				l.ack(id)
				progress.Add(1)
				continue
			}
			refused++
			again = append(again, id)
			wasRefused.Store(id, true)
		}
		if len(again) > 0 {
			time.Sleep(50 * time.Millisecond)
		}
	}
	if c != nil {
		c.Close()
	}
	return refused, unanswered
}
