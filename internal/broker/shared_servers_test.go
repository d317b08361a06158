package broker_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/internal/broker"
	"github.com/gearwork/gearwork/internal/clocktest"
	"github.com/gearwork/gearwork/internal/store"
	"github.com/gearwork/gearwork/internal/store/postgres"
	"github.com/gearwork/gearwork/internal/store/postgres/pgtest"
	"github.com/gearwork/gearwork/internal/store/storetest"
	"github.com/gearwork/gearwork/internal/testwait"
)

// These tests run brokers in shared mode on one PostgreSQL schema: several
// Gearwork servers in one process.

// outbox records a session's events.
type outbox struct {
	mu     sync.Mutex
	events []broker.Event
	signal chan struct{}
}

func newOutbox() *outbox { return &outbox{signal: make(chan struct{}, 1)} }

func (o *outbox) Send(ev broker.Event) {
	o.mu.Lock()
	o.events = append(o.events, ev)
	o.mu.Unlock()
	select {
	case o.signal <- struct{}{}:
	default:
	}
}

func (o *outbox) count(kind broker.EventKind) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	n := 0
	for _, e := range o.events {
		if e.Kind == kind {
			n++
		}
	}
	return n
}

type submitResult struct {
	seq     uint64
	created bool
	err     error
}

func submit(t *testing.T, b *broker.Broker, s *broker.Session, p broker.SubmitParams) submitResult {
	t.Helper()
	return answer(t, submitAsync(b, s, p))
}

func bgJob(fn, unique, payload string) broker.SubmitParams {
	return broker.SubmitParams{Function: []byte(fn), Unique: []byte(unique), Payload: []byte(payload),
		Priority: broker.Normal, Background: true}
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// openShared opens a store on url, with lease ttl (0: the default), and a
// broker on it, stopped (and the store closed) when the test ends.
func openShared(t *testing.T, url, name string, ttl time.Duration) (*broker.Broker, *postgres.Store) {
	t.Helper()
	return openSharedConfig(t, url, name, ttl, broker.Config{})
}

// openSharedConfig is openShared with cfg, whose Shared, HandlePrefix
// ("H:name:") and Logger it sets. Stopping twice is harmless.
func openSharedConfig(t testing.TB, url, name string, ttl time.Duration, cfg broker.Config) (*broker.Broker, *postgres.Store) {
	t.Helper()
	st, err := postgres.Open(context.Background(), postgres.Config{URL: url, Name: name, LeaseTTL: ttl, Logger: quiet})
	require.NoError(t, err)
	cfg.Shared, cfg.HandlePrefix, cfg.Logger = st, "H:"+name+":", quiet
	b := broker.New(cfg)
	require.NoError(t, b.Start(context.Background()))
	t.Cleanup(func() {
		b.Stop()
		_ = st.Close()
	})
	return b, st
}

// newWorker registers a worker for fns on b.
func newWorker(t testing.TB, b *broker.Broker, name string, fns ...string) (*broker.Session, *outbox) {
	t.Helper()
	out := newOutbox()
	w := b.NewSession(name, out)
	for _, fn := range fns {
		require.NoError(t, b.CanDo(w, []byte(fn), 0), "%s: CAN_DO %s", name, fn)
	}
	return w, out
}

// drain grabs and completes jobs on w until n were done, returning their
// payloads.
func drain(t *testing.T, b *broker.Broker, w *broker.Session, out *outbox, n int) []string {
	t.Helper()
	var got []string
	for len(got) < n {
		a := grab(t, b, w, out)
		got = append(got, string(a.Payload))
		require.NoError(t, b.Finish(w, a.Seq, broker.Complete, nil))
	}
	return got
}

// grab waits until w gets a job.
func grab(t *testing.T, b *broker.Broker, w *broker.Session, out *outbox) broker.Assignment {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		if a, ok := b.Grab(w); ok {
			return a
		}
		b.PreSleep(w)
		select {
		case <-out.signal:
		case <-time.After(time.Until(deadline)):
			t.Fatal("the worker got no job")
		}
	}
}

func countRows(t *testing.T, url string) int {
	t.Helper()
	var n int
	pgtest.QueryRow(t, url, `SELECT count(*) FROM gearwork_jobs`, &n)
	return n
}

// openPair opens servers a and b, with the default lease, on a schema of
// their own, and returns its URL.
func openPair(t *testing.T) (url string, a, b *broker.Broker) {
	t.Helper()
	url = pgtest.Schema(t)
	a, _ = openShared(t, url, "a", 0)
	b, _ = openShared(t, url, "b", 0)
	return url, a, b
}

// progressNum reads the progress numerator stored in the row of job seq.
func progressNum(t *testing.T, url string, seq uint64) int {
	t.Helper()
	var num int
	pgtest.QueryRow(t, url, fmt.Sprintf(`SELECT progress_num FROM gearwork_jobs WHERE seq = %d`, seq), &num)
	return num
}

// jobRunOnA opens server a, with a short lease, and server b on url,
// submits a background job of f on b and has a worker wa on a take it:
// a runs the job and holds its row.
func jobRunOnA(t *testing.T, url string) (a, b *broker.Broker, wa *broker.Session, onA broker.Assignment) {
	t.Helper()
	a, _ = openShared(t, url, "a", 400*time.Millisecond)
	b, _ = openShared(t, url, "b", 0)
	r := submit(t, b, b.NewSession("cb", newOutbox()), bgJob("f", "", "x"))
	require.NoError(t, r.err)
	wa, outA := newWorker(t, a, "wa", "f")
	onA = grab(t, a, wa, outA)
	require.Equal(t, r.seq, onA.Seq)
	return a, b, wa, onA
}

func TestSharedJobsGoToTheServerWithWorkers(t *testing.T) {
	t.Parallel()
	url, a, b := openPair(t)

	client := a.NewSession("client", newOutbox())
	const n = 50
	seqs := map[uint64]bool{}
	for i := range n {
		r := submit(t, a, client, bgJob("resize", "", fmt.Sprint("job-", i)))
		require.NoError(t, r.err)
		require.True(t, r.created)
		require.False(t, seqs[r.seq], "sequence numbers are unique")
		seqs[r.seq] = true
	}
	require.Equal(t, 0, a.JobCount(), "a server without workers holds no background job")
	require.Equal(t, n, countRows(t, url))

	for seq := range seqs {
		st := b.GetStatus([]byte(fmt.Sprintf("H:a:%d", seq)))
		require.True(t, st.Known, "any server knows any stored job")
		break
	}

	w, out := newWorker(t, b, "worker", "resize")
	got := drain(t, b, w, out, n)
	require.Len(t, got, n)
	testwait.Until(t, "finished jobs are deleted", func() bool { return countRows(t, url) == 0 })
	st := a.GetStatus([]byte("H:b:1"))
	require.False(t, st.Known)
}

