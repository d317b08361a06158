package broker

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/stretchr/testify/require"
)

// checkRecordList checks that the list of records kept in memory
// (historyState.oldest) holds every kept record once, in the order their
// jobs ended, and that the memory counted for them is what they and the
// blocks holding them take. It returns the Seqs of the kept records,
// oldest first.
func checkRecordList(t *testing.T, b *Broker) []uint64 {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	h := &b.hist
	var seqs []uint64
	var size int64
	live := make(map[*recSlab]int)
	var prev *histRec
	for r := h.oldest; r != nil; r = r.next {
		require.Same(t, prev, r.prev, "record %d's link back", r.seq)
		if prev != nil {
			require.Greater(t, r.order, prev.order, "record %d after record %d", r.seq, prev.seq)
		}
		require.Same(t, r, h.bySeq.get(r.seq), "record %d is found by its job", r.seq)
		require.Equal(t, int64(r.size), recordSize(r), "record %d's size", r.seq)
		seqs = append(seqs, r.seq)
		size += int64(r.size)
		live[r.slab]++
		prev = r
	}
	require.Same(t, prev, h.newest)
	kept := 0
	for _, fh := range h.fns {
		kept += fh.len()
	}
	require.Equal(t, kept, len(seqs), "the functions' records are the listed ones")
	if h.slabOf != nil {
		live[h.slabOf] += len(h.slab)
	}
	for s, n := range live {
		require.Equal(t, n, s.used, "a block's slots in use")
	}
	require.Equal(t, size+int64(len(live))*slabBytes, h.bytes, "the memory counted")
	return seqs
}

// completeWith submits a background job of fn with payload and has worker
// complete it with result.
func (tb *testBundle) completeWith(t *testing.T, client, worker *Session, fn string, payload, result []byte) uint64 {
	t.Helper()
	seq := tb.submit(t, client, SubmitParams{Function: []byte(fn), Payload: payload, Background: true}).seq
	a := tb.grab(t, worker)
	require.Equal(t, seq, a.Seq)
	require.NoError(t, tb.b.Finish(worker, seq, Complete, result))
	return seq
}

// Past Config.MaxRecordBytes the records of the jobs that ended first are
// forgotten, whatever their function: lookups, listings (and their
// cursors), counts and the memory counted see the newest alone.
func TestRecordBytesBoundForgetsOldestAcrossFunctions(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	result := bytes.Repeat([]byte("r"), 3000)
	// One record's size, measured on a broker of its own.
	probe := setup(t, Config{})
	pc, pw := probe.clientAndWorker("a")
	probe.completeWith(t, pc, pw, "a", []byte("p"), result)
	one := probe.b.Stats(ctx).RecordBytes - slabBytes
	require.Greater(t, one, int64(len(result)))

	const kept = 10
	tb := setup(t, Config{MaxRecordBytes: slabBytes + kept*one + one/2})
	client, _ := tb.session()
	worker, _ := tb.session()
	tb.b.CanDo(worker, []byte("a"), 0)
	tb.b.CanDo(worker, []byte("b"), 0)
	var seqs []uint64
	fnOf := make(map[uint64]string)
	for i := range 3 * kept {
		fn := []string{"a", "b"}[i%2]
		seq := tb.completeWith(t, client, worker, fn, []byte("p"), result)
		seqs = append(seqs, seq)
		fnOf[seq] = fn
	}
	require.Equal(t, seqs[len(seqs)-kept:], checkRecordList(t, tb.b), "the newest records are kept")
	for i, seq := range seqs {
		s, ok := tb.b.Job(ctx, seq)
		if i < len(seqs)-kept {
			require.False(t, ok, "job %d's record was forgotten for the bound", seq)
			continue
		}
		require.True(t, ok, "job %d", seq)
		require.Equal(t, fnOf[seq], s.Function)
		require.Equal(t, result, s.Result)
	}
	st := tb.b.Stats(ctx)
	require.Equal(t, uint64(len(seqs)-kept), st.RecordsEvicted)
	require.LessOrEqual(t, st.RecordBytes, tb.b.cfg.MaxRecordBytes)

	// A listing pages through the kept records alone, newest first.
	var listed []uint64
	q := JobQuery{Limit: 3}
	for {
		page, err := tb.b.ListJobs(ctx, q)
		require.NoError(t, err)
		for _, s := range page.Jobs {
			listed = append(listed, s.Seq)
		}
		if page.Next == "" {
			break
		}
		q.Cursor = page.Next
	}
	var want []uint64
	for i := len(seqs) - 1; i >= len(seqs)-kept; i-- {
		want = append(want, seqs[i])
	}
	require.Equal(t, want, listed)
	page, err := tb.b.ListJobs(ctx, JobQuery{Function: "a"})
	require.NoError(t, err)
	require.Len(t, page.Jobs, kept/2)
	for _, c := range tb.b.CountJobs(ctx) {
		require.Equal(t, map[string]int{FinalComplete: kept / 2}, c.Ended, "function %s", c.Function)
	}

	// Records forgotten otherwise (their function's count, an operator)
	// leave the list, and its memory, at once.
	tb.b.SetPolicy("a", Policy{HistoryMax: 2})
	tb.completeWith(t, client, worker, "a", []byte("p"), result)
	tb.b.ExpireHistory()
	require.Equal(t, "b", fnOf[seqs[len(seqs)-1]])
	require.True(t, tb.b.ForgetRecord(ctx, seqs[len(seqs)-1]))
	checkRecordList(t, tb.b)
	page, err = tb.b.ListJobs(ctx, JobQuery{Function: "a"})
	require.NoError(t, err)
	require.Len(t, page.Jobs, 2, "function a keeps 2")
	page, err = tb.b.ListJobs(ctx, JobQuery{Function: "b"})
	require.NoError(t, err)
	require.Len(t, page.Jobs, kept/2-1, "function b")
}

