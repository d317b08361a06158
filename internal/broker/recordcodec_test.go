package broker

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/internal/store"
)

// A record reads back as it was written, every field, empty and nil
// results apart; a damaged one is refused; an older JSON one still reads.
func TestRecordCodecRoundTrip(t *testing.T) {
	t.Parallel()
	now := time.Unix(1_800_000_000, 123456789)
	full := JobSnapshot{Unique: "u\x00nique", Priority: Low, Background: true, Retries: 2, Attempts: 3, MaxAttempts: -1,
		LastError: "disk full", OrderingKey: "acct", Result: []byte{}, ResultTruncated: true,
		PayloadPreview: []byte("payload"), PayloadSize: 9000, CancelledBy: "admin", CancelledAt: now.Add(time.Second),
		Submitted: now, Started: now.Add(time.Millisecond),
		History: []store.Attempt{{Start: 1, End: 2, Outcome: "failed", Error: "e", Worker: "w"}, {Start: 3, End: 4, Outcome: "complete"}}}
	whole := full
	whole.Payload = []byte("the whole payload, longer than nothing")
	whole.PayloadPreview = whole.Payload
	whole.RetryOf = 41
	inBatch := full
	inBatch.Batch = 1796578622934206
	both := whole
	both.Batch = 7
	for i, s := range []JobSnapshot{full, {}, whole, inBatch, both} {
		var got JobSnapshot
		enc := encodeSnapshot(&s)
		require.NoError(t, decodeSnapshot(enc, &got))
		require.Equal(t, s, got)
		// Each record is written in the lowest version that holds it, so
		// that a server of the version before reads what it can.
		require.Equal(t, []byte{recordCodecV1, recordCodecV1, recordCodecV2, recordCodecV3, recordCodecV3}[i], enc[0])
	}
	withResult := JobSnapshot{Result: []byte("r")}
	var got JobSnapshot
	require.NoError(t, decodeSnapshot(encodeSnapshot(&withResult), &got))
	require.Equal(t, []byte("r"), got.Result)

	enc := encodeSnapshot(&full)
	for _, cut := range []int{0, 1, len(enc) / 2, len(enc) - 1} {
		require.Error(t, decodeSnapshot(enc[:cut], &JobSnapshot{}), "cut at %d", cut)
	}
	// A priority beyond low is damage too: RetryJob would queue the job
	// at that index of its function's queues.
	for _, pri := range []Priority{Low + 1, 255} {
		odd := full
		odd.Priority = pri
		require.ErrorIs(t, decodeSnapshot(encodeSnapshot(&odd), &JobSnapshot{}), errRecordCodec, "priority %d", pri)
		js, err := json.Marshal(&odd)
		require.NoError(t, err)
		require.ErrorIs(t, decodeSnapshot(js, &JobSnapshot{}), errRecordCodec, "priority %d in JSON", pri)
	}
	js, err := json.Marshal(&full)
	require.NoError(t, err)
	got = JobSnapshot{}
	require.NoError(t, decodeSnapshot(js, &got))
	require.Equal(t, full.LastError, got.LastError)
}

// A record encoded straight from its memory copy (appendRecord, as the
// committer writes it) is byte for byte the encoding of its snapshot.
func TestRecordEncodedAsItsSnapshot(t *testing.T) {
	t.Parallel()
	fh := &fnHistory{name: "fn"}
	attempts := []store.Attempt{{Start: 1, End: 2, Outcome: "failed", Error: "e", Worker: "w"}, {Start: 3, End: 4, Outcome: "complete"}}
	recs := []histRec{
		{seq: 1, fn: fh, finished: 10},
		{seq: 2, fn: fh, unique: "u", payload: []byte("p"), payloadLen: 300, submitted: 5, started: 6, finished: 7,
			retries: 1, nAttempts: 2, priority: High, state: finalComplete, ran: true, worker: "w1", hasResult: true, result: []byte{}},
		{seq: 3, fn: fh, state: finalFailed, lastErr: "boom", ran: true, worker: "w2", started: 8, finished: 9,
			payloadWhole: true, foreground: true, x: &histExtra{outcome: "takeback"}},
		{seq: 4, fn: fh, state: finalDead, payloadWhole: true, payload: []byte("whole"), hasResult: true,
			result: []byte("r"), truncated: true, x: &histExtra{attempts: attempts, maxAttempts: -1, orderKey: "k", retryOf: 2}},
		{seq: 5, fn: fh, state: finalCancelled, x: &histExtra{cancelledBy: "admin", cancelledAt: 11, batch: 9, retryOf: 3}},
		{seq: 6, fn: fh, state: finalException, ran: true, lastErr: "x", x: &histExtra{batch: 1}},
		{seq: 7, fn: fh, foreground: true, ran: true, worker: "w3", started: 1, finished: 2},
	}
	for i := range recs {
		r := &recs[i]
		s := r.snapshot()
		require.Equal(t, appendSnapshot(nil, &s), r.appendRecord(nil), "record %d", r.seq)
		require.Equal(t, s.Batch, r.batchOf(), "record %d", r.seq)
	}
}
