package broker

import (
	"testing"
	"unsafe"

	"github.com/stretchr/testify/require"
)

// TestJobSize guards the size of a job: a queue of ten million background
// jobs costs ten million of them, and 96 bytes is an allocator size class
// (97 bytes would cost 112).
func TestJobSize(t *testing.T) {
	t.Parallel()
	require.LessOrEqual(t, unsafe.Sizeof(job{}), uintptr(96))
	// A frozen job (jobQueue) is an entry of 16 bytes.
	require.LessOrEqual(t, unsafe.Sizeof(coldJob{}), uintptr(16))
}

func TestQueuedBackgroundJobReleasesItsExtra(t *testing.T) {
	t.Parallel()
	st := newMapStore()
	b, s := startWithClient(t, st)
	plain := submitAndWait(t, b, s, bg("f", "", "plain", Normal))
	require.NoError(t, plain.err)
	withReducer := bg("f", "", "reduced", Normal)
	withReducer.Reducer = []byte("r")
	reduced := submitAndWait(t, b, s, withReducer)
	require.NoError(t, reduced.err)

	b.mu.Lock()
	j, k := b.jobs.get(plain.seq), b.jobs.get(reduced.seq)
	require.Equal(t, stateQueued, j.state)
	require.Nil(t, j.x, "an acknowledged, queued background job keeps no extra")
	require.NotNil(t, k.x, "an extra that holds something stays")
	require.Equal(t, "r", k.reducer())
	b.mu.Unlock()

	// The released job still runs as before.
	w := b.NewSession("w", &recorder{})
	b.CanDo(w, []byte("f"), 0)
	a, ok := b.Grab(w)
	require.True(t, ok)
	require.Equal(t, plain.seq, a.Seq)
	require.Equal(t, "plain", string(a.Payload))
	require.NoError(t, b.Finish(w, a.Seq, Complete, nil))
	b.Stop() // flushes the committer
	require.Equal(t, 1, st.Len(), "the finished job is deleted from the store")
}

func TestJobFlagsKeepSaveStateApart(t *testing.T) {
	t.Parallel()
	var j job
	for _, s := range []saveState{saveQueued, saveWriting, saveNone} {
		j.flags |= jobCancelled | jobFinished
		j.setSave(s)
		require.Equal(t, s, j.saveState())
		require.True(t, j.has(jobCancelled|jobFinished))
		require.False(t, j.has(jobTiered))
		j.flags &^= jobCancelled | jobFinished
		require.Equal(t, s, j.saveState(), "clearing flags keeps the save state")
	}
}
