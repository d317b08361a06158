package pebble

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/internal/store"
)

// Each job record is written in the oldest version that holds it, so that
// a record without a submit time has the bytes of the version before it
// (stores written before read unchanged), and every version reads back
// whole, payload included.
func TestJobRecordVersions(t *testing.T) {
	t.Parallel()
	base := store.Job{Seq: 7, Handle: "H:x:7", Function: "f", Payload: []byte("payload"), Retries: 2}
	cases := []struct {
		name    string
		version byte
		edit    func(*store.Job)
	}{
		{"plain", recordVersion, func(*store.Job) {}},
		{"batch", recordVersionBatch, func(j *store.Job) { j.Batch = 3 }},
		{"after", recordVersionAfter, func(j *store.Job) { j.Batch, j.After, j.AfterAnyway = 3, []uint64{1, 2}, true }},
		{"submitted", recordVersionSubmitted, func(j *store.Job) { j.Submitted = 1_796_583_218_221_590_000 }},
		{"submitted after", recordVersionSubmitted, func(j *store.Job) { j.After, j.Submitted = []uint64{5}, 42 }},
		{"workers", recordVersionWorkers, func(j *store.Job) {
			j.History = []store.Attempt{{Start: 1, End: 2, Outcome: "failed", Worker: "127.0.0.1:4730"}, {Start: 3, End: 4, Outcome: "timeout"}}
		}},
		{"no workers", recordVersion, func(j *store.Job) { j.History = []store.Attempt{{Start: 1, End: 2, Outcome: "failed"}} }},
	}
	for _, c := range cases {
		j := base
		c.edit(&j)
		v := make([]byte, recordLen(&j))
		putRecord(v, &j)
		require.Equal(t, c.version, v[0], c.name)
		var d recordDecoder
		got, err := d.decode(j.Seq, v, false)
		require.NoError(t, err, c.name)
		require.Equal(t, j, got, c.name)
		p, err := recordPayload(j.Seq, v)
		require.NoError(t, err, c.name)
		require.Equal(t, "payload", string(p), c.name)
	}

	// A version 3 record names at least one job it waits for: one whose
	// list (count, one seq, anyway) is replaced by an empty one is damaged.
	j := base
	j.After = []uint64{1}
	v := make([]byte, recordLen(&j))
	putRecord(v, &j)
	v = append(v[:len(v)-len("payload")-3], 0, 0)
	var d recordDecoder
	_, err := d.decode(j.Seq, v, false)
	require.ErrorIs(t, err, store.ErrCorrupt)
}
