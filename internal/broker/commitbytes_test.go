package broker_test

import (
	"context"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/internal/broker"
	"github.com/gearwork/gearwork/internal/store"
	"github.com/gearwork/gearwork/internal/store/memory"
)

// roundsStore is a gatedStore that records, for each write, the payload
// bytes it saves and whether it removes jobs.
type roundsStore struct {
	gatedStore
	mu     sync.Mutex
	saved  []int
	remove []bool
}

func (s *roundsStore) note(jobs []store.Job, deletes int) {
	n := 0
	for _, j := range jobs {
		n += len(j.Payload)
	}
	s.mu.Lock()
	s.saved = append(s.saved, n)
	s.remove = append(s.remove, deletes > 0)
	s.mu.Unlock()
}

func (s *roundsStore) Save(ctx context.Context, jobs []store.Job) error {
	s.hold()
	s.note(jobs, 0)
	return s.Store.Save(ctx, jobs)
}

func (s *roundsStore) Delete(ctx context.Context, seqs []uint64) error {
	s.note(nil, len(seqs))
	return s.Store.Delete(ctx, seqs)
}

func (s *roundsStore) Write(ctx context.Context, w store.Write) error {
	s.hold()
	s.note(w.Save, len(w.Delete))
	return s.Store.Write(ctx, w)
}

// startRounds starts a broker with cfg on a roundsStore over a memory
// store, stopped when the test ends, and a client session.
func startRounds(t *testing.T, cfg broker.Config) (*broker.Broker, *roundsStore, *broker.Session) {
	t.Helper()
	st := &roundsStore{gatedStore: gatedStore{Store: memory.New()}}
	cfg.Store = st
	b := broker.New(cfg)
	require.NoError(t, b.Start(context.Background()))
	t.Cleanup(b.Stop)
	return b, st, b.NewSession("client", discard{})
}

