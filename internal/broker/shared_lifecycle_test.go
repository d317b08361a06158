package broker_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/internal/broker"
	"github.com/gearwork/gearwork/internal/clocktest"
	"github.com/gearwork/gearwork/internal/store"
	"github.com/gearwork/gearwork/internal/store/postgres"
	"github.com/gearwork/gearwork/internal/store/postgres/pgtest"
	"github.com/gearwork/gearwork/internal/testwait"
)

// These tests check that dead letters, retained results and the admin
// counts hold across the servers sharing a store, also when the server that
// wrote them is gone.

// startShared starts a broker on its own store of url with cfg; the test
// stops both when it ends (stopping twice is harmless). The store keeps
// the default lease, which no stall of a loaded machine loses: none of
// these tests waits for a lease to expire, and a lost one would hand a
// job running here to another server.
func startShared(t *testing.T, url, name string, cfg broker.Config) (*broker.Broker, *postgres.Store) {
	t.Helper()
	return openSharedConfig(t, url, name, 0, cfg)
}

// failAll grabs n jobs on w and ends each with an exception carrying the
// job's payload, returning the jobs in the order they failed.
func failAll(t *testing.T, b *broker.Broker, w *broker.Session, out *outbox, n int) []broker.Assignment {
	t.Helper()
	var done []broker.Assignment
	for len(done) < n {
		a := grab(t, b, w, out)
		require.NoError(t, b.Finish(w, a.Seq, broker.Exception, append([]byte("broke: "), a.Payload...)))
		done = append(done, a)
	}
	return done
}

func rowsIn(t *testing.T, url string, state int) int {
	t.Helper()
	var n int
	pgtest.QueryRow(t, url, fmt.Sprintf(`SELECT count(*) FROM gearwork_jobs WHERE state = %d`, state), &n)
	return n
}

func deadOn(t *testing.T, b *broker.Broker, fn string) []broker.DeadLetter {
	t.Helper()
	dl, err := b.DeadLetters(context.Background(), fn, 0)
	require.NoError(t, err)
	return dl
}

func TestSharedDeadLettersAcrossServers(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := pgtest.Schema(t)
	cfg := broker.Config{Policies: map[string]broker.Policy{
		"f":       {MaxAttempts: 1},
		"bounded": {MaxAttempts: 1, MaxDeadLetters: 1},
	}}
	a, _ := startShared(t, url, "a", cfg)
	b, _ := startShared(t, url, "b", cfg)

	client := a.NewSession("client", newOutbox())
	for i, u := range []string{"u1", "", ""} {
		require.NoError(t, submit(t, a, client, bgJob("f", u, fmt.Sprint("p", i))).err)
	}
	for i := range 2 {
		require.NoError(t, submit(t, a, client, bgJob("bounded", "", fmt.Sprint("b", i))).err)
	}
	wa, out := newWorker(t, a, "wa", "f")
	a.CanDo(wa, []byte("bounded"), 0)
	died := failAll(t, a, wa, out, 5)

	// b lists what died on a, once a's commit round has written it.
	testwait.Until(t, "b lists the dead letters of f", func() bool { return len(deadOn(t, b, "f")) == 3 })
	dl := deadOn(t, b, "f")
	for _, d := range dl {
		require.Equal(t, "f", d.Function)
		require.Equal(t, uint32(1), d.Attempts)
		require.Equal(t, "broke: "+string(d.Payload), d.LastError)
		require.False(t, d.DiedAt.IsZero())
		require.Equal(t, fmt.Sprintf("H:a:%d", d.Seq), d.Handle, "the handle a's client got")
	}
	testwait.Until(t, "the function's limit is applied across the servers", func() bool {
		return len(deadOn(t, b, "bounded")) == 1
	})
	var lastBounded uint64
	for _, d := range died {
		if d.Function == "bounded" {
			lastBounded = d.Seq
		}
	}
	require.Equal(t, lastBounded, deadOn(t, b, "bounded")[0].Seq, "the newest dead letter is kept")
	all := deadOn(t, b, "")
	require.Len(t, all, 4)
	require.Equal(t, "bounded", all[0].Function, "sorted by function name")

	testwait.Until(t, "b counts the dead letters", func() bool {
		for _, f := range b.Stats(ctx).Functions {
			if f.Name == "f" {
				return f.DeadLetters == 3
			}
		}
		return false
	})

	// a stops: its dead letters stay listed, shown, retried and purged
	// from b.
	a.Stop()
	require.Len(t, deadOn(t, b, "f"), 3)
	var withUnique broker.DeadLetter
	for _, d := range dl {
		if d.Unique == "u1" {
			withUnique = d
		}
	}
	require.NotZero(t, withUnique.Seq)
	shown, ok, err := b.DeadLetterByHandle(ctx, []byte(fmt.Sprintf("H:a:%d", withUnique.Seq)))
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, withUnique.Payload, shown.Payload)
	require.Len(t, shown.History, 1)
	snap, ok, err := b.StoredJob(ctx, withUnique.Seq)
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, "dead", snap.State)
	require.Equal(t, withUnique.LastError, snap.LastError)

	// A live job took the unique meanwhile: the retried dead letter runs
	// without it, beside the live one.
	cb := b.NewSession("cb", newOutbox())
	live := submit(t, b, cb, bgJob("f", "u1", "live"))
	require.NoError(t, live.err)
	require.True(t, live.created, "a dead letter does not hold its unique")
	require.NoError(t, b.RetryDeadLetter(ctx, []byte(fmt.Sprintf("H:a:%d", withUnique.Seq))))
	require.ErrorIs(t, b.RetryDeadLetter(ctx, []byte(fmt.Sprintf("H:a:%d", withUnique.Seq))), broker.ErrJobNotFound,
		"a retried job is no dead letter any more")
	require.Len(t, deadOn(t, b, "f"), 2)

	wb, outB := newWorker(t, b, "wb", "f")
	got := drain(t, b, wb, outB, 2)
	require.ElementsMatch(t, []string{string(withUnique.Payload), "live"}, got,
		"the retried job runs on b, whose worker claims it")

	// Purge one by handle and the rest of the function.
	rest := deadOn(t, b, "f")
	require.Len(t, rest, 2)
	require.NoError(t, b.PurgeDeadLetter(ctx, []byte(fmt.Sprintf("H:a:%d", rest[0].Seq))))
	require.ErrorIs(t, b.PurgeDeadLetter(ctx, []byte(fmt.Sprintf("H:a:%d", rest[0].Seq))), broker.ErrJobNotFound)
	n, err := b.PurgeDeadLetters(ctx, "f")
	require.NoError(t, err)
	require.Equal(t, 1, n)
	n, err = b.PurgeDeadLetters(ctx, "")
	require.NoError(t, err)
	require.Equal(t, 1, n, "purging every function takes the bounded one too")
	testwait.Until(t, "every row is gone", func() bool { return countRows(t, url) == 0 })
}

