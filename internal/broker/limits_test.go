package broker

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The concurrency limit holds across all workers of a function, and a
// sleeping worker is woken when a slot frees.
func TestConcurrencyLimit(t *testing.T) {
	t.Parallel()
	tb := setupLC(t, lcOpts{cfg: Config{Policies: policies("fn", Policy{Concurrency: 1})}, can: []string{"fn"}})
	out2 := &recorder{}
	w2 := tb.b.NewSession("127.0.0.1:3000", out2)
	tb.b.CanDo(w2, []byte("fn"), 0)
	j1 := tb.submit(t, lcBG("fn", "", "1"))
	j2 := tb.submit(t, lcBG("fn", "", "2"))
	require.Equal(t, j1, tb.grab(t).Seq)
	_, ok := tb.b.Grab(w2)
	require.False(t, ok)
	// Asleep with a job waiting: no NOOP while the limit holds.
	tb.b.PreSleep(w2)
	require.Empty(t, out2.take())
	require.NoError(t, tb.b.Finish(tb.worker, j1, Complete, nil))
	require.Equal(t, []EventKind{EventNoop}, kinds(out2.take()))
	a, ok := tb.b.Grab(w2)
	require.True(t, ok)
	require.Equal(t, j2, a.Seq)
}

// The rate limit is a token bucket on the injected clock.
func TestRateLimit(t *testing.T) {
	t.Parallel()
	tb := setupLC(t, lcOpts{cfg: Config{Policies: policies("fn", Policy{Rate: 2, Burst: 3})}, can: []string{"fn"}})
	for i := range 6 {
		tb.submit(t, lcBG("fn", "", string(rune('a'+i))))
	}
	for range 3 {
		a := tb.grab(t)
		require.NoError(t, tb.b.Finish(tb.worker, a.Seq, Complete, nil))
	}
	tb.noJob(t)
	tb.b.PreSleep(tb.worker)
	require.Empty(t, tb.wout.take())
	// Half a second later one token (2/s) is there; the limiter's timer
	// wakes the sleeping worker.
	tb.advance(499 * time.Millisecond)
	require.Empty(t, tb.wout.take())
	tb.advance(time.Millisecond)
	require.Equal(t, []EventKind{EventNoop}, kinds(tb.wout.take()))
	tb.grab(t)
	tb.noJob(t)
	tb.advance(time.Second)
	tb.grab(t)
	tb.grab(t)
	tb.noJob(t)
}

func TestMaxQueueReject(t *testing.T) {
	t.Parallel()
	tb := setupLC(t, lcOpts{cfg: Config{Policies: policies("fn", Policy{MaxQueue: [3]int{2, 2, 2}})}})
	tb.submit(t, lcBG("fn", "", "1"))
	tb.submit(t, lcBG("fn", "", "2"))
	_, err := tb.trySubmit(t, lcBG("fn", "", "3"))
	require.ErrorIs(t, err, ErrQueueFull)
	require.Equal(t, "Job queue is full", err.Error())
	st := tb.b.Status(context.Background())
	require.Equal(t, [3]int{2, 2, 2}, st[0].MaxQueue)
	// "maxqueue" changes the policy too, and it reads back.
	tb.b.SetMaxQueue("fn", [3]int{5, 4, 3})
	require.Equal(t, [3]int{5, 4, 3}, tb.b.Policy("fn").MaxQueue)
	tb.submit(t, lcBG("fn", "", "3"))
}

