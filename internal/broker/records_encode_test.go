package broker

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
)

// countingReader is a store.PayloadReader that counts its reads and
// answers every one with payload.
type countingReader struct {
	payload []byte
	reads   int
}

func (c *countingReader) ReadPayload(context.Context, uint64) ([]byte, error) {
	c.reads++
	return c.payload, nil
}

// The committer encodes the record of a job that completed while its
// payload was on disk only straight from memory, as any other: the record
// knows the payload's size and needs no read, so no snapshot is made (no
// allocation). The record of a job that failed that way still gets its
// payload read back.
// (Not parallel: AllocsPerRun.)
func TestEncodeRecordOnDiskPayloadTakesFastPath(t *testing.T) {
	reader := &countingReader{payload: []byte("the payload on disk")}
	b := New(Config{})
	b.tier.reader = reader
	fh := &fnHistory{name: "fn"}
	done := &histRec{seq: 7, fn: fh, state: finalComplete, payloadOnDisk: true, payloadLen: 19,
		payload: []byte("the payload"), submitted: 1, started: 2, finished: 3, ran: true, worker: "w"}
	buf := &commitBuffers{recPtrs: []*histRec{done}, recData: make([]byte, 0, 4096)}
	ctx := context.Background()
	b.encodeRecords(ctx, buf, true)
	s := done.snapshot()
	require.Equal(t, string(appendSnapshot(nil, &s)), string(buf.recs[0].Data), "the same record either way")
	allocs := testing.AllocsPerRun(100, func() {
		buf.recs = buf.recs[:0]
		b.encodeRecords(ctx, buf, true)
	})
	require.Zero(t, allocs, "encoding a completed record with its payload on disk")
	require.Zero(t, reader.reads)

	failed := *done
	failed.state, failed.payloadLen = finalFailed, 0
	buf.recs, buf.recPtrs = buf.recs[:0], []*histRec{&failed}
	b.encodeRecords(ctx, buf, true)
	require.Equal(t, 1, reader.reads, "a failed job's record reads its payload back")
	got, err := decodeRecord(buf.recs[0])
	require.NoError(t, err)
	require.Equal(t, "the payload on disk", string(got.Payload))
}
