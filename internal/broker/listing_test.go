package broker

import (
	"context"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/internal/store/memory"
)

// listAll runs EachJob and requires chunks of at most maxChunk jobs, handed
// over without the lock, in ascending handle order with no job twice;
// during is called after each chunk. It returns the jobs listed.
func listAll(t *testing.T, b *Broker, maxChunk int, during func(chunk int, last uint64)) []uint64 {
	t.Helper()
	var seqs []uint64
	chunks := 0
	b.EachJob(func(js []JobInfo) bool {
		require.NotEmpty(t, js)
		require.LessOrEqual(t, len(js), maxChunk, "one hold of the lock gathers a bounded chunk")
		require.True(t, b.mu.TryLock(), "a chunk is handed over without the lock")
		b.mu.Unlock()
		for _, j := range js {
			if len(seqs) > 0 {
				require.Greater(t, j.Seq, seqs[len(seqs)-1], "handle order, no job twice")
			}
			seqs = append(seqs, j.Seq)
		}
		during(chunks, seqs[len(seqs)-1])
		chunks++
		return true
	})
	return seqs
}

func TestEachJobListsInChunksWhileJobsComeAndGo(t *testing.T) {
	t.Parallel()
	tb := setup(t, Config{})
	c, _ := tb.session()
	const n = 5 * listChunk
	var seqs []uint64
	for i := range n {
		r := tb.submit(t, c, bg("f", fmt.Sprint("u", i), "", Normal))
		require.NoError(t, r.err)
		seqs = append(seqs, r.seq)
	}
	gone := map[uint64]bool{} // cancelled before their chunk
	chunks := 0
	listed := listAll(t, tb.b, listChunk, func(chunk int, last uint64) {
		// Between chunks: jobs ahead (and one behind) are cancelled, new
		// ones come.
		seq := seqs[n-1-chunk*97]
		require.NoError(t, tb.b.CancelJob(context.Background(), []byte(tb.b.Handle(seq))))
		gone[seq] = seq > last
		require.NoError(t, tb.submit(t, c, bg("f", fmt.Sprint("new", chunk), "", Normal)).err)
		chunks++
	})
	require.Greater(t, chunks, 3, "the listing took several holds of the lock")
	in := map[uint64]bool{}
	for _, s := range listed {
		in[s] = true
	}
	for _, s := range seqs {
		require.Equal(t, !gone[s], in[s], "job %d", s)
	}

	var uniques int
	tb.b.EachUnique(func(us []string) bool { uniques += len(us); return true })
	require.Equal(t, n-len(gone)+chunks, uniques, "every live job's unique")
}

// frozenQueues starts a broker that freezes every queued job and submits
// n background jobs to it, to two queues with their numbers interleaved;
// it returns the jobs' numbers in order.
func frozenQueues(t *testing.T, n int) (*Broker, []uint64) {
	t.Helper()
	b := startTiered(t, memory.New(), -1)
	s := b.NewSession("client", &recorder{})
	seqs := make([]uint64, 0, n)
	for i := range n {
		r := submitAndWait(t, b, s, bg(fmt.Sprint("f", i%2), "", "p", Normal))
		require.NoError(t, r.err)
		seqs = append(seqs, r.seq)
	}
	return b, seqs
}

func TestEachJobListsFrozenJobsInChunks(t *testing.T) {
	t.Parallel()
	const n = 3 * listChunk
	b, seqs := frozenQueues(t, n)
	frozen, _ := frozenCounts(b)
	require.Equal(t, n, frozen)
	listed := listAll(t, b, 2*listChunk, func(chunk int, _ uint64) {
		// A lookup by handle thaws a job ahead: it moves to the index pages.
		require.True(t, b.GetStatus([]byte(b.Handle(seqs[n-1-chunk]))).Known)
	})
	require.Equal(t, seqs, listed, "every job once, frozen or thawed meanwhile")
	frozen, _ = frozenCounts(b)
	require.Less(t, frozen, n, "jobs were thawed during the listing")
}

func TestEachJobListsJobThawedIntoANewPage(t *testing.T) {
	t.Parallel()
	const n = 3 * listChunk
	b, seqs := frozenQueues(t, n)
	listed := listAll(t, b, 2*listChunk, func(chunk int, _ uint64) {
		// A job ahead, frozen when the listing began, thaws into a page
		// of the index that did not exist then.
		if chunk == 0 {
			require.True(t, b.GetStatus([]byte(b.Handle(seqs[n-200]))).Known)
		}
	})
	require.Len(t, listed, n, "every job once, the thawed one too")
	require.Equal(t, seqs, listed)
}