func TestSharedUniqueCoalescesAcrossServers(t *testing.T) {
	t.Parallel()
	url, a, b := openPair(t)
	ca, cb := a.NewSession("ca", newOutbox()), b.NewSession("cb", newOutbox())

	first := submit(t, a, ca, bgJob("mail", "order-7", "x"))
	require.NoError(t, first.err)
	require.True(t, first.created)
	second := submit(t, b, cb, bgJob("mail", "order-7", "y"))
	require.NoError(t, second.err)
	require.False(t, second.created, "the same unique on another server coalesces")
	require.Equal(t, first.seq, second.seq)
	other := submit(t, b, cb, bgJob("other", "order-7", "z"))
	require.NoError(t, other.err)
	require.True(t, other.created, "uniques coalesce per function")

	st := b.GetStatusUnique([]byte("order-7"))
	require.True(t, st.Known)
	require.Equal(t, 2, countRows(t, url))

	// Once done, the unique is free again.
	w, out := newWorker(t, a, "w", "mail")
	require.Equal(t, []string{"x"}, drain(t, a, w, out, 1))
	testwait.Until(t, "the job is deleted", func() bool { return countRows(t, url) == 1 })
	again := submit(t, b, cb, bgJob("mail", "order-7", "later"))
	require.NoError(t, again.err)
	require.True(t, again.created)
	require.NotEqual(t, first.seq, again.seq)
}

func TestSharedLeaseExpiryHandsJobsToAnotherServer(t *testing.T) {
	t.Parallel()
	url := pgtest.Schema(t)
	const ttl = 600 * time.Millisecond // a's lease: a dies, and its jobs must come back soon
	// Server a claims jobs for its worker, then dies without a word: its
	// store is closed, so it neither renews its lease nor releases.
	a, stA := openShared(t, url, "a", ttl)
	wa := a.NewSession("wa", newOutbox())
	a.CanDo(wa, []byte("f"), 0)
	const n = 10
	for i := range n {
		require.NoError(t, submit(t, a, wa, bgJob("f", "", fmt.Sprint(i))).err)
	}
	testwait.Until(t, "a holds the jobs", func() bool { return a.JobCount() == n })
	as, ok := a.Grab(wa)
	require.True(t, ok)
	require.NoError(t, stA.Close())
	a.Stop()
	require.Equal(t, n, countRows(t, url), "nothing was lost or finished")

	b, _ := openShared(t, url, "b", 0) // b stays up: the default lease, which no stall loses
	w, out := newWorker(t, b, "wb", "f")
	got := drain(t, b, w, out, n)
	require.Contains(t, got, string(as.Payload), "the job running at the crash runs again")
	require.Len(t, got, n)
	testwait.Until(t, "all rows deleted", func() bool { return countRows(t, url) == 0 })
}

func TestSharedRetryContinuesOnAnotherServer(t *testing.T) {
	t.Parallel()
	url := pgtest.Schema(t)
	const ttl = 600 * time.Millisecond
	policy := map[string]broker.Policy{"flaky": {MaxAttempts: 3,
		Backoff: broker.Backoff{Initial: 300 * time.Millisecond, Jitter: -1}}}
	a, stA := openSharedConfig(t, url, "a", ttl, broker.Config{Policies: policy})
	wa := a.NewSession("wa", newOutbox())
	a.CanDo(wa, []byte("flaky"), 0)
	r := submit(t, a, wa, bgJob("flaky", "", "payload"))
	require.NoError(t, r.err)
	var as broker.Assignment
	testwait.Until(t, "a's worker gets the job", func() bool {
		var ok bool
		as, ok = a.Grab(wa)
		return ok
	})
	require.NoError(t, a.Finish(wa, as.Seq, broker.Fail, nil))
	testwait.Until(t, "the failed attempt is stored", func() bool {
		var attempts int
		pgtest.QueryRow(t, url, fmt.Sprintf(`SELECT coalesce(max(attempts), 0) FROM gearwork_jobs WHERE seq = %d AND state = 1`, as.Seq), &attempts)
		return attempts == 1
	})
	// a dies while the job waits for its retry.
	require.NoError(t, stA.Close())
	a.Stop()

	b, _ := openShared(t, url, "b", 0) // b stays up: the default lease, which no stall loses
	w, out := newWorker(t, b, "wb", "flaky")
	again := grab(t, b, w, out) // b runs the retry
	require.Equal(t, as.Seq, again.Seq, "the same job, by its handle")
	var attempts int
	pgtest.QueryRow(t, url, fmt.Sprintf(`SELECT attempts FROM gearwork_jobs WHERE seq = %d`, as.Seq), &attempts)
	require.Equal(t, 1, attempts, "the attempt made on a counts on b")
	require.NoError(t, b.Finish(w, again.Seq, broker.Complete, nil))
	testwait.Until(t, "the job is deleted", func() bool { return countRows(t, url) == 0 })
}

func TestSharedCronTickSubmitsOneJobAcrossServers(t *testing.T) {
	t.Parallel()
	url := pgtest.Schema(t)
	every, err := broker.ParseCron("@every 1s", nil)
	require.NoError(t, err)
	var brokers []*broker.Broker
	for _, name := range []string{"a", "b", "c"} {
		b, _ := openSharedConfig(t, url, name, 0, broker.Config{
			Schedules: []broker.Schedule{{Name: "heartbeat", Function: "beat", Cron: every, Payload: []byte("x")}},
			Policies:  map[string]broker.Policy{"beat": {ResultRetention: time.Minute}}})
		brokers = append(brokers, b)
	}
	out := newOutbox()
	w := brokers[0].NewSession("w", out)
	brokers[0].CanDo(w, []byte("beat"), 0)
	got := drain(t, brokers[0], w, out, 3)
	require.Len(t, got, 3)
	var ticks, distinct int
	pgtest.QueryRow(t, url, `SELECT count(*), count(DISTINCT tick) FROM gearwork_jobs WHERE schedule = 'heartbeat'`, &ticks, &distinct)
	require.Equal(t, distinct, ticks, "three servers fire each tick, one job runs per tick")
	require.GreaterOrEqual(t, ticks, 3)
}

func TestSharedProgressIsVisibleFromAnotherServer(t *testing.T) {
	t.Parallel()
	_, a, b := openPair(t)

	r := submit(t, b, b.NewSession("client", newOutbox()), bgJob("encode", "", "film"))
	require.NoError(t, r.err)
	handle := fmt.Appendf(nil, "H:b:%d", r.seq)
	w, out := newWorker(t, a, "w", "encode")
	got := grab(t, a, w, out)
	require.Equal(t, r.seq, got.Seq)

	require.NoError(t, a.WorkStatus(w, got.Seq, 3, 10))
	testwait.Until(t, "b sees the progress a's worker reported", func() bool {
		st := b.GetStatus(handle)
		return st.Known && st.Running && st.Numerator == 3 && st.Denominator == 10
	})
	require.NoError(t, a.WorkStatus(w, got.Seq, 7, 10))
	testwait.Until(t, "and its updates", func() bool { return b.GetStatus(handle).Numerator == 7 })

	// The worker goes away: the job is queued again, its progress gone.
	a.CloseSession(w)
	testwait.Until(t, "the progress is reset when the job is taken back", func() bool {
		st := b.GetStatus(handle)
		return st.Known && st.Numerator == 0 && st.Denominator == 0
	})
	w2 := a.NewSession("w2", out)
	a.CanDo(w2, []byte("encode"), 0)
	again := grab(t, a, w2, out)
	require.NoError(t, a.Finish(w2, again.Seq, broker.Complete, nil))
	testwait.Until(t, "the job is deleted", func() bool { return !b.GetStatus(handle).Known })
}

