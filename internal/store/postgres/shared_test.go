package postgres_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/internal/store"
	"github.com/gearwork/gearwork/internal/store/postgres"
	"github.com/gearwork/gearwork/internal/store/postgres/pgtest"
	"github.com/gearwork/gearwork/internal/store/storetest"
	"github.com/gearwork/gearwork/internal/testwait"
)

func openStore(t *testing.T, url, name string) *postgres.Store {
	t.Helper()
	return openStoreTTL(t, url, name, 0)
}

// openStoreTTL is openStore with a lease of ttl (0: the default).
func openStoreTTL(t *testing.T, url, name string, ttl time.Duration) *postgres.Store {
	t.Helper()
	st, err := postgres.Open(context.Background(), postgres.Config{URL: url, Name: name, LeaseTTL: ttl, Logger: quiet})
	require.NoError(t, err)
	t.Cleanup(func() { _ = st.Close() })
	return st
}

// renewUntilGone renews s's lease every 50 ms, as a server does, until
// the registration of the server named name is gone, and returns when
// the renewal that released it returned.
func renewUntilGone(t *testing.T, s *postgres.Store, url, name string) time.Time {
	t.Helper()
	return renewEveryUntilGone(t, s, url, name, 50*time.Millisecond)
}

// renewEveryUntilGone is renewUntilGone with renewals every pause (from
// the answer to one to the start of the next).
func renewEveryUntilGone(t *testing.T, s *postgres.Store, url, name string, pause time.Duration) time.Time {
	t.Helper()
	var released time.Time
	first := true
	testwait.Until(t, name+"'s expired lease to be released", func() bool {
		if !first {
			time.Sleep(pause)
		}
		first = false
		lost, err := s.Renew(context.Background())
		require.NoError(t, err)
		released = time.Now()
		require.False(t, lost, "a server that keeps renewing keeps its lease")
		var n int
		pgtest.QueryRow(t, url, fmt.Sprintf(`SELECT count(*) FROM gearwork_servers WHERE name = '%s'`, name), &n)
		return n == 0
	})
	return released
}

func newJob(fn, unique, payload string) store.Job {
	return store.Job{Function: fn, Unique: unique, Payload: []byte(payload), Priority: 1}
}

// insertHeld inserts one job of function fn asking s to claim it, and
// returns it once s holds it.
func insertHeld(t *testing.T, s *postgres.Store, fn, payload string) store.Inserted {
	t.Helper()
	res, err := s.Insert(context.Background(), store.InsertParams{Jobs: []store.Job{newJob(fn, "", payload)}, Claim: []bool{true}})
	require.NoError(t, err)
	require.True(t, res[0].Claimed, "the job is held by the server that inserted it")
	return res[0]
}

// claimF claims up to 10 jobs of function f on s.
func claimF(t *testing.T, s *postgres.Store) []store.Job {
	t.Helper()
	got, err := s.Claim(context.Background(), []store.ClaimRequest{{Function: "f", Max: 10}})
	require.NoError(t, err)
	return got
}

func TestInsertNumbersAndCoalesces(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := openStore(t, pgtest.Schema(t), "a")
	res, err := st.Insert(ctx, store.InsertParams{HandlePrefix: "H:a:", Jobs: []store.Job{
		newJob("f", "", "1"), newJob("f", "u", "2"), newJob("f", "u", "3"), newJob("g", "u", "4"),
	}})
	require.NoError(t, err)
	require.Len(t, res, 4)
	require.True(t, res[0].Created)
	require.True(t, res[1].Created)
	require.Equal(t, store.Inserted{Seq: res[1].Seq}, res[2], "a repeated unique in one batch coalesces")
	require.True(t, res[3].Created, "uniques are per function")
	require.Less(t, res[0].Seq, res[1].Seq, "numbers follow the batch order")

	again, err := st.Insert(ctx, store.InsertParams{HandlePrefix: "H:b:", Jobs: []store.Job{newJob("f", "u", "5")}})
	require.NoError(t, err)
	require.Equal(t, []store.Inserted{{Seq: res[1].Seq}}, again, "a later batch coalesces with the live job")

	var got []store.Job
	require.NoError(t, st.Load(ctx, func(j store.Job) error { got = append(got, j); return nil }))
	require.Len(t, got, 3)
	require.Equal(t, fmt.Sprintf("H:a:%d", res[1].Seq), got[1].Handle, "the handle is the prefix and the number")
	require.Equal(t, "2", string(got[1].Payload), "the first submit's payload is kept")
}

func TestInsertClaimsOnlyWhenJoined(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := pgtest.Schema(t)
	a, b := openStore(t, url, "a"), openStore(t, url, "b")
	res, err := a.Insert(ctx, store.InsertParams{Jobs: []store.Job{newJob("f", "", "x")}, Claim: []bool{true}})
	require.NoError(t, err)
	require.False(t, res[0].Claimed, "a server that has not joined claims nothing")

	_, err = a.Join(ctx, func(string) {}, nil, nil)
	require.NoError(t, err)
	_, err = b.Join(ctx, func(string) {}, nil, nil)
	require.NoError(t, err)
	res, err = a.Insert(ctx, store.InsertParams{Jobs: []store.Job{newJob("f", "k", "y"), newJob("f", "", "z")},
		Claim: []bool{true, false}})
	require.NoError(t, err)
	require.True(t, res[0].Claimed)
	require.False(t, res[1].Claimed)

	// b coalescing with a job a holds does not take it.
	res2, err := b.Insert(ctx, store.InsertParams{Jobs: []store.Job{newJob("f", "k", "again")}, Claim: []bool{true}})
	require.NoError(t, err)
	require.Equal(t, store.Inserted{Seq: res[0].Seq}, res2[0])
	// b coalescing with an unclaimed job claims it.
	res3, err := b.Insert(ctx, store.InsertParams{Jobs: []store.Job{newJob("g", "m", "1")}})
	require.NoError(t, err)
	res4, err := b.Insert(ctx, store.InsertParams{Jobs: []store.Job{newJob("g", "m", "2")}, Claim: []bool{true}})
	require.NoError(t, err)
	require.Equal(t, store.Inserted{Seq: res3[0].Seq, Claimed: true}, res4[0])

	claimed, err := a.Claim(ctx, []store.ClaimRequest{{Function: "f", Max: 10}, {Function: "g", Max: 10}})
	require.NoError(t, err)
	require.Len(t, claimed, 2, "only the unclaimed jobs of f: x and z")
}

