package broker

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/internal/store"
	"github.com/gearwork/gearwork/internal/store/pebble"
	"github.com/gearwork/gearwork/internal/testwait"
)

// heldRecordWrites is a Pebble store whose first write of job records
// waits until release is closed (entered is closed when it starts); with
// fail set, every write of records fails with it.
type heldRecordWrites struct {
	*pebble.Store
	entered, release chan struct{}
	fail             error
	held             bool
	releaseOnce      sync.Once
}

// let lets the held write go on.
func (s *heldRecordWrites) let() { s.releaseOnce.Do(func() { close(s.release) }) }

func (s *heldRecordWrites) EndJobs(ctx context.Context, dels []uint64, recs []store.Record, forget []uint64) error {
	if err := s.hold(recs); err != nil {
		return err
	}
	return s.Store.EndJobs(ctx, dels, recs, forget)
}

// Write is the committer's write of a round that also saves jobs.
func (s *heldRecordWrites) Write(ctx context.Context, w store.Write) error {
	if err := s.hold(w.Records); err != nil {
		return err
	}
	return s.Store.Write(ctx, w)
}

// hold holds the first write of records and fails every one with s.fail.
func (s *heldRecordWrites) hold(recs []store.Record) error {
	if len(recs) > 0 && !s.held {
		s.held = true // only the committer writes records
		close(s.entered)
		<-s.release
	}
	if len(recs) > 0 && s.fail != nil {
		return s.fail
	}
	return nil
}

func setupHeldRecordWrites(t *testing.T, fail error, cfg Config) (*lcBundle, *heldRecordWrites) {
	t.Helper()
	ps, err := pebble.Open(context.Background(), t.TempDir(), pebble.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = ps.Close() }) // after the broker's stop
	st := &heldRecordWrites{Store: ps, entered: make(chan struct{}), release: make(chan struct{}), fail: fail}
	cfg.Store = st
	tb := setupLC(t, lcOpts{cfg: cfg, can: []string{"fn"}})
	t.Cleanup(st.let) // before the broker's stop, should the test fail first
	return tb, st
}

// roundDone waits for the committer to finish a round begun after the
// call, as Durable does, but also while the store refuses writes, when
// Durable answers at once.
func roundDone(t *testing.T, b *Broker) {
	t.Helper()
	done := make(chan error, 1)
	b.mu.Lock()
	b.barriers = append(b.barriers, done)
	b.mu.Unlock()
	b.kickCommitter()
	select {
	case <-done:
	case <-time.After(testwait.Timeout):
		t.Fatal("no commit round")
	}
}

// endedCount returns how many records of fn CountJobs counts in state.
func endedCount(tb *lcBundle, fn, state string) int {
	for _, c := range tb.b.CountJobs(context.Background()) {
		if c.Function == fn {
			return c.Ended[state]
		}
	}
	return 0
}

// listed returns the Seqs of the ended jobs ListJobs lists, newest first,
// those waiting for their write from memory (JobQuery.now: the tests hold
// those writes).
func listed(t *testing.T, tb *lcBundle) []uint64 {
	t.Helper()
	page, err := tb.b.ListJobs(context.Background(), JobQuery{Function: "fn", State: FinalComplete, now: true})
	require.NoError(t, err)
	var seqs []uint64
	for _, s := range page.Jobs {
		seqs = append(seqs, s.Seq)
	}
	return seqs
}