func TestSharedLeaseLossNeverLeavesAJobWithTwoServers(t *testing.T) {
	t.Parallel()
	url := pgtest.Schema(t)
	a, _ := openShared(t, url, "a", 400*time.Millisecond)
	a.CanDo(a.NewSession("wa", newOutbox()), []byte("f"), 0)
	client := a.NewSession("client", newOutbox())
	const n = 20
	for i := range n {
		require.NoError(t, submit(t, a, client, bgJob("f", "", fmt.Sprint(i))).err)
	}
	testwait.Until(t, "a holds every job", func() bool { return a.JobCount() == n })
	b, _ := openShared(t, url, "b", 0)
	b.CanDo(b.NewSession("wb", newOutbox()), []byte("f"), 0)

	// a's registration goes (as when its lease expired): a learns it at
	// its next renewal, drops its jobs and registers again, while b and a
	// itself claim them.
	// Until a renews, it cannot know, and both may hold the jobs (as when
	// a stalls for longer than its lease): at least once. Once a has
	// registered again, no job may be held by both.
	pgtest.Exec(t, url, `DELETE FROM gearwork_servers WHERE name = 'a'`)
	testwait.Until(t, "a registers again", func() bool {
		var n int
		pgtest.QueryRow(t, url, `SELECT count(*) FROM gearwork_servers WHERE name = 'a'`, &n)
		return n == 1
	})
	// The renewal that found it out drops a's jobs right after it
	// registered a again: wait for that, not for a fixed time, then the
	// invariant must hold from then on.
	testwait.Until(t, "a has dropped the jobs it lost", func() bool { return a.JobCount()+b.JobCount() <= n })
	for range 30 {
		require.LessOrEqual(t, a.JobCount()+b.JobCount(), n, "a job held by both servers")
		time.Sleep(50 * time.Millisecond)
	}
	var owned int
	pgtest.QueryRow(t, url, `SELECT count(*) FROM gearwork_jobs WHERE owner IS NOT NULL`, &owned)
	require.Equal(t, a.JobCount()+b.JobCount(), owned, "every row is held by the server that has it")
}

func TestSharedStaleRunDoesNotWriteProgressIntoAnotherServersRow(t *testing.T) {
	t.Parallel()
	url := pgtest.Schema(t)
	a, b, wa, onA := jobRunOnA(t, url)

	// a loses its lease; b runs the job again. a's worker stops asking
	// for f first, so that a, registering again, does not claim the
	// released row back for the run it still has before b claims it
	// (TestSharedServerThatLostItsLeaseClaimsBackTheRowOfAJobItStillRuns).
	a.ResetAbilities(wa)
	pgtest.Exec(t, url, `DELETE FROM gearwork_servers WHERE name = 'a'`)
	wb, outB := newWorker(t, b, "wb", "f")
	onB := grab(t, b, wb, outB)
	require.Equal(t, onA.Seq, onB.Seq)
	require.NoError(t, b.WorkStatus(wb, onB.Seq, 1, 10))
	testwait.Until(t, "b's progress is stored", func() bool { return progressNum(t, url, onA.Seq) == 1 })
	require.NoError(t, a.WorkStatus(wa, onA.Seq, 9, 10)) // a's stale run
	// A barrier instead of a pause: a's commit rounds write in order, so
	// once a background job submitted on a afterwards is stored, a's
	// round that carried the stale progress is over.
	require.NoError(t, submit(t, a, a.NewSession("ca", newOutbox()), bgJob("barrier", "", "")).err)
	require.Equal(t, 1, progressNum(t, url, onA.Seq), "the row shows the progress of the server holding it")
}

// A server whose registration went while its worker still runs a job
// registers again and, its worker still serving the function, claims the
// job's row back: the row is its own again, so no other server runs the
// job a second time, and the run it has ends the job.
func TestSharedServerThatLostItsLeaseClaimsBackTheRowOfAJobItStillRuns(t *testing.T) {
	t.Parallel()
	url := pgtest.Schema(t)
	a, _, wa, onA := jobRunOnA(t, url)

	var first int64
	pgtest.QueryRow(t, url, `SELECT id FROM gearwork_servers WHERE name = 'a'`, &first)
	pgtest.Exec(t, url, `DELETE FROM gearwork_servers WHERE name = 'a'`)
	testwait.Until(t, "a holds the row under its new registration", func() bool {
		var owner, id int64
		pgtest.QueryRow(t, url, fmt.Sprintf(`SELECT coalesce(owner, 0) FROM gearwork_jobs WHERE seq = %d`, onA.Seq), &owner)
		pgtest.QueryRow(t, url, `SELECT coalesce(max(id), 0) FROM gearwork_servers WHERE name = 'a'`, &id)
		return owner != 0 && owner != first && owner == id
	})
	require.Equal(t, 1, a.JobCount(), "the claim added no second copy of the job")
	require.NoError(t, a.WorkStatus(wa, onA.Seq, 5, 10))
	testwait.Until(t, "the run a has reports into the row", func() bool { return progressNum(t, url, onA.Seq) == 5 })
	require.NoError(t, a.Finish(wa, onA.Seq, broker.Complete, nil))
	testwait.Until(t, "the job is deleted", func() bool { return countRows(t, url) == 0 })
}

// recordOnOneServer opens servers b1 and b2 on a schema of their own
// (url), and has a worker of b1 run a job of function "recfn" with unique
// and complete it with result; it returns once the job's record is in the
// shared store.
func recordOnOneServer(t *testing.T, unique string, result []byte) (url string, b1, b2 *broker.Broker, seq uint64) {
	t.Helper()
	url = pgtest.Schema(t)
	b1, _ = openShared(t, url, "rec1", 0)
	b2, st2 := openShared(t, url, "rec2", 0)
	r := submit(t, b1, b1.NewSession("c", newOutbox()), bgJob("recfn", unique, "payload"))
	require.NoError(t, r.err)
	w, out := newWorker(t, b1, "w", "recfn")
	a := grab(t, b1, w, out)
	require.Equal(t, r.seq, a.Seq)
	require.NoError(t, b1.Finish(w, a.Seq, broker.Complete, result))
	testwait.Until(t, "the record in the shared store", func() bool {
		_, err := st2.Record(context.Background(), r.seq)
		return err == nil
	})
	return url, b1, b2, r.seq
}

// A job that one server ran and completed leaves its record in the shared
// store, written with the deletion of its row: another server answers it
// (by handle and in its listing), also after the first one stopped.
func TestSharedRecordsAreSeenByEveryServer(t *testing.T) {
	t.Parallel()
	url, b1, b2, seq := recordOnOneServer(t, "u1", []byte("the result"))
	require.Zero(t, countRows(t, url), "the job's row is gone with the record written")
	b1.Stop()

	rec, ok := b2.Job(context.Background(), seq)
	require.True(t, ok, "the other server sees the record")
	require.True(t, rec.Final)
	require.Equal(t, broker.FinalComplete, rec.State)
	require.Equal(t, []byte("the result"), rec.Result)
	require.Equal(t, "u1", rec.Unique)
	require.False(t, rec.Submitted.IsZero(), "the record says when the job was submitted")
	require.False(t, rec.Submitted.After(rec.Finished), "submitted %v, finished %v", rec.Submitted, rec.Finished)
	page, err := b2.ListJobs(context.Background(), broker.JobQuery{Function: "recfn"})
	require.NoError(t, err)
	require.Len(t, page.Jobs, 1)
	require.Equal(t, seq, page.Jobs[0].Seq)
	counts := b2.CountJobs(context.Background())
	require.Len(t, counts, 1)
	require.Equal(t, map[string]int{broker.FinalComplete: 1}, counts[0].Ended)

	// Expiry runs on any server; an operator's delete on any server too.
	require.True(t, b2.ForgetRecord(context.Background(), seq))
	_, ok = b2.Job(context.Background(), seq)
	require.False(t, ok)
}

