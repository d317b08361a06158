package broker

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/internal/store/memory"
)

func TestMaxQueuedBytes(t *testing.T) {
	t.Parallel()
	// Each job counts jobOverhead, its function name, payload and unique:
	// "a" with 60 bytes (317) and "b" with unique "u" and 39 (297).
	tb := setup(t, Config{MaxQueuedBytes: 2*jobOverhead + 102})
	c, _ := tb.session()
	first := tb.submit(t, c, bg("a", "", strings.Repeat("x", 60), Normal))
	require.NoError(t, first.err)
	// 317 + 297 fits exactly; function name, payload and unique all count.
	require.NoError(t, tb.submit(t, c, bg("b", "u", strings.Repeat("y", 39), Normal)).err)
	require.ErrorIs(t, tb.submit(t, c, bg("c", "", "z", Normal)).err, ErrQueueFull,
		"the budget spans functions")
	require.EqualError(t, ErrQueueFull, "Job queue is full")
	// A coalescing submit adds nothing and is accepted at the limit.
	dup := tb.submit(t, c, bg("b", "u", strings.Repeat("y", 39), Normal))
	require.NoError(t, dup.err)
	require.False(t, dup.created)

	// Finishing a job frees its bytes.
	w, _ := tb.worker("a")
	a := tb.grab(t, w)
	require.Equal(t, first.seq, a.Seq)
	require.ErrorIs(t, tb.submit(t, c, bg("c", "", "z", Normal)).err, ErrQueueFull, "a running job still counts")
	require.NoError(t, tb.b.Finish(w, a.Seq, Complete, nil))
	require.NoError(t, tb.submit(t, c, bg("c", "", strings.Repeat("z", 60), Normal)).err)

	// Cancelling frees bytes too.
	require.NoError(t, tb.b.CancelJob(context.Background(), []byte(tb.b.Handle(dup.seq))))
	require.NoError(t, tb.submit(t, c, bg("d", "", strings.Repeat("w", 40), Normal)).err)
	require.ErrorIs(t, tb.submit(t, c, bg("d", "", "1", Normal)).err, ErrQueueFull)
}

// TestMaxQueuedBytesBoundsEmptyJobs: jobs without payload or unique still
// take memory, so they count too (their function name and jobOverhead):
// the budget bounds how many are accepted.
func TestMaxQueuedBytesBoundsEmptyJobs(t *testing.T) {
	t.Parallel()
	name := func(i int) string { return fmt.Sprintf("%0511d", i) }
	tb := setup(t, Config{MaxQueuedBytes: 3 * (jobOverhead + 511)})
	c, _ := tb.session()
	for i := range 3 {
		require.NoError(t, tb.submit(t, c, bg(name(i), "", "", Normal)).err, i)
	}
	require.ErrorIs(t, tb.submit(t, c, bg(name(3), "", "", Normal)).err, ErrQueueFull)
	require.ErrorIs(t, tb.submit(t, c, bg(name(0), "", "", Normal)).err, ErrQueueFull)
}

// TestMaxQueuedBytesReturnsToZero: what live jobs count is added and taken
// away alike on every path (submit, replay after a restart, retry after a
// failure, a dead letter retried, cancel, completion, payloads kept on
// disk), so that it is zero again once the queue is empty.
func TestMaxQueuedBytesReturnsToZero(t *testing.T) {
	t.Parallel()
	for _, budget := range []int64{0, -1} { // payloads in memory; on disk only
		t.Run(fmt.Sprint("memory budget ", budget), func(t *testing.T) {
			t.Parallel()
			o := lcOpts{store: memory.New(), can: []string{"fn"}, cfg: Config{MaxQueuedBytes: 1 << 20, MemoryBudget: budget,
				Policies: policies("fn", Policy{MaxAttempts: 2, Backoff: noJitter(time.Second)})}}
			tb := setupLC(t, o)
			live := func(tb *lcBundle) int64 {
				tb.b.mu.Lock()
				defer tb.b.mu.Unlock()
				return tb.b.liveBytes
			}
			failing := tb.submit(t, lcBG("fn", "u1", strings.Repeat("a", 100)))
			done := tb.submit(t, lcBG("fn", "", strings.Repeat("b", 50)))
			cancelled := tb.submit(t, lcBG("other", "u3", "c"))
			counted := live(tb)
			if budget == 0 {
				require.Equal(t, queuedSize("fn", make([]byte, 100), "u1")+queuedSize("fn", make([]byte, 50), "")+
					queuedSize("other", []byte("c"), "u3"), counted)
			}

			tb = tb.restart(t, o)
			require.Equal(t, counted, live(tb), "a replayed job counts as when it was submitted")
			require.NoError(t, tb.b.CancelJob(context.Background(), []byte(tb.b.Handle(cancelled))))
			tb.finishNext(t, failing, Fail) // waits for its retry
			tb.advance(time.Second)
			tb.finishNext(t, done, Complete)
			tb.finishNext(t, failing, Fail) // a dead letter
			require.Zero(t, live(tb), "dead letters do not count")
			require.NoError(t, tb.b.RetryDeadLetter(context.Background(), []byte(tb.b.Handle(failing))))
			require.Positive(t, live(tb))
			tb.finishNext(t, failing, Complete)
			tb.noJob(t)
			require.Zero(t, live(tb))
		})
	}
}