// A record is read from the broker's memory until the store has it, and
// from the store after: while the committer writes it, and while the next
// waits for the committer, lookups, listings and counts see each record
// once; one forgotten while it is written is gone from the store after.
// (The lookups and listings here answer from memory without waiting for
// the write, JobNow and JobQuery.now, as the write is held; Job and
// ListJobs wait for it: TestPowerLossAfterReadingAJobRecord.)
func TestRecordReadableWhileWritten(t *testing.T) {
	t.Parallel()
	tb, st := setupHeldRecordWrites(t, nil, Config{})
	ctx := context.Background()
	a := tb.submit(t, lcBG("fn", "", "a"))
	b := tb.submit(t, lcBG("fn", "", "b"))
	c := tb.submit(t, lcBG("fn", "", "c"))
	tb.finishNext(t, a, Complete)
	<-st.entered                  // the committer writes a's record
	tb.finishNext(t, b, Complete) // b's record waits for the committer
	tb.finishNext(t, c, Complete)
	for _, seq := range []uint64{a, b, c} {
		s, ok := tb.b.JobNow(ctx, seq)
		require.True(t, ok, "job %d", seq)
		require.True(t, s.Final)
		require.Equal(t, FinalComplete, s.State)
	}
	require.Equal(t, 3, endedCount(tb, "fn", FinalComplete))
	require.Equal(t, []uint64{c, b, a}, listed(t, tb))

	require.True(t, tb.b.ForgetRecord(ctx, a), "a's record, being written")
	require.True(t, tb.b.ForgetRecord(ctx, c), "c's record, waiting")
	_, ok := tb.b.JobNow(ctx, a)
	require.False(t, ok, "a forgotten")
	require.Equal(t, 1, endedCount(tb, "fn", FinalComplete))
	require.Equal(t, []uint64{b}, listed(t, tb))

	st.let()
	require.NoError(t, tb.b.Durable(ctx))
	require.NoError(t, tb.b.Durable(ctx)) // the forget of a, after its write
	tb.b.mu.Lock()
	for _, seq := range []uint64{a, b, c} {
		require.Nil(t, tb.b.keptRecordLocked(seq), "job %d's record left memory", seq)
	}
	tb.b.mu.Unlock()
	_, err := st.Record(ctx, a)
	require.ErrorIs(t, err, store.ErrNotFound, "a forgotten in the store after its write")
	_, err = st.Record(ctx, c)
	require.ErrorIs(t, err, store.ErrNotFound, "c never written")
	s, ok := tb.b.Job(ctx, b)
	require.True(t, ok)
	require.Equal(t, FinalComplete, s.State)
	require.Equal(t, 1, endedCount(tb, "fn", FinalComplete))
	require.Equal(t, []uint64{b}, listed(t, tb))
}

// After a failed write of records, they are still read from memory (the
// store refuses writes from then on), each once.
func TestRecordsReadableAfterFailedWrite(t *testing.T) {
	t.Parallel()
	tb, st := setupHeldRecordWrites(t, errors.New("disk gone"), Config{})
	ctx := context.Background()
	a := tb.submit(t, lcBG("fn", "", "a"))
	tb.finishNext(t, a, Complete)
	<-st.entered
	st.let()
	roundDone(t, tb.b) // after the failed write
	s, ok := tb.b.Job(ctx, a)
	require.True(t, ok)
	require.Equal(t, FinalComplete, s.State)
	require.Equal(t, 1, endedCount(tb, "fn", FinalComplete))
}

// The records kept after a failed write expire as the store's would: by
// their function's age limit and count.
func TestRecordsOfAFailedWriteExpire(t *testing.T) {
	t.Parallel()
	tb, st := setupHeldRecordWrites(t, errors.New("disk gone"), Config{})
	ctx := context.Background()
	tb.b.SetPolicy("fn", Policy{History: time.Minute, HistoryMax: 2})
	seqs := []uint64{tb.submit(t, lcBG("fn", "", "a")), tb.submit(t, lcBG("fn", "", "b")), tb.submit(t, lcBG("fn", "", "c"))}
	tb.finishNext(t, seqs[0], Complete)
	<-st.entered // a's record is being written
	tb.finishNext(t, seqs[1], Complete)
	tb.finishNext(t, seqs[2], Complete)
	st.let()
	roundDone(t, tb.b) // a's write failed
	roundDone(t, tb.b) // and so did b's and c's
	require.Equal(t, 3, endedCount(tb, "fn", FinalComplete))

	tb.b.ExpireHistory()
	_, ok := tb.b.Job(ctx, seqs[0])
	require.False(t, ok, "the oldest, beyond the count of 2, expired")
	require.Equal(t, 2, endedCount(tb, "fn", FinalComplete))

	tb.clock.Add(time.Hour)
	tb.b.ExpireHistory()
	for _, seq := range seqs {
		_, ok := tb.b.Job(ctx, seq)
		require.False(t, ok, "job %d's record expired by age", seq)
	}
	require.Zero(t, endedCount(tb, "fn", FinalComplete))
}