// oneDeadCfg lets a job of f run once: a failed one is a dead letter.
var oneDeadCfg = broker.Config{Policies: map[string]broker.Policy{"f": {MaxAttempts: 1}}}

// deadLetterOn starts server name on url (oneDeadCfg) and has a job of f
// ("once more") die there; it returns once the dead letter is stored.
func deadLetterOn(t *testing.T, url, name string) (*broker.Broker, *postgres.Store, uint64) {
	t.Helper()
	a, st := startShared(t, url, name, oneDeadCfg)
	wa, out := newWorker(t, a, "w"+name, "f")
	require.NoError(t, submit(t, a, wa, bgJob("f", "", "once more")).err)
	seq := failAll(t, a, wa, out, 1)[0].Seq
	testwait.Until(t, "the dead letter is stored", func() bool { return rowsIn(t, url, int(store.StateDead)) == 1 })
	return a, st, seq
}

func TestSharedDeadLetterOfKilledServerRetriedElsewhere(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := pgtest.Schema(t)
	// a dies without a word after the job died there: its store is
	// closed, so it neither leaves nor renews.
	a, stA, seq := deadLetterOn(t, url, "a")
	require.NoError(t, stA.Close())
	a.Stop()

	b, _ := startShared(t, url, "b", oneDeadCfg)
	dl := deadOn(t, b, "")
	require.Len(t, dl, 1, "a restarted or other server lists a dead server's dead letters")
	require.Equal(t, seq, dl[0].Seq)
	n, err := b.RetryDeadLetters(ctx, "f")
	require.NoError(t, err)
	require.Equal(t, 1, n)
	wb, outB := newWorker(t, b, "wb", "f")
	require.Equal(t, []string{"once more"}, drain(t, b, wb, outB, 1))
	testwait.Until(t, "the completed job is deleted", func() bool { return countRows(t, url) == 0 })
}