// drop-oldest drops the oldest queued job of the same or a lower priority,
// lowest first, and rejects when there is none.
func TestMaxQueueDropOldest(t *testing.T) {
	t.Parallel()
	pol := Policy{MaxQueue: [3]int{3, 3, 3}, Overflow: OverflowDropOldest}
	tb := setupLC(t, lcOpts{cfg: Config{Policies: policies("fn", pol)}, can: []string{"fn"}})
	n1 := tb.submit(t, lcBG("fn", "", "n1"))
	n2 := tb.submit(t, lcBG("fn", "", "n2"))
	low := SubmitParams{Function: []byte("fn"), Payload: []byte("l1"), Priority: Low}
	l1 := tb.submit(t, low) // foreground, so its client hears of the drop
	hi := lcBG("fn", "", "h1")
	hi.Priority = High
	h1 := tb.submit(t, hi)
	require.Equal(t, []EventKind{EventFail}, kinds(tb.cout.take()))
	require.NotContains(t, seqs(tb.b.Jobs(0)), l1)
	n3 := tb.submit(t, lcBG("fn", "", "n3"))
	require.Equal(t, []uint64{n2, h1, n3}, seqs(tb.b.Jobs(0)))
	// A low job cannot push out the normal and high ones.
	_, err := tb.trySubmit(t, SubmitParams{Function: []byte("fn"), Payload: []byte("l2"), Priority: Low, Background: true})
	require.ErrorIs(t, err, ErrQueueFull)
	_ = n1
}

func seqs(js []JobInfo) []uint64 {
	out := make([]uint64, len(js))
	for i, j := range js {
		out[i] = j.Seq
	}
	return out
}

// With aging a low job that waited long enough competes as a higher one.
func TestPriorityAging(t *testing.T) {
	t.Parallel()
	tb := setupLC(t, lcOpts{cfg: Config{Policies: policies("fn", Policy{AgeAfter: time.Minute})}, can: []string{"fn"}})
	low := lcBG("fn", "", "low")
	low.Priority = Low
	l := tb.submit(t, low)
	tb.clock.Add(30 * time.Second)
	n := tb.submit(t, lcBG("fn", "", "normal"))
	// Strict while young.
	require.Equal(t, n, tb.grab(t).Seq)
	n2 := tb.submit(t, lcBG("fn", "", "normal2"))
	tb.clock.Add(31 * time.Second)
	// The low job has waited 61s: it counts as normal and is older.
	require.Equal(t, l, tb.grab(t).Seq)
	require.Equal(t, n2, tb.grab(t).Seq)

	// Without aging priorities are strict.
	tb2 := setupLC(t, lcOpts{can: []string{"fn"}})
	l = tb2.submit(t, low)
	tb2.clock.Add(time.Hour)
	n = tb2.submit(t, lcBG("fn", "", "normal"))
	require.Equal(t, n, tb2.grab(t).Seq)
	require.Equal(t, l, tb2.grab(t).Seq)
}

func TestPauseAndResume(t *testing.T) {
	t.Parallel()
	tb := setupLC(t, lcOpts{can: []string{"fn", "other"}})
	tb.b.Pause("fn", time.Time{})
	j := tb.submit(t, lcBG("fn", "", "1"))
	o := tb.submit(t, lcBG("other", "", "o"))
	require.Equal(t, o, tb.grab(t).Seq)
	tb.noJob(t)
	tb.b.PreSleep(tb.worker)
	require.Empty(t, tb.wout.take())
	require.Equal(t, 2, tb.b.JobCount())
	require.True(t, tb.b.Resume("fn"))
	require.False(t, tb.b.Resume("fn"))
	require.Equal(t, []EventKind{EventNoop}, kinds(tb.wout.take()))
	require.Equal(t, j, tb.grab(t).Seq)

	// Pause until a time: the timer resumes it and wakes the worker.
	tb.b.Pause("fn", tb.clock.Now().Add(time.Minute))
	j2 := tb.submit(t, lcBG("fn", "", "2"))
	tb.noJob(t)
	tb.b.PreSleep(tb.worker)
	fp := tb.b.Policies()
	require.Equal(t, "fn", fp[0].Name)
	require.True(t, fp[0].Paused)
	tb.advance(59 * time.Second)
	require.Empty(t, tb.wout.take())
	tb.advance(time.Second)
	require.Equal(t, []EventKind{EventNoop}, kinds(tb.wout.take()))
	require.Equal(t, j2, tb.grab(t).Seq)
}

