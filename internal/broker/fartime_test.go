package broker

import (
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/internal/store/memory"
)

// longest is the longest time.Duration: a policy key or an HTTP option
// such as timeout=2562047h gives it.
const longest = time.Duration(math.MaxInt64)

// Times past 2262 do not fit in int64 nanoseconds; a deadline that far
// must still lie in the future, not wrap around into the past. Each case
// below fired at once before: a job timed out as it was handed out, a
// function paused for a long time or until 2300 ran its jobs (the pause
// was answered OK), a job scheduled for 2554 ran at once, a retry waited
// for nothing, and a result kept for long was forgotten at once.
func TestFarFutureTimesDoNotWrapAround(t *testing.T) {
	t.Parallel()
	const hour = time.Hour

	t.Run("timeout", func(t *testing.T) {
		t.Parallel()
		tb := setupLC(t, lcOpts{cfg: Config{Policies: policies("fn", Policy{Timeout: longest})}, can: []string{"fn"}})
		tb.submit(t, lcBG("fn", "", "p"))
		tb.grab(t)
		tb.advance(hour)
		require.Equal(t, []string{"running"}, liveStates(tb.b))

		// A job's own timeout, as an HTTP submit's ?timeout= sets it.
		p := lcBG("own", "", "p")
		p.Timeout = longest
		tb.b.CanDo(tb.worker, []byte("own"), 0)
		seq := tb.submit(t, p)
		require.Equal(t, seq, tb.grab(t).Seq)
		tb.advance(hour)
		require.NoError(t, tb.b.Finish(tb.worker, seq, Complete, []byte("done")), "the job did not time out")
	})

	t.Run("pause", func(t *testing.T) {
		t.Parallel()
		tb := setupLC(t, lcOpts{can: []string{"for", "until"}})
		tb.b.PauseFor("for", longest)
		require.NoError(t, tb.b.Pause("until", time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC)))
		tb.submit(t, lcBG("for", "", "1"))
		tb.submit(t, lcBG("until", "", "2"))
		tb.advance(hour)
		tb.noJob(t)
		for _, f := range tb.b.Policies() {
			require.True(t, f.Paused, "%s is paused", f.Name)
		}
	})

	t.Run("pause survives a restart", func(t *testing.T) {
		t.Parallel()
		tb := setupLC(t, lcOpts{store: memory.New(), can: []string{"fn"}})
		require.NoError(t, tb.b.Pause("fn", time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC)))
		require.NoError(t, tb.b.Durable(t.Context()))
		tb.submit(t, lcBG("fn", "", "1"))
		tb = tb.restart(t, lcOpts{can: []string{"fn"}})
		tb.advance(hour)
		tb.noJob(t)
	})

	t.Run("run at", func(t *testing.T) {
		t.Parallel()
		tb := setupLC(t, lcOpts{can: []string{"fn"}})
		// 2554-07-21: its nanoseconds wrap around to 1970.
		for _, at := range []int64{18446744074, MaxRunAt} {
			p := lcBG("fn", "", "p")
			p.RunAt = at
			tb.submit(t, p)
		}
		tb.advance(hour)
		tb.noJob(t)
		require.Equal(t, []string{"scheduled", "scheduled"}, liveStates(tb.b))
	})

	t.Run("backoff", func(t *testing.T) {
		t.Parallel()
		pol := Policy{MaxAttempts: 3, Backoff: Backoff{Initial: longest, Max: longest, Jitter: -1}}
		tb := setupLC(t, lcOpts{cfg: Config{Policies: policies("fn", pol)}, can: []string{"fn"}})
		seq := tb.submit(t, lcBG("fn", "", "p"))
		require.NoError(t, tb.b.Finish(tb.worker, tb.grab(t).Seq, Fail, nil))
		tb.advance(hour)
		tb.noJob(t)
		require.Equal(t, []string{"retry-wait"}, liveStates(tb.b))
		require.Equal(t, seq, tb.b.Jobs(0)[0].Seq)
	})

	t.Run("result retention", func(t *testing.T) {
		t.Parallel()
		o := lcOpts{cfg: Config{Policies: policies("fn", Policy{ResultRetention: longest})}, store: memory.New(), can: []string{"fn"}}
		tb := setupLC(t, o)
		seq := tb.submit(t, lcBG("fn", "", "p"))
		require.NoError(t, tb.b.Finish(tb.worker, tb.grab(t).Seq, Complete, []byte("kept")))
		tb.advance(hour)
		_, ok := mustResult(t, tb.b, []byte(tb.b.Handle(seq)))
		require.True(t, ok, "the result is kept")
		tb = tb.restart(t, o)
		tb.advance(hour)
		r, ok := mustResult(t, tb.b, []byte(tb.b.Handle(seq)))
		require.True(t, ok, "the result is kept after a restart")
		require.Equal(t, "kept", string(r.Data))
	})
}

// liveStates returns the states of the live jobs, in handle order.
func liveStates(b *Broker) []string {
	var out []string
	for _, j := range b.Jobs(0) {
		out = append(out, j.State)
	}
	return out
}

// A rate so small that the wait for the next token is beyond int64
// nanoseconds armed a timer due at once, which fired and was armed again
// for ever: the broker spun, taking its lock, at most of a core.
func TestTinyRateWaitsInsteadOfSpinning(t *testing.T) {
	t.Parallel()
	tb := setupLC(t, lcOpts{cfg: Config{Policies: policies("fn", Policy{Rate: 1e-10})}, can: []string{"fn"}})
	tb.submit(t, lcBG("fn", "", "1"))
	tb.submit(t, lcBG("fn", "", "2"))
	tb.grab(t)
	tb.noJob(t)
	next := tb.b.RunTimers()
	require.True(t, next.After(tb.clock.Now().Add(100*365*24*time.Hour)), "the next timer is due %s", next)
}
