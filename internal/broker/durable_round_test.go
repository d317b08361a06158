package broker

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/internal/store"
	"github.com/gearwork/gearwork/internal/store/memory"
	"github.com/gearwork/gearwork/internal/testwait"
)

// countedSaves is a memory store that counts the jobs of each Save and
// holds the first until release is closed (entered is closed when it
// starts).
type countedSaves struct {
	*memory.Store
	entered, release chan struct{}
	mu               sync.Mutex
	rounds           []int
}

func (s *countedSaves) Save(ctx context.Context, jobs []store.Job) error {
	s.mu.Lock()
	first := len(s.rounds) == 0
	s.rounds = append(s.rounds, len(jobs))
	s.mu.Unlock()
	if first {
		close(s.entered)
		<-s.release
	}
	return s.Store.Save(ctx, jobs)
}

// A Durable that waits behind more than CommitBatch queued writes is
// answered by the next round, which takes them all: it was answered only
// by a round that left nothing behind, so under a load that queued more
// than CommitBatch between rounds it waited for the load to end, and a
// lookup of a job's record (which waits for its round since records are
// answered only once stored) took its whole RecordReadWait and was then
// answered as not stored.
func TestDurableIsAnsweredByTheNextRound(t *testing.T) {
	t.Parallel()
	const batch, queued = 4, 40
	st := &countedSaves{Store: memory.New(), entered: make(chan struct{}), release: make(chan struct{})}
	tb := setupLC(t, lcOpts{cfg: Config{Store: st, CommitBatch: batch}, can: []string{"fn"}})
	var once sync.Once
	let := func() { once.Do(func() { close(st.release) }) }
	t.Cleanup(let)

	acked := make(chan error, queued+1)
	answer := func(_ uint64, _ bool, err error) { acked <- err }
	tb.b.Submit(tb.client, lcBG("fn", "", "first"), answer)
	<-st.entered // the first round is held; the next jobs queue behind it
	for range queued {
		tb.b.Submit(tb.client, lcBG("fn", "", "next"), answer)
	}
	done := make(chan error, 1)
	tb.b.mu.Lock()
	tb.b.barriers = append(tb.b.barriers, done) // as Durable does
	tb.b.mu.Unlock()
	let()

	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(testwait.Timeout):
		t.Fatal("the barrier was never answered")
	}
	st.mu.Lock()
	rounds := append([]int(nil), st.rounds...)
	st.mu.Unlock()
	require.Equal(t, []int{1, queued}, rounds, "one round after the held one wrote every queued job before answering")
	for range queued + 1 {
		require.NoError(t, <-acked)
	}
}
