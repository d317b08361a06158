package broker_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/internal/broker"
	"github.com/gearwork/gearwork/internal/store/memory"
)

// The payloads of batch callbacks are kept in memory with their batch
// (until it is forgotten, a day after it completed by default), so they
// count against MaxQueuedBytes as live jobs' payloads do. Before, only
// --max-open-batches bounded them: 100,000 batches with two 64 KiB
// payloads each, 12.8 GiB that no budget counted (2,000 such batches took
// 625 MB of heap after a restart).
func TestCallbackPayloadsCountAgainstMaxQueuedBytes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := memory.New()
	cfg := broker.Config{Store: st, MaxQueuedBytes: 200 << 10, BatchRetention: time.Nanosecond}
	b := startBroker(t, cfg)
	payload := bytes.Repeat([]byte("x"), broker.MaxCallbackPayload)
	big := broker.BatchParams{OnSuccess: broker.Callback{Function: "cb", Payload: payload},
		OnComplete: broker.Callback{Function: "cb", Payload: payload}}
	id, err := b.CreateBatch(ctx, big)
	require.NoError(t, err)
	_, err = b.CreateBatch(ctx, big)
	require.ErrorIs(t, err, broker.ErrQueueFull)
	c := b.NewSession("client", discard{})
	res := submit(t, b, c, broker.SubmitParams{Function: []byte("f"), Payload: make([]byte, 100<<10), Background: true})
	require.ErrorIs(t, res.err, broker.ErrQueueFull, "the batch's payloads take the budget of jobs too")
	b.Stop()

	b = startBroker(t, broker.Config{Store: st.Reopen(), MaxQueuedBytes: cfg.MaxQueuedBytes, BatchRetention: cfg.BatchRetention})
	_, err = b.CreateBatch(ctx, big)
	require.ErrorIs(t, err, broker.ErrQueueFull, "a replayed batch's payloads count")

	// The batch completes (it has no jobs), its callbacks run, and once
	// it is forgotten its payloads leave the budget.
	require.NoError(t, b.CloseBatch(ctx, id))
	require.Len(t, grabAll(t, b, "cb"), 2)
	require.Equal(t, 1, b.ExpireBatches())
	_, err = b.CreateBatch(ctx, big)
	require.NoError(t, err)
}