// batchJob is a background job of fn in batch id.
func batchJob(fn string, id uint64) broker.SubmitParams {
	p := bgJob(fn, "", "x")
	p.Batch = id
	return p
}

// waitBatch polls b until batch id is complete.
func waitBatch(t *testing.T, b *broker.Broker, id uint64) broker.BatchStatus {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		st, err := b.Batch(context.Background(), id)
		require.NoError(t, err)
		if st.Complete {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("batch %d never completed: %+v", id, st)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// callbackRows counts the stored jobs of function fn, and the distinct
// batches their payloads name.
func callbackRows(t *testing.T, url, fn string) (rows, batches int) {
	t.Helper()
	pgtest.QueryRow(t, url, fmt.Sprintf(`SELECT count(*) FROM gearwork_jobs WHERE function = '%s'`, fn), &rows)
	pgtest.QueryRow(t, url, fmt.Sprintf(`SELECT count(DISTINCT convert_from(payload, 'UTF8')::jsonb->>'batch')
		FROM gearwork_jobs WHERE function = '%s'`, fn), &batches)
	return rows, batches
}

// A batch created on one server takes jobs on both, is closed and read on
// either, counts the ends of its jobs wherever they ran, and submits its
// callback once, which any server's worker runs.
func TestSharedBatchAcrossServers(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url, a, b := openPair(t)
	ca, cb := a.NewSession("ca", newOutbox()), b.NewSession("cb", newOutbox())
	id, err := a.CreateBatch(ctx, broker.BatchParams{
		OnSuccess:  broker.Callback{Function: "report", Payload: []byte("import 42")},
		OnComplete: broker.Callback{Function: "done"}})
	require.NoError(t, err)

	p := batchJob("row", id)
	p.Background = false
	require.ErrorIs(t, submit(t, a, ca, p).err, broker.ErrBatchForeground)
	require.ErrorIs(t, submit(t, b, cb, batchJob("row", id+1000)).err, broker.ErrBatchNotFound)
	for _, s := range []struct {
		b *broker.Broker
		c *broker.Session
	}{{a, ca}, {b, cb}, {b, cb}} {
		require.NoError(t, submit(t, s.b, s.c, batchJob("row", id)).err)
	}
	st, err := b.Batch(ctx, id)
	require.NoError(t, err)
	require.Equal(t, uint64(3), st.Total)
	require.Equal(t, uint64(3), st.Pending)
	require.NoError(t, b.CloseBatch(ctx, id))

	// Whichever server holds them: two complete, the last fails and is kept as a dead letter.
	wa, _ := newWorker(t, a, "wa", "row")
	wb, _ := newWorker(t, b, "wb", "row")
	var lastSeq uint64
	for n := 0; n < 3; {
		for _, w := range []struct {
			b *broker.Broker
			s *broker.Session
		}{{a, wa}, {b, wb}} {
			j, ok := w.b.Grab(w.s)
			if !ok {
				continue
			}
			n++
			res := broker.Complete
			if n == 3 {
				res, lastSeq = broker.Fail, j.Seq
			}
			require.NoError(t, w.b.Finish(w.s, j.Seq, res, nil))
		}
		time.Sleep(5 * time.Millisecond)
	}

	st = waitBatch(t, a, id)
	require.Equal(t, []uint64{3, 2, 0, 1, 0}, []uint64{st.Total, st.Succeeded, st.Failed, st.Dead, st.Pending})
	// The handle its submitter was given.
	require.Len(t, st.Failures, 1)
	require.Contains(t, []string{a.Handle(lastSeq), b.Handle(lastSeq)}, st.Failures[0])
	require.True(t, st.CompleteFired)
	require.False(t, st.SuccessFired, "a batch with a failed job submits no on_success")
	require.Equal(t, "import 42", string(st.OnSuccess.Payload))
	require.ErrorIs(t, submit(t, a, ca, batchJob("row", id)).err, broker.ErrBatchComplete)
	require.NoError(t, a.CloseBatch(ctx, id), "closing twice changes nothing")
	require.ErrorIs(t, a.CloseBatch(ctx, id+1000), broker.ErrBatchNotFound)
	list, err := b.Batches(ctx, 10)
	require.NoError(t, err)
	require.Len(t, list, 1)
	require.Equal(t, id, list[0].ID)

	wd, outD := newWorker(t, a, "wd", "done")
	got := drain(t, a, wd, outD, 1)
	require.JSONEq(t, fmt.Sprintf(`{"batch":"%d","callback":"on_complete","total":3,"succeeded":2,"failed":0,"dead":1,
		"failures":[%q]}`, id, st.Failures[0]), got[0])
	rows, _ := callbackRows(t, url, "report")
	require.Zero(t, rows)
}

// Two servers finish the last two jobs of one batch at the same moment,
// many times: each batch submits each callback exactly once.
func TestSharedBatchCallbacksOnceWhenServersFinishTogether(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url, a, b := openPair(t)
	ca, cb := a.NewSession("ca", newOutbox()), b.NewSession("cb", newOutbox())
	wa, outA := newWorker(t, a, "wa", "row")
	wb, outB := newWorker(t, b, "wb", "row")
	const rounds = 25
	ids := make([]uint64, rounds)
	for i := range rounds {
		id, err := a.CreateBatch(ctx, broker.BatchParams{OnSuccess: broker.Callback{Function: "report"},
			OnComplete: broker.Callback{Function: "done"}})
		require.NoError(t, err)
		ids[i] = id
		require.NoError(t, submit(t, a, ca, batchJob("row", id)).err)
		require.NoError(t, submit(t, b, cb, batchJob("row", id)).err)
		require.NoError(t, b.CloseBatch(ctx, id))
		ja, jb := grab(t, a, wa, outA), grab(t, b, wb, outB)
		storetest.AtOnce(t,
			func() error { return a.Finish(wa, ja.Seq, broker.Complete, nil) },
			func() error { return b.Finish(wb, jb.Seq, broker.Complete, nil) })
	}
	for _, id := range ids {
		st := waitBatch(t, b, id)
		require.Equal(t, []uint64{2, 2}, []uint64{st.Total, st.Succeeded})
		require.True(t, st.SuccessFired && st.CompleteFired)
	}
	for _, fn := range []string{"report", "done"} {
		rows, batches := callbackRows(t, url, fn)
		require.Equal(t, rounds, rows, "%s callbacks", fn)
		require.Equal(t, rounds, batches, "%s: one callback per batch", fn)
	}
}

// afterJob is a background job of fn that waits for deps.
func afterJob(fn string, anyway bool, deps ...uint64) broker.SubmitParams {
	p := bgJob(fn, "", fn)
	p.After, p.AfterAnyway = deps, anyway
	return p
}

// waitRecord polls b until job seq has a record, and returns it.
func waitRecord(t *testing.T, b *broker.Broker, seq uint64) broker.JobSnapshot {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		if rec, ok := b.Job(context.Background(), seq); ok && rec.Final {
			return rec
		}
		require.True(t, time.Now().Before(deadline), "job %d never ended", seq)
		time.Sleep(5 * time.Millisecond)
	}
}

// Jobs submitted on one server wait for jobs that run and end on the
// other: a chain and a fan-in run once their jobs completed; a failure
// there cancels the jobs waiting here, with the reason, except one that
// runs anyway; unknown and failed jobs are refused at submit.
func TestSharedDependenciesAcrossServers(t *testing.T) {
	t.Parallel()
	_, a, b := openPair(t)
	ca, cb := a.NewSession("ca", newOutbox()), b.NewSession("cb", newOutbox())
	d1, d2 := submit(t, a, ca, bgJob("dep", "", "1")), submit(t, a, ca, bgJob("dep", "", "2"))
	require.NoError(t, d1.err)
	require.NoError(t, d2.err)
	fanin := submit(t, b, cb, afterJob("fanin", false, d1.seq, d2.seq))
	require.NoError(t, fanin.err)
	chain := submit(t, b, cb, afterJob("chain", false, fanin.seq))
	require.NoError(t, chain.err)

	wb, outB := newWorker(t, b, "wb", "fanin", "chain")
	_, ok := b.Grab(wb)
	require.False(t, ok, "nothing is runnable before its dependencies completed")
	snap, ok, err := a.StoredJob(context.Background(), chain.seq)
	require.NoError(t, err)
	require.True(t, ok, "any server reads a waiting job")
	require.Equal(t, "waiting", snap.State)
	require.Equal(t, "chain", snap.Function)
	wa, outA := newWorker(t, a, "wa", "dep")
	require.ElementsMatch(t, []string{"1", "2"}, drain(t, a, wa, outA, 2), "the dependencies run on a")
	got := grab(t, b, wb, outB)
	require.Equal(t, fanin.seq, got.Seq, "the fan-in runs on b once both ended on a")
	_, ok = b.Grab(wb)
	require.False(t, ok, "the chain waits for the fan-in")
	require.NoError(t, b.Finish(wb, got.Seq, broker.Complete, nil))
	got = grab(t, b, wb, outB)
	require.Equal(t, chain.seq, got.Seq)
	require.NoError(t, b.Finish(wb, got.Seq, broker.Complete, nil))

	// A failure on a cancels what waits for it on b, down the chain.
	f := submit(t, a, ca, bgJob("dep", "", "fails"))
	require.NoError(t, f.err)
	g := submit(t, b, cb, afterJob("g", false, f.seq))
	h := submit(t, b, cb, afterJob("h", false, g.seq))
	anyway := submit(t, b, cb, afterJob("anyway", true, f.seq))
	for _, r := range []submitResult{g, h, anyway} {
		require.NoError(t, r.err)
	}
	wb2, outB2 := newWorker(t, b, "wb2", "g", "h", "anyway")
	fa := grab(t, a, wa, outA)
	require.Equal(t, f.seq, fa.Seq)
	require.NoError(t, a.Finish(wa, fa.Seq, broker.Fail, nil))
	got = grab(t, b, wb2, outB2)
	require.Equal(t, anyway.seq, got.Seq, "a job that runs anyway runs")
	require.NoError(t, b.Finish(wb2, got.Seq, broker.Complete, nil))
	rec := waitRecord(t, b, g.seq)
	require.Equal(t, broker.FinalCancelled, rec.State)
	require.Equal(t, "dependency H:a:"+fmt.Sprint(f.seq)+" dead", rec.CancelledBy, "a failed job with one attempt is a dead letter")
	rec = waitRecord(t, a, h.seq)
	require.Equal(t, broker.FinalCancelled, rec.State)
	require.Equal(t, "dependency H:b:"+fmt.Sprint(g.seq)+" cancelled", rec.CancelledBy, "read on the other server")
	require.Equal(t, "h", string(rec.PayloadPreview))

	// Refused at submit, on either server: a job that failed, one that
	// never existed; one that completed counts as done.
	r := submit(t, a, ca, afterJob("late", false, f.seq))
	require.ErrorIs(t, r.err, broker.ErrDependency)
	require.ErrorContains(t, r.err, "ended without success")
	r = submit(t, b, cb, afterJob("late", false, d1.seq, 1<<40))
	require.ErrorIs(t, r.err, broker.ErrDependency)
	require.ErrorContains(t, r.err, "no job H:b:"+fmt.Sprint(uint64(1<<40)))
	r = submit(t, b, cb, afterJob("chain", false, d1.seq))
	require.NoError(t, r.err)
	got = grab(t, b, wb, outB)
	require.Equal(t, r.seq, got.Seq, "a job after one that completed runs at once")
	require.NoError(t, b.Finish(wb, got.Seq, broker.Complete, nil))

	// By unique: the live job of a function with it, on either server.
	u := submit(t, a, ca, bgJob("dep", "order-1", "u"))
	require.NoError(t, u.err)
	p := bgJob("chain", "", "by unique")
	p.AfterUnique = []broker.UniqueDep{{Function: "dep", Unique: "order-1"}}
	r = submit(t, b, cb, p)
	require.NoError(t, r.err)
	_, ok = b.Grab(wb)
	require.False(t, ok, "it waits for the job with the unique")
	require.Equal(t, []string{"u"}, drain(t, a, wa, outA, 1))
	got = grab(t, b, wb, outB)
	require.Equal(t, r.seq, got.Seq)
	require.NoError(t, b.Finish(wb, got.Seq, broker.Complete, nil))
	p.AfterUnique[0].Unique = "order-2"
	r = submit(t, b, cb, p)
	require.ErrorIs(t, r.err, broker.ErrDependency)
	require.ErrorContains(t, r.err, `no live job of "dep" has the unique "order-2"`)
}

// In shared mode a batch's status counts the jobs that a worker runs,
// whichever server is asked, and a completed batch is forgotten once its
// retention has passed (by the broker's clock), on every server.
func TestSharedBatchRunningAndRetention(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := pgtest.Schema(t)
	clock := clocktest.New(time.Now())
	a, _ := startShared(t, url, "a", broker.Config{Clock: clock, BatchRetention: 24 * time.Hour})
	b, _ := startShared(t, url, "b", broker.Config{Clock: clock, BatchRetention: 24 * time.Hour})
	ca := a.NewSession("ca", newOutbox())
	id, err := a.CreateBatch(ctx, broker.BatchParams{OnComplete: broker.Callback{Function: "done"}})
	require.NoError(t, err)
	for range 2 {
		require.NoError(t, submit(t, a, ca, batchJob("row", id)).err)
	}
	require.NoError(t, a.CloseBatch(ctx, id))
	open, err := a.CreateBatch(ctx, broker.BatchParams{})
	require.NoError(t, err)

	running := func(want uint64) broker.BatchStatus {
		t.Helper()
		var st broker.BatchStatus
		testwait.Until(t, fmt.Sprintf("%d running, as the server that does not run them says", want), func() bool {
			var err error
			st, err = a.Batch(ctx, id)
			require.NoError(t, err)
			return st.Running == want
		})
		return st
	}
	// Server b holds both jobs for its worker, which runs one.
	w, out := newWorker(t, b, "w", "row")
	grab(t, b, w, out)
	st := running(1)
	require.Equal(t, []uint64{2, 1}, []uint64{st.Total, st.Pending})
	b.CloseSession(w) // the job goes back to the queue
	running(0)
	w, out = newWorker(t, b, "w2", "row")
	first := grab(t, b, w, out)
	running(1)
	require.NoError(t, b.Finish(w, first.Seq, broker.Complete, nil))
	second := grab(t, b, w, out)
	require.NoError(t, b.Finish(w, second.Seq, broker.Complete, nil))
	st = waitBatch(t, a, id)
	require.Equal(t, []uint64{0, 0, 2}, []uint64{st.Running, st.Pending, st.Succeeded})

	clock.Add(23 * time.Hour)
	a.ExpireBatches()
	_, err = b.Batch(ctx, id)
	require.NoError(t, err, "kept for its retention")
	clock.Add(2 * time.Hour)
	b.ExpireBatches()
	_, err = a.Batch(ctx, id)
	require.ErrorIs(t, err, broker.ErrBatchNotFound, "forgotten on every server")
	require.ErrorIs(t, submit(t, a, ca, batchJob("row", id)).err, broker.ErrBatchNotFound)
	_, err = b.Batch(ctx, open)
	require.NoError(t, err, "an open batch is kept")
}

// Jobs of a batch wait for others across servers: a chain and a fan-in
// of one batch submitted on b run once the jobs they wait for completed
// on a, and the batch completes with its last job; in another batch, a
// job that dies on a cancels the jobs waiting for it on b, which count as
// failed, and the batch submits its callback once.
func TestSharedBatchJobsWaitAcrossServers(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url, a, b := openPair(t)
	ca, cb := a.NewSession("ca", newOutbox()), b.NewSession("cb", newOutbox())
	inBatch := func(p broker.SubmitParams, id uint64) broker.SubmitParams {
		p.Batch = id
		return p
	}
	newBatch := func() uint64 {
		id, err := a.CreateBatch(ctx, broker.BatchParams{OnSuccess: broker.Callback{Function: "report"},
			OnComplete: broker.Callback{Function: "done"}})
		require.NoError(t, err)
		return id
	}
	// jobs submits, in batch id, a job of dep on a and, on b, a chain
	// after it and a fan-in after both.
	jobs := func(id uint64, payload string) (d, chain, fanin submitResult) {
		t.Helper()
		d = submit(t, a, ca, inBatch(bgJob("dep", "", payload), id))
		require.NoError(t, d.err)
		chain = submit(t, b, cb, inBatch(afterJob("chain", false, d.seq), id))
		require.NoError(t, chain.err)
		fanin = submit(t, b, cb, inBatch(afterJob("fanin", false, d.seq, chain.seq), id))
		require.NoError(t, fanin.err)
		return d, chain, fanin
	}
	wa, outA := newWorker(t, a, "wa", "dep")
	wb, outB := newWorker(t, b, "wb", "chain", "fanin")

	ok := newBatch()
	_, chain, fanin := jobs(ok, "1")
	require.NoError(t, b.CloseBatch(ctx, ok))
	st, err := a.Batch(ctx, ok)
	require.NoError(t, err)
	require.Equal(t, []uint64{3, 3}, []uint64{st.Total, st.Pending}, "the waiting jobs count as pending")
	require.Equal(t, []string{"1"}, drain(t, a, wa, outA, 1))
	got := grab(t, b, wb, outB)
	require.Equal(t, chain.seq, got.Seq)
	st, err = b.Batch(ctx, ok)
	require.NoError(t, err)
	require.False(t, st.Complete, "its waiting jobs have not run")
	require.NoError(t, b.Finish(wb, got.Seq, broker.Complete, nil))
	got = grab(t, b, wb, outB)
	require.Equal(t, fanin.seq, got.Seq)
	require.NoError(t, b.Finish(wb, got.Seq, broker.Complete, nil))
	st = waitBatch(t, a, ok)
	require.Equal(t, []uint64{3, 3, 0, 0}, []uint64{st.Total, st.Succeeded, st.Failed, st.Dead})
	require.True(t, st.SuccessFired && st.CompleteFired)

	bad := newBatch()
	f, g, h := jobs(bad, "fails")
	r := submit(t, b, cb, inBatch(afterJob("chain", false, 1<<40), bad))
	require.ErrorIs(t, r.err, broker.ErrDependency)
	require.NoError(t, a.CloseBatch(ctx, bad))
	fa := grab(t, a, wa, outA)
	require.Equal(t, f.seq, fa.Seq)
	require.NoError(t, a.Finish(wa, fa.Seq, broker.Fail, nil))
	st = waitBatch(t, b, bad)
	require.Equal(t, []uint64{3, 0, 2, 1}, []uint64{st.Total, st.Succeeded, st.Failed, st.Dead},
		"the refused job is not counted; the cancelled ones count as failed")
	require.Equal(t, []string{a.Handle(f.seq), b.Handle(g.seq), b.Handle(h.seq)}, st.Failures)
	require.True(t, st.CompleteFired)
	require.False(t, st.SuccessFired)
	for _, q := range []uint64{g.seq, h.seq} {
		rec := waitRecord(t, a, q)
		require.Equal(t, broker.FinalCancelled, rec.State)
		require.Equal(t, bad, rec.Batch)
	}
	rows, batches := callbackRows(t, url, "done")
	require.Equal(t, []int{2, 2}, []int{rows, batches}, "one on_complete per batch")
	rows, _ = callbackRows(t, url, "report")
	require.Equal(t, 1, rows)
}

// A dead letter of a batch queued again on the other server counts as
// pending again in its batch, and its new end there counts: a batch not
// yet complete completes as if it had not died; a completed batch stays
// complete and submits its on_success once its jobs all succeeded, and
// not its on_complete again, as on a single server.
func TestSharedBatchDeadLetterQueuedAgain(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url, a, b := openPair(t)
	ca := a.NewSession("ca", newOutbox())
	wa, outA := newWorker(t, a, "wa", "row")
	wb, _ := newWorker(t, b, "wb", "row")
	status := func(id uint64) broker.BatchStatus {
		st, err := b.Batch(ctx, id)
		require.NoError(t, err)
		return st
	}
	for _, closeFirst := range []bool{false, true} {
		id, err := a.CreateBatch(ctx, broker.BatchParams{OnSuccess: broker.Callback{Function: "report"},
			OnComplete: broker.Callback{Function: "done"}})
		require.NoError(t, err)
		j := submit(t, a, ca, batchJob("row", id))
		require.NoError(t, j.err)
		if closeFirst {
			require.NoError(t, b.CloseBatch(ctx, id))
		}
		got := grab(t, a, wa, outA)
		require.NoError(t, a.Finish(wa, got.Seq, broker.Fail, nil))
		testwait.Until(t, "the job dead in its batch", func() bool { return status(id).Dead == 1 })
		require.Equal(t, closeFirst, status(id).Complete)

		require.NoError(t, b.RetryDeadLetter(ctx, []byte(b.Handle(j.seq))))
		st := status(id)
		require.Equal(t, []uint64{1, 1, 0}, []uint64{st.Total, st.Pending, st.Dead}, "pending again")
		require.Equal(t, closeFirst, st.Complete, "a completed batch stays complete")
		require.NoError(t, a.CloseBatch(ctx, id))
		// Whichever server claims it.
		testwait.Until(t, "the job queued again handed to a worker", func() bool {
			for _, w := range []struct {
				b *broker.Broker
				s *broker.Session
			}{{a, wa}, {b, wb}} {
				if got, ok := w.b.Grab(w.s); ok {
					require.Equal(t, j.seq, got.Seq)
					require.NoError(t, w.b.Finish(w.s, got.Seq, broker.Complete, nil))
					return true
				}
			}
			return false
		})
		testwait.Until(t, "its new end counted", func() bool { st = status(id); return st.Succeeded == 1 && st.SuccessFired })
		require.Equal(t, []uint64{1, 0, 0, 0}, []uint64{st.Total, st.Pending, st.Failed, st.Dead})
		require.True(t, st.Complete && st.CompleteFired)
	}
	rows, batches := callbackRows(t, url, "report")
	require.Equal(t, []int{2, 2}, []int{rows, batches}, "one on_success per batch")
	rows, batches = callbackRows(t, url, "done")
	require.Equal(t, []int{2, 2}, []int{rows, batches}, "one on_complete per batch")
}

// A server joins a job to a batch that another server completes at the
// same moment: the batch's row lock orders the two transactions, and a
// job that comes after the completion is refused (ErrBatchComplete), as
// on a server alone, instead of joining a batch whose callback was
// submitted already. The test holds the batch's row lock until both
// servers wait for it, in that order (PostgreSQL grants a row lock to its
// waiters in turn).
func TestSharedBatchLateJoinRacingCompletion(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	lb := completeBatchUnderLock(t, broker.Callback{Function: "done"})
	url, a, b, id := lb.url, lb.a, lb.b, lb.id
	cb := b.NewSession("cb", newOutbox())
	late := submitAsync(b, cb, batchJob("row", id))
	testwait.Until(t, "the late join to wait for the batch's row", func() bool { return lb.waiting() == 2 })
	require.NoError(t, lb.tx.Commit(ctx))

	r := answer(t, late)
	st := waitBatch(t, a, id)
	require.ErrorIs(t, r.err, broker.ErrBatchComplete, "the job came after the batch completed")
	require.Equal(t, []uint64{1, 1}, []uint64{st.Total, st.Succeeded}, "the completed batch counts no later job")
	var rows int
	pgtest.QueryRow(t, url, fmt.Sprintf(`SELECT count(*) FROM gearwork_jobs WHERE batch = %d`, id), &rows)
	require.Zero(t, rows, "no job of the completed batch is stored")
}

// lockedBatch is a batch whose completion waits for the test's lock on
// its row (completeBatchUnderLock).
type lockedBatch struct {
	url  string
	a, b *broker.Broker
	id   uint64
	// tx holds the lock; committing it lets the completion through.
	tx pgx.Tx
	// waiting counts the connections that wait for the lock (lockWaiters).
	waiting func() int
}

// completeBatchUnderLock opens servers a and b, creates a batch on a with
// callback onComplete and one job, closes it, and has a worker on a run
// and finish the job while the test holds the batch's row lock: it returns
// once the round that completes the batch waits for that lock.
func completeBatchUnderLock(t *testing.T, onComplete broker.Callback) lockedBatch {
	t.Helper()
	ctx := context.Background()
	url, a, b := openPair(t)
	ca := a.NewSession("ca", newOutbox())
	id, err := a.CreateBatch(ctx, broker.BatchParams{OnComplete: onComplete})
	require.NoError(t, err)
	require.NoError(t, submit(t, a, ca, batchJob("row", id)).err)
	require.NoError(t, a.CloseBatch(ctx, id))
	wa, outA := newWorker(t, a, "wa", "row")
	last := grab(t, a, wa, outA)

	tx, waiting := lockBatchRow(t, url, id)

	require.NoError(t, a.Finish(wa, last.Seq, broker.Complete, nil))
	testwait.Until(t, "the completing round to wait for the batch's row", func() bool { return waiting() == 1 })
	return lockedBatch{url: url, a: a, b: b, id: id, tx: tx, waiting: waiting}
}

// lockBatchRow locks the row of batch id in a transaction of the test,
// rolled back when the test ends unless committed, and returns it with
// the count of the connections that wait for the lock (lockWaiters).
func lockBatchRow(t *testing.T, url string, id uint64) (pgx.Tx, func() int) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close(context.Background()) })
	tx, err := conn.Begin(ctx)
	require.NoError(t, err)
	t.Cleanup(func() { _ = tx.Rollback(context.Background()) }) // a no-op once committed
	_, err = tx.Exec(ctx, `SELECT id FROM gearwork_batches WHERE id = $1 FOR UPDATE`, int64(id))
	require.NoError(t, err)
	// Asked on a connection of its own: inside tx, pg_stat_activity would
	// answer from the snapshot its first reading took for the whole
	// transaction, and never see a waiter that came later.
	ask, err := pgx.Connect(ctx, url)
	require.NoError(t, err)
	t.Cleanup(func() { ask.Close(context.Background()) })
	return tx, lockWaiters(t, ask, tx)
}

