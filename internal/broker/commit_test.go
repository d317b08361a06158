package broker_test

import (
	"context"
	"fmt"
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

// gatedStore holds the next Save until gate is closed.
type gatedStore struct {
	*memory.Store
	mu      sync.Mutex
	gate    chan struct{} // nil: no gate
	entered chan struct{}
}

func (g *gatedStore) Save(ctx context.Context, jobs []store.Job) error {
	g.hold()
	return g.Store.Save(ctx, jobs)
}

// hold waits for the gate once, if there is one, after closing entered.
func (g *gatedStore) hold() {
	g.mu.Lock()
	gate := g.gate
	g.gate = nil
	g.mu.Unlock()
	if gate != nil {
		close(g.entered)
		<-gate
	}
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

// callStore records the writes the committer makes, one string per call,
// and holds the next Save or Write until gate is closed.
type callStore struct {
	*gatedStore
	callsMu sync.Mutex
	calls   []string
}

func (c *callStore) note(call string) {
	c.callsMu.Lock()
	c.calls = append(c.calls, call)
	c.callsMu.Unlock()
}

func (c *callStore) Save(ctx context.Context, jobs []store.Job) error {
	c.note(fmt.Sprintf("Save %d", len(jobs)))
	return c.gatedStore.Save(ctx, jobs)
}

func (c *callStore) Delete(ctx context.Context, seqs []uint64) error {
	c.note(fmt.Sprintf("Delete %d", len(seqs)))
	return c.Store.Delete(ctx, seqs)
}

func (c *callStore) Write(ctx context.Context, w store.Write) error {
	c.note(fmt.Sprintf("Write save %d delete %d", len(w.Save), len(w.Delete)))
	c.hold()
	return c.Store.Write(ctx, w)
}

// TestRoundIsOneWrite: a commit round that carries a submit and the
// removal of a job that ended is one store write (with --sync always one
// fsync), not a save followed by a delete.
func TestRoundIsOneWrite(t *testing.T) {
	t.Parallel()
	st := &callStore{gatedStore: &gatedStore{Store: memory.New(), gate: make(chan struct{}), entered: make(chan struct{})}}
	gate, entered := st.gate, st.entered
	b := broker.New(broker.Config{Store: st})
	require.NoError(t, b.Start(context.Background()))
	defer b.Stop()
	client := b.NewSession("client", discard{})

	// The first job's write is held; meanwhile a worker runs it to its
	// end (dispatch before durable), so its removal waits for the next
	// round, and a second job is submitted.
	first := make(chan error, 1)
	b.Submit(client, broker.SubmitParams{Function: []byte("f"), Payload: []byte("a"), Background: true},
		func(_ uint64, _ bool, err error) { first <- err })
	<-entered
	w := b.NewSession("w", discard{})
	b.CanDo(w, []byte("f"), 0)
	a, ok := b.Grab(w)
	require.True(t, ok)
	require.NoError(t, b.Finish(w, a.Seq, broker.Complete, nil))
	second := make(chan error, 1)
	b.Submit(client, broker.SubmitParams{Function: []byte("g"), Payload: []byte("b"), Background: true},
		func(_ uint64, _ bool, err error) { second <- err })
	st.callsMu.Lock()
	st.calls = nil // the held round
	st.callsMu.Unlock()

	close(gate)
	require.NoError(t, <-first)
	require.NoError(t, <-second)
	require.NoError(t, b.Durable(context.Background()))
	st.callsMu.Lock()
	defer st.callsMu.Unlock()
	require.Equal(t, []string{"Write save 1 delete 1"}, st.calls)
}