// While the store does not keep up, at most queuedRounds rounds of
// records wait for it: the oldest go unwritten, the newest stay.
func TestRecordsWaitingAreBounded(t *testing.T) {
	t.Parallel()
	const batch = 4
	tb, st := setupHeldRecordWrites(t, nil, Config{CommitBatch: batch})
	ctx := context.Background()
	most := queuedRounds * batch
	seqs := make([]uint64, most+batch+10)
	for i := range seqs {
		seqs[i] = tb.submit(t, lcBG("fn", "", "p"))
	}
	tb.finishNext(t, seqs[0], Complete)
	<-st.entered // the first round is being written: seqs[0]'s record
	for _, seq := range seqs[1:] {
		tb.finishNext(t, seq, Complete)
	}
	tb.b.mu.Lock()
	waiting := len(tb.b.recq.pending)
	tb.b.mu.Unlock()
	require.Equal(t, most, waiting)
	require.Equal(t, most+1, endedCount(tb, "fn", FinalComplete), "the one being written and the newest waiting")
	_, ok := tb.b.JobNow(ctx, seqs[0])
	require.True(t, ok, "being written")
	_, ok = tb.b.JobNow(ctx, seqs[1])
	require.False(t, ok, "the oldest waiting went unwritten")
	_, ok = tb.b.JobNow(ctx, seqs[len(seqs)-most])
	require.True(t, ok, "the oldest of the newest kept")

	st.let()
	require.NoError(t, tb.b.Durable(ctx))
	require.Equal(t, most+1, endedCount(tb, "fn", FinalComplete), "all written now")
	_, err := st.Record(ctx, seqs[1])
	require.ErrorIs(t, err, store.ErrNotFound)
	_, err = st.Record(ctx, seqs[len(seqs)-1])
	require.NoError(t, err)
}

// A dead letter queued again while its record is being written, which
// then completes: its job has one record, the new one, in memory and
// then in the store.
func TestDeadLetterRetriedWhileItsRecordIsWritten(t *testing.T) {
	t.Parallel()
	tb, st := setupHeldRecordWrites(t, nil, Config{Policies: policies("fn", Policy{MaxAttempts: 1})})
	ctx := context.Background()
	seq := tb.submit(t, lcBG("fn", "", "a"))
	tb.finishNext(t, seq, Fail) // dead: its record is written
	<-st.entered
	retried := make(chan error, 1)
	go func() { retried <- tb.b.RetryDeadLetter(ctx, []byte(tb.b.Handle(seq))) }()
	// It runs again (before its new write, which waits behind the held
	// one) and completes.
	var a Assignment
	require.Eventually(t, func() bool {
		var ok bool
		a, ok = tb.b.Grab(tb.worker)
		return ok
	}, 10*time.Second, time.Millisecond)
	require.Equal(t, seq, a.Seq)
	require.NoError(t, tb.b.Finish(tb.worker, seq, Complete, nil))
	s, ok := tb.b.JobNow(ctx, seq)
	require.True(t, ok)
	require.Equal(t, FinalComplete, s.State, "the new record, not the dead one being written")
	require.Equal(t, 1, endedCount(tb, "fn", FinalComplete))
	require.Zero(t, endedCount(tb, "fn", FinalDead))

	st.let()
	require.NoError(t, <-retried)
	require.NoError(t, tb.b.Durable(ctx))
	r, err := st.Record(ctx, seq)
	require.NoError(t, err)
	require.Equal(t, FinalComplete, r.State)
	require.Equal(t, 1, endedCount(tb, "fn", FinalComplete))
	require.Zero(t, endedCount(tb, "fn", FinalDead))
}

// The count limit applies to all the records of a failed write of one
// function, also those made after an expiry pass let the function's
// (empty) history go.
func TestRecordsOfFailedWritesCountedTogether(t *testing.T) {
	t.Parallel()
	tb, st := setupHeldRecordWrites(t, errors.New("disk gone"), Config{})
	ctx := context.Background()
	tb.b.SetPolicy("fn", Policy{History: time.Minute, HistoryMax: 2})
	var seqs []uint64
	for range 4 {
		seqs = append(seqs, tb.submit(t, lcBG("fn", "", "p")))
	}
	tb.finishNext(t, seqs[0], Complete)
	<-st.entered
	st.let()
	tb.finishNext(t, seqs[1], Complete)
	roundDone(t, tb.b)
	roundDone(t, tb.b)
	tb.b.ExpireHistory()
	require.Equal(t, 2, endedCount(tb, "fn", FinalComplete))
	tb.finishNext(t, seqs[2], Complete)
	tb.finishNext(t, seqs[3], Complete)
	roundDone(t, tb.b)
	roundDone(t, tb.b)
	tb.b.ExpireHistory()
	require.Equal(t, 2, endedCount(tb, "fn", FinalComplete), "history_max 2 over all of them")
	for _, seq := range seqs[2:] {
		_, ok := tb.b.Job(ctx, seq)
		require.True(t, ok, "the newest kept")
	}
}

