package broker

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// eventKinds returns the kinds of the events r received so far.
func eventKinds(r *recorder) []EventKind {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []EventKind
	for _, ev := range r.events {
		out = append(out, ev.Kind)
	}
	return out
}

func submitBackground(t *testing.T, b *Broker, s *Session, fn, payload string) uint64 {
	t.Helper()
	var got uint64
	b.Submit(s, SubmitParams{Function: []byte(fn), Payload: []byte(payload), Background: true, Priority: Normal},
		func(seq uint64, created bool, err error) {
			require.NoError(t, err)
			require.True(t, created)
			got = seq
		})
	require.NotZero(t, got)
	return got
}

func TestWatchBackgroundJob(t *testing.T) {
	t.Parallel()
	b := New(Config{})
	client := b.NewSession("client", &recorder{})
	watcher := &recorder{}
	ws := b.NewSession("watcher", watcher)
	worker := b.NewSession("worker", &recorder{})

	seq := submitBackground(t, b, client, "resize", "img")
	snap, ok := b.Watch(ws, seq)
	require.True(t, ok)
	require.Equal(t, "queued", snap.State)
	require.True(t, snap.Background)
	require.Equal(t, "resize", snap.Function)

	b.CanDo(worker, []byte("resize"), 0)
	a, ok := b.Grab(worker)
	require.True(t, ok)
	require.Equal(t, seq, a.Seq)
	snap, ok = b.Job(context.Background(), seq)
	require.True(t, ok)
	require.Equal(t, "running", snap.State)

	require.NoError(t, b.WorkStatus(worker, seq, 1, 2))
	require.NoError(t, b.WorkData(worker, seq, []byte("half"), false))
	require.NoError(t, b.WorkData(worker, seq, []byte("careful"), true))
	snap, _ = b.Job(context.Background(), seq)
	require.Equal(t, uint32(1), snap.Numerator)
	require.Equal(t, uint32(2), snap.Denominator)
	require.NoError(t, b.Finish(worker, seq, Complete, []byte("done")))

	require.Equal(t, []EventKind{EventStatus, EventData, EventWarning, EventComplete}, eventKinds(watcher))
	require.Equal(t, []byte("done"), watcher.events[3].Data)
	snap, ok = b.Job(context.Background(), seq)
	require.True(t, ok, "a finished job has its final record")
	require.True(t, snap.Final)
	require.Equal(t, FinalComplete, snap.State)
	require.Empty(t, b.watchers, "the final event ends the watch")
	require.Empty(t, ws.watching)
}

func TestWatchEndsWithFailWhenJobIsCancelled(t *testing.T) {
	t.Parallel()
	for _, running := range []bool{false, true} {
		b := New(Config{})
		client := b.NewSession("client", &recorder{})
		watcher := &recorder{}
		ws := b.NewSession("watcher", watcher)
		seq := submitBackground(t, b, client, "f", "x")
		_, ok := b.Watch(ws, seq)
		require.True(t, ok)
		if running {
			w := b.NewSession("worker", &recorder{})
			b.CanDo(w, []byte("f"), 0)
			_, ok := b.Grab(w)
			require.True(t, ok)
		}
		require.NoError(t, b.CancelJob(context.Background(), []byte(b.Handle(seq))))
		require.Equal(t, []EventKind{EventFail}, eventKinds(watcher), "running=%v", running)
	}
}

func TestSubmitWatchedSeesFastWorker(t *testing.T) {
	t.Parallel()
	b := New(Config{})
	worker := b.NewSession("worker", &recorder{})
	b.CanDo(worker, []byte("f"), 0)
	watcher := &recorder{}
	ws := b.NewSession("http", watcher)
	var seq uint64
	b.SubmitWatched(ws, SubmitParams{Function: []byte("f"), Payload: []byte("p"), Background: true},
		func(uint64, bool) {}, func(s uint64, created bool, err error) {
			require.NoError(t, err)
			seq = s
		})
	a, ok := b.Grab(worker)
	require.True(t, ok)
	require.Equal(t, seq, a.Seq)
	require.NoError(t, b.Finish(worker, seq, Exception, []byte("boom")))
	require.Equal(t, []EventKind{EventException}, eventKinds(watcher), "watchers get exceptions without OPTION_REQ")
}

func TestWatchClosedSessionAndUnknownJob(t *testing.T) {
	t.Parallel()
	b := New(Config{})
	ws := b.NewSession("watcher", &recorder{})
	_, ok := b.Watch(ws, 42)
	require.False(t, ok)
	client := b.NewSession("client", &recorder{})
	seq := submitBackground(t, b, client, "f", "x")
	_, ok = b.Watch(ws, seq)
	require.True(t, ok)
	b.Unwatch(ws, seq)
	require.Empty(t, b.watchers)
	_, ok = b.Watch(ws, seq)
	require.True(t, ok)
	b.CloseSession(ws)
	require.Empty(t, b.watchers, "closing a session ends its watches")
	_, ok = b.Watch(ws, seq)
	require.False(t, ok)
}