// A dead letter that one server queued again (RetryJob) is live: no
// server answers its old record, and retrying it again, from either
// server, is refused with ErrJobLive instead of submitting a second copy
// from that record.
func TestSharedRetryJobOfRetriedDeadLetter(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := pgtest.Schema(t)
	a, _, seq := deadLetterOn(t, url, "a")
	b, _ := startShared(t, url, "b", oneDeadCfg)
	handle := []byte(a.Handle(seq))
	testwait.Until(t, "b reads the dead job's record", func() bool {
		rec, ok := b.Job(context.Background(), seq)
		return ok && rec.State == broker.FinalDead
	})

	again, created, err := b.RetryJob(ctx, handle, "test")
	require.NoError(t, err)
	require.False(t, created)
	require.Equal(t, seq, again, "the dead letter runs again under its handle")
	for _, srv := range []*broker.Broker{b, a} {
		rec, ok := srv.Job(context.Background(), seq)
		require.False(t, ok && rec.Final, "the job is live again, not %s", rec.State)
		again, created, err = srv.RetryJob(ctx, handle, "test")
		require.ErrorIs(t, err, broker.ErrJobLive, "a second retry made job %d (created %v)", again, created)
	}
	require.Equal(t, 1, rowsIn(t, url, int(store.StateQueued)), "one job of f is queued")
}

func TestSharedResultsReadAndExpiredByAnotherServer(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := pgtest.Schema(t)
	policies := map[string]broker.Policy{"report": {ResultRetention: time.Hour}}
	a, stA := startShared(t, url, "a", broker.Config{Policies: policies})
	clock := clocktest.New(time.Now())
	b, _ := startShared(t, url, "b", broker.Config{Policies: policies, Clock: clock})

	wa, _ := newWorker(t, a, "wa", "report")
	first := submit(t, a, wa, bgJob("report", "rep-1", "x"))
	require.NoError(t, first.err)
	second := submit(t, a, wa, bgJob("report", "rep-2", "y"))
	require.NoError(t, second.err)
	for range 2 {
		testwait.Until(t, "a's worker gets a job", func() bool {
			as, ok := a.Grab(wa)
			if ok {
				require.NoError(t, a.Finish(wa, as.Seq, broker.Complete, append([]byte("done "), as.Payload...)))
			}
			return ok
		})
	}
	testwait.Until(t, "the results are stored", func() bool { return rowsIn(t, url, 3) == 2 })

	h := []byte(fmt.Sprintf("H:a:%d", first.seq))
	r, ok, err := b.Result(ctx, h)
	require.NoError(t, err)
	require.True(t, ok, "b reads a result a stored")
	require.Equal(t, "done x", string(r.Data))
	require.Equal(t, "rep-1", r.Unique)
	require.Equal(t, time.Hour, r.Expires.Sub(r.FinishedAt), "the expiry is stored with the result")
	snap, ok, err := b.StoredJob(ctx, first.seq)
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, broker.FinalComplete, snap.State)
	require.Equal(t, "done x", string(snap.Result))
	r, ok, err = b.ResultByUnique(ctx, "", "rep-2")
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, "done y", string(r.Data))
	again := submit(t, b, b.NewSession("cb", newOutbox()), bgJob("report", "rep-1", "z"))
	require.NoError(t, again.err)
	require.False(t, again.created, "a retained result answers a repeated submit on any server")
	require.Equal(t, first.seq, again.seq)

	// a dies; a row written without its expiry time (by an older server)
	// expires by the function's retention.
	require.NoError(t, stA.Close())
	a.Stop()
	pgtest.Exec(t, url, fmt.Sprintf(`UPDATE gearwork_jobs SET not_before = 0 WHERE seq = %d`, second.seq))
	clock.Add(30 * time.Minute)
	_, ok, err = b.Result(ctx, h)
	require.NoError(t, err)
	require.True(t, ok, "not expired yet")
	require.Equal(t, 2, rowsIn(t, url, 3))

	clock.Add(31 * time.Minute)
	_, ok, err = b.Result(ctx, h)
	require.NoError(t, err)
	require.False(t, ok, "an expired result is not answered")
	testwait.Until(t, "b expires the results a stored", func() bool { return rowsIn(t, url, 3) == 0 })
	fresh := submit(t, b, b.NewSession("cb2", newOutbox()), bgJob("report", "rep-1", "z"))
	require.NoError(t, fresh.err)
	require.True(t, fresh.created, "once expired, the unique is free")
}

