package broker_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/internal/broker"
	"github.com/gearwork/gearwork/internal/store/postgres/pgtest"
	"github.com/gearwork/gearwork/internal/testwait"
)

// These tests cover dispatch before durable in shared mode: a job that
// this server's workers run is handed to them before it is inserted.

// logInserts records the sequence number of every row inserted into
// gearwork_jobs from now on, in inserted_log.
func logInserts(t *testing.T, url string) {
	t.Helper()
	pgtest.Exec(t, url, `CREATE TABLE inserted_log (seq bigint);
		CREATE FUNCTION log_insert() RETURNS trigger LANGUAGE plpgsql AS
			$$BEGIN INSERT INTO inserted_log VALUES (NEW.seq); RETURN NEW; END$$;
		CREATE TRIGGER log_insert AFTER INSERT ON gearwork_jobs FOR EACH ROW EXECUTE FUNCTION log_insert();`)
}

func wasInserted(t *testing.T, url string, seq uint64) bool {
	t.Helper()
	var n int
	pgtest.QueryRow(t, url, fmt.Sprintf(`SELECT count(*) FROM inserted_log WHERE seq = %d`, seq), &n)
	return n > 0
}

// submitAsync submits and returns the channel its answer arrives on.
func submitAsync(b *broker.Broker, s *broker.Session, p broker.SubmitParams) <-chan submitResult {
	ch := make(chan submitResult, 1)
	b.Submit(s, p, func(seq uint64, created bool, err error) { ch <- submitResult{seq, created, err} })
	return ch
}

func answer(t *testing.T, ch <-chan submitResult) submitResult {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(time.Minute):
		t.Fatal("submit was never answered")
		return submitResult{}
	}
}

// noAnswer checks that a submit stays unanswered for a while.
func noAnswer(t *testing.T, ch <-chan submitResult, why string) {
	t.Helper()
	select {
	case r := <-ch:
		t.Fatalf("%s, but the submit was answered: %+v", why, r)
	case <-time.After(200 * time.Millisecond):
	}
}

// warmWorker registers a worker for fns on b and runs one job of each
// through it, which lets the server measure how fast its workers finish
// them: afterwards a new job of fns is handed to the worker before it is
// inserted, and its insert waits for the delay.
func warmWorker(t *testing.T, b *broker.Broker, fns ...string) (*broker.Session, *outbox) {
	t.Helper()
	w, out := newWorker(t, b, "w", fns...)
	c := b.NewSession("warm-up", newOutbox())
	for _, fn := range fns {
		ch := submitAsync(b, c, bgJob(fn, "", "warm-up"))
		a := grab(t, b, w, out)
		require.NoError(t, b.Finish(w, a.Seq, broker.Complete, nil))
		require.NoError(t, answer(t, ch).err)
	}
	time.Sleep(150 * time.Millisecond) // longer than the rate window
	return w, out
}

// submitEarly submits p through s and grabs the job on w, which must get it
// before its insert: b's EarlyInsertDelay is long, so the submit of a job
// handed out early stays unanswered until the job ends. A server hands a
// job out early only with sequence numbers it reserved lately (seqFresh);
// after a stall of a loaded machine longer than that since warmWorker, it
// rightly inserts the job first, and its submit is answered before the
// worker gets it. Such a try is finished and made again, a few times.
func submitEarly(t *testing.T, url string, b *broker.Broker, s, w *broker.Session, out *outbox, p broker.SubmitParams) (<-chan submitResult, broker.Assignment) {
	t.Helper()
	for try := range 5 {
		ch := submitAsync(b, s, p)
		got := grab(t, b, w, out)
		select {
		case r := <-ch:
			t.Logf("try %d was inserted before a worker got it; trying again", try+1)
			require.NoError(t, r.err)
			require.NoError(t, b.Finish(w, got.Seq, broker.Complete, nil))
			testwait.Until(t, "the job inserted first is deleted", func() bool {
				var n int
				pgtest.QueryRow(t, url, fmt.Sprintf(`SELECT count(*) FROM gearwork_jobs WHERE seq = %d`, got.Seq), &n)
				return n == 0
			})
		default:
			return ch, got
		}
	}
	t.Fatal("no try was handed out before its insert")
	return nil, broker.Assignment{}
}