func TestStatsCountsAndLatencies(t *testing.T) {
	t.Parallel()
	clock := newTestClock()
	b := New(Config{Clock: clock})
	client := b.NewSession("client", &recorder{})
	worker := b.NewSession("worker", &recorder{})
	b.CanDo(worker, []byte("f"), 0)

	ok1 := submitBackground(t, b, client, "f", "1")
	fail := submitBackground(t, b, client, "f", "2")
	retried := submitBackground(t, b, client, "f", "3")
	cancelled := submitBackground(t, b, client, "f", "4")
	require.NoError(t, b.CancelJob(context.Background(), []byte(b.Handle(cancelled))))

	clock.Add(2 * time.Second) // waited 2s
	a, _ := b.Grab(worker)
	require.Equal(t, ok1, a.Seq)
	clock.Add(30 * time.Millisecond) // ran 30ms
	require.NoError(t, b.Finish(worker, ok1, Complete, nil))
	a, _ = b.Grab(worker)
	require.Equal(t, fail, a.Seq)
	require.NoError(t, b.Finish(worker, fail, Fail, nil))
	a, _ = b.Grab(worker)
	require.Equal(t, retried, a.Seq)
	b.CloseSession(worker) // takes the job back: a retry

	st := b.Stats(context.Background())
	require.Len(t, st.Functions, 1)
	f := st.Functions[0]
	require.Equal(t, "f", f.Name)
	require.Equal(t, uint64(4), f.Submitted)
	require.Equal(t, uint64(1), f.Completed)
	require.Equal(t, uint64(1), f.Failed)
	require.Equal(t, uint64(1), f.Retried)
	require.Equal(t, uint64(1), f.Dropped)
	require.Equal(t, 1, f.Queued[Normal])
	require.Equal(t, uint64(3), f.Wait.Count)
	require.InDelta(t, 6.06, f.Wait.Sum, 1e-9) // 2 + 2.03 + 2.03
	require.Equal(t, uint64(2), f.Run.Count)
	// 30ms falls in the (0.025, 0.05] bucket.
	require.Equal(t, uint64(1), f.Run.Counts[4])

	ready, _ := b.Health()
	require.True(t, ready)
	b.Drain()
	ready, reason := b.Health()
	require.False(t, ready)
	require.Contains(t, reason, "draining")
}

// A watched job whose attempt fails but will run again gets EventRetry and
// stays watched; when it runs out of attempts the watch ends with its
// final event and it counts as dead.
func TestWatchRetriesAndDeath(t *testing.T) {
	t.Parallel()
	tb := setup(t, Config{DefaultPolicy: Policy{MaxAttempts: 2, Backoff: Backoff{Initial: time.Second, Max: time.Second}}})
	client, _ := tb.session()
	watcher := &recorder{}
	ws := tb.b.NewSession("watcher", watcher)
	worker, _ := tb.worker("f")
	seq := tb.submit(t, client, bg("f", "", "x", Normal)).seq
	_, ok := tb.b.Watch(ws, seq)
	require.True(t, ok)

	a := tb.grab(t, worker)
	require.NoError(t, tb.b.Finish(worker, a.Seq, Exception, []byte("first")))
	require.Equal(t, []EventKind{EventRetry}, eventKinds(watcher))
	require.Equal(t, []byte("first"), watcher.events[0].Data)
	snap, ok := tb.b.Job(context.Background(), seq)
	require.True(t, ok)
	require.Equal(t, "retry-wait", snap.State)
	require.Equal(t, uint32(1), snap.Attempts)
	require.Equal(t, "first", snap.LastError)

	tb.clock.Add(time.Second)
	tb.b.RunTimers()
	a = tb.grab(t, worker)
	require.NoError(t, tb.b.Finish(worker, a.Seq, Exception, []byte("second")))
	require.Equal(t, []EventKind{EventRetry, EventException}, eventKinds(watcher))
	require.Empty(t, ws.watching, "the final event ends the watch")
	snap, ok = tb.b.Job(context.Background(), seq)
	require.True(t, ok, "a dead letter still has a snapshot")
	require.Equal(t, "dead", snap.State)

	f := tb.b.Stats(context.Background()).Functions[0]
	require.Equal(t, uint64(1), f.Retried)
	require.Equal(t, uint64(1), f.Dead)
	require.Equal(t, uint64(2), f.Exceptions)
	require.Equal(t, uint64(0), f.Dropped)
	require.Equal(t, 1, f.DeadLetters)

	require.NoError(t, tb.b.PurgeDeadLetter(context.Background(), []byte(tb.b.Handle(seq))))
	require.ErrorIs(t, tb.b.PurgeDeadLetter(context.Background(), []byte(tb.b.Handle(seq))), ErrJobNotFound)
	require.Equal(t, 0, tb.b.Stats(context.Background()).Functions[0].DeadLetters)
}

// Every retry counts, whoever watches the job: policy retries after a
// WORK_FAIL or WORK_EXCEPTION and takebacks from a vanished worker of
// unwatched background jobs.
func TestRetriesCountedWithoutWatchers(t *testing.T) {
	t.Parallel()
	tb := setup(t, Config{DefaultPolicy: Policy{MaxAttempts: 3, Backoff: Backoff{Initial: time.Second, Max: time.Second}}})
	client, worker := tb.clientAndWorker("f")
	tb.submit(t, client, bg("f", "", "x", Normal))

	a := tb.grab(t, worker)
	require.NoError(t, tb.b.Finish(worker, a.Seq, Fail, nil))
	tb.clock.Add(time.Second)
	tb.b.RunTimers()
	a = tb.grab(t, worker)
	require.NoError(t, tb.b.Finish(worker, a.Seq, Exception, []byte("boom")))
	tb.clock.Add(time.Second)
	tb.b.RunTimers()
	tb.grab(t, worker)
	tb.b.CloseSession(worker) // the third attempt's worker vanishes: dead

	f := tb.b.Stats(context.Background()).Functions[0]
	require.Equal(t, uint64(2), f.Retried, "two failed attempts ran again")
	require.Equal(t, uint64(1), f.Dead)
}
