package broker_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/internal/broker"
	"github.com/gearwork/gearwork/internal/store/memory"
)

// TestMaxOpenBatches: batches that have not completed count against
// MaxOpenBatches, also those replayed after a restart; one that completes
// makes room.
func TestMaxOpenBatches(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := memory.New()
	b := startBroker(t, broker.Config{Store: st, MaxOpenBatches: 2})
	first, err := b.CreateBatch(ctx, broker.BatchParams{})
	require.NoError(t, err)
	_, err = b.CreateBatch(ctx, broker.BatchParams{})
	require.NoError(t, err)
	_, err = b.CreateBatch(ctx, broker.BatchParams{})
	require.ErrorIs(t, err, broker.ErrTooManyBatches)
	b.Stop()

	b = startBroker(t, broker.Config{Store: st.Reopen(), MaxOpenBatches: 2})
	_, err = b.CreateBatch(ctx, broker.BatchParams{})
	require.ErrorIs(t, err, broker.ErrTooManyBatches, "replayed open batches count")
	require.NoError(t, b.CloseBatch(ctx, first)) // empty: it completes at once
	_, err = b.CreateBatch(ctx, broker.BatchParams{})
	require.NoError(t, err)
	_, err = b.CreateBatch(ctx, broker.BatchParams{})
	require.ErrorIs(t, err, broker.ErrTooManyBatches)
}

// TestCallbackPayloadIsBounded: a batch keeps its callbacks and stores
// them with every change of its counts, so their payloads are bounded.
func TestCallbackPayloadIsBounded(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := startBroker(t, broker.Config{Store: memory.New()})
	big := make([]byte, broker.MaxCallbackPayload+1)
	_, err := b.CreateBatch(ctx, broker.BatchParams{OnComplete: broker.Callback{Function: "done", Payload: big}})
	require.ErrorIs(t, err, broker.ErrCallbackTooLarge)
	_, err = b.CreateBatch(ctx, broker.BatchParams{OnSuccess: broker.Callback{Function: "done", Payload: big[:broker.MaxCallbackPayload]}})
	require.NoError(t, err)
}
