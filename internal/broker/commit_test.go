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

// discard is an Outbox that drops events.
type discard struct{}

func (discard) Send(broker.Event) {}

// gatedStore holds the next Save until release is closed.
type gatedStore struct {
	*memory.Store
	mu      sync.Mutex
	gate    chan struct{} // nil: no gate
	entered chan struct{}
}

func (g *gatedStore) Save(ctx context.Context, jobs []store.Job) error {
	g.mu.Lock()
	gate := g.gate
	g.gate = nil
	g.mu.Unlock()
	if gate != nil {
		close(g.entered)
		<-gate
	}
	return g.Store.Save(ctx, jobs)
}

// submitBg submits a background job of "f" and waits for its
// acknowledgement.
func submitBg(t *testing.T, b *broker.Broker, s *broker.Session, payload string) uint64 {
	t.Helper()
	r := submit(t, b, s, broker.SubmitParams{Function: []byte("f"), Payload: []byte(payload), Background: true})
	require.NoError(t, r.err)
	return r.seq
}

// TestRetriedJobFinishedInOneRoundIsDeleted: a job taken back from a
// vanished worker and finished by another before the committer wrote its
// retry record must not be left in the store.
func TestRetriedJobFinishedInOneRoundIsDeleted(t *testing.T) {
	t.Parallel()
	st := &gatedStore{Store: memory.New()}
	b := broker.New(broker.Config{Store: st})
	require.NoError(t, b.Start(context.Background()))
	defer b.Stop()
	client := b.NewSession("client", discard{})
	seq := submitBg(t, b, client, "job")

	// Hold the committer inside the Save of another job.
	gate := make(chan struct{})
	st.mu.Lock()
	st.gate, st.entered = gate, make(chan struct{})
	entered := st.entered
	st.mu.Unlock()
	b.Submit(client, broker.SubmitParams{Function: []byte("g"), Payload: []byte("x"), Background: true},
		func(uint64, bool, error) {})
	<-entered

	w1 := b.NewSession("w1", discard{})
	b.CanDo(w1, []byte("f"), 0)
	a, ok := b.Grab(w1)
	require.True(t, ok)
	require.Equal(t, seq, a.Seq)
	b.CloseSession(w1) // the job is taken back: a retry record waits
	w2 := b.NewSession("w2", discard{})
	b.CanDo(w2, []byte("f"), 0)
	a, ok = b.Grab(w2)
	require.True(t, ok)
	require.Equal(t, seq, a.Seq)
	require.NoError(t, b.Finish(w2, seq, broker.Complete, nil)) // its delete waits too

	close(gate)
	b.Stop() // flushes the committer
	var left []uint64
	require.NoError(t, st.Load(context.Background(), func(j store.Job) error {
		left = append(left, j.Seq)
		return nil
	}))
	require.NotContains(t, left, seq, "a finished job was written back to the store")
}

// ctxStore records the contexts its writes get.
type ctxStore struct {
	*memory.Store
	mu   sync.Mutex
	ctxs []context.Context
}

func (c *ctxStore) Save(ctx context.Context, jobs []store.Job) error {
	c.mu.Lock()
	c.ctxs = append(c.ctxs, ctx)
	c.mu.Unlock()
	return c.Store.Save(ctx, jobs)
}

// TestStopDoesNotCancelWrites: the committer's writes must not be cut
// short by Stop (a store that honours cancellation would fail them and the
// submitters would get an ERROR for a shutdown).
func TestStopDoesNotCancelWrites(t *testing.T) {
	t.Parallel()
	st := &ctxStore{Store: memory.New()}
	b := broker.New(broker.Config{Store: st})
	require.NoError(t, b.Start(context.Background()))
	submitBg(t, b, b.NewSession("client", discard{}), "job")
	b.Stop()
	st.mu.Lock()
	defer st.mu.Unlock()
	require.NotEmpty(t, st.ctxs)
	for _, ctx := range st.ctxs {
		require.NoError(t, ctx.Err(), "a store write was given a context that Stop cancels")
	}
}
