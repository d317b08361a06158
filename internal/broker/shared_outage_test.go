package broker_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/internal/broker"
	"github.com/gearwork/gearwork/internal/store/postgres/pgtest"
	"github.com/gearwork/gearwork/internal/testwait"
)

// proxy forwards TCP connections to PostgreSQL and can cut them all, to
// play a database that goes away and comes back.
type proxy struct {
	ln     net.Listener
	target func() (net.Conn, error)
	mu     sync.Mutex
	down   bool
	conns  map[net.Conn]bool
	wg     sync.WaitGroup
}

func startProxy(t *testing.T, url string) (*proxy, string) {
	t.Helper()
	cfg, err := pgconn.ParseConfig(url)
	require.NoError(t, err)
	target := func() (net.Conn, error) {
		if strings.HasPrefix(cfg.Host, "/") {
			return net.Dial("unix", filepath.Join(cfg.Host, ".s.PGSQL."+strconv.Itoa(int(cfg.Port))))
		}
		return net.Dial("tcp", net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port))))
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &proxy{ln: ln, target: target, conns: map[net.Conn]bool{}}
	p.wg.Go(p.accept)
	t.Cleanup(func() {
		ln.Close()
		p.setDown(true)
		p.wg.Wait()
	})
	schema := cfg.RuntimeParams["search_path"]
	return p, fmt.Sprintf("postgres://%s@%s/%s?sslmode=disable&search_path=%s",
		cfg.User, ln.Addr(), cfg.Database, schema)
}

func (p *proxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.down {
			p.mu.Unlock()
			c.Close()
			continue
		}
		up, err := p.target()
		if err != nil {
			p.mu.Unlock()
			c.Close()
			continue
		}
		p.conns[c], p.conns[up] = true, true
		p.mu.Unlock()
		p.wg.Go(func() { _, _ = io.Copy(up, c); up.Close(); c.Close() })
		p.wg.Go(func() { _, _ = io.Copy(c, up); up.Close(); c.Close() })
	}
}

// setDown cuts every connection and refuses new ones (true), or lets
// them through again (false).
func (p *proxy) setDown(down bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = down
	if down {
		for c := range p.conns {
			c.Close()
		}
		clear(p.conns)
	}
}

func TestSharedServerRefusesSubmitsWhileTheDatabaseIsAwayAndRecovers(t *testing.T) {
	t.Parallel()
	url := pgtest.Schema(t)
	px, via := startProxy(t, url)
	a, _ := openShared(t, via, "a", 0)
	client := a.NewSession("client", newOutbox())
	before := submit(t, a, client, bgJob("f", "", "before"))
	require.NoError(t, before.err)

	px.setDown(true)
	var se *broker.StoreError
	testwait.Until(t, "submits fail while the database is away", func() bool {
		r := submit(t, a, client, bgJob("f", "", "during"))
		return errors.As(r.err, &se)
	})
	fgr := submit(t, a, client, broker.SubmitParams{Function: []byte("f"), Payload: []byte("fg")})
	require.NoError(t, fgr.err, "foreground jobs need no database")

	px.setDown(false)
	var after submitResult
	testwait.Until(t, "submits are accepted again once the database is back", func() bool {
		after = submit(t, a, client, bgJob("f", "", "after"))
		return after.err == nil
	})

	w, out := newWorker(t, a, "w", "f")
	got := drain(t, a, w, out, 3)
	require.ElementsMatch(t, []string{"before", "fg", "after"}, got,
		"every acknowledged job runs; refused ones do not")
	testwait.Until(t, "finished jobs are deleted", func() bool { return countRows(t, url) == 0 })
}