func TestClaimIsExclusiveAndOrdered(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := pgtest.Schema(t)
	w := openStore(t, url, "writer")
	_, err := w.Insert(ctx, store.InsertParams{Jobs: storetest.PriorityJobs(300)})
	require.NoError(t, err)

	const servers = 4
	var mu sync.Mutex
	seen := map[uint64]int{}
	var wg sync.WaitGroup
	for i := range servers {
		st := openStore(t, url, fmt.Sprint("s", i))
		_, err := st.Join(ctx, func(string) {}, nil, nil)
		require.NoError(t, err)
		wg.Go(func() {
			for {
				got, err := st.Claim(ctx, []store.ClaimRequest{{Function: "f", Max: 7}, {Function: "none", Max: 3}})
				if err != nil {
					t.Error(err)
					return
				}
				if len(got) == 0 {
					return
				}
				for k := 1; k < len(got); k++ {
					if got[k-1].Priority > got[k].Priority {
						t.Errorf("claim not in priority order: %d before %d", got[k-1].Priority, got[k].Priority)
					}
				}
				mu.Lock()
				for _, j := range got {
					seen[j.Seq]++
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	require.Len(t, seen, 300, "every due job is claimed; the scheduled one is not")
	for seq, n := range seen {
		require.Equal(t, 1, n, "job %d claimed %d times", seq, n)
	}
}

func TestNotifyWakesListeners(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := pgtest.Schema(t)
	a, b := openStore(t, url, "a"), openStore(t, url, "b")
	woken := make(chan string, 16)
	_, err := b.Join(ctx, func(fn string) {
		select {
		case woken <- fn:
		default:
		}
	}, nil, nil)
	require.NoError(t, err)
	// The listener may still be connecting: insert until it hears.
	deadline := time.After(time.Minute)
	for {
		_, err := a.Insert(ctx, store.InsertParams{Jobs: []store.Job{newJob("resize\x00png", "", "x")}})
		require.NoError(t, err)
		select {
		case fn := <-woken:
			require.Equal(t, "resize\x00png", fn, "the notification names the function")
			return
		case <-time.After(100 * time.Millisecond):
		case <-deadline:
			t.Fatal("no notification")
		}
	}
}

func TestLeaseLossAndRelease(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := pgtest.Schema(t)
	a := openStore(t, url, "a")
	_, err := a.Join(ctx, func(string) {}, nil, nil)
	require.NoError(t, err)
	_, err = a.Insert(ctx, store.InsertParams{Jobs: []store.Job{newJob("f", "", "1"), newJob("f", "", "2")}})
	require.NoError(t, err)
	got := claimF(t, a)
	require.Len(t, got, 2)

	b := openStoreTTL(t, url, "b", 500*time.Millisecond)
	_, err = b.Join(ctx, func(string) {}, nil, nil)
	require.NoError(t, err)
	none := claimF(t, b)
	require.Empty(t, none, "held jobs are not claimed twice")

	require.NoError(t, a.Release(ctx, []uint64{got[0].Seq}))
	one := claimF(t, b)
	require.Equal(t, []uint64{got[0].Seq}, []uint64{one[0].Seq}, "a released job can be claimed")

	// a's lease runs out: b's renewals release a's job (once b has been
	// in touch with the database for a lease), and a learns it lost it.
	pgtest.Exec(t, url, `UPDATE gearwork_servers SET lease_until = now() - interval '1 second' WHERE name = 'a'`)
	renewUntilGone(t, b, url, "a")
	other := claimF(t, b)
	require.Len(t, other, 1)
	require.Equal(t, got[1].Seq, other[0].Seq)
	lost, err := a.Renew(ctx)
	require.NoError(t, err)
	require.True(t, lost)

	// Finished elsewhere, a job's retry count is not written back to life.
	require.NoError(t, b.Delete(ctx, []uint64{other[0].Seq}))
	other[0].Retries = 3
	require.NoError(t, a.Update(ctx, other))
	f, ok, err := a.Find(ctx, other[0].Seq, "")
	require.NoError(t, err)
	require.False(t, ok, "Update does not resurrect: %+v", f)

	// Leaving releases everything.
	require.NoError(t, b.Leave(ctx))
	f, ok, err = a.Find(ctx, one[0].Seq, "")
	require.NoError(t, err)
	require.True(t, ok)
	require.False(t, f.Claimed)
}

// A server judges another's expired lease to be that server's death only
// once it has itself been in touch with the database, renewing its own
// lease, for a lease without a break: an expired lease may be the doing
// of an outage that kept every server from renewing. A fresh server waits
// a lease; so does one whose renewals paused for half a lease or more (as
// while the database is away, or a statement hangs). The stretch begins
// at the answer to a registration or renewal, so the renewal that
// releases returns a lease or more after the pause ended.
func TestRenewReleasesExpiredLeasesOnlyAfterALeaseInTouch(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := pgtest.Schema(t)
	const ttl = 2 * time.Second
	a := holderOfAnExpiredLease(t, url)

	b := openStoreTTL(t, url, "b", ttl)
	joined := time.Now()
	_, err := b.Join(ctx, func(string) {}, nil, nil)
	require.NoError(t, err)
	released := renewUntilGone(t, b, url, "a")
	require.GreaterOrEqual(t, released.Sub(joined), ttl, "released a lease after joining")
	require.Len(t, claimF(t, b), 1, "a's job was released")

	lost, err := a.Renew(ctx)
	require.NoError(t, err)
	require.True(t, lost, "a learns that its lease was lost, and registers again")
	pgtest.Exec(t, url, `UPDATE gearwork_servers SET lease_until = now() - interval '1 second' WHERE name = 'a'`)
	// b's renewals pause for half a lease.
	time.Sleep(ttl / 2)
	resumed := time.Now()
	released = renewUntilGone(t, b, url, "a")
	require.GreaterOrEqual(t, released.Sub(resumed), ttl, "released a lease after its renewals paused")
}

// A server whose renewals run late, every 0.4 of a lease (as when its
// claim loop is busy or the machine loaded), still releases a dead
// server's expired lease: answers less than half a lease apart keep its
// stretch of contact with the database.
func TestRenewReleasesExpiredLeasesWhenRenewalsRunLate(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := pgtest.Schema(t)
	const ttl = 2 * time.Second
	holderOfAnExpiredLease(t, url)

	b := openStoreTTL(t, url, "b", ttl)
	_, err := b.Join(ctx, func(string) {}, nil, nil)
	require.NoError(t, err)
	renewEveryUntilGone(t, b, url, "a", ttl*40/100)
	require.Len(t, claimF(t, b), 1, "a's job was released")
}

// holderOfAnExpiredLease gives a server "a" that holds one claimed job of
// "f" under a lease that has expired.
func holderOfAnExpiredLease(t *testing.T, url string) *postgres.Store {
	t.Helper()
	a := joinedStore(t, url, "a")
	_, err := a.Insert(context.Background(), store.InsertParams{Jobs: []store.Job{newJob("f", "", "1")}, Claim: []bool{true}})
	require.NoError(t, err)
	pgtest.Exec(t, url, `UPDATE gearwork_servers SET lease_until = now() - interval '1 second' WHERE name = 'a'`)
	return a
}

// steadyBeside gives a server x, and a server b with a lease of ttl that
// is in steady contact with the database: it has released the lease of a
// dead server.
func steadyBeside(t *testing.T, url string, ttl time.Duration) (x, b *postgres.Store) {
	t.Helper()
	x = joinedStore(t, url, "x")
	dead := joinedStore(t, url, "dead")
	require.NoError(t, dead.Close())
	pgtest.Exec(t, url, `UPDATE gearwork_servers SET lease_until = now() - interval '1 second' WHERE name = 'dead'`)
	b = openStoreTTL(t, url, "b", ttl)
	_, err := b.Join(context.Background(), func(string) {}, nil, nil)
	require.NoError(t, err)
	renewUntilGone(t, b, url, "dead")
	return x, b
}

// requireLeaseKept checks that x's row is still there and that its next
// renewal finds its lease its own.
func requireLeaseKept(t *testing.T, url string, x *postgres.Store, msg string) {
	t.Helper()
	var n int
	pgtest.QueryRow(t, url, `SELECT count(*) FROM gearwork_servers WHERE name = 'x'`, &n)
	require.Equal(t, 1, n, msg)
	lost, err := x.Renew(context.Background())
	require.NoError(t, err)
	require.False(t, lost, "x keeps its lease")
}

// A stall of the database shorter than a lease can expire the lease of a
// live server that renews on time (its last renewal may have come a
// quarter of a lease before the stall): a server whose renewals were
// answered before and after such a stall, 0.85 of a lease apart, has not
// been in steady contact across it and does not release that lease.
func TestRenewDoesNotReleaseALeaseThatExpiredInAStallShorterThanALease(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := pgtest.Schema(t)
	const ttl = 2 * time.Second
	x, b := steadyBeside(t, url, ttl)

	// The database stalls: b's next renewal is answered 0.85 of a lease
	// after its previous one, and x's lease expired meanwhile.
	time.Sleep(ttl * 85 / 100)
	pgtest.Exec(t, url, `UPDATE gearwork_servers SET lease_until = now() - interval '1 millisecond' WHERE name = 'x'`)
	lost, err := b.Renew(ctx)
	require.NoError(t, err)
	require.False(t, lost)
	requireLeaseKept(t, url, x, "the lease x lost in the stall is not released")
}

// A renewal whose statement hangs (here: waits for a lock on its row)
// fails at its deadline, well before half a lease, instead of being
// answered after the hang as if nothing had happened; the server keeps
// its lease, and its stretch of contact begins again.
func TestHungRenewalFailsAndKeepsTheLease(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := pgtest.Schema(t)
	const ttl = 2 * time.Second
	x, b := steadyBeside(t, url, ttl)

	conn, err := pgx.Connect(ctx, url)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close(ctx) })
	tx, err := conn.Begin(ctx)
	require.NoError(t, err)
	_, err = tx.Exec(ctx, `SELECT FROM gearwork_servers WHERE name = 'b' FOR UPDATE`)
	require.NoError(t, err)
	hung := make(chan error, 1)
	go func() {
		_, err := b.Renew(ctx)
		hung <- err
	}()
	var renewErr error
	select {
	case renewErr = <-hung:
	case <-time.After(ttl * 85 / 100):
	}
	// x's lease expires while b's renewal hangs.
	pgtest.Exec(t, url, `UPDATE gearwork_servers SET lease_until = now() - interval '1 millisecond' WHERE name = 'x'`)
	require.NoError(t, tx.Rollback(ctx))
	if renewErr == nil {
		renewErr = <-hung
	}
	require.Error(t, renewErr, "a renewal that hangs fails")

	lost, err := b.Renew(ctx)
	require.NoError(t, err)
	require.False(t, lost, "a renewal that timed out did not cost the lease")
	requireLeaseKept(t, url, x, "the lease x lost while b's renewal hung is not released")
}

// A cancel deletes a job held under an expired lease, as a job nobody
// holds, only when the cancelling server may judge leases: when it has
// been in touch with the database for a lease (see
// TestRenewReleasesExpiredLeasesOnlyAfterALeaseInTouch).
func TestCancelTakesAnExpiredLeaseForDeathOnlyAfterALeaseInTouch(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := pgtest.Schema(t)
	a := joinedStore(t, url, "a")
	joinedStore(t, url, "c")
	held, err := a.Insert(ctx, store.InsertParams{Jobs: []store.Job{newJob("f", "", "1")}, Claim: []bool{true}})
	require.NoError(t, err)
	expire := func(name string) {
		pgtest.Exec(t, url, fmt.Sprintf(`UPDATE gearwork_servers SET lease_until = now() - interval '1 second' WHERE name = '%s'`, name))
	}
	expire("a")

	b := openStoreTTL(t, url, "b", 2*time.Second)
	_, err = b.Join(ctx, func(string) {}, nil, nil)
	require.NoError(t, err)
	ok, err := b.CancelQueued(ctx, held[0].Seq, "test")
	require.NoError(t, err)
	require.False(t, ok, "a server that has just joined does not take an expired lease for its server's death")
	require.Equal(t, 1, countJobs(t, url, "f"))

	// b renews until it releases c's expired lease; a's lease lasts meanwhile.
	pgtest.Exec(t, url, `UPDATE gearwork_servers SET lease_until = now() + interval '1 hour' WHERE name = 'a'`)
	expire("c")
	renewUntilGone(t, b, url, "c")
	expire("a")
	testwait.Until(t, "the job held under a's expired lease to be cancelled", func() bool {
		_, err := b.Renew(ctx)
		require.NoError(t, err)
		ok, err = b.CancelQueued(ctx, held[0].Seq, "test")
		require.NoError(t, err)
		return ok
	})
	require.Zero(t, countJobs(t, url, "f"), "the job held under a's expired lease is cancelled")
}

// A cancel takes an expired lease for its server's death only when it had
// expired by the database's time at the cancelling server's last renewal,
// as the renewal's release does (TestRenewDoesNotReleaseALeaseThatExpiredInAStallShorterThanALease):
// a lease that expired since may have expired in a stall of the database
// that the server's renewals have not seen yet.
func TestCancelTakesOnlyALeaseExpiredByTheLastRenewal(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := pgtest.Schema(t)
	const ttl = 4 * time.Second
	x, b := steadyBeside(t, url, ttl)
	held := insertHeld(t, x, "f", "1")

	lost, err := b.Renew(ctx)
	require.NoError(t, err)
	require.False(t, lost)
	// x's lease expires a microsecond after the database renewed b's: its
	// time then is b's lease_until less a lease.
	pgtest.Exec(t, url, fmt.Sprintf(`UPDATE gearwork_servers
		SET lease_until = (SELECT lease_until FROM gearwork_servers WHERE name = 'b') - interval '%d milliseconds' + interval '1 microsecond'
		WHERE name = 'x'`, ttl.Milliseconds()))
	ok, err := b.CancelQueued(ctx, held.Seq, "test")
	require.NoError(t, err)
	require.False(t, ok, "a lease that expired after the last renewal is not taken for its server's death")
	require.Equal(t, 1, countJobs(t, url, "f"))

	// The next renewal finds it expired.
	testwait.Until(t, "the job held under x's expired lease to be cancelled", func() bool {
		_, err := b.Renew(ctx)
		require.NoError(t, err)
		ok, err = b.CancelQueued(ctx, held.Seq, "test")
		require.NoError(t, err)
		return ok
	})
	require.Zero(t, countJobs(t, url, "f"))
}

func TestServerWhoseRegistrationIsGoneHoldsNothing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := pgtest.Schema(t)
	a, b := openStore(t, url, "a"), openStore(t, url, "b")
	_, err := a.Join(ctx, func(string) {}, nil, nil)
	require.NoError(t, err)
	_, err = b.Join(ctx, func(string) {}, nil, nil)
	require.NoError(t, err)
	held := insertHeld(t, a, "f", "1")
	_, err = b.Insert(ctx, store.InsertParams{Jobs: []store.Job{newJob("f", "", "2")}})
	require.NoError(t, err)

	// Another server reaped a's registration (its lease expired).
	pgtest.Exec(t, url, `DELETE FROM gearwork_servers WHERE name = 'a'`)
	f, ok, err := b.Find(ctx, held.Seq, "")
	require.NoError(t, err)
	require.True(t, ok)
	require.False(t, f.Claimed, "deleting a registration releases that server's jobs")

	res, err := a.Insert(ctx, store.InsertParams{Jobs: []store.Job{newJob("f", "", "3")}, Claim: []bool{true}})
	require.NoError(t, err, "the insert is retried unclaimed")
	require.False(t, res[0].Claimed)
	_, err = a.Claim(ctx, []store.ClaimRequest{{Function: "f", Max: 10}})
	require.ErrorIs(t, err, postgres.ErrLeaseLost, "a server without a registration cannot claim")
	var n int
	pgtest.QueryRow(t, url, `SELECT count(*) FROM gearwork_jobs WHERE owner IS NOT NULL`, &n)
	require.Zero(t, n, "no job names the reaped server")

	got := claimF(t, b)
	require.Len(t, got, 3, "b can claim every job, a's released one included")
	pgtest.QueryRow(t, url, `SELECT count(*) FROM gearwork_jobs j JOIN gearwork_servers s ON s.id = j.owner WHERE s.name = 'b'`, &n)
	require.Equal(t, 3, n)
}

func TestMigrateConcurrently(t *testing.T) {
	t.Parallel()
	url := pgtest.Schema(t)
	var wg sync.WaitGroup
	results := make(chan []int, 6)
	for range 6 {
		wg.Go(func() {
			v, err := postgres.Migrate(context.Background(), url)
			if err != nil {
				t.Error(err)
			}
			results <- v
		})
	}
	wg.Wait()
	close(results)
	applied := 0
	for v := range results {
		applied += len(v)
	}
	require.Equal(t, postgres.LatestVersion, applied, "each migration is applied exactly once")
	var version int
	pgtest.QueryRow(t, url, `SELECT max(version) FROM gearwork_migrations`, &version)
	require.Equal(t, postgres.LatestVersion, version)

	pgtest.Exec(t, url, `INSERT INTO gearwork_migrations (version, name) VALUES (999, 'from the future')`)
	_, err := postgres.Open(context.Background(), postgres.Config{URL: url, Logger: quiet})
	require.ErrorIs(t, err, postgres.ErrSchemaTooNew, "a server refuses a schema newer than it knows")
}

func TestClaimTakesOnlyTheHeadOfEachOrderingKey(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := pgtest.Schema(t)
	a, b := joinedStore(t, url, "a"), joinedStore(t, url, "b")
	var jobs []store.Job
	for i := range 3 {
		for _, key := range []string{"x", "y"} {
			j := newJob("f", "", fmt.Sprint(key, i))
			j.OrderingKey = key
			jobs = append(jobs, j)
		}
	}
	jobs = append(jobs, newJob("f", "", "plain"))
	_, err := a.Insert(ctx, store.InsertParams{Jobs: jobs, Claim: []bool{true, true, true, true, true, true, true}})
	require.NoError(t, err)
	var owned int
	pgtest.QueryRow(t, url, `SELECT count(*) FROM gearwork_jobs WHERE owner IS NOT NULL AND ordering_key <> ''`, &owned)
	require.Zero(t, owned, "ordered jobs are never claimed as they are inserted")

	got := claimF(t, a)
	var payloads []string
	for _, j := range got {
		payloads = append(payloads, string(j.Payload))
	}
	require.ElementsMatch(t, []string{"x0", "y0"}, payloads, "only the head of each key; the plain job went at insert")
	none := claimF(t, b)
	require.Empty(t, none, "keys held by a are not claimed by b")

	// x0 finishes: x1 becomes the head, for any server.
	require.NoError(t, a.Delete(ctx, []uint64{got[0].Seq}))
	next := claimF(t, b)
	require.Len(t, next, 1)
	require.Equal(t, string(got[0].Payload[:1])+"1", string(next[0].Payload))
}

func TestClaimKeepsALimitAcrossServers(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := pgtest.Schema(t)
	var stores []*postgres.Store
	for _, name := range []string{"a", "b", "c"} {
		st := openStore(t, url, name)
		_, err := st.Join(ctx, func(string) {}, nil, nil)
		require.NoError(t, err)
		stores = append(stores, st)
	}
	var jobs []store.Job
	for i := range 20 {
		jobs = append(jobs, newJob("f", "", fmt.Sprint(i)))
	}
	_, err := stores[0].Insert(ctx, store.InsertParams{Jobs: jobs})
	require.NoError(t, err)
	const limit = 5
	var mu sync.Mutex
	var held []store.Job
	var wg sync.WaitGroup
	for _, st := range stores {
		wg.Go(func() {
			for range 3 {
				got, err := st.Claim(ctx, []store.ClaimRequest{{Function: "f", Max: 3, Limit: limit}})
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				held = append(held, got...)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	require.Len(t, held, limit, "three servers claiming at once hold the limit, no more")
	// One finishes: one more may be claimed.
	require.NoError(t, stores[0].Delete(ctx, []uint64{held[0].Seq}))
	more, err := stores[2].Claim(ctx, []store.ClaimRequest{{Function: "f", Max: 3, Limit: limit}})
	require.NoError(t, err)
	require.Len(t, more, 1)
}

// TestCommitReservesNumbersForJobsTheServerNumbers: the conformance suite
// (storetest, Reserve) checks the numbers themselves; here, that the
// handle stored for a job that carries a reserved number is made of it.
func TestCommitReservesNumbersForJobsTheServerNumbers(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := pgtest.Schema(t)
	a := openStore(t, url, "a")
	ra, err := a.Commit(ctx, store.CommitParams{Reserve: 5})
	require.NoError(t, err)
	require.Len(t, ra.Reserved, 5)
	j := newJob("f", "", "own number")
	j.Seq = ra.Reserved[2]
	res, err := a.Insert(ctx, store.InsertParams{HandlePrefix: "H:a:", Jobs: []store.Job{j}})
	require.NoError(t, err)
	require.Equal(t, store.Inserted{Seq: ra.Reserved[2], Created: true}, res[0])
	var handle string
	pgtest.QueryRow(t, url, fmt.Sprintf(`SELECT convert_from(handle, 'UTF8') FROM gearwork_jobs WHERE seq = %d`, ra.Reserved[2]), &handle)
	require.Equal(t, fmt.Sprintf("H:a:%d", ra.Reserved[2]), handle)
}

// abortOnce makes PostgreSQL abort, once, the first transaction that
// does event (INSERT, UPDATE or DELETE) to a row r of gearwork_jobs for
// which the SQL condition when holds, with SQLSTATE 40P01, as it aborts
// one of two transactions that deadlock. Transactions writing the same
// rows again are left alone.
func abortOnce(t *testing.T, url, event, when string) {
	t.Helper()
	pgtest.Exec(t, url, fmt.Sprintf(`CREATE SEQUENCE abort_once;
		CREATE FUNCTION abort_once() RETURNS trigger LANGUAGE plpgsql AS $$
		DECLARE r record;
		BEGIN
			IF TG_OP = 'DELETE' THEN r := OLD; ELSE r := NEW; END IF;
			IF %s THEN
				IF nextval('abort_once') = 1 THEN
					RAISE EXCEPTION 'deadlock detected (injected)' USING ERRCODE = '40P01';
				END IF;
			END IF;
			RETURN r;
		END $$;
		CREATE TRIGGER abort_once BEFORE %s ON gearwork_jobs FOR EACH ROW EXECUTE FUNCTION abort_once();`, when, event))
}

// aborted reports whether abortOnce's trigger aborted a transaction.
func aborted(t *testing.T, url string) bool {
	t.Helper()
	var called bool
	pgtest.QueryRow(t, url, `SELECT is_called FROM abort_once`, &called)
	return called
}

// Every transaction of the store that PostgreSQL may abort to resolve a
// conflict with another is written again, as a commit round is: a cancel,
// a retry or a purge of dead letters and the insert of a job whose
// coalesced job finished meanwhile succeed instead of failing with
// "deadlock detected".
func TestConflictAbortedTransactionsAreWrittenAgain(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	victim := `convert_from(r.function, 'UTF8') = 'victim'`

	t.Run("CancelQueued", func(t *testing.T) {
		t.Parallel()
		url := pgtest.Schema(t)
		st := openStore(t, url, "a")
		res, err := st.Insert(ctx, store.InsertParams{HandlePrefix: "H:a:", Jobs: []store.Job{newJob("victim", "", "x")}})
		require.NoError(t, err)
		abortOnce(t, url, "DELETE", victim)
		ok, err := st.CancelQueued(ctx, res[0].Seq, "test")
		require.NoError(t, err)
		require.True(t, ok)
		require.True(t, aborted(t, url), "the first attempt was aborted")
		require.Zero(t, countJobs(t, url, "victim"))
	})

	// deadVictim stores a dead letter of function "victim" on a schema of
	// its own and returns the schema's URL, the store and the job.
	deadVictim := func(t *testing.T) (string, *postgres.Store, uint64) {
		t.Helper()
		url := pgtest.Schema(t)
		st := openStore(t, url, "a")
		j := newJob("victim", "", "x")
		res, err := st.Insert(ctx, store.InsertParams{HandlePrefix: "H:a:", Jobs: []store.Job{j}})
		require.NoError(t, err)
		j.Seq, j.State, j.Attempts, j.LastError, j.FinishedAt = res[0].Seq, store.StateDead, 1, "failed", time.Now().UnixNano()
		require.NoError(t, st.Update(ctx, []store.Job{j}))
		return url, st, j.Seq
	}

	t.Run("RetryDead", func(t *testing.T) {
		t.Parallel()
		url, st, seq := deadVictim(t)
		abortOnce(t, url, "UPDATE", victim)
		n, err := st.RetryDead(ctx, store.DeadSelector{Seq: seq})
		require.NoError(t, err)
		require.Equal(t, 1, n)
		require.True(t, aborted(t, url), "the first attempt was aborted")
		_, err = st.StoredJob(ctx, seq, store.StateQueued)
		require.NoError(t, err, "queued again")
	})

	t.Run("PurgeDead", func(t *testing.T) {
		t.Parallel()
		url, st, _ := deadVictim(t)
		abortOnce(t, url, "DELETE", victim)
		n, err := st.PurgeDead(ctx, store.DeadSelector{Function: "victim"})
		require.NoError(t, err)
		require.Equal(t, 1, n)
		require.True(t, aborted(t, url), "the first attempt was aborted")
		require.Zero(t, countJobs(t, url, "victim"))
	})

	t.Run("CoalescedJobFinishedMeanwhile", func(t *testing.T) {
		t.Parallel()
		url, held, b := victimHeldByA(t)
		// b's round coalesces with the job a holds, and a's job is
		// deleted as that round commits (a deferred trigger on a job of
		// function "zap" in the same round): b finds no live job of the
		// unique, and inserts its job after all, in a transaction that is
		// aborted once.
		zapOnCommit(t, url, `DELETE FROM gearwork_jobs WHERE function = 'victim'::bytea`)
		abortOnce(t, url, "INSERT", victim+` AND NOT EXISTS (SELECT FROM gearwork_jobs g WHERE g.function = r.function AND g.state <> 2)`)
		res, err := b.Insert(ctx, store.InsertParams{HandlePrefix: "H:b:",
			Jobs: []store.Job{newJob("victim", "u", "b"), newJob("zap", "", "")}, Claim: []bool{true, false}})
		require.NoError(t, err)
		require.True(t, aborted(t, url), "the insert after all was aborted once")
		require.True(t, res[0].Created)
		require.NotEqual(t, held.Seq, res[0].Seq)
		require.Equal(t, 1, countJobs(t, url, "victim"))
	})
}

// joinedStore opens a store that has joined the servers sharing url.
func joinedStore(t *testing.T, url, name string) *postgres.Store {
	t.Helper()
	st := openStore(t, url, name)
	_, err := st.Join(context.Background(), func(string) {}, nil, nil)
	require.NoError(t, err)
	return st
}

// countJobs counts the stored jobs of function fn.
func countJobs(t *testing.T, url, fn string) int {
	t.Helper()
	var n int
	pgtest.QueryRow(t, url, fmt.Sprintf(`SELECT count(*) FROM gearwork_jobs WHERE function = '%s'::bytea`, fn), &n)
	return n
}

// victimHeldByA opens servers a and b on a schema of their own, and has
// a hold a job of function "victim" with unique "u"; it returns the
// schema's URL, the job and b.
func victimHeldByA(t *testing.T) (url string, held store.Inserted, b *postgres.Store) {
	t.Helper()
	url = pgtest.Schema(t)
	a := joinedStore(t, url, "a")
	b = joinedStore(t, url, "b")
	res, err := a.Insert(context.Background(), store.InsertParams{HandlePrefix: "H:a:",
		Jobs: []store.Job{newJob("victim", "u", "a")}, Claim: []bool{true}})
	require.NoError(t, err)
	require.True(t, res[0].Claimed)
	return url, res[0], b
}

// zapOnCommit makes a commit round that inserts a job of function "zap"
// A server's row deleted while its claim is under way (the claim holds
// the row's lock and has not committed) waits for the claim, and then
// releases the jobs that claim took: no job is left held by a server
// that is gone.
func TestDeletingAServerReleasesWhatItsClaimUnderWayTook(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := pgtest.Schema(t)
	a, b := joinedStore(t, url, "a"), joinedStore(t, url, "b")
	_, err := a.Insert(ctx, store.InsertParams{Jobs: []store.Job{newJob("f", "", "1"), newJob("f", "", "2"), newJob("f", "", "3")}})
	require.NoError(t, err)

	// The claim's transaction, as it commits, waits for a lock the test
	// holds: the claim is taken but not committed until the test lets go.
	gate, err := pgx.Connect(ctx, url)
	require.NoError(t, err)
	defer gate.Close(ctx)
	_, err = gate.Exec(ctx, `SELECT pg_advisory_lock(4242)`)
	require.NoError(t, err)
	var gatePID int
	require.NoError(t, gate.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&gatePID))
	pgtest.Exec(t, url, `CREATE FUNCTION hold() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN PERFORM pg_advisory_xact_lock_shared(4242); RETURN NULL; END $$;
		CREATE CONSTRAINT TRIGGER hold AFTER UPDATE ON gearwork_jobs DEFERRABLE INITIALLY DEFERRED
			FOR EACH ROW WHEN (OLD.owner IS NULL AND NEW.owner IS NOT NULL) EXECUTE FUNCTION hold();`)
	waiting := blockedBy(t, url, gatePID)
	type claimed struct {
		jobs []store.Job
		err  error
	}
	claims := make(chan claimed, 1)
	go func() {
		jobs, err := a.Claim(ctx, []store.ClaimRequest{{Function: "f", Max: 10}})
		claims <- claimed{jobs, err}
	}()
	testwait.Until(t, "a's claim to wait as it commits", waiting(1))
	deleted := make(chan error, 1)
	go func() {
		conn, err := pgx.Connect(ctx, url)
		if err == nil {
			_, err = conn.Exec(ctx, `DELETE FROM gearwork_servers WHERE name = 'a'`)
			conn.Close(ctx)
		}
		deleted <- err
	}()
	testwait.Until(t, "the deletion of a's row to wait for the claim", waiting(2))
	_, err = gate.Exec(ctx, `SELECT pg_advisory_unlock(4242)`)
	require.NoError(t, err)
	c := <-claims
	require.NoError(t, c.err)
	require.Len(t, c.jobs, 3, "the claim took every job")
	require.NoError(t, <-deleted)

	var n int
	pgtest.QueryRow(t, url, `SELECT count(*) FROM gearwork_jobs WHERE owner IS NOT NULL`, &n)
	require.Zero(t, n, "the deletion released the jobs the claim took")
	require.Len(t, claimF(t, b), 3, "another server can claim them")
	_, err = a.Claim(ctx, []store.ClaimRequest{{Function: "f", Max: 10}})
	require.ErrorIs(t, err, postgres.ErrLeaseLost)
}

// A job held under the id of a server whose row is gone (as a server of
// a version that claimed through a foreign key could leave behind, still
// running when the key was dropped) is released by the next renewal of
// any server.
func TestRenewReleasesJobsHeldByServersThatAreGone(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := pgtest.Schema(t)
	a, b := joinedStore(t, url, "a"), joinedStore(t, url, "b")
	held, err := a.Insert(ctx, store.InsertParams{Jobs: []store.Job{newJob("f", "", "1"), newJob("f", "", "2"), newJob("f", "", "3")},
		Claim: []bool{true, false, false}})
	require.NoError(t, err)
	require.True(t, held[0].Claimed)
	// Held under ids above and below the live servers' ids.
	pgtest.Exec(t, url, fmt.Sprintf(`UPDATE gearwork_jobs SET owner = (SELECT max(id) + 1000 FROM gearwork_servers) WHERE seq = %d`, held[1].Seq))
	pgtest.Exec(t, url, fmt.Sprintf(`UPDATE gearwork_jobs SET owner = -7 WHERE seq = %d`, held[2].Seq))

	lost, err := b.Renew(ctx)
	require.NoError(t, err)
	require.False(t, lost)
	var owners []int64
	pgtest.QueryRow(t, url, fmt.Sprintf(`SELECT coalesce(array_agg(coalesce(owner, 0) ORDER BY seq), '{}') FROM gearwork_jobs WHERE seq IN (%d, %d, %d)`,
		held[0].Seq, held[1].Seq, held[2].Seq), &owners)
	require.Len(t, owners, 3)
	require.NotZero(t, owners[0], "a job held by a live server stays held")
	require.Zero(t, owners[1], "the job of a server that is gone is released")
	require.Zero(t, owners[2], "so is that of another one")
	got := claimF(t, b)
	require.Len(t, got, 2)
	require.Equal(t, []uint64{held[1].Seq, held[2].Seq}, []uint64{got[0].Seq, got[1].Seq})
}

// run del (SQL) as it commits, in its transaction: what another server
// does between the round and the store's next statement.
func zapOnCommit(t *testing.T, url, del string) {
	t.Helper()
	pgtest.Exec(t, url, `CREATE FUNCTION zap() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN `+del+`; RETURN NULL; END $$;
		CREATE CONSTRAINT TRIGGER zap AFTER INSERT ON gearwork_jobs DEFERRABLE INITIALLY DEFERRED
			FOR EACH ROW WHEN (NEW.function = 'zap'::bytea) EXECUTE FUNCTION zap();`)
}

// A round is written once, also when this server's lease is lost (its
// server row deleted) after the round and before the insert of a job
// whose coalesced job finished meanwhile: that insert, which finds the
// server's row gone, stores the job unclaimed, and the round is not sent
// a second time (which inserted its other jobs twice).
func TestCommitLostLeaseAfterTheRoundWritesTheRoundOnce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url, _, b := victimHeldByA(t)
	r, err := b.Commit(ctx, store.CommitParams{Reserve: 1})
	require.NoError(t, err)
	// As b's round commits, a's job finishes and b's lease is lost.
	zapOnCommit(t, url, `DELETE FROM gearwork_jobs WHERE function = 'victim'::bytea;
		DELETE FROM gearwork_servers WHERE name = 'b'`)
	mine := newJob("victim", "u", "b")
	mine.Seq = r.Reserved[0]
	res, err := b.Insert(ctx, store.InsertParams{HandlePrefix: "H:b:",
		Jobs: []store.Job{mine, newJob("zap", "", "")}, Claim: []bool{true, false}})
	require.NoError(t, err)
	require.Equal(t, store.Inserted{Seq: mine.Seq, Created: true}, res[0], "inserted after all, unclaimed")
	require.True(t, res[1].Created)
	require.Equal(t, 1, countJobs(t, url, "zap"), "the round's other job is stored once")
	require.Equal(t, 1, countJobs(t, url, "victim"))
}

// TestConnectionsDoNotCompileStatements checks that the store's
// connections run with PostgreSQL's JIT compilation off (compiling a
// round's statements over a deep queue cost far more than running them),
// unless the URL sets jit itself.
func TestConnectionsDoNotCompileStatements(t *testing.T) {
	t.Parallel()
	u := pgtest.Schema(t)
	for _, c := range []struct{ url, want string }{{u, "off"}, {u + "&jit=on", "on"}} {
		s := openStore(t, c.url, "s")
		rounds, claims, err := s.SettingForTest(context.Background(), "jit")
		require.NoError(t, err)
		require.Equal(t, []string{c.want, c.want}, []string{rounds, claims}, c.url)
	}
}

// TestClaimsUseGenericPlans checks that the connections that claim jobs
// make one generic plan per statement (PostgreSQL planned a claim anew on
// every call: its arrays made a custom plan look cheaper) and that the
// commit rounds' keep PostgreSQL's choice, unless the URL sets
// plan_cache_mode itself.
func TestClaimsUseGenericPlans(t *testing.T) {
	t.Parallel()
	u := pgtest.Schema(t)
	for _, c := range []struct{ url, rounds, claims string }{
		{u, "auto", "force_generic_plan"},
		{u + "&plan_cache_mode=force_custom_plan", "force_custom_plan", "force_custom_plan"},
	} {
		s := openStore(t, c.url, "s")
		rounds, claims, err := s.SettingForTest(context.Background(), "plan_cache_mode")
		require.NoError(t, err)
		require.Equal(t, []string{c.rounds, c.claims}, []string{rounds, claims}, c.url)
	}
}

// A round whose record of an ended job is stored already (a round written
// again after its commit went unacknowledged, or a job that two servers
// ended) is written whole once, its record replacing the stored one: the
// rest of the round is neither lost nor written twice.
func TestCommitReplacesARecordStoredAlready(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := pgtest.Schema(t)
	s := openStore(t, url, "a")
	ins, err := s.Insert(ctx, store.InsertParams{HandlePrefix: "H:a:", Jobs: []store.Job{newJob("f", "", "1")}})
	require.NoError(t, err)
	seq := ins[0].Seq
	end := func(state, data string, jobs ...store.Job) store.CommitParams {
		return store.CommitParams{Insert: store.InsertParams{HandlePrefix: "H:a:", Jobs: jobs},
			Delete:  []uint64{seq},
			Records: []store.Record{{Seq: seq, Function: "f", State: state, Finished: 1, Data: []byte(data)}}}
	}
	_, err = s.Commit(ctx, end("failed", `{"first":true}`))
	require.NoError(t, err)

	res, err := s.Commit(ctx, end("complete", `{"second":true}`, newJob("g", "", "2")))
	require.NoError(t, err, "the round is written although the job's record is stored")
	require.True(t, res.Inserted[0].Created)
	require.Equal(t, 1, countJobs(t, url, "g"), "the round's new job is stored once")
	r, err := s.Record(ctx, seq)
	require.NoError(t, err)
	require.Equal(t, "complete", r.State)
	require.JSONEq(t, `{"second":true}`, string(r.Data), "the record written last replaces the stored one")
}

// ExpireRecords keeps a function's newest records up to its count, newest
// by when they ended and then by sequence number, and trims each function
// on its own.
func TestExpireRecordsKeepsTheNewestOfEachFunction(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := openStore(t, pgtest.Schema(t), "a")
	var recs []store.Record
	for i, fin := range []int64{5, 5, 5, 6, 6, 7, 8, 8, 9, 10} {
		recs = append(recs, store.Record{Seq: uint64(i + 1), Function: "f", State: "complete", Finished: fin, Data: []byte("{}")})
	}
	for i := range 3 {
		recs = append(recs, store.Record{Seq: uint64(100 + i), Function: "g", State: "complete", Finished: 1, Data: []byte("{}")})
	}
	require.NoError(t, s.EndJobs(ctx, nil, recs, nil))

	n, err := s.ExpireRecords(ctx, 11, func(string) (time.Duration, int) { return time.Hour, 4 })
	require.NoError(t, err)
	require.Equal(t, 6, n)
	var kept []uint64
	for _, fn := range []string{"f", "g"} {
		got, err := s.Records(ctx, store.RecordQuery{Function: fn, Limit: 100})
		require.NoError(t, err)
		for _, r := range got {
			kept = append(kept, r.Seq)
		}
	}
	require.Equal(t, []uint64{10, 9, 8, 7, 102, 101, 100}, kept)
}

// TestExpireRecordsTrimsOnlyAfterNewRecordsOrANewLimit checks that the
// sweep trims a function's records by count again only once it has a new
// newest record or a new limit: the trim walks the records it keeps.
func TestExpireRecordsTrimsOnlyAfterNewRecordsOrANewLimit(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := openStore(t, pgtest.Schema(t), "a")
	record := func(seq uint64, fin int64) store.Record {
		return store.Record{Seq: seq, Function: "f", State: "complete", Finished: fin, Data: []byte("{}")}
	}
	var recs []store.Record
	for i := range 10 {
		recs = append(recs, record(uint64(i+1), int64(i+1)))
	}
	require.NoError(t, s.EndJobs(ctx, nil, recs, nil))
	limit := 4
	expire := func() int {
		n, err := s.ExpireRecords(ctx, 100, func(string) (time.Duration, int) { return time.Hour, limit })
		require.NoError(t, err)
		return n
	}
	kept := func() []uint64 {
		got, err := s.Records(ctx, store.RecordQuery{Function: "f", Limit: 100})
		require.NoError(t, err)
		var seqs []uint64
		for _, r := range got {
			seqs = append(seqs, r.Seq)
		}
		return seqs
	}

	require.Equal(t, 6, expire())
	require.Equal(t, []uint64{10, 9, 8, 7}, kept())
	require.EqualValues(t, 1, s.TrimsForTest())

	require.Equal(t, 0, expire(), "nothing new")
	require.EqualValues(t, 1, s.TrimsForTest(), "no new record, same limit: no trim")

	limit = 2
	require.Equal(t, 2, expire(), "a lower limit trims at once")
	require.Equal(t, []uint64{10, 9}, kept())
	require.EqualValues(t, 2, s.TrimsForTest())

	require.NoError(t, s.EndJobs(ctx, nil, []store.Record{record(11, 11)}, nil))
	require.Equal(t, 1, expire(), "a new record trims the oldest kept")
	require.Equal(t, []uint64{11, 10}, kept())
	require.EqualValues(t, 3, s.TrimsForTest())
}

// TestRoundOfPlainAndOtherJobsKeepsEachJobAndTheOrder commits one round
// mixing jobs that set only their function, payload, priority and run-at
// time (written by a lean statement) with jobs that set more, one of
// them numbered by the server: each is stored as given, claimed where
// asked, and the store numbers the others in the round's order.
func TestRoundOfPlainAndOtherJobsKeepsEachJobAndTheOrder(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	later := time.Now().Add(time.Hour).Unix()
	a := joinedStore(t, pgtest.Schema(t), "a")
	reserved, err := a.Commit(ctx, store.CommitParams{Reserve: 1})
	require.NoError(t, err)
	jobs := []store.Job{
		{Function: "f", Payload: []byte("plain"), Priority: 0},
		{Function: "f", Payload: []byte("plain, claimed"), Priority: 2},
		{Function: "f", Unique: "u", Payload: []byte("unique"), Priority: 1},
		{Function: "g", Payload: []byte("plain, later"), Priority: 1, RunAt: later},
		{Function: "f", Payload: []byte("policy"), Priority: 1, MaxAttempts: 3, Timeout: int64(time.Second)},
		{Function: "f", Seq: reserved.Reserved[0], Payload: []byte("own number"), Priority: 1},
		{Function: "f", Reducer: "r", Payload: []byte("reducer"), Priority: 1, Retries: 2},
		{Function: "f", Payload: nil, Priority: 1, Schedule: "s", Tick: 7},
		{Function: "f", Payload: []byte("plain, last"), Priority: 1},
	}
	claim := []bool{false, true, false, false, true, true, false, false, false}
	res, err := a.Insert(ctx, store.InsertParams{HandlePrefix: "H:a:", Jobs: jobs, Claim: claim})
	require.NoError(t, err)
	require.Len(t, res, len(jobs))
	var last uint64
	for i, r := range res {
		require.True(t, r.Created, "job %d", i)
		require.Equal(t, claim[i], r.Claimed, "job %d", i)
		if jobs[i].Seq != 0 {
			require.Equal(t, jobs[i].Seq, r.Seq, "a job the server numbered keeps its number")
			continue
		}
		require.Greater(t, r.Seq, last, "job %d: the store numbers the round's jobs in order", i)
		last = r.Seq
	}

	stored := map[uint64]store.Job{}
	require.NoError(t, a.Load(ctx, func(j store.Job) error { stored[j.Seq] = j; return nil }))
	require.Len(t, stored, len(jobs))
	for i, want := range jobs {
		got := stored[res[i].Seq]
		want.Seq = res[i].Seq
		want.Handle = fmt.Sprintf("H:a:%d", res[i].Seq)
		if want.Payload == nil {
			want.Payload = []byte{}
		}
		got.Submitted = 0
		require.Equal(t, want, got, "job %d", i)
	}
}

// TestRoundsOfPlainJobsTakeReservedNumbersInOrder commits rounds of plain
// new jobs, which after the first take numbers the rounds before them
// reserved, with a round that numbers its jobs in the statement between
// them: every job is stored with its own payload under the number it was
// answered, numbers follow the rounds' order, and a round that takes
// reserved numbers takes none from the sequence.
func TestRoundsOfPlainJobsTakeReservedNumbersInOrder(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	url := pgtest.Schema(t)
	a := joinedStore(t, url, "a")
	lastValue := func() int64 {
		var v int64
		pgtest.QueryRow(t, url, `SELECT last_value FROM gearwork_job_seq`, &v)
		return v
	}
	var submitted []store.Job
	var answered []store.Inserted
	round := func(jobs []store.Job, claim []bool) []store.Inserted {
		res, err := a.Insert(ctx, store.InsertParams{HandlePrefix: "H:a:", Jobs: jobs, Claim: claim})
		require.NoError(t, err)
		require.Len(t, res, len(jobs))
		submitted, answered = append(submitted, jobs...), append(answered, res...)
		return res
	}
	plain := func(n int, tag string) []store.Job {
		jobs := make([]store.Job, n)
		for i := range jobs {
			jobs[i] = store.Job{Function: "f", Payload: fmt.Appendf(nil, "%s %d", tag, i), Priority: 1}
		}
		return jobs
	}

	round(plain(100, "first"), nil)
	before := lastValue()
	claim := make([]bool, 100)
	claim[7] = true
	second := round(plain(100, "second"), claim)
	require.Equal(t, before, lastValue(), "the second round takes the numbers the first reserved")
	require.True(t, second[7].Claimed)
	require.False(t, second[8].Claimed)
	round([]store.Job{newJob("f", "", "mixed 0"), newJob("f", "u", "mixed 1"), newJob("f", "", "mixed 2")}, nil)
	round(plain(100, "fourth"), nil)
	round(plain(100, "fifth"), nil)

	stored := map[uint64]store.Job{}
	require.NoError(t, a.Load(ctx, func(j store.Job) error { stored[j.Seq] = j; return nil }))
	require.Len(t, stored, len(submitted))
	for i, r := range answered {
		require.True(t, r.Created, "job %d", i)
		if i > 0 {
			require.Greater(t, r.Seq, answered[i-1].Seq, "job %d: numbers follow the rounds' order", i)
		}
		got := stored[r.Seq]
		require.Equal(t, string(submitted[i].Payload), string(got.Payload), "job %d is stored under its number", i)
		require.Equal(t, fmt.Sprintf("H:a:%d", r.Seq), got.Handle)
	}
	var owner *int64
	pgtest.QueryRow(t, url, fmt.Sprintf(`SELECT owner FROM gearwork_jobs WHERE seq = %d`, second[7].Seq), &owner)
	require.NotNil(t, owner, "the job asked to be claimed is held")
}

// lockedBuffer collects log output written from several goroutines.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) count(s string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Count(b.buf.String(), s)
}

// A renewal answered half a lease or more after the previous one, which
// begins the server's stretch of contact with the database again, is
// logged, so that renewals running late are seen before they cost the
// lease; at most once a minute.
func TestLateRenewalIsLoggedAtMostOnceAMinute(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := pgtest.Schema(t)
	const ttl = 400 * time.Millisecond
	var logs lockedBuffer
	s, err := postgres.Open(ctx, postgres.Config{URL: url, Name: "a", LeaseTTL: ttl,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close() })
	_, err = s.Join(ctx, func(string) {}, nil, nil)
	require.NoError(t, err)
	const late = "half a lease or more after the previous one"
	for range 2 {
		time.Sleep(ttl/2 + 50*time.Millisecond)
		_, err = s.Renew(ctx)
		require.NoError(t, err)
		require.Equal(t, 1, logs.count(late), "the first late renewal is logged, the next within a minute is not")
	}
}

// The jobs "drop function" cancels (UnheldJobs) are those CancelQueued
// takes as nobody's: unclaimed, or held under a lease that expired by
// the database's time at this server's last renewal (not one that expired
// since, nor one a live server holds); and the function's name is matched
// exactly, as "drop function" matches it in memory.
func TestUnheldJobsAreThoseNoLiveServerHolds(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := pgtest.Schema(t)
	const ttl = 4 * time.Second
	x, b := steadyBeside(t, url, ttl)
	held := insertHeld(t, x, "Fn", "1")
	free, err := x.Insert(ctx, store.InsertParams{Jobs: []store.Job{newJob("Fn", "", "2")}})
	require.NoError(t, err)
	_, err = x.Insert(ctx, store.InsertParams{Jobs: []store.Job{newJob("fN", "", "3")}})
	require.NoError(t, err)
	insertHeld(t, b, "Fn", "4")

	unheld := func() []uint64 {
		seqs, err := b.UnheldJobs(ctx, "Fn", 0, 10)
		require.NoError(t, err)
		return seqs
	}
	require.Equal(t, []uint64{free[0].Seq}, unheld(), "x's lease is live: only the unclaimed row")

	lost, err := b.Renew(ctx)
	require.NoError(t, err)
	require.False(t, lost)
	// x's lease expires a microsecond after the database renewed b's.
	pgtest.Exec(t, url, fmt.Sprintf(`UPDATE gearwork_servers
		SET lease_until = (SELECT lease_until FROM gearwork_servers WHERE name = 'b') - interval '%d milliseconds' + interval '1 microsecond'
		WHERE name = 'x'`, ttl.Milliseconds()))
	require.Equal(t, []uint64{free[0].Seq}, unheld(), "a lease that expired after the last renewal is not its server's death")

	// Expired a microsecond before the database renewed b's lease, and
	// not yet released by a renewal: the row is nobody's already.
	pgtest.Exec(t, url, fmt.Sprintf(`UPDATE gearwork_servers
		SET lease_until = (SELECT lease_until FROM gearwork_servers WHERE name = 'b') - interval '%d milliseconds' - interval '1 microsecond'
		WHERE name = 'x'`, ttl.Milliseconds()))
	var owner *int64
	pgtest.QueryRow(t, url, fmt.Sprintf(`SELECT owner FROM gearwork_jobs WHERE seq = %d`, held.Seq), &owner)
	require.NotNil(t, owner, "the row is still x's")
	seqs := unheld()
	require.ElementsMatch(t, []uint64{held.Seq, free[0].Seq}, seqs)
	for _, seq := range seqs {
		ok, err := b.CancelQueued(ctx, seq, "function dropped")
		require.NoError(t, err)
		require.True(t, ok)
	}
	require.Equal(t, 1, countJobs(t, url, "Fn"), "the row b holds stays")
	require.Equal(t, 1, countJobs(t, url, "fN"), "a function whose name differs only in case is another")
}
