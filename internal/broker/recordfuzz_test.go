package broker

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/internal/store"
)

// FuzzDecodeSnapshot: any bytes decode or are refused, without a panic;
// a decoded binary record writes back to the same record.
func FuzzDecodeSnapshot(f *testing.F) {
	now := time.Unix(1_800_000_000, 0)
	for _, s := range []JobSnapshot{{}, {Unique: "u", Priority: Low, Payload: []byte("p"), PayloadPreview: []byte("p"), RetryOf: 3,
		History: []store.Attempt{{Start: 1, End: 2, Outcome: "failed"}}, CancelledAt: now, Result: []byte("r")},
		{Unique: "b", Batch: 1796578622934206}} {
		f.Add(encodeSnapshot(&s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var s JobSnapshot
		if decodeSnapshot(data, &s) != nil || len(data) == 0 || data[0] == '{' {
			return
		}
		var again JobSnapshot
		require.NoError(t, decodeSnapshot(encodeSnapshot(&s), &again))
		require.Equal(t, s, again)
	})
}
