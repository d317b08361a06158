package pebble_test

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/internal/broker"
	"github.com/gearwork/gearwork/internal/store"
	"github.com/gearwork/gearwork/internal/store/pebble"
)

// recordBroker runs a broker on a Pebble store on fs.
func recordBroker(t *testing.T, fs vfs.FS, cfg broker.Config) (*broker.Broker, *pebble.Store) {
	t.Helper()
	ctx := context.Background()
	st, err := pebble.Open(ctx, "data", pebble.Options{FS: fs, Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	cfg.Store = st
	cfg.Logger = slog.New(slog.DiscardHandler)
	b := broker.New(cfg)
	require.NoError(t, b.Start(ctx))
	return b, st
}

// submitBG submits a background job and waits for its acknowledgement.
func submitBG(t *testing.T, b *broker.Broker, c *broker.Session, fn, payload string) uint64 {
	t.Helper()
	return submitAcked(t, b, c, broker.SubmitParams{Function: []byte(fn), Payload: []byte(payload), Background: true})
}

// submitAcked submits p and waits for its acknowledgement.
func submitAcked(t *testing.T, b *broker.Broker, c *broker.Session, p broker.SubmitParams) uint64 {
	t.Helper()
	type res struct {
		seq uint64
		err error
	}
	ch := make(chan res, 1)
	b.Submit(c, p, func(seq uint64, _ bool, err error) { ch <- res{seq, err} })
	select {
	case r := <-ch:
		require.NoError(t, r.err)
		return r.seq
	case <-time.After(time.Minute):
		t.Fatal("submit not acknowledged")
		return 0
	}
}

// waitStored polls until job seq's record is in the store.
func waitStored(t *testing.T, st *pebble.Store, seq uint64) {
	t.Helper()
	waitRecord(t, st, seq, true)
}

// waitForgotten polls until job seq's record is gone from the store.
func waitForgotten(t *testing.T, st *pebble.Store, seq uint64) {
	t.Helper()
	waitRecord(t, st, seq, false)
}

// waitRecord polls until job seq's record is in the store (stored) or
// not found in it (!stored); any other error fails the test.
func waitRecord(t *testing.T, st *pebble.Store, seq uint64, stored bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		_, err := st.Record(context.Background(), seq)
		if err != nil && !stored {
			require.ErrorIs(t, err, store.ErrNotFound)
			return
		}
		if err == nil && stored {
			return
		}
		if stored {
			require.True(t, time.Now().Before(deadline), "record %d never reached the store", seq)
		} else {
			require.True(t, time.Now().Before(deadline), "forgotten record %d still stored", seq)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// The record of a completed background job is written with the removal of
// the job: after a power cut (only synced data survives) the restarted
// broker answers the record from disk and does not run the job again.
func TestRecordSurvivesCrash(t *testing.T) {
	t.Parallel()
	fs := vfs.NewCrashableMem()
	b, st := recordBroker(t, fs, broker.Config{})
	c := b.NewSession("c", dropEvents{})
	w := b.NewSession("w", dropEvents{})
	b.CanDo(w, []byte("f"), 0)
	seq := submitBG(t, b, c, "f", "payload")
	a, ok := b.Grab(w)
	require.True(t, ok)
	require.Equal(t, seq, a.Seq)
	require.NoError(t, b.Finish(w, seq, broker.Complete, []byte("the result")))
	waitStored(t, st, seq)
	// The memory copy goes once the record is written: the broker's
	// answer now comes from the store.
	rec, ok := b.Job(context.Background(), seq)
	require.True(t, ok)
	require.Equal(t, broker.FinalComplete, rec.State)

	crashed := fs.CrashClone(vfs.CrashCloneCfg{})
	b.Stop()
	require.NoError(t, st.Close())

	b2, st2 := recordBroker(t, crashed, broker.Config{})
	defer st2.Close()
	defer b2.Stop()
	require.Equal(t, 0, b2.JobCount(), "the completed job must not be queued again")
	rec, ok = b2.Job(context.Background(), seq)
	require.True(t, ok, "the record is on disk")
	require.True(t, rec.Final)
	require.Equal(t, broker.FinalComplete, rec.State)
	require.Equal(t, "f", rec.Function)
	require.Equal(t, []byte("the result"), rec.Result)
	require.Equal(t, []byte("payload"), rec.PayloadPreview)
	require.True(t, rec.Background)
	page, err := b2.ListJobs(context.Background(), broker.JobQuery{Function: "f"})
	require.NoError(t, err)
	require.Len(t, page.Jobs, 1)
	require.Equal(t, seq, page.Jobs[0].Seq)
	require.Equal(t, map[string]int{broker.FinalComplete: 1}, b2.CountJobs(context.Background())[0].Ended)

	// An operator's delete forgets it in the store at once.
	require.True(t, b2.ForgetRecord(context.Background(), seq))
	_, ok = b2.Job(context.Background(), seq)
	require.False(t, ok)
	require.False(t, b2.ForgetRecord(context.Background(), seq))
}

// Listing pages through stored records newest first with cursors, by
// function and state, and expiry by age and count forgets them in the
// store.
func TestRecordsPagingAndExpiry(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st, err := pebble.Open(ctx, "data", pebble.Options{FS: vfs.NewMem(), Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	defer st.Close()
	const n = 250
	var recs []store.Record
	for i := range n {
		state := "complete"
		if i%5 == 0 {
			state = "failed"
		}
		fn := "a"
		if i%2 == 1 {
			fn = "b"
		}
		recs = append(recs, store.Record{Seq: uint64(i + 1), Function: fn, State: state, Finished: int64(1000 + i),
			Data: []byte(fmt.Sprintf(`{"n":%d}`, i))})
	}
	require.NoError(t, st.EndJobs(ctx, nil, recs, nil))

	// Every function, pages of 40, newest first, each record once.
	var seen []uint64
	var after store.RecordPos
	for range n {
		page, err := st.Records(ctx, store.RecordQuery{After: after, Limit: 40})
		require.NoError(t, err)
		if len(page) == 0 {
			break
		}
		for _, r := range page {
			seen = append(seen, r.Seq)
		}
		last := page[len(page)-1]
		after = store.RecordPos{Finished: last.Finished, Seq: last.Seq}
	}
	require.Len(t, seen, n)
	for i, s := range seen {
		require.Equal(t, uint64(n-i), s)
	}
	failed, err := st.Records(ctx, store.RecordQuery{Function: "a", State: "failed", Limit: 1000})
	require.NoError(t, err)
	require.Len(t, failed, 25) // i%10 == 0
	got, err := st.Record(ctx, 7)
	require.NoError(t, err)
	require.Equal(t, "a", got.Function)
	require.Equal(t, `{"n":6}`, string(got.Data))

	counts, err := st.RecordCounts(ctx)
	require.NoError(t, err)
	require.Equal(t, map[string]map[string]int{"a": {"complete": 100, "failed": 25}, "b": {"complete": 100, "failed": 25}}, counts)

	// a keeps the 10 newest; b those that ended at 1000+200 or later.
	forgot, err := st.ExpireRecords(ctx, 1300, func(fn string) (time.Duration, int) {
		if fn == "a" {
			return time.Hour, 10
		}
		return 100, 1 << 20
	})
	require.NoError(t, err)
	require.Equal(t, 115+100, forgot)
	left, err := st.Records(ctx, store.RecordQuery{Limit: 1000})
	require.NoError(t, err)
	require.Len(t, left, 35)
	_, err = st.Record(ctx, 1)
	require.ErrorIs(t, err, store.ErrNotFound)
	require.NoError(t, st.EndJobs(ctx, nil, nil, []uint64{250}))
	_, err = st.Record(ctx, 250)
	require.ErrorIs(t, err, store.ErrNotFound)
	counts, err = st.RecordCounts(ctx)
	require.NoError(t, err)
	require.Equal(t, map[string]map[string]int{"a": {"complete": 8, "failed": 2}, "b": {"complete": 19, "failed": 5}}, counts)
}

// Records written in blocks, some forgotten from the middle or the start
// of their block and some expired by count in the middle of one, read the
// same after a restart, when the index is built again from disk.
func TestRecordsBlocksAfterRestart(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	fs := vfs.NewMem()
	open := func() *pebble.Store {
		st, err := pebble.Open(ctx, "data", pebble.Options{FS: fs, Logger: slog.New(slog.DiscardHandler)})
		require.NoError(t, err)
		return st
	}
	st := open()
	// Three writes of 10 records each (one block each), the Seqs of each
	// write interleaved with the others' and ending out of Seq order.
	seq := uint64(0)
	for w := range 3 {
		var recs []store.Record
		for i := range 10 {
			seq = uint64(3*i + w + 1)
			recs = append(recs, store.Record{Seq: seq, Function: "f", State: []string{"complete", "failed"}[i%2],
				Finished: int64(100*w + 10 - i), Data: []byte(fmt.Sprintf("data %d", seq))})
		}
		require.NoError(t, st.EndJobs(ctx, nil, recs, nil))
	}
	// Forget the smallest Seq of the first block and one in the middle of
	// the second.
	require.NoError(t, st.EndJobs(ctx, nil, nil, []uint64{1, 14}))
	// Keep the 20 newest: the oldest 8 left go, cutting the first block.
	n, err := st.ExpireRecords(ctx, 1000, func(string) (time.Duration, int) { return time.Hour, 20 })
	require.NoError(t, err)
	require.Equal(t, 8, n)

	list := func(st *pebble.Store) (all []store.Record, byState map[string]int, pages [][]uint64) {
		var after store.RecordPos
		for {
			page, err := st.Records(ctx, store.RecordQuery{Function: "f", After: after, Limit: 7})
			require.NoError(t, err)
			if len(page) == 0 {
				break
			}
			var seqs []uint64
			for _, r := range page {
				seqs = append(seqs, r.Seq)
				got, err := st.Record(ctx, r.Seq)
				require.NoError(t, err)
				require.Equal(t, r, got)
				require.Equal(t, fmt.Sprintf("data %d", r.Seq), string(r.Data))
			}
			pages = append(pages, seqs)
			all = append(all, page...)
			after = store.RecordPos{Finished: page[len(page)-1].Finished, Seq: page[len(page)-1].Seq}
		}
		counts, err := st.RecordCounts(ctx)
		require.NoError(t, err)
		return all, counts["f"], pages
	}
	before, counts, pages := list(st)
	require.Len(t, before, 20)
	for i := 1; i < len(before); i++ {
		require.True(t, store.RecordPos{Finished: before[i].Finished, Seq: before[i].Seq}.Before(
			store.RecordPos{Finished: before[i-1].Finished, Seq: before[i-1].Seq}), "newest first")
	}
	require.Equal(t, 20, counts["complete"]+counts["failed"])
	require.NoError(t, st.Close())

	st = open()
	defer st.Close()
	after, counts2, pages2 := list(st)
	require.Equal(t, before, after)
	require.Equal(t, counts, counts2)
	require.Equal(t, pages, pages2)
	_, err = st.Record(ctx, 14)
	require.ErrorIs(t, err, store.ErrNotFound)
}

// A dead letter retried under its handle lives again and ends again: its
// first record is forgotten before the second is written, so the store
// keeps one record of the job, also after a restart.
func TestRecordOfRetriedDeadLetterReplaced(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	fs := vfs.NewMem()
	var p broker.Policy
	require.NoError(t, p.Set("max_attempts", "1"))
	b, st := recordBroker(t, fs, broker.Config{DefaultPolicy: p})
	c := b.NewSession("c", dropEvents{})
	w := b.NewSession("w", dropEvents{})
	b.CanDo(w, []byte("f"), 0)
	seq := submitBG(t, b, c, "f", "payload")
	run := func(o broker.Outcome) {
		t.Helper()
		a, ok := b.Grab(w)
		require.True(t, ok)
		require.Equal(t, seq, a.Seq)
		require.NoError(t, b.Finish(w, seq, o, nil))
	}
	stored := func(state string) {
		t.Helper()
		deadline := time.Now().Add(time.Minute)
		for {
			if r, err := st.Record(ctx, seq); err == nil && r.State == state {
				return
			}
			require.True(t, time.Now().Before(deadline), "no %s record of job %d in the store", state, seq)
			time.Sleep(5 * time.Millisecond)
		}
	}
	run(broker.Fail)
	stored(broker.FinalDead)
	require.NoError(t, b.RetryDeadLetter(ctx, []byte(b.Handle(seq))))
	run(broker.Complete)
	stored(broker.FinalComplete)
	counts, err := st.RecordCounts(ctx)
	require.NoError(t, err)
	require.Equal(t, map[string]map[string]int{"f": {broker.FinalComplete: 1}}, counts)

	b.Stop()
	require.NoError(t, st.Close())
	st, err = pebble.Open(ctx, "data", pebble.Options{FS: fs, Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	defer st.Close()
	counts, err = st.RecordCounts(ctx)
	require.NoError(t, err)
	require.Equal(t, map[string]map[string]int{"f": {broker.FinalComplete: 1}}, counts)
}

// roundCounter counts the store writes that carry job records.
type roundCounter struct {
	*pebble.Store
	rounds atomic.Int64
}

func (c *roundCounter) EndJobs(ctx context.Context, dels []uint64, recs []store.Record, forget []uint64) error {
	if len(recs) > 0 {
		c.rounds.Add(1)
	}
	return c.Store.EndJobs(ctx, dels, recs, forget)
}

// Write counts a round that saves jobs and writes records in one write.
func (c *roundCounter) Write(ctx context.Context, w store.Write) error {
	if len(w.Records) > 0 {
		c.rounds.Add(1)
	}
	return c.Store.Write(ctx, w)
}

// pacedBroker runs a broker with RecordPace pace on a Pebble store in
// memory whose rounds with records are counted, with a client and a
// worker of "f".
func pacedBroker(t *testing.T, pace time.Duration) (*broker.Broker, *roundCounter, *broker.Session, *broker.Session) {
	t.Helper()
	ctx := context.Background()
	st, err := pebble.Open(ctx, "data", pebble.Options{FS: vfs.NewMem(), Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, st.Close()) })
	counted := &roundCounter{Store: st}
	b := broker.New(broker.Config{Store: counted, Logger: slog.New(slog.DiscardHandler), RecordPace: pace})
	require.NoError(t, b.Start(ctx))
	t.Cleanup(b.Stop)
	c := b.NewSession("c", dropEvents{})
	w := b.NewSession("w", dropEvents{})
	b.CanDo(w, []byte("f"), 0)
	return b, counted, c, w
}

// finishNext grabs the next job of w and completes it.
func finishNext(t *testing.T, b *broker.Broker, w *broker.Session) uint64 {
	t.Helper()
	a, ok := b.Grab(w)
	require.True(t, ok)
	require.NoError(t, b.Finish(w, a.Seq, broker.Complete, nil))
	return a.Seq
}

// Rounds that write only records and removals of ended jobs, which
// nobody waits for, begin at least RecordPace apart, however fast jobs
// end; every record still reaches the store.
func TestRecordRoundsPaced(t *testing.T) {
	t.Parallel()
	const jobs, pace = 200, 20 * time.Millisecond
	b, counted, c, w := pacedBroker(t, pace)
	seqs := make([]uint64, jobs)
	for i := range seqs {
		seqs[i] = submitBG(t, b, c, "f", "p")
	}
	began := time.Now()
	for range jobs {
		finishNext(t, b, w)
	}
	for _, seq := range seqs {
		waitStored(t, counted.Store, seq)
	}
	took := time.Since(began)
	rounds := counted.rounds.Load()
	require.LessOrEqual(t, rounds, 1+int64(took/pace), "%d rounds with records in %v", rounds, took)
}

// A write someone waits for is not held back by the pace: a submit's
// round goes at once and carries the records waiting then.
func TestRecordPaceYieldsToSubmits(t *testing.T) {
	t.Parallel()
	b, counted, c, w := pacedBroker(t, time.Hour)
	submitBG(t, b, c, "f", "first")
	submitBG(t, b, c, "f", "second")
	first := finishNext(t, b, w)
	waitStored(t, counted.Store, first) // nothing to pace after
	second := finishNext(t, b, w)       // paced: its record waits
	submitBG(t, b, c, "g", "urgent")    // acknowledged well within the hour
	_, err := counted.Record(context.Background(), second)
	require.NoError(t, err, "the submit's round wrote the waiting record")
	require.Equal(t, int64(2), counted.rounds.Load())
}

// Records forgotten while the committer writes them (it encodes them
// without the broker's lock) are gone from the store once the rounds are
// written, and every other record is there with its own data; under
// -race, this also shows that a forgotten record is not cleared while the
// committer reads it.
func TestRecordsForgottenWhileWritten(t *testing.T) {
	t.Parallel()
	const jobs = 400
	b, st := recordBroker(t, vfs.NewMem(), broker.Config{})
	defer func() {
		b.Stop()
		require.NoError(t, st.Close())
	}()
	c := b.NewSession("c", dropEvents{})
	w := b.NewSession("w", dropEvents{})
	b.CanDo(w, []byte("f"), 0)
	payloads := make(map[uint64]string, jobs)
	for i := range jobs {
		p := fmt.Sprintf("p%d", i)
		payloads[submitBG(t, b, c, "f", p)] = p
	}
	ended := make(chan uint64, jobs)
	forgot := make(chan []uint64, 1)
	go func() {
		var seqs []uint64
		for seq := range ended {
			if seq%2 == 0 && b.ForgetRecord(context.Background(), seq) {
				seqs = append(seqs, seq)
			}
		}
		forgot <- seqs
	}()
	var kept []uint64
	for range jobs {
		seq := finishNext(t, b, w)
		ended <- seq
		if seq%2 == 1 {
			kept = append(kept, seq)
		}
	}
	close(ended)
	gone := <-forgot
	require.NotEmpty(t, gone)
	for _, seq := range kept {
		waitStored(t, st, seq)
		s, ok := b.Job(context.Background(), seq)
		require.True(t, ok, "job %d", seq)
		require.Equal(t, broker.FinalComplete, s.State)
		require.Equal(t, seq, s.Seq)
		require.Equal(t, payloads[seq], string(s.PayloadPreview), "job %d", seq)
	}
	for _, seq := range gone {
		waitForgotten(t, st, seq)
	}
}

// A write of records and removals waits for no fsync, but what a lookup,
// listing or count answers is durable: a power cut (only synced data
// survives) after a record was read keeps the record and not its job;
// a power cut before any read leaves the job or its record, never both
// and never neither.
func TestRecordDurableOnceRead(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	quiet := slog.New(slog.DiscardHandler)
	reads := map[string]func(*pebble.Store) error{
		"lookup": func(st *pebble.Store) error { _, err := st.Record(ctx, 1); return err },
		"listing": func(st *pebble.Store) error {
			_, err := st.Records(ctx, store.RecordQuery{Function: "f", Limit: 10})
			return err
		},
		"counts": func(st *pebble.Store) error { _, err := st.RecordCounts(ctx); return err },
	}
	for name, read := range reads {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			fs := vfs.NewCrashableMem()
			st, err := pebble.Open(ctx, "data", pebble.Options{FS: fs, Logger: quiet})
			require.NoError(t, err)
			defer st.Close()
			require.NoError(t, st.Save(ctx, []store.Job{{Seq: 1, Handle: "H:t:1", Function: "f", Payload: []byte("p")}}))
			rec := store.Record{Seq: 1, Function: "f", State: "complete", Finished: 10, Data: []byte("record of 1")}
			require.NoError(t, st.EndJobs(ctx, []uint64{1}, []store.Record{rec}, nil))

			jobAndRecord := func(fs vfs.FS) (job, record bool) {
				st, err := pebble.Open(ctx, "data", pebble.Options{FS: fs, Logger: quiet})
				require.NoError(t, err)
				defer st.Close()
				require.NoError(t, st.Load(ctx, func(j store.Job) error { job = job || j.Seq == 1; return nil }))
				got, err := st.Record(ctx, 1)
				if err == nil {
					require.Equal(t, rec, got)
					record = true
				} else {
					require.ErrorIs(t, err, store.ErrNotFound)
				}
				return job, record
			}
			job, record := jobAndRecord(fs.CrashClone(vfs.CrashCloneCfg{}))
			require.NotEqual(t, job, record, "before a read: the job or its record (job %v, record %v)", job, record)

			require.NoError(t, read(st))
			job, record = jobAndRecord(fs.CrashClone(vfs.CrashCloneCfg{}))
			require.False(t, job, "the job ended before its record was read")
			require.True(t, record, "a record that was read survives a power cut")
		})
	}
}
