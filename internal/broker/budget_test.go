package broker

import (
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestMaxQueuedBytes(t *testing.T) {
	t.Parallel()
	tb := setup(t, Config{MaxQueuedBytes: 100})
	c, _ := tb.session()
	first := tb.submit(t, c, bg("a", "", strings.Repeat("x", 60), Normal))
	require.NoError(t, first.err)
	// 60 + 40 fits exactly; payload and unique both count.
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
