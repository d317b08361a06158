package broker_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/internal/broker"
	"github.com/gearwork/gearwork/internal/store/memory"
)

// TestTieringDeadLetterRetriedKeepsPayload: a dead letter whose payload
// is on disk only is shown with it and, queued again, handed to its next
// worker with it. (It was shown with an empty payload, and handed out
// with one: the payload was lost.)
func TestTieringDeadLetterRetriedKeepsPayload(t *testing.T) {
	t.Parallel()
	for _, budget := range []int64{-1, 1 << 20} { // none in memory; all of it
		b := startBroker(t, broker.Config{Store: memory.New(), MemoryBudget: budget, DefaultPolicy: broker.Policy{MaxAttempts: 1}})
		ctx := context.Background()
		seq := submitBg(t, b, b.NewSession("client", discard{}), "dead payload")
		w := b.NewSession("w", discard{})
		require.NoError(t, b.CanDo(w, []byte("f"), 0))
		a, ok := b.Grab(w)
		require.True(t, ok)
		require.NoError(t, b.Finish(w, a.Seq, broker.Fail, nil))

		handle := []byte(b.Handle(seq))
		dl, ok, err := b.DeadLetterByHandle(ctx, handle)
		require.NoError(t, err)
		require.True(t, ok)
		require.Equal(t, "dead payload", string(dl.Payload), "budget %d: the dead letter's payload", budget)
		requireTiering(t, b, 0, 0) // a dead letter keeps no payload in memory

		require.NoError(t, b.RetryDeadLetter(ctx, handle))
		a, ok = b.Grab(w)
		require.True(t, ok)
		require.Equal(t, seq, a.Seq)
		require.Equal(t, "dead payload", string(a.Payload), "budget %d: the retried job's payload", budget)
		require.NoError(t, b.Finish(w, a.Seq, broker.Complete, nil))
		requireTiering(t, b, 0, 0)
	}
}

// TestTieringDeadLetterKeepsPayloadOverRestart: the dead letter written
// while its payload is on disk only keeps the payload in the store.
func TestTieringDeadLetterKeepsPayloadOverRestart(t *testing.T) {
	t.Parallel()
	for _, budget := range []int64{-1, 1 << 20} {
		st := memory.New()
		cfg := broker.Config{Store: st, MemoryBudget: budget, DefaultPolicy: broker.Policy{MaxAttempts: 1}}
		b := startBroker(t, cfg)
		seq := submitBg(t, b, b.NewSession("client", discard{}), "dead payload")
		w := b.NewSession("w", discard{})
		require.NoError(t, b.CanDo(w, []byte("f"), 0))
		a, ok := b.Grab(w)
		require.True(t, ok)
		require.NoError(t, b.Finish(w, a.Seq, broker.Fail, nil))
		require.NoError(t, b.Durable(context.Background()))
		b.Stop()

		cfg.Store = st.Reopen()
		b = startBroker(t, cfg)
		dl, ok, err := b.DeadLetterByHandle(context.Background(), []byte(b.Handle(seq)))
		require.NoError(t, err)
		require.True(t, ok)
		require.Equal(t, "dead payload", string(dl.Payload), "budget %d: after a restart", budget)
		require.NoError(t, b.RetryDeadLetter(context.Background(), []byte(b.Handle(seq))))
		require.Equal(t, map[uint64]string{seq: "dead payload"}, grabAll(t, b, "f"), "budget %d", budget)
	}
}