func TestSharedStatusCountsJobsNobodyHolds(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, a, b := openPair(t)

	client := a.NewSession("client", newOutbox())
	for i := range 5 {
		p := bgJob("count", "", fmt.Sprint(i))
		if i < 2 {
			p.Priority = broker.High
		}
		require.NoError(t, submit(t, a, client, p).err)
	}
	later := bgJob("count", "", "later")
	later.RunAt = time.Now().Add(time.Hour).Unix()
	require.NoError(t, submit(t, a, client, later).err)

	// b has never heard of the function; its status counts a's rows.
	var got broker.FunctionStatus
	testwait.Until(t, "b counts the rows submitted on a", func() bool {
		for _, f := range b.Status(ctx) {
			if f.Name == "count" {
				got = f
				return true
			}
		}
		return false
	})
	require.Equal(t, broker.FunctionStatus{Name: "count", Total: 6, Queued: [3]int{2, 3, 0}}, got,
		"runnable jobs by priority; the scheduled one only in the total")

	// Jobs b holds count from its memory, those nobody holds from the store.
	w, out := newWorker(t, b, "w", "count")
	grab(t, b, w, out)
	// The counts read from the store may be a second old.
	want := broker.FunctionStatus{Name: "count", Total: 6, Running: 1, Workers: 1, Queued: [3]int{1, 3, 0}}
	testwait.Until(t, "b counts its own jobs and the rest, each once", func() bool {
		for _, f := range b.Status(ctx) {
			if f.Name == "count" {
				got = f
			}
		}
		return got == want
	})
	stats := b.Stats(ctx)
	require.Len(t, stats.Functions, 1)
	require.Equal(t, got.Queued, stats.Functions[0].Queued, "Stats counts as Status does")
}

func TestSharedCancelJobOnAnyServer(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url, a, b := openPair(t)
	client := a.NewSession("client", newOutbox())
	free := submit(t, a, client, bgJob("c", "", "nobody holds me"))
	require.NoError(t, free.err)
	require.NoError(t, b.CancelJob(ctx, []byte(fmt.Sprintf("H:a:%d", free.seq))))
	require.Equal(t, 0, countRows(t, url))
	// Its record, kept in the store, says it was cancelled: it has ended.
	require.ErrorIs(t, b.CancelJob(ctx, []byte(fmt.Sprintf("H:a:%d", free.seq))), broker.ErrJobEnded)

	// a holds a queued job (its worker is busy with another): b asks a to
	// drop it.
	wa, out := newWorker(t, a, "wa", "c")
	first := submit(t, a, client, bgJob("c", "", "a runs me"))
	require.NoError(t, first.err)
	running := grab(t, a, wa, out)
	require.Equal(t, first.seq, running.Seq)
	queued := submit(t, a, client, bgJob("c", "", "a holds me"))
	require.NoError(t, queued.err)
	testwait.Until(t, "a holds both jobs", func() bool { return a.JobCount() == 2 })
	testwait.Until(t, "both are stored", func() bool { return countRows(t, url) == 2 })
	require.NoError(t, b.CancelJob(ctx, []byte(fmt.Sprintf("H:a:%d", queued.seq))), "the server holding it drops it")
	require.Equal(t, 1, a.JobCount())

	// And the running one: it is taken from its worker.
	require.NoError(t, b.CancelJob(ctx, []byte(fmt.Sprintf("H:a:%d", first.seq))))
	require.Zero(t, countRows(t, url))
	// The worker is told the job was cancelled when it reports.
	require.ErrorIs(t, a.Finish(wa, running.Seq, broker.Complete, nil), broker.ErrJobCancelled, "the worker's result for a cancelled job")
	_, ok := a.Grab(wa)
	require.False(t, ok, "nothing runs again")
	require.Zero(t, countRows(t, url))
}

// A live job that this server does not hold (a row no server claimed yet,
// or one another server holds) is answered from the shared store by
// StoredJob, as GET_STATUS answers it: its submitter's GET /v1/jobs/{handle}
// must not say that it never existed.
func TestSharedStoredJobAnswersLiveRows(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, a, b := openPair(t)
	client := a.NewSession("client", newOutbox())
	queued := submit(t, a, client, bgJob("look", "u-look", "p")).seq
	later := bgJob("look", "", "later")
	later.RunAt = time.Now().Add(time.Hour).Unix()
	scheduled := submit(t, a, client, later).seq

	for _, srv := range []*broker.Broker{a, b} {
		snap, ok, err := srv.StoredJob(ctx, queued)
		require.NoError(t, err)
		require.True(t, ok, "the unclaimed row is found")
		require.Equal(t, "queued", snap.State)
		require.False(t, snap.Final)
		require.Equal(t, "look", snap.Function)
		require.Equal(t, "u-look", snap.Unique)
		require.True(t, snap.Background)
		snap, ok, err = srv.StoredJob(ctx, scheduled)
		require.NoError(t, err)
		require.True(t, ok)
		require.Equal(t, "scheduled", snap.State)
	}

	// b's worker takes the job: a, which does not hold it, says it runs.
	w, out := newWorker(t, b, "w", "look")
	require.Equal(t, queued, grab(t, b, w, out).Seq)
	testwait.Until(t, "a sees the job run on b", func() bool {
		snap, ok, err := a.StoredJob(ctx, queued)
		require.NoError(t, err)
		return ok && snap.State == "running"
	})
}