// startEarlyAndPeer starts server a, which inserts its new jobs after
// delay, and server peer, with the default delay, on url.
func startEarlyAndPeer(t *testing.T, url string, delay time.Duration, peer string) (a, p *broker.Broker) {
	t.Helper()
	a, _ = startShared(t, url, "a", broker.Config{EarlyInsertDelay: delay})
	p, _ = startShared(t, url, peer, broker.Config{})
	return a, p
}

func TestSharedFastJobEndsBeforeItIsInserted(t *testing.T) {
	t.Parallel()
	url := pgtest.Schema(t)
	a, _ := startShared(t, url, "a", broker.Config{EarlyInsertDelay: time.Minute})
	logInserts(t, url)
	w, out := warmWorker(t, a, "fast")

	client := a.NewSession("client", newOutbox())
	ch, got := submitEarly(t, url, a, client, w, out, bgJob("fast", "u-1", "payload"))
	require.Equal(t, "payload", string(got.Payload), "handed out before its insert")
	noAnswer(t, ch, "the job is neither inserted nor ended")
	require.NoError(t, a.Finish(w, got.Seq, broker.Complete, nil))
	r := answer(t, ch)
	require.NoError(t, r.err)
	require.True(t, r.created)
	require.Equal(t, got.Seq, r.seq, "the submitter gets the handle the worker had")
	require.False(t, wasInserted(t, url, r.seq), "a job that ended before its insert is never written")

	// The unique is free again, as for any job that ended.
	again := submitAsync(a, client, bgJob("fast", "u-1", "again"))
	next := grab(t, a, w, out)
	require.Equal(t, "again", string(next.Payload))
	require.NoError(t, a.Finish(w, next.Seq, broker.Complete, nil))
	require.True(t, answer(t, again).created)
	// The warm-up job's delete (and the second job's insert and delete,
	// when a stall made its reserved numbers stale) may still be under way.
	testwait.Until(t, "nothing is left in the store", func() bool { return countRows(t, url) == 0 })
}

func TestSharedJobStillRunningIsInsertedClaimedAfterTheDelay(t *testing.T) {
	t.Parallel()
	url := pgtest.Schema(t)
	a, b := startEarlyAndPeer(t, url, 300*time.Millisecond, "b")
	logInserts(t, url)
	w, out := warmWorker(t, a, "slow")

	client := a.NewSession("client", newOutbox())
	ch := submitAsync(a, client, bgJob("slow", "", "long"))
	got := grab(t, a, w, out)
	r := answer(t, ch) // once inserted: the job runs on
	require.NoError(t, r.err)
	require.True(t, r.created)
	require.Equal(t, got.Seq, r.seq)
	var held bool
	pgtest.QueryRow(t, url, fmt.Sprintf(`SELECT owner IS NOT NULL FROM gearwork_jobs WHERE seq = %d`, r.seq), &held)
	require.True(t, held, "inserted as held by the server running it")
	st := b.GetStatus(fmt.Appendf(nil, "H:a:%d", r.seq))
	require.True(t, st.Known, "another server finds it once it is acknowledged")
	require.True(t, st.Running)

	require.NoError(t, a.Finish(w, got.Seq, broker.Complete, nil))
	testwait.Until(t, "the finished job is deleted", func() bool { return countRows(t, url) == 0 })
}