// lockWaiters returns a function that counts the connections that wait
// for a lock tx holds, or for a connection that waits for it; conn is
// another connection to ask on.
func lockWaiters(t *testing.T, conn *pgx.Conn, tx pgx.Tx) func() int {
	t.Helper()
	ctx := context.Background()
	var holder int32
	require.NoError(t, tx.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&holder))
	return func() int {
		var n int
		require.NoError(t, conn.QueryRow(ctx, `WITH RECURSIVE w(pid) AS (SELECT $1::integer
			UNION SELECT a.pid FROM pg_stat_activity a, w WHERE w.pid = ANY(pg_blocking_pids(a.pid)))
			SELECT count(*) - 1 FROM w`, holder).Scan(&n))
		return n
	}
}

// The reads of stored job records take the caller's context: a caller
// that is gone (an HTTP client that hung up, an admin connection that
// closed) ends the PostgreSQL lookup instead of waiting for it.
func TestSharedRecordReadsTakeTheCallersContext(t *testing.T) {
	t.Parallel()
	_, _, b2, seq := recordOnOneServer(t, "", nil)

	gone, cancel := context.WithCancel(context.Background())
	cancel()
	_, ok := b2.Job(gone, seq)
	require.False(t, ok, "a cancelled lookup finds nothing")
	_, err := b2.ListJobs(gone, broker.JobQuery{Function: "recfn"})
	require.ErrorIs(t, err, context.Canceled)
	require.Empty(t, b2.CountJobs(gone), "the stored counts were not read")
	require.False(t, b2.ForgetRecord(gone, seq))

	ctx := context.Background()
	_, ok = b2.Job(ctx, seq)
	require.True(t, ok, "the record is still there")
	page, err := b2.ListJobs(ctx, broker.JobQuery{Function: "recfn"})
	require.NoError(t, err)
	require.Len(t, page.Jobs, 1)
	require.Len(t, b2.CountJobs(ctx), 1)
}