// A lookup or listing of a record whose write does not finish (a disk
// that hangs, a database that stopped answering mid-round) answers
// within Config.RecordReadWait from memory, marked Unstored, instead of
// waiting for the write for as long as it takes: an admin connection or
// an HTTP request must not hang on a store outage. Once the write is done
// the record is answered from the store, unmarked.
func TestRecordReadDoesNotWaitForAHungWrite(t *testing.T) {
	t.Parallel()
	tb, st := setupHeldRecordWrites(t, nil, Config{RecordReadWait: 10 * time.Millisecond})
	ctx := context.Background()
	a := tb.submit(t, lcBG("fn", "", "a"))
	b := tb.submit(t, lcBG("fn", "", "b"))
	tb.finishNext(t, a, Complete)
	<-st.entered                  // a's write hangs
	tb.finishNext(t, b, Complete) // b's record waits behind it

	type answer struct {
		snaps []JobSnapshot
		err   error
	}
	done := make(chan answer, 1)
	go func() {
		var out answer
		for _, seq := range []uint64{a, b} {
			s, ok := tb.b.Job(ctx, seq)
			if !ok {
				out.err = errors.New("no record")
			}
			out.snaps = append(out.snaps, s)
		}
		page, err := tb.b.ListJobs(ctx, JobQuery{Function: "fn", State: FinalComplete})
		out.snaps = append(out.snaps, page.Jobs...)
		out.err = errors.Join(out.err, err)
		done <- out
	}()
	var got answer
	select {
	case got = <-done:
	case <-time.After(testwait.Timeout):
		t.Fatal("a lookup of a record waits for a write that hangs")
	}
	require.NoError(t, got.err)
	require.Len(t, got.snaps, 4)
	for i, s := range got.snaps {
		require.Equal(t, FinalComplete, s.State, "answer %d", i)
		require.True(t, s.Unstored, "answer %d (job %d) is not on disk", i, s.Seq)
	}

	st.let()
	require.NoError(t, tb.b.Durable(ctx))
	s, ok := tb.b.Job(ctx, a)
	require.True(t, ok)
	require.False(t, s.Unstored, "written")
	page, err := tb.b.ListJobs(ctx, JobQuery{Function: "fn", State: FinalComplete})
	require.NoError(t, err)
	require.Len(t, page.Jobs, 2)
	for _, s := range page.Jobs {
		require.False(t, s.Unstored, "job %d written", s.Seq)
	}
}

// A batch's state read from memory waits for the commit round of what it
// answers (readDurable) at most Config.RecordReadWait, as a job's record
// does: with the round's write hung, GET /v1/batches/{id} and admin batch
// answered only once the write was done, however long that took.
func TestBatchReadDoesNotWaitForAHungWrite(t *testing.T) {
	t.Parallel()
	tb, st := setupHeldRecordWrites(t, nil, Config{RecordReadWait: 10 * time.Millisecond})
	ctx := context.Background()
	id, err := tb.b.CreateBatch(ctx, BatchParams{})
	require.NoError(t, err)
	a := tb.submit(t, lcBG("fn", "", "a"))
	tb.finishNext(t, a, Complete)
	<-st.entered // a's write hangs

	done := make(chan error, 1)
	go func() {
		_, err := tb.b.Batch(ctx, id)
		if err == nil {
			_, err = tb.b.Batches(ctx, 10)
		}
		done <- err
	}()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(testwait.Timeout):
		t.Fatal("a read of a batch waits for a write that hangs")
	}
}

// A retained result, dead letters and batches read while the write that
// would store what they answer hangs are answered within RecordReadWait,
// from memory, as a record is (TestRecordReadDoesNotWaitForAHungWrite):
// a read must not hang while the store does.
func TestResultReadDoesNotWaitForAHungWrite(t *testing.T) {
	t.Parallel()
	tb, st := setupHeldRecordWrites(t, nil, Config{RecordReadWait: 10 * time.Millisecond,
		Policies: policies("fn", Policy{ResultRetention: time.Hour})})
	ctx := context.Background()
	a := tb.submit(t, lcBG("fn", "", "a"))
	tb.finishNext(t, a, Complete)
	<-st.entered // the write of a's result and record hangs

	done := make(chan error, 1)
	go func() {
		r, ok, err := tb.b.Result(ctx, []byte(tb.b.Handle(a)))
		if err == nil && (!ok || r.Seq != a) {
			err = errors.New("no result")
		}
		_, derr := tb.b.DeadLetters(ctx, "", 0)
		_, berr := tb.b.Batches(ctx, 0)
		done <- errors.Join(err, derr, berr)
	}()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(testwait.Timeout):
		t.Fatal("a read of a retained result waits for a write that hangs")
	}
}