func TestSharedEarlyJobCoalescesWithAJobAnotherServerRuns(t *testing.T) {
	t.Parallel()
	url := pgtest.Schema(t)
	a, c := startEarlyAndPeer(t, url, -1, "c")

	// c runs the job with unique "order-9".
	wc, outC := newWorker(t, c, "wc", "mail")
	first := submit(t, c, c.NewSession("cc", newOutbox()), bgJob("mail", "order-9", "first"))
	require.NoError(t, first.err)
	running := grab(t, c, wc, outC)
	require.Equal(t, first.seq, running.Seq)

	// a has a worker of its own, so a new job there is handed out before
	// its insert; the insert finds the job c runs.
	wa, _ := warmWorker(t, a, "mail")
	second := submit(t, a, a.NewSession("ca", newOutbox()), bgJob("mail", "order-9", "second"))
	require.NoError(t, second.err)
	require.False(t, second.created, "the same unique coalesces across servers")
	require.Equal(t, first.seq, second.seq, "the submitter gets the running job's handle")
	_, ok := a.Grab(wa)
	require.False(t, ok, "the copy nobody had taken yet is dropped")
	require.Equal(t, 1, countRows(t, url))

	require.NoError(t, c.Finish(wc, running.Seq, broker.Complete, nil))
	testwait.Until(t, "the job is deleted", func() bool { return countRows(t, url) == 0 })
}

func TestSharedEarlyJobAlreadyRunningWhenItCoalescesRunsOn(t *testing.T) {
	t.Parallel()
	url := pgtest.Schema(t)
	// The delay is long enough for c to store its job first.
	a, c := startEarlyAndPeer(t, url, 2*time.Second, "c")
	wa, outA := warmWorker(t, a, "mail")

	// a hands its job out before the insert...
	ch := submitAsync(a, a.NewSession("ca", newOutbox()), bgJob("mail", "order-10", "on a"))
	copyOnA := grab(t, a, wa, outA)
	require.Equal(t, "on a", string(copyOnA.Payload))
	// ...while c stores and runs a job with the same unique.
	wc, outC := newWorker(t, c, "wc", "mail")
	onC := submit(t, c, c.NewSession("cc", newOutbox()), bgJob("mail", "order-10", "on c"))
	require.NoError(t, onC.err)
	require.True(t, onC.created)
	require.Equal(t, "on c", string(grab(t, c, wc, outC).Payload))

	r := answer(t, ch)
	require.NoError(t, r.err)
	require.False(t, r.created, "the insert coalesced with the job c stored first")
	require.Equal(t, onC.seq, r.seq)
	require.NoError(t, a.Finish(wa, copyOnA.Seq, broker.Complete, nil), "the copy a worker had runs to its end")
	var owner string
	pgtest.QueryRow(t, url, fmt.Sprintf(`SELECT s.name FROM gearwork_jobs j JOIN gearwork_servers s ON s.id = j.owner WHERE j.seq = %d`, onC.seq), &owner)
	require.Equal(t, "c", owner, "the stored job stays with c")
	require.Equal(t, 1, countRows(t, url))
}

func TestSharedEarlyJobThatDiesOrKeepsAResultIsStored(t *testing.T) {
	t.Parallel()
	url := pgtest.Schema(t)
	cfg := broker.Config{EarlyInsertDelay: time.Minute, Policies: map[string]broker.Policy{
		"flaky": {MaxAttempts: 1},
		"kept":  {ResultRetention: time.Hour},
	}}
	a, _ := startShared(t, url, "a", cfg)
	b, _ := startShared(t, url, "b", broker.Config{})
	w, out := warmWorker(t, a, "kept", "flaky")
	client := a.NewSession("client", newOutbox())

	dies, got := submitEarly(t, url, a, client, w, out, bgJob("flaky", "", "doomed"))
	require.Equal(t, "doomed", string(got.Payload))
	noAnswer(t, dies, "the job was handed out before its insert, which waits")
	require.NoError(t, a.Finish(w, got.Seq, broker.Exception, []byte("broke")))
	r := answer(t, dies) // a dead letter is answered once it is stored
	require.NoError(t, r.err)
	dead, err := b.DeadLetters(context.Background(), "flaky", 0)
	require.NoError(t, err)
	require.Len(t, dead, 1, "another server lists the dead letter")
	require.Equal(t, r.seq, dead[0].Seq)
	require.Equal(t, "broke", dead[0].LastError)

	keeps := submitAsync(a, client, bgJob("kept", "", "answer me"))
	got = grab(t, a, w, out)
	require.Equal(t, "answer me", string(got.Payload))
	require.NoError(t, a.Finish(w, got.Seq, broker.Complete, []byte("42")))
	r = answer(t, keeps)
	require.NoError(t, r.err)
	res, ok, err := b.Result(context.Background(), fmt.Appendf(nil, "H:a:%d", r.seq))
	require.NoError(t, err)
	require.True(t, ok, "another server reads the retained result")
	require.Equal(t, "42", string(res.Data))
	require.Equal(t, 1, rowsIn(t, url, 2), "one dead letter")
	require.Equal(t, 2, rowsIn(t, url, 3), "two results: the warm-up job's and this one's")
	require.Equal(t, 3, countRows(t, url), "nothing else")
}

