package broker

import (
	"context"
	"testing"
	"time"

	"github.com/gearwork/gearwork/internal/clocktest"
	"github.com/stretchr/testify/require"
)

// A session's calls within one burst of input share the burst's first
// clock reading for their jobs' stamps; after the burst, calls read the
// clock again.
func TestBurstSharesOneClockReading(t *testing.T) {
	t.Parallel()
	start := testStart
	clock := clocktest.New(start)
	b := New(Config{Clock: clock})
	client := b.NewSession("c", discardOutbox{})
	worker := b.NewSession("w", discardOutbox{})
	b.CanDo(worker, []byte("f"), 0)
	submit := func() uint64 {
		t.Helper()
		var seq uint64
		b.Submit(client, SubmitParams{Function: []byte("f"), Payload: []byte("p"), Background: true},
			func(s uint64, _ bool, err error) {
				require.NoError(t, err)
				seq = s
			})
		return seq
	}
	submitted := func(seq uint64) time.Time {
		t.Helper()
		snap, ok := b.Job(context.Background(), seq)
		require.True(t, ok)
		return snap.Submitted
	}

	client.BeginBurst()
	first := submit()
	clock.Add(time.Second)
	second := submit()
	client.EndBurst()
	third := submit()
	require.Equal(t, start, submitted(first))
	require.Equal(t, start, submitted(second), "same burst, same reading")
	require.Equal(t, start.Add(time.Second), submitted(third), "after the burst, a new reading")

	// A worker's burst: the grab is stamped when the burst read the clock.
	clock.Add(time.Second)
	worker.BeginBurst()
	a, ok := b.Grab(worker)
	require.True(t, ok)
	clock.Add(time.Second)
	a2, ok := b.Grab(worker)
	require.True(t, ok)
	worker.EndBurst()
	s1, _ := b.Job(context.Background(), a.Seq)
	s2, _ := b.Job(context.Background(), a2.Seq)
	require.Equal(t, start.Add(2*time.Second), s1.Started)
	require.Equal(t, start.Add(2*time.Second), s2.Started, "same burst, same reading")
}
