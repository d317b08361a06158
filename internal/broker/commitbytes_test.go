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

// roundBytesStore is a gatedStore that records the payload bytes of each
// Save.
type roundBytesStore struct {
	gatedStore
	mu     sync.Mutex
	rounds []int
}

func (s *roundBytesStore) Save(ctx context.Context, jobs []store.Job) error {
	s.hold()
	n := 0
	for _, j := range jobs {
		n += len(j.Payload)
	}
	s.mu.Lock()
	s.rounds = append(s.rounds, n)
	s.mu.Unlock()
	return s.Store.Save(ctx, jobs)
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
	st := &roundBytesStore{gatedStore: gatedStore{Store: memory.New()}}
	const bound, size, n = 256 << 10, 100 << 10, 8
	b := broker.New(broker.Config{Store: st, CommitBytes: bound})
	require.NoError(t, b.Start(context.Background()))
	defer b.Stop()
	client := b.NewSession("client", discard{})

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
	for i, r := range st.rounds {
		require.LessOrEqual(t, r, bound, "round %d of %v", i, st.rounds)
		total += r
	}
	require.Equal(t, 5+n*size, total, "every job written: %v", st.rounds)
}