// lockJobs holds a lock that makes every write to gearwork_jobs wait until
// the returned func is called, or the test ends: a test that fails while
// holding it must not leave its servers' last writes, and the drop of its
// schema, waiting for ever.
func lockJobs(t *testing.T, url string) func() {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	require.NoError(t, err)
	tx, err := conn.Begin(ctx)
	require.NoError(t, err)
	_, err = tx.Exec(ctx, `LOCK TABLE gearwork_jobs IN SHARE ROW EXCLUSIVE MODE`)
	require.NoError(t, err)
	unlock := func() { _ = tx.Rollback(ctx); _ = conn.Close(ctx) }
	t.Cleanup(unlock) // after the test's own call, a harmless no-op
	return unlock
}

func TestSharedDeadLetterAndNewJobOfOneUniqueInOneRound(t *testing.T) {
	t.Parallel()
	url := pgtest.Schema(t)
	cfg := broker.Config{EarlyInsertDelay: 300 * time.Millisecond, Policies: map[string]broker.Policy{
		"flaky": {MaxAttempts: 1},
	}}
	a, _ := startShared(t, url, "a", cfg)
	w, out := warmWorker(t, a, "flaky")
	client := a.NewSession("client", newOutbox())

	var (
		unlock        func()
		blocked, dies <-chan submitResult
		got           broker.Assignment
	)
	for try := 1; ; try++ {
		// The committer is busy with a write that waits for the lock, so
		// that the next round carries both jobs below.
		unlock = lockJobs(t, url)
		blocked = submitAsync(a, client, bgJob("nobody", "", "x"))
		time.Sleep(50 * time.Millisecond)
		dies = submitAsync(a, client, bgJob("flaky", "u", "first"))
		var ok bool
		if got, ok = a.Grab(w); ok { // handed out at submit, before its insert
			break
		}
		// A stall since the warm-up made the server's reserved numbers
		// stale (seqFresh): it inserts the job before a worker gets it,
		// which the lock holds up. Let it through, run it, and try again.
		require.Less(t, try, 5, "no try was handed out before its insert")
		t.Logf("try %d waits for its insert; trying again", try)
		unlock()
		require.NoError(t, answer(t, blocked).err)
		require.NoError(t, answer(t, dies).err)
		j := grab(t, a, w, out)
		require.NoError(t, a.Finish(w, j.Seq, broker.Complete, nil))
		testwait.Until(t, "the job inserted first is deleted", func() bool {
			var n int
			pgtest.QueryRow(t, url, fmt.Sprintf(`SELECT count(*) FROM gearwork_jobs WHERE seq = %d`, j.Seq), &n)
			return n == 0
		})
	}
	require.Equal(t, "first", string(got.Payload))
	require.NoError(t, a.Finish(w, got.Seq, broker.Exception, []byte("broke")))
	next := submitAsync(a, client, bgJob("flaky", "u", "second"))
	time.Sleep(500 * time.Millisecond) // both due for their insert
	unlock()
	require.NoError(t, answer(t, blocked).err)
	r1, r2 := answer(t, dies), answer(t, next)
	require.NoError(t, r1.err)
	require.NoError(t, r2.err)
	require.True(t, r2.created, "a dead letter does not coalesce with a new job")
	require.NotEqual(t, r1.seq, r2.seq)
	require.Equal(t, 1, rowsIn(t, url, 2), "the dead letter is stored")
	second := grab(t, a, w, out)
	require.Equal(t, "second", string(second.Payload), "the new job runs")
	require.Equal(t, r2.seq, second.Seq)
}