// SetPolicy applies at once and show-policy style reads give it back.
func TestSetPolicyAtRuntime(t *testing.T) {
	t.Parallel()
	tb := setupLC(t, lcOpts{can: []string{"fn"}})
	tb.submit(t, lcBG("fn", "", "1"))
	tb.submit(t, lcBG("fn", "", "2"))
	var p Policy
	require.NoError(t, p.Set("concurrency", "1"))
	tb.b.SetPolicy("fn", p)
	tb.grab(t)
	tb.noJob(t)
	require.Equal(t, 1, tb.b.Policy("fn").Concurrency)
	tb.b.ResetPolicy("fn")
	tb.grab(t)
	require.True(t, tb.b.Policy("fn").IsZero())
}

func TestPolicySetGetFormat(t *testing.T) {
	t.Parallel()
	var p Policy
	for _, kv := range [][2]string{
		{"max_attempts", "5"}, {"backoff", "2s"}, {"backoff_max", "1m"}, {"backoff_multiplier", "3"},
		{"backoff_jitter", "0.1"}, {"timeout", "30s"}, {"ordering", "unique-prefix"},
		{"ordering_separator", "/"}, {"concurrency", "4"}, {"rate", "2.5"}, {"burst", "10"},
		{"max_queue", "1,2,3"}, {"overflow", "drop-oldest"}, {"result_retention", "1h0m0s"},
		{"age_after", "5m0s"}, {"max_dead_letters", "-1"},
	} {
		require.NoError(t, p.Set(kv[0], kv[1]), kv[0])
	}
	var q Policy
	for _, kv := range splitFormat(p.Format()) {
		require.NoError(t, q.Set(kv[0], kv[1]))
	}
	require.Equal(t, p, q)
	require.Equal(t, "max_attempts=5 backoff=2s backoff_max=1m0s backoff_multiplier=3 backoff_jitter=0.1 "+
		"timeout=30s ordering=unique-prefix ordering_separator=/ concurrency=4 rate=2.5 burst=10 "+
		"max_queue=1,2,3 overflow=drop-oldest result_retention=1h0m0s age_after=5m0s max_dead_letters=-1 history=24h0m0s history_max=10000", p.Format())
	require.ErrorIs(t, p.Set("nope", "1"), ErrPolicy)
	require.ErrorIs(t, p.Set("concurrency", "-1"), ErrPolicy)
	require.ErrorIs(t, p.Set("max_queue", "1,2"), ErrPolicy)
	require.ErrorIs(t, p.Set("overflow", "bounce"), ErrPolicy)
	require.ErrorIs(t, p.Set("timeout", "soon"), ErrPolicy)
}

func splitFormat(s string) [][2]string {
	var out [][2]string
	start := 0
	for i := 0; i <= len(s); i++ {
		if i == len(s) || s[i] == ' ' {
			kv := s[start:i]
			for k := 0; k < len(kv); k++ {
				if kv[k] == '=' {
					out = append(out, [2]string{kv[:k], kv[k+1:]})
					break
				}
			}
			start = i + 1
		}
	}
	return out
}

// A pause whose end has passed is refused and leaves the current pause
// as it was.
func TestPauseEndInPastRefused(t *testing.T) {
	t.Parallel()
	tb := setupLC(t, lcOpts{})
	until := tb.clock.Now().Add(time.Hour)
	require.NoError(t, tb.b.Pause("p", until))
	for _, end := range []time.Time{tb.clock.Now().Add(-time.Second), tb.clock.Now()} {
		require.ErrorIs(t, tb.b.Pause("p", end), ErrPauseEnded)
	}
	fp := policyLine(t, tb.b, "p")
	require.True(t, fp.Paused)
	require.True(t, until.Equal(fp.PausedUntil), "pause ends at %v, want %v", fp.PausedUntil, until)
}

func policyLine(t *testing.T, b *Broker, name string) FunctionPolicy {
	t.Helper()
	for _, fp := range b.Policies() {
		if fp.Name == name {
			return fp
		}
	}
	t.Fatalf("no policy line for %s", name)
	return FunctionPolicy{}
}