func TestSharedServerWithFastWorkersStopsAcknowledgingWhileTheDatabaseIsAway(t *testing.T) {
	t.Parallel()
	url := pgtest.Schema(t)
	px, via := startProxy(t, url)
	a, _ := openShared(t, via, "a", 0)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	var ran atomic.Int64
	wg.Go(func() { runWorker(ctx, t, a, "w", "f", func(broker.Assignment) { ran.Add(1) }) })
	client := a.NewSession("client", newOutbox())
	// Jobs the worker finishes at once are handed to it before their
	// insert, and most end before it.
	for i := range 20 {
		require.NoError(t, submit(t, a, client, bgJob("f", "", fmt.Sprint("before ", i))).err)
		time.Sleep(10 * time.Millisecond)
	}
	testwait.Until(t, "the jobs ran", func() bool { return ran.Load() == 20 })

	px.setDown(true)
	var se *broker.StoreError
	took := time.Now()
	testwait.Until(t, "submits fail while the database is away", func() bool {
		return errors.As(submit(t, a, client, bgJob("f", "", "during")).err, &se)
	})
	t.Logf("the first refusal came %v after the database went", time.Since(took))
	for range 20 {
		r := submit(t, a, client, bgJob("f", "", "during"))
		require.ErrorAs(t, r.err, &se, "nothing is acknowledged until the database is back, not even a job that would end at once")
	}

	px.setDown(false)
	testwait.Until(t, "submits are accepted again once the database is back", func() bool {
		return submit(t, a, client, bgJob("f", "", "after")).err == nil
	})
}

func TestSharedServerKeepsAcceptingWhenOnlyItsNotificationConnectionBreaks(t *testing.T) {
	t.Parallel()
	url := pgtest.Schema(t)
	a, _ := openShared(t, url, "a", 0)
	client := a.NewSession("client", newOutbox())
	require.NoError(t, submit(t, a, client, bgJob("f", "", "before")).err)

	var schema string
	pgtest.QueryRow(t, url, `SELECT current_schema()`, &schema)
	listening := func() int {
		var n int
		pgtest.QueryRow(t, url, fmt.Sprintf(`SELECT count(*) FROM pg_stat_activity WHERE query = 'LISTEN "gearwork.%s"'`, schema), &n)
		return n
	}
	testwait.Until(t, "the server listens", func() bool { return listening() == 1 })
	pgtest.Exec(t, url, fmt.Sprintf(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query = 'LISTEN "gearwork.%s"'`, schema))
	// The database is fine: every submit meanwhile is accepted, while the
	// server notices the break and listens again.
	for end := time.Now().Add(500 * time.Millisecond); time.Now().Before(end); {
		require.NoError(t, submit(t, a, client, bgJob("f", "", "during")).err)
	}
	testwait.Until(t, "the server listens again", func() bool { return listening() == 1 })
}

// A change written at once by its own transaction (here the cancel of a
// row nobody holds) just after the database came back is durable, and
// Durable says so: the server's error from the outage, which its
// committer clears only at its next probe (up to 5 s later), describes
// writes that no longer fail.
func TestSharedDurableAfterTheDatabaseIsBack(t *testing.T) {
	t.Parallel()
	url := pgtest.Schema(t)
	px, via := startProxy(t, url)
	a, _ := openShared(t, via, "a", 0)
	other, _ := openShared(t, url, "other", 0)
	queued := submit(t, other, other.NewSession("client", newOutbox()), bgJob("g", "", "nobody runs it"))
	require.NoError(t, queued.err)

	client := a.NewSession("client", newOutbox())
	px.setDown(true)
	var se *broker.StoreError
	testwait.Until(t, "submits fail while the database is away", func() bool {
		return errors.As(submit(t, a, client, bgJob("f", "", "during")).err, &se)
	})
	// Long enough for the committer's probes to back off past a second.
	time.Sleep(3 * time.Second)
	ctx := context.Background()
	require.Error(t, a.Durable(ctx), "nothing is stored while the database is away")
	px.setDown(false)
	ready, _ := a.Health()
	require.False(t, ready, "the committer has not probed again yet")

	require.NoError(t, a.CancelJob(ctx, []byte(other.Handle(queued.seq))))
	require.NoError(t, a.Durable(ctx), "the cancel is stored")
	require.Zero(t, countRows(t, url))
	ready, reason := a.Health()
	require.True(t, ready, reason)
	require.NoError(t, submit(t, a, client, bgJob("f", "", "after")).err)
}