// A submit that names a batch and finds the job of its unique held in
// memory (or waiting for its insert with no batch or another one) joins
// that job only when its own batch may be joined, as on a server alone:
// an unknown or completed batch refuses it, an open one lets it attach
// without counting it.
func TestSharedCoalescedSubmitChecksItsBatch(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url, a, _ := openPair(t)
	newWorker(t, a, "w", "f") // a holds the job
	c := a.NewSession("c", newOutbox())
	first := submit(t, a, c, bgJob("f", "u", "x"))
	require.NoError(t, first.err)

	p := bgJob("f", "u", "x")
	p.Batch = 987654321
	require.ErrorIs(t, submit(t, a, c, p).err, broker.ErrBatchNotFound)

	done, err := a.CreateBatch(ctx, broker.BatchParams{})
	require.NoError(t, err)
	require.NoError(t, a.CloseBatch(ctx, done)) // empty: completes at once
	p.Batch = done
	require.ErrorIs(t, submit(t, a, c, p).err, broker.ErrBatchComplete)

	open, err := a.CreateBatch(ctx, broker.BatchParams{})
	require.NoError(t, err)
	p.Batch = open
	r := submit(t, a, c, p)
	require.NoError(t, r.err)
	require.Equal(t, first.seq, r.seq, "it coalesced")
	require.False(t, r.created)
	st, err := a.Batch(ctx, open)
	require.NoError(t, err)
	require.Zero(t, st.Total, "a coalesced submit does not count in its batch")
	require.Equal(t, 1, countRows(t, url))
}