func TestSharedWatchedJobThatEndsBeforeItsInsert(t *testing.T) {
	t.Parallel()
	url := pgtest.Schema(t)
	a, _ := startShared(t, url, "a", broker.Config{EarlyInsertDelay: time.Minute})
	w, out := warmWorker(t, a, "fast")
	hubOut := newOutbox()
	hub := a.NewSession("hub", hubOut)
	ch := make(chan submitResult, 1)
	var watched uint64
	a.SubmitWatched(hub, bgJob("fast", "", "p"), func(seq uint64, created bool) { watched = seq },
		func(seq uint64, created bool, err error) { ch <- submitResult{seq, created, err} })
	got := grab(t, a, w, out)
	require.NoError(t, a.WorkStatus(w, got.Seq, 1, 2))
	require.NoError(t, a.Finish(w, got.Seq, broker.Complete, []byte("result")))
	r := answer(t, ch)
	require.NoError(t, r.err)
	require.Equal(t, got.Seq, watched, "watched from the submit, under its final handle")
	require.Equal(t, 1, hubOut.count(broker.EventStatus), "progress reported before the insert reaches the watcher")
	require.Equal(t, 1, hubOut.count(broker.EventComplete))
	require.Zero(t, hubOut.count(broker.EventFail), "the job completed")
}

func TestSharedSubmitCoalescingWithAScheduledJobDoesNotRunItEarly(t *testing.T) {
	t.Parallel()
	url := pgtest.Schema(t)
	a, b := startEarlyAndPeer(t, url, -1, "b")
	later := bgJob("report", "monthly", "scheduled")
	later.RunAt = time.Now().Add(time.Hour).Unix()
	first := submit(t, b, b.NewSession("cb", newOutbox()), later)
	require.NoError(t, first.err)

	w, _ := warmWorker(t, a, "report")
	again := submit(t, a, a.NewSession("ca", newOutbox()), bgJob("report", "monthly", "now"))
	require.NoError(t, again.err)
	require.False(t, again.created)
	require.Equal(t, first.seq, again.seq, "the submit joins the scheduled job")
	_, ok := a.Grab(w)
	require.False(t, ok, "and nothing runs before its time")
	var owned bool
	pgtest.QueryRow(t, url, fmt.Sprintf(`SELECT owner IS NOT NULL FROM gearwork_jobs WHERE seq = %d`, first.seq), &owned)
	require.False(t, owned, "the scheduled job stays unclaimed until it is due")
}

func TestSharedEarlyJobCoalescingWithAJobNobodyHoldsRunsThatJob(t *testing.T) {
	t.Parallel()
	url, a, b := openPair(t)
	wa, out := newWorker(t, a, "wa", "f")
	client := a.NewSession("client", newOutbox())
	// a holds enough queued jobs not to claim more, but fewer than it
	// wants: a new job there is handed out before its insert.
	for i := range 20 {
		require.NoError(t, submit(t, a, client, bgJob("f", "", fmt.Sprint(i))).err)
	}
	testwait.Until(t, "a holds them", func() bool { return a.JobCount() == 20 })
	first := submit(t, b, b.NewSession("cb", newOutbox()), bgJob("f", "u", "from b"))
	require.NoError(t, first.err)

	hubOut := newOutbox()
	ch := make(chan submitResult, 1)
	a.SubmitWatched(a.NewSession("hub", hubOut), bgJob("f", "u", "from a"), func(uint64, bool) {},
		func(seq uint64, created bool, err error) { ch <- submitResult{seq, created, err} })
	r := answer(t, ch)
	require.NoError(t, r.err)
	require.False(t, r.created, "the unique coalesces with b's job")
	require.Equal(t, first.seq, r.seq)
	got := drain(t, a, wa, out, 21)
	require.Contains(t, got, "from b", "b's job runs, with the first submit's payload")
	require.NotContains(t, got, "from a", "and nothing else for the unique")
	require.Zero(t, hubOut.count(broker.EventFail), "the watcher is not told of a failure")
	testwait.Until(t, "every job is deleted", func() bool { return countRows(t, url) == 0 })
}