// A commit round takes new jobs up to Config.CommitBytes of payload (one
// larger alone is written alone), and leaves the others to the next
// rounds, as it does past CommitBatch jobs: Pebble panics on a batch of
// 4 GiB, which a round of many large submits reached (--max-packet up to
// 1 GiB, a --max-queued-bytes raised past 4 GiB), and the server died
// with the round, again after each restart as the clients submitted the
// same jobs again.
func TestCommitRoundBoundedByBytes(t *testing.T) {
	t.Parallel()
	const bound, size, n = 256 << 10, 100 << 10, 8
	b, st, client := startRounds(t, broker.Config{CommitBytes: bound})

	// Hold the committer inside the Save of a first job, so that the
	// others all wait for the next round.
	gate := make(chan struct{})
	st.gate, st.entered = gate, make(chan struct{})
	entered := st.entered
	acked := make(chan error, n+1)
	answer := func(_ uint64, _ bool, err error) { acked <- err }
	b.Submit(client, broker.SubmitParams{Function: []byte("f"), Payload: []byte("first"), Background: true}, answer)
	<-entered
	for range n {
		b.Submit(client, broker.SubmitParams{Function: []byte("f"), Payload: make([]byte, size), Background: true}, answer)
	}
	close(gate)
	for range n + 1 {
		require.NoError(t, <-acked)
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	total := 0
	for i, r := range st.saved {
		require.LessOrEqual(t, r, bound, "round %d of %v", i, st.saved)
		total += r
	}
	require.Equal(t, 5+n*size, total, "every job written: %v", st.saved)
}

// The jobs a vanished worker held are written again (their retry, with
// their payloads) in rounds bounded by CommitBytes as new jobs are: a
// worker that took many large jobs and vanished had them all written in
// one round, which a few of 1 GiB took past the 4 GiB on which Pebble
// panics.
func TestCommitRoundOfRetriesBoundedByBytes(t *testing.T) {
	t.Parallel()
	const bound, size, n = 256 << 10, 100 << 10, 8
	b, st, client := startRounds(t, broker.Config{CommitBytes: bound})
	acked := make(chan error, n)
	for range n {
		b.Submit(client, broker.SubmitParams{Function: []byte("f"), Payload: make([]byte, size), Background: true},
			func(_ uint64, _ bool, err error) { acked <- err })
	}
	for range n {
		require.NoError(t, <-acked)
	}
	worker := b.NewSession("worker", discard{})
	b.CanDo(worker, []byte("f"), 0)
	for range n {
		_, ok := b.Grab(worker)
		require.True(t, ok)
	}
	st.mu.Lock()
	first := len(st.saved)
	st.mu.Unlock()
	b.CloseSession(worker) // every job taken back at once
	require.NoError(t, b.Durable(context.Background()))

	st.mu.Lock()
	defer st.mu.Unlock()
	total := 0
	for i, r := range st.saved[first:] {
		require.LessOrEqual(t, r, bound, "round %d of %v", i, st.saved[first:])
		total += r
	}
	require.Equal(t, n*size, total, "every job written again: %v", st.saved[first:])
}

// Jobs taken back and then run to their end while their writes wait are
// not brought back by those writes when the writes of the jobs taken back
// take more than one round: what ended is removed only after them.
func TestJobsTakenBackThenEndedStayRemoved(t *testing.T) {
	t.Parallel()
	const bound, size, n = 256 << 10, 100 << 10, 8
	b, st, client := startRounds(t, broker.Config{CommitBytes: bound})
	acked := make(chan error, n+1)
	answer := func(_ uint64, _ bool, err error) { acked <- err }
	for range n {
		b.Submit(client, broker.SubmitParams{Function: []byte("f"), Payload: make([]byte, size), Background: true}, answer)
	}
	for range n {
		require.NoError(t, <-acked)
	}
	worker := b.NewSession("worker", discard{})
	b.CanDo(worker, []byte("f"), 0)
	for range n {
		_, ok := b.Grab(worker)
		require.True(t, ok)
	}
	// Hold the committer inside the Save of another job while every job
	// is taken back, then run to its end.
	gate := make(chan struct{})
	st.mu.Lock()
	st.gate, st.entered = gate, make(chan struct{})
	entered := st.entered
	st.mu.Unlock()
	b.Submit(client, broker.SubmitParams{Function: []byte("other"), Payload: []byte("x"), Background: true}, answer)
	<-entered
	b.CloseSession(worker)
	second := b.NewSession("second", discard{})
	b.CanDo(second, []byte("f"), 0)
	for range n {
		a, ok := b.Grab(second)
		require.True(t, ok)
		require.NoError(t, b.Finish(second, a.Seq, broker.Complete, nil))
	}
	close(gate)
	require.NoError(t, <-acked)
	require.NoError(t, b.Durable(context.Background()))

	var left []string
	require.NoError(t, st.Load(context.Background(), func(j store.Job) error {
		left = append(left, j.Function)
		return nil
	}))
	require.Equal(t, []string{"other"}, left, "the jobs of f ended; none is stored")
}

// While new jobs fill commit rounds up to CommitBytes, a job written
// again (taken back from a vanished worker) still goes out in the next
// round, and with it the removals of ended jobs: the removals wait for
// the jobs written again, and new jobs taken first left a job written
// again over, so that under a steady flood of large submits no ended job
// was removed (and no Durable answered) until the flood stopped.
func TestEndsNotHeldBackByNewJobsFillingRounds(t *testing.T) {
	t.Parallel()
	const bound, size, n = 256 << 10, 200 << 10, 6
	b, st, client := startRounds(t, broker.Config{CommitBytes: bound})
	acked := make(chan error, n+2)
	answer := func(_ uint64, _ bool, err error) { acked <- err }
	b.Submit(client, broker.SubmitParams{Function: []byte("f"), Payload: []byte("taken back"), Background: true}, answer)
	b.Submit(client, broker.SubmitParams{Function: []byte("f"), Payload: []byte("ends"), Background: true}, answer)
	for range 2 {
		require.NoError(t, <-acked)
	}
	w1 := b.NewSession("w1", discard{})
	b.CanDo(w1, []byte("f"), 0)
	_, ok := b.Grab(w1)
	require.True(t, ok)
	w2 := b.NewSession("w2", discard{})
	b.CanDo(w2, []byte("f"), 0)
	ends, ok := b.Grab(w2)
	require.True(t, ok)

	// Hold the committer inside the Save of another job while the first
	// job is taken back, the second ends, and large new jobs queue.
	gate := make(chan struct{})
	st.mu.Lock()
	st.gate, st.entered = gate, make(chan struct{})
	entered := st.entered
	st.mu.Unlock()
	b.Submit(client, broker.SubmitParams{Function: []byte("g"), Payload: []byte("x"), Background: true}, answer)
	<-entered
	st.mu.Lock()
	first := len(st.saved)
	st.mu.Unlock()
	b.CloseSession(w1)
	require.NoError(t, b.Finish(w2, ends.Seq, broker.Complete, nil))
	for range n {
		b.Submit(client, broker.SubmitParams{Function: []byte("h"), Payload: make([]byte, size), Background: true}, answer)
	}
	close(gate)
	for range n + 1 {
		require.NoError(t, <-acked)
	}
	require.NoError(t, b.Durable(context.Background()))

	st.mu.Lock()
	defer st.mu.Unlock()
	saved, remove := st.saved[first:], st.remove[first:]
	removedIn, total := -1, 0
	for i := range saved {
		total += saved[i]
		if remove[i] && removedIn < 0 {
			removedIn = i
		}
	}
	require.Equal(t, 1+len("taken back")+n*size, total, "every job written: %v", saved)
	require.GreaterOrEqual(t, removedIn, 0, "the ended job removed: %v %v", saved, remove)
	// The gated round, then the first round after it: the job taken back
	// and the removal go there, while most of the new jobs still wait.
	require.LessOrEqual(t, removedIn, 1, "removal in round %d of %v", removedIn, saved)
}

// With payload tiering, the jobs written again have their payloads on
// disk only and read back for the write (tierFillRetries): the bound
// counts them at their real size, not as empty, which let a vanished
// worker's many large jobs go out in one round.
func TestCommitRoundOfTieredRetriesBoundedByBytes(t *testing.T) {
	t.Parallel()
	const bound, size, n = 256 << 10, 100 << 10, 8
	b, st, client := startRounds(t, broker.Config{CommitBytes: bound, MemoryBudget: -1})
	acked := make(chan error, n)
	for range n {
		b.Submit(client, broker.SubmitParams{Function: []byte("f"), Payload: make([]byte, size), Background: true},
			func(_ uint64, _ bool, err error) { acked <- err })
	}
	for range n {
		require.NoError(t, <-acked)
	}
	_, onDisk := b.TieringStats()
	require.Equal(t, n, onDisk)
	worker := b.NewSession("worker", discard{})
	b.CanDo(worker, []byte("f"), 0)
	for range n {
		a, ok := b.Grab(worker)
		require.True(t, ok)
		require.Len(t, a.Payload, size)
	}
	st.mu.Lock()
	first := len(st.saved)
	st.mu.Unlock()
	b.CloseSession(worker) // every job taken back at once
	require.NoError(t, b.Durable(context.Background()))

	st.mu.Lock()
	defer st.mu.Unlock()
	total := 0
	for i, r := range st.saved[first:] {
		require.LessOrEqual(t, r, bound, "round %d of %v", i, st.saved[first:])
		total += r
	}
	require.Equal(t, n*size, total, "every job written again: %v", st.saved[first:])
}