// A bound below what one record takes keeps none; a negative one keeps
// every record the history limits allow; 0 is the default.
func TestRecordBytesBoundSemantics(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	result := bytes.Repeat([]byte("r"), 4000)
	require.Equal(t, int64(DefaultMaxRecordBytes), New(Config{}).cfg.MaxRecordBytes)

	tiny := setup(t, Config{MaxRecordBytes: 1})
	c, w := tiny.clientAndWorker("f")
	seq := tiny.completeWith(t, c, w, "f", nil, result)
	_, ok := tiny.b.Job(ctx, seq)
	require.False(t, ok, "no record fits in 1 byte")
	require.Empty(t, checkRecordList(t, tiny.b))
	page, err := tiny.b.ListJobs(ctx, JobQuery{})
	require.NoError(t, err)
	require.Empty(t, page.Jobs)

	unbounded := setup(t, Config{MaxRecordBytes: -1})
	c, w = unbounded.clientAndWorker("f")
	var seqs []uint64
	for range 200 {
		seqs = append(seqs, unbounded.completeWith(t, c, w, "f", nil, result))
	}
	require.Equal(t, seqs, checkRecordList(t, unbounded.b))
	st := unbounded.b.Stats(ctx)
	require.Zero(t, st.RecordsEvicted)
	require.Greater(t, st.RecordBytes, int64(200*len(result)))
}

// With a store that keeps records, the bound holds for the records the
// broker holds until the store has them: but for those being written,
// the oldest go first, and lookups, listings and counts no longer see
// them.
func TestRecordBytesBoundOnUnwrittenRecords(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	result := bytes.Repeat([]byte("r"), 4000)
	const kept = 4
	bound := kept*(int64(len(result))+1024) + 512
	tb, st := setupHeldRecordWrites(t, errors.New("disk gone"), Config{MaxRecordBytes: bound})
	var seqs []uint64
	for range 3 * kept {
		seqs = append(seqs, tb.submit(t, lcBG("fn", "", "p")))
	}
	finish := func(want uint64) {
		a := tb.grab(t)
		require.Equal(t, want, a.Seq)
		require.NoError(t, tb.b.Finish(tb.worker, a.Seq, Complete, result))
	}
	finish(seqs[0])
	<-st.entered // its write fails once let go
	for _, seq := range seqs[1:] {
		finish(seq)
	}
	st.let()
	_ = tb.b.Durable(ctx)
	_ = tb.b.Durable(ctx)
	stats := tb.b.Stats(ctx)
	require.LessOrEqual(t, stats.RecordBytes, bound)
	var keptSeqs []uint64
	for _, seq := range seqs {
		if s, ok := tb.b.Job(ctx, seq); ok {
			require.Equal(t, result, s.Result)
			keptSeqs = append(keptSeqs, seq)
		}
	}
	// The first was being written while the others ended: the committer
	// had it, and it stayed. Of the others the newest are kept.
	require.GreaterOrEqual(t, len(keptSeqs), kept-1)
	require.Less(t, len(keptSeqs), len(seqs))
	require.Equal(t, seqs[0], keptSeqs[0])
	require.Equal(t, seqs[len(seqs)-len(keptSeqs)+1:], keptSeqs[1:], "the newest are kept")
	require.Equal(t, uint64(len(seqs)-len(keptSeqs)), stats.RecordsEvicted)
	require.Equal(t, len(keptSeqs), endedCount(tb, "fn", FinalComplete))
	require.Len(t, listed(t, tb), len(keptSeqs))
}