// A submit without a batch that attaches to a job waiting for its insert
// is not refused because that job's batch is: the batch completed before
// the insert, so that job never was, and the submit makes its own job, as
// on a server alone, where the first submit would have been refused
// before the second came. The test holds the batch's row lock while the
// round that completes the batch, then the insert, wait for it.
func TestSharedCoalescedSubmitIsNotRefusedForAnotherBatch(t *testing.T) {
	t.Parallel()
	lb := completeBatchUnderLock(t, broker.Callback{})
	url, b, id := lb.url, lb.b, lb.id
	cb := b.NewSession("cb", newOutbox())
	p := bgJob("row", "u", "x")
	p.Batch = id
	late := submitAsync(b, cb, p)
	testwait.Until(t, "the late job's insert to wait for the batch's row", func() bool { return lb.waiting() == 2 })
	alone := submitAsync(b, cb, bgJob("row", "u", "x"))
	require.NoError(t, lb.tx.Commit(context.Background()))

	require.ErrorIs(t, answer(t, late).err, broker.ErrBatchComplete)
	r := answer(t, alone)
	require.NoError(t, r.err, "its submit named no batch")
	require.True(t, r.created)
	var batch int64
	pgtest.QueryRow(t, url, `SELECT batch FROM gearwork_jobs WHERE uniq = 'u'`, &batch)
	require.Zero(t, batch, "the job stored is its own, of no batch")
}

