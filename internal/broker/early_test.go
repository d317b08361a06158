package broker

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/internal/store"
)

// Dispatch before durable (commitLoop): with a local store a new
// background job is runnable at once; only its submitters' answers wait for
// the store write.

// answers collects the answers of one submit; each must come exactly once.
type answers struct {
	mu  sync.Mutex
	got []result
	ch  chan struct{} // closed at the first answer
}

func newAnswers() *answers { return &answers{ch: make(chan struct{})} }

func (a *answers) done(seq uint64, created bool, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.got = append(a.got, result{seq, created, err})
	if len(a.got) == 1 {
		close(a.ch)
	}
}

// answered reports whether an answer came.
func (a *answers) answered() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.got) > 0
}

// waitAccepted waits for the answer and checks that it accepted job seq.
func (a *answers) waitAccepted(t *testing.T, seq uint64) result {
	t.Helper()
	r := a.wait(t)
	require.NoError(t, r.err)
	require.Equal(t, seq, r.seq)
	return r
}

// wait returns the answer, failing unless it came exactly once.
func (a *answers) wait(t *testing.T) result {
	t.Helper()
	select {
	case <-a.ch:
	case <-time.After(30 * time.Second):
		t.Fatal("submit was never answered")
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	require.Len(t, a.got, 1, "a submit is answered exactly once")
	return a.got[0]
}

// earlyBundle is a broker on a gated mapStore: Save signals entered and
// then blocks until the test closes gate.
type earlyBundle struct {
	b       *Broker
	st      *mapStore
	gate    chan struct{}
	entered chan struct{}
	once    sync.Once
}

// setupEarly starts a broker on a gated mapStore whose writes fail with
// failErr (nil: they succeed).
func setupEarly(t *testing.T, failErr error) *earlyBundle {
	t.Helper()
	eb := newEarlyBundle()
	eb.st.failErr = failErr
	eb.start(t, Config{})
	return eb
}

// newEarlyBundle returns a bundle with its gated store and no broker yet.
func newEarlyBundle() *earlyBundle {
	st := newMapStore()
	eb := &earlyBundle{st: st, gate: make(chan struct{}), entered: make(chan struct{}, 1)}
	st.gate, st.entered = eb.gate, eb.entered
	return eb
}

// start starts the bundle's broker with cfg at a fixed time, on the
// bundle's store unless cfg.Store is set (to a store that writes through
// it), and stops it at cleanup.
func (eb *earlyBundle) start(t *testing.T, cfg Config) {
	t.Helper()
	if cfg.Store == nil {
		cfg.Store = eb.st
	}
	cfg.Clock = newTestClock()
	eb.b = New(cfg)
	require.NoError(t, eb.b.Start(context.Background()))
	t.Cleanup(eb.b.Stop)
	// Registered after the broker's Stop, so it runs before it (cleanups
	// run last first): a failed test must not leave Stop waiting for a
	// committer blocked in its write.
	t.Cleanup(eb.release)
}

func (eb *earlyBundle) release() { eb.once.Do(func() { close(eb.gate) }) }

// waitWriting waits until the committer is inside a Save.
func (eb *earlyBundle) waitWriting(t *testing.T) {
	t.Helper()
	select {
	case <-eb.entered:
	case <-time.After(30 * time.Second):
		t.Fatal("the committer never started a write")
	}
}

// holdCommitter submits a job of function "blocker" and waits until the
// committer is inside its write, so that the saves of jobs submitted next
// are not taken until release. It returns the blocker's answers.
func (eb *earlyBundle) holdCommitter(t *testing.T, s *Session) *answers {
	t.Helper()
	first := newAnswers()
	eb.b.Submit(s, bg("blocker", "", "a", Normal), first.done)
	eb.waitWriting(t)
	return first
}

// written returns how often job seq was saved and whether it is stored.
func (eb *earlyBundle) written(seq uint64) (int, bool) {
	eb.st.mu.Lock()
	defer eb.st.mu.Unlock()
	_, ok := eb.st.get(seq)
	return eb.st.written[seq], ok
}

func grabOne(t *testing.T, b *Broker, fn string) (*Session, Assignment) {
	t.Helper()
	w := b.NewSession("worker", &recorder{})
	b.CanDo(w, []byte(fn), 0)
	a, ok := b.Grab(w)
	require.True(t, ok, "the job is runnable before its write is done")
	return w, a
}

// coalesceWhileWriting submits a background job of "f" from creator,
// waits until the committer is writing it, has a worker take it, and then
// submits the same job again from coalescer, so that the second submit
// coalesces onto a running job whose write is not done. It returns the
// answers of both submits, the worker and the job it holds.
func (eb *earlyBundle) coalesceWhileWriting(t *testing.T, creator, coalescer *Session) (created, coalesced *answers, w *Session, a Assignment) {
	t.Helper()
	created, coalesced = newAnswers(), newAnswers()
	eb.b.Submit(creator, bg("f", "u", "p", Normal), created.done)
	eb.waitWriting(t)
	w, a = grabOne(t, eb.b, "f")
	eb.b.Submit(coalescer, bg("f", "u", "p", Normal), coalesced.done)
	return created, coalesced, w, a
}

func TestEarlyJobCompletedBeforeCommitIsNeverWritten(t *testing.T) {
	t.Parallel()
	eb := setupEarly(t, nil)
	b := eb.b
	s := b.NewSession("client", &recorder{})
	// A first job holds the committer inside its write, so the second
	// one's save is not taken yet when it completes.
	first := eb.holdCommitter(t, s)
	second := newAnswers()
	b.Submit(s, bg("f", "", "b", Normal), second.done)

	w, a := grabOne(t, b, "f")
	require.False(t, second.answered(), "JOB_CREATED waits for the store, not for the start")
	require.NoError(t, b.Finish(w, a.Seq, Complete, nil))
	r := second.wait(t)
	require.NoError(t, r.err, "a job that ended has nothing left to lose: it is accepted")
	require.Equal(t, a.Seq, r.seq)
	require.True(t, r.created)
	require.False(t, first.answered(), "the blocker's write is still under way")

	eb.release()
	require.NoError(t, first.wait(t).err)
	b.Stop() // flushes the committer
	n, stored := eb.written(a.Seq)
	require.Zero(t, n, "the save of a job that ended before it was taken is dropped")
	require.False(t, stored)
	require.Equal(t, 1, eb.st.Len(), "only the blocker is stored")
	require.Equal(t, 1, b.JobCount())
}

func TestEarlyJobCompletedDuringItsWriteIsDeletedAfter(t *testing.T) {
	t.Parallel()
	eb := setupEarly(t, nil)
	b := eb.b
	s := b.NewSession("client", &recorder{})
	ans := newAnswers()
	b.Submit(s, bg("f", "", "b", Normal), ans.done)
	eb.waitWriting(t) // its own write is under way

	w, a := grabOne(t, b, "f")
	require.NoError(t, b.Finish(w, a.Seq, Complete, nil))
	ans.waitAccepted(t, a.Seq)

	eb.release()
	b.Stop()
	n, stored := eb.written(a.Seq)
	require.Equal(t, 1, n, "the write under way completes")
	require.False(t, stored, "and the delete queued behind it removes the job")
	require.Zero(t, b.JobCount())
}

func TestEarlyJobCancelledBeforeCommit(t *testing.T) {
	t.Parallel()
	for _, running := range []bool{false, true} {
		eb := setupEarly(t, nil)
		b := eb.b
		s := b.NewSession("client", &recorder{})
		eb.holdCommitter(t, s)
		ans := newAnswers()
		b.Submit(s, bg("f", "u", "b", Normal), ans.done)
		var seq uint64
		var w *Session
		if running {
			var a Assignment
			w, a = grabOne(t, b, "f")
			seq = a.Seq
		} else {
			seq = b.Jobs(0)[1].Seq
		}
		// The cancel answers once its removal is durable, after the
		// committer is released; the submitter is answered at once.
		cancelled := make(chan error, 1)
		go func() { cancelled <- b.CancelJob(context.Background(), []byte(b.Handle(seq))) }()
		r := ans.wait(t)
		require.NoError(t, r.err, "running=%v: a cancelled job was accepted, then cancelled", running)
		require.Equal(t, seq, r.seq)
		if running {
			require.ErrorIs(t, b.Finish(w, seq, Complete, nil), ErrJobCancelled, "the worker learns the job was cancelled")
		}
		again := newAnswers()
		b.Submit(s, bg("f", "u", "c", Normal), again.done)
		require.NotEqual(t, seq, b.Jobs(0)[len(b.Jobs(0))-1].Seq, "running=%v: the unique is free again", running)

		eb.release()
		require.NoError(t, again.wait(t).err)
		require.NoError(t, <-cancelled)
		b.Stop()
		n, stored := eb.written(seq)
		require.Zero(t, n, "running=%v: a job cancelled before its save was taken is never written", running)
		require.False(t, stored)
		require.Equal(t, 2, eb.st.Len(), "running=%v: the blocker and the new job", running)
	}
}

func TestEarlyJobStoreFailureAfterDispatch(t *testing.T) {
	t.Parallel()
	boom := errors.New("fsync: input/output error")
	eb := setupEarly(t, boom)
	b := eb.b
	s := b.NewSession("client", &recorder{})
	runningAns, queuedAns := newAnswers(), newAnswers()
	b.Submit(s, bg("f", "r", "run", Normal), runningAns.done)
	b.Submit(s, bg("g", "", "wait", Normal), queuedAns.done)
	eb.waitWriting(t)

	w, a := grabOne(t, b, "f")
	// A foreground client attaching is answered at once: its events may
	// come before the write ends.
	fgRec := &recorder{}
	fgSess := b.NewSession("fg", fgRec)
	fgAns := newAnswers()
	b.Submit(fgSess, fg("f", "r", "run"), fgAns.done)
	r := fgAns.waitAccepted(t, a.Seq)
	require.False(t, r.created)
	require.NoError(t, b.WorkStatus(w, a.Seq, 1, 2))
	require.Equal(t, []EventKind{EventStatus}, eventKinds(fgRec))

	eb.release()
	var se *StoreError
	rr := runningAns.wait(t)
	require.ErrorAs(t, rr.err, &se, "a refused job is never acknowledged, even though it started")
	require.ErrorIs(t, rr.err, boom)
	require.ErrorAs(t, queuedAns.wait(t).err, &se)
	require.Equal(t, []EventKind{EventStatus, EventFail}, eventKinds(fgRec), "the attached client learns the job failed")

	// Both are gone; the running one's worker is told so when it reports,
	// and nothing is left behind.
	require.Zero(t, b.JobCount())
	require.ErrorIs(t, b.Finish(w, a.Seq, Complete, []byte("late")), ErrJobCancelled)
	require.Equal(t, []EventKind{EventStatus, EventFail}, eventKinds(fgRec), "no result after WORK_FAIL")
	require.Zero(t, b.JobCount())
	st := b.Status(context.Background())
	for _, f := range st {
		require.Zero(t, f.Total, f.Name)
		require.Zero(t, f.Running, f.Name)
	}
	again := newAnswers()
	b.Submit(s, bg("f", "", "x", Normal), again.done)
	require.ErrorAs(t, again.wait(t).err, &se, "background submits are refused after a failed write")
}

func TestEarlyJobCoalescedWaiter(t *testing.T) {
	t.Parallel()
	eb := setupEarly(t, nil)
	b := eb.b
	s1 := b.NewSession("c1", &recorder{})
	s2 := b.NewSession("c2", &recorder{})
	creator, coalesced, w, a := eb.coalesceWhileWriting(t, s1, s2)
	require.False(t, coalesced.answered(), "a background submit attaching to a job being written waits for the write")
	require.Equal(t, "running", b.Jobs(0)[0].State)

	eb.release()
	r1, r2 := creator.wait(t), coalesced.wait(t)
	require.NoError(t, r1.err)
	require.NoError(t, r2.err)
	require.Equal(t, a.Seq, r1.seq)
	require.Equal(t, a.Seq, r2.seq)
	require.True(t, r1.created)
	require.False(t, r2.created)
	require.NoError(t, b.Finish(w, a.Seq, Complete, nil))
	b.Stop()
	require.Zero(t, eb.st.Len())
}

func TestEarlyJobCoalescedWaiterAnsweredWhenItEnds(t *testing.T) {
	t.Parallel()
	eb := setupEarly(t, nil)
	b := eb.b
	s := b.NewSession("c", &recorder{})
	creator, coalesced, w, a := eb.coalesceWhileWriting(t, s, s)
	require.NoError(t, b.Finish(w, a.Seq, Complete, nil))
	r1, r2 := creator.wait(t), coalesced.wait(t)
	require.True(t, r1.created)
	require.False(t, r2.created)
	require.Equal(t, r1.seq, r2.seq)
	eb.release()
	b.Stop()
	require.Zero(t, eb.st.Len())
}

// TestEarlyJobRetriedBeforeCommitIsWrittenAsItIs: a job that failed and
// waits for a retry before its save was taken is written in retry-wait
// (the committer takes the job as it is; no separate record is queued).
func TestEarlyJobRetriedBeforeCommitIsWrittenAsItIs(t *testing.T) {
	t.Parallel()
	eb := newEarlyBundle()
	eb.start(t, Config{Policies: map[string]Policy{"f": {MaxAttempts: 3, Backoff: Backoff{Initial: time.Minute}}}})
	b, st := eb.b, eb.st
	s := b.NewSession("c", &recorder{})
	eb.holdCommitter(t, s)
	ans := newAnswers()
	b.Submit(s, bg("f", "", "b", Normal), ans.done)
	w, a := grabOne(t, b, "f")
	require.NoError(t, b.Finish(w, a.Seq, Exception, []byte("boom")))
	require.False(t, ans.answered(), "a job waiting for a retry has not ended")

	eb.release()
	require.NoError(t, ans.wait(t).err)
	b.Stop()
	st.mu.Lock()
	defer st.mu.Unlock()
	rec, ok := st.get(a.Seq)
	require.True(t, ok)
	require.Equal(t, store.StateRetryWait, rec.State)
	require.Equal(t, uint32(1), rec.Attempts)
	require.Equal(t, "boom", rec.LastError)
	require.Equal(t, 1, st.written[a.Seq], "one write, not a save and a retry record")
}

func TestEarlySubmitWatchedSeesEventsBeforeCommit(t *testing.T) {
	t.Parallel()
	eb := setupEarly(t, nil)
	b := eb.b
	watcher := &recorder{}
	ws := b.NewSession("http", watcher)
	var watched []uint64
	ans := newAnswers()
	b.SubmitWatched(ws, bg("f", "", "p", Normal), func(seq uint64, created bool) {
		require.True(t, created)
		watched = append(watched, seq)
	}, ans.done)
	eb.waitWriting(t)
	w, a := grabOne(t, b, "f")
	require.Equal(t, []uint64{a.Seq}, watched, "the watch is in place before the job is handed out")
	require.NoError(t, b.WorkData(w, a.Seq, []byte("d"), false))
	require.NoError(t, b.Finish(w, a.Seq, Complete, []byte("ok")))
	require.Equal(t, []EventKind{EventData, EventComplete}, eventKinds(watcher))
	r := ans.wait(t)
	require.NoError(t, r.err)
	b.mu.Lock()
	require.Empty(t, b.watchers, "no watch is left behind")
	b.mu.Unlock()
	eb.release()
}

// readerMapStore is a mapStore that can read payloads back (the memory
// store's ReadPayload), which turns payload tiering on.
type readerMapStore struct{ *mapStore }

func TestEarlyJobWithEmptyPayloadRunsBeforeCommitWithTiering(t *testing.T) {
	t.Parallel()
	eb := newEarlyBundle()
	// A budget of -1 keeps no payload in memory once stored: a stored
	// job's nil payload means "on disk". A new job's nil payload is just
	// empty (a cron schedule without a payload, say) and not on disk yet.
	eb.start(t, Config{Store: readerMapStore{eb.st}, MemoryBudget: -1})
	b := eb.b
	s := b.NewSession("client", &recorder{})
	eb.holdCommitter(t, s)

	ans := newAnswers()
	b.Submit(s, SubmitParams{Function: []byte("f"), Background: true}, ans.done)
	w, a := grabOne(t, b, "f")
	require.Empty(t, a.Payload)
	require.NoError(t, b.Finish(w, a.Seq, Complete, nil), "the job runs; it is not failed for want of a payload on disk")
	ans.waitAccepted(t, a.Seq)

	eb.release()
	b.Stop()
	require.Equal(t, 1, eb.st.Len(), "only the blocker is stored")
}

// A job that ends into a state the store keeps (a retained result, a dead
// letter) before its first write is done has something left to lose: its
// submitter is answered only once a record of it is stored, so that a
// crash after JOB_CREATED neither loses the result or dead letter nor the
// job itself.
func TestEarlyJobKeptAfterItEndsIsAnsweredOnceStored(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		pol     Policy
		outcome Outcome
		state   store.JobState
	}{
		{"retained result", Policy{ResultRetention: time.Hour}, Complete, store.StateDone},
		{"dead letter", Policy{MaxAttempts: 1}, Fail, store.StateDead},
	}
	for _, c := range cases {
		for _, writing := range []bool{false, true} {
			eb := newEarlyBundle()
			eb.start(t, Config{Policies: policies("f", c.pol)})
			b, st := eb.b, eb.st
			s := b.NewSession("client", &recorder{})
			if !writing {
				// A blocker holds the committer, so the job's write is
				// not taken yet when it ends.
				b.Submit(s, bg("blocker", "", "a", Normal), newAnswers().done)
			}
			ans := newAnswers()
			b.Submit(s, bg("f", "", "p", Normal), ans.done)
			eb.waitWriting(t)
			w, a := grabOne(t, b, "f")
			require.NoError(t, b.Finish(w, a.Seq, c.outcome, []byte("r")))
			require.False(t, ans.answered(), "%s (write under way: %v): answered before anything of the job is stored", c.name, writing)

			eb.release()
			ans.waitAccepted(t, a.Seq)
			b.Stop()
			st.mu.Lock()
			rec, ok := st.get(a.Seq)
			st.mu.Unlock()
			require.True(t, ok, "%s (write under way: %v) is stored", c.name, writing)
			require.Equal(t, c.state, rec.State)
		}
	}
}