// A round is written although a job in it that coalesced with another
// server's job cannot be resolved afterwards (the job it coalesced with
// finishes as the round commits, and its insert after all fails): only
// that job's submitter is told the store failed, and every other
// submitter of the round gets the job its row holds. The round is held
// back, by the test's lock on a batch's row that an earlier round waits
// for, until both jobs wait for it.
func TestSharedRoundWithAnUnresolvedCoalescedJob(t *testing.T) {
	t.Parallel()
	url, a, b := openPair(t)
	wa, outA := newWorker(t, a, "wa", "victim")
	require.NoError(t, submit(t, a, a.NewSession("ca", newOutbox()), bgJob("victim", "u", "a")).err)
	grab(t, a, wa, outA) // a holds it
	pgtest.Exec(t, url, `CREATE FUNCTION zap() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN DELETE FROM gearwork_jobs WHERE function = 'victim'::bytea; RETURN NULL; END $$;
		CREATE CONSTRAINT TRIGGER zap AFTER INSERT ON gearwork_jobs DEFERRABLE INITIALLY DEFERRED
			FOR EACH ROW WHEN (NEW.function = 'zap'::bytea) EXECUTE FUNCTION zap();
		CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF NOT EXISTS (SELECT FROM gearwork_jobs WHERE function = NEW.function) THEN
				RAISE EXCEPTION 'refused';
			END IF;
			RETURN NEW;
		END $$;
		CREATE TRIGGER refuse BEFORE INSERT ON gearwork_jobs
			FOR EACH ROW WHEN (NEW.function = 'victim'::bytea) EXECUTE FUNCTION refuse();`)

	ctx := context.Background()
	cb := b.NewSession("cb", newOutbox())
	id, err := b.CreateBatch(ctx, broker.BatchParams{})
	require.NoError(t, err)
	tx, waiting := lockBatchRow(t, url, id)
	first := submitAsync(b, cb, batchJob("first", id))
	testwait.Until(t, "b's first round to wait for the batch's row", func() bool { return waiting() == 1 })
	victim := submitAsync(b, cb, bgJob("victim", "u", "b"))
	zap := submitAsync(b, cb, bgJob("zap", "", "b"))
	require.NoError(t, tx.Commit(ctx))

	require.NoError(t, answer(t, first).err)
	var se *broker.StoreError
	require.ErrorAs(t, answer(t, victim).err, &se)
	require.Zero(t, countRowsOf(t, url, "victim"), "the job was not stored")
	r := answer(t, zap)
	require.NoError(t, r.err, "the round was written")
	require.True(t, r.created)
	var seq uint64
	pgtest.QueryRow(t, url, `SELECT seq FROM gearwork_jobs WHERE function = 'zap'::bytea`, &seq)
	require.Equal(t, r.seq, seq, "the submitter has the stored job")
	require.NoError(t, submit(t, b, cb, bgJob("after", "", "b")).err, "the store is not thought lost")
}

// countRowsOf counts the stored jobs of function fn.
func countRowsOf(t *testing.T, url, fn string) int {
	t.Helper()
	var n int
	pgtest.QueryRow(t, url, fmt.Sprintf(`SELECT count(*) FROM gearwork_jobs WHERE function = '%s'::bytea`, fn), &n)
	return n
}

// hangUpAfterRead is a shared store whose record reads end the caller's
// context once they have read: a client that hangs up after the lookup.
type hangUpAfterRead struct {
	*postgres.Store
	cancel context.CancelFunc
}

func (h hangUpAfterRead) Record(ctx context.Context, seq uint64) (store.Record, error) {
	r, err := h.Store.Record(ctx, seq)
	h.cancel()
	return r, err
}

// A record that only the store holds, forgotten by a caller that goes
// away once it was found (an HTTP client that hangs up), is deleted all
// the same: the delete does not take the caller's context.
func TestSharedForgetRecordOutlivesItsCaller(t *testing.T) {
	t.Parallel()
	url, _, _, seq := recordOnOneServer(t, "", nil)
	st, err := postgres.Open(context.Background(), postgres.Config{URL: url, Name: "forget", Logger: quiet})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b := broker.New(broker.Config{Shared: hangUpAfterRead{st, cancel}, HandlePrefix: "H:forget:", Logger: quiet})
	require.NoError(t, b.Start(context.Background()))
	t.Cleanup(func() {
		b.Stop()
		_ = st.Close()
	})

	require.True(t, b.ForgetRecord(ctx, seq))
	require.Error(t, ctx.Err(), "the caller went away")
	_, err = st.Record(context.Background(), seq)
	require.ErrorIs(t, err, store.ErrNotFound, "the record is gone")
}

// The payload bytes a server keeps in memory (read by the collector's
// pacer from its own goroutine) can be read while a server starts in
// shared mode, which turns payload tiering off (run with -race).
func TestPayloadBytesReadableWhileSharedModeStarts(t *testing.T) {
	t.Parallel()
	st, err := postgres.Open(context.Background(), postgres.Config{URL: pgtest.Schema(t), Name: "tier", Logger: quiet})
	require.NoError(t, err)
	b := broker.New(broker.Config{Shared: st, HandlePrefix: "H:tier:", Logger: quiet, MemoryBudget: 1 << 20})
	t.Cleanup(func() {
		b.Stop()
		_ = st.Close()
	})
	done := make(chan struct{})
	read := make(chan int64)
	go func() {
		var n int64
		for {
			select {
			case <-done:
				read <- n
				return
			default:
				n += b.PayloadBytesInMemory()
			}
		}
	}()
	require.NoError(t, b.Start(context.Background()))
	close(done)
	require.Zero(t, <-read, "a server in shared mode keeps no payloads for tiering")
}
