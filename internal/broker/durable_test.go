package broker

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/internal/clocktest"
	"github.com/gearwork/gearwork/internal/store"
	"github.com/gearwork/gearwork/internal/store/memory"
)

// mapStore is the in-memory store with hooks for broker tests: it counts
// saves, can fail or hold them, and ignores cancellation as a store whose
// write is under way would. The real implementations are tested by
// internal/store/storetest.
type mapStore struct {
	*memory.Store
	// mu guards the fields below.
	mu      sync.Mutex
	saves   int
	failErr error
	// gate, when set, blocks Save until closed.
	gate chan struct{}
	// entered, when set, is signalled (without blocking) as Save starts.
	entered chan struct{}
	// written counts successful saves per job.
	written map[uint64]int
}

func newMapStore() *mapStore { return &mapStore{Store: memory.New()} }

func (m *mapStore) Save(ctx context.Context, jobs []store.Job) error {
	if m.entered != nil {
		select {
		case m.entered <- struct{}{}:
		default:
		}
	}
	if m.gate != nil {
		<-m.gate
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.failErr != nil {
		return m.failErr
	}
	m.saves++
	if m.written == nil {
		m.written = map[uint64]int{}
	}
	for _, j := range jobs {
		m.written[j.Seq]++
	}
	return m.Store.Save(context.WithoutCancel(ctx), jobs)
}

// get returns the stored record of job seq.
func (m *mapStore) get(seq uint64) (store.Job, bool) {
	return memoryRecord(m.Store, seq)
}

// memoryRecord returns the record of job seq in st.
func memoryRecord(st *memory.Store, seq uint64) (rec store.Job, ok bool) {
	_ = st.Load(context.Background(), func(j store.Job) error {
		if j.Seq == seq {
			rec, ok = j, true
		}
		return nil
	})
	return rec, ok
}

func startWithStore(t *testing.T, st store.Store) *Broker {
	t.Helper()
	return startWithStoreAt(t, st, testStart)
}

// startWithClient starts a broker on st and opens a client session.
func startWithClient(t *testing.T, st store.Store) (*Broker, *Session) {
	t.Helper()
	b := startWithStore(t, st)
	return b, b.NewSession("x", &recorder{})
}

func startWithStoreAt(t *testing.T, st store.Store, now time.Time) *Broker {
	t.Helper()
	b := New(Config{Store: st, Clock: clocktest.New(now)})
	require.NoError(t, b.Start(context.Background()))
	t.Cleanup(b.Stop)
	return b
}

func submitAndWait(t *testing.T, b *Broker, s *Session, p SubmitParams) result {
	t.Helper()
	ch := make(chan result, 1)
	b.Submit(s, p, func(seq uint64, created bool, err error) { ch <- result{seq, created, err} })
	select {
	case r := <-ch:
		return r
	case <-time.After(30 * time.Second):
		t.Fatal("submit was never answered")
		return result{}
	}
}

func TestDurableSubmitAcknowledgedAfterSave(t *testing.T) {
	t.Parallel()
	st := newMapStore()
	st.gate = make(chan struct{})
	b, s := startWithClient(t, st)
	answered := make(chan result, 1)
	b.Submit(s, bg("f", "", "x", Normal), func(seq uint64, created bool, err error) { answered <- result{seq, created, err} })
	select {
	case <-answered:
		t.Fatal("acknowledged before the store write finished")
	default:
	}
	require.Equal(t, 1, b.Status(context.Background())[0].Queued[Normal], "runnable before it is durable (dispatch before durable)")
	close(st.gate)
	r := <-answered
	require.NoError(t, r.err)
	require.Equal(t, 1, st.Len())
}

func TestDurableReplayKeepsOrderPriorityAndUnique(t *testing.T) {
	t.Parallel()
	st := newMapStore()
	b, s := startWithClient(t, st)
	a := submitAndWait(t, b, s, bg("f", "ua", "a", Low))
	bb := submitAndWait(t, b, s, bg("f", "ub", "b", High))
	c := submitAndWait(t, b, s, bg("f", "", "c", Low))
	b.Stop()

	b2 := startWithStore(t, st)
	require.Equal(t, 3, b2.JobCount())
	s2 := b2.NewSession("y", &recorder{})
	dup := submitAndWait(t, b2, s2, bg("f", "ua", "again", Normal))
	require.Equal(t, a.seq, dup.seq, "uniques survive a restart")
	w := b2.NewSession("w", &recorder{})
	b2.CanDo(w, []byte("f"), 0)
	var order []uint64
	for {
		as, ok := b2.Grab(w)
		if !ok {
			break
		}
		order = append(order, as.Seq)
		require.NoError(t, b2.Finish(w, as.Seq, Complete, nil))
	}
	require.Equal(t, []uint64{bb.seq, a.seq, c.seq}, order)
	b2.Stop()
	require.Equal(t, 0, st.Len(), "finished jobs are deleted")
	b3 := startWithStoreAt(t, st, testStart.Add(time.Second))
	next := submitAndWait(t, b3, b3.NewSession("z", &recorder{}), bg("f", "", "new", Normal))
	require.Greater(t, next.seq, c.seq, "sequence numbers are not reused")
}

func TestDurableSaveFailureAnswersErrorAndStopsBackgroundSubmits(t *testing.T) {
	t.Parallel()
	st := newMapStore()
	st.failErr = errors.New("disk full")
	b, s := startWithClient(t, st)
	r := submitAndWait(t, b, s, bg("f", "", "x", Normal))
	var se *StoreError
	require.ErrorAs(t, r.err, &se)
	require.Equal(t, 0, b.JobCount())
	st.mu.Lock()
	st.failErr = nil
	st.mu.Unlock()
	r = submitAndWait(t, b, s, bg("f", "", "y", Normal))
	require.ErrorAs(t, r.err, &se, "no background submit is accepted after a failed write")
	r = submitAndWait(t, b, s, fg("f", "", "z"))
	require.NoError(t, r.err, "foreground jobs need no store")
}

func TestDurableGroupCommit(t *testing.T) {
	t.Parallel()
	st := newMapStore()
	st.gate = make(chan struct{})
	b, s := startWithClient(t, st)
	var wg sync.WaitGroup
	var mu sync.Mutex
	acked := 0
	for range 100 {
		wg.Add(1)
		b.Submit(s, bg("f", "", "x", Normal), func(uint64, bool, error) {
			mu.Lock()
			acked++
			mu.Unlock()
			wg.Done()
		})
	}
	close(st.gate)
	wg.Wait()
	require.Equal(t, 100, acked)
	st.mu.Lock()
	defer st.mu.Unlock()
	require.Less(t, st.saves, 100, "submits waiting together share a write")
	require.LessOrEqual(t, st.saves, 2)
}

// syncingStore is a mapStore with the Syncer capability, counting syncs
// and the deletes they covered.
type syncingStore struct {
	*mapStore
	syncs        int
	syncedDelete bool // a Delete came before a Sync
	deleted      bool
}

func (s *syncingStore) Delete(ctx context.Context, seqs []uint64) error {
	s.mapStore.mu.Lock()
	s.deleted = true
	s.mapStore.mu.Unlock()
	return s.mapStore.Delete(ctx, seqs)
}

func (s *syncingStore) Sync(context.Context) error {
	s.mapStore.mu.Lock()
	defer s.mapStore.mu.Unlock()
	s.syncs++
	s.syncedDelete = s.syncedDelete || s.deleted
	return nil
}

// TestDurableAdminAnswers checks that "deadletter retry all" answers only
// once its write is done, and a purge only once its removal is synced:
// a crash right after the OK must not bring the dead letters back.
func TestDurableAdminAnswers(t *testing.T) {
	t.Parallel()
	st := &syncingStore{mapStore: newMapStore()}
	b := New(Config{Store: st, Clock: newTestClock(), DefaultPolicy: Policy{MaxAttempts: 1}})
	require.NoError(t, b.Start(context.Background()))
	t.Cleanup(b.Stop)
	s := b.NewSession("x", &recorder{})
	w := b.NewSession("w", &recorder{})
	b.CanDo(w, []byte("f"), 0)
	b.CanDo(w, []byte("g"), 0)
	for _, fn := range []string{"f", "f", "f", "g", "g"} {
		require.NoError(t, submitAndWait(t, b, s, bg(fn, "", "x", Normal)).err)
		as, ok := b.Grab(w)
		require.True(t, ok)
		require.NoError(t, b.Finish(w, as.Seq, Fail, nil))
	}
	require.NoError(t, b.Durable(context.Background()))

	st.gate = make(chan struct{})
	st.entered = make(chan struct{}, 1)
	var openGate sync.Once
	t.Cleanup(func() { openGate.Do(func() { close(st.gate) }) }) // before b.Stop
	type answer struct {
		n   int
		err error
	}
	answered := make(chan answer, 1)
	go func() {
		n, err := b.RetryDeadLetters(context.Background(), "f")
		answered <- answer{n, err}
	}()
	<-st.entered
	select {
	case a := <-answered:
		t.Fatalf("deadletter retry all answered %+v while its write was not done", a)
	default:
	}
	openGate.Do(func() { close(st.gate) })
	a := <-answered
	require.NoError(t, a.err)
	require.Equal(t, 3, a.n)
	require.NoError(t, st.Load(context.Background(), func(j store.Job) error {
		if j.Function == "f" {
			require.NotEqual(t, store.StateDead, j.State, "job %d is still stored as a dead letter", j.Seq)
		}
		return nil
	}))

	n, err := b.PurgeDeadLetters(context.Background(), "g")
	require.NoError(t, err)
	require.Equal(t, 2, n)
	st.mapStore.mu.Lock()
	require.True(t, st.syncedDelete, "the purge answered before its removal was synced")
	// A removal written by an earlier batch, without a sync, is synced
	// for a later barrier too.
	st.deleted, st.syncedDelete = false, false
	st.mapStore.mu.Unlock()
	as, ok := b.Grab(w)
	require.True(t, ok)
	require.NoError(t, b.Finish(w, as.Seq, Complete, nil)) // its removal is not waited for
	deadline := time.Now().Add(30 * time.Second)
	for {
		st.mapStore.mu.Lock()
		deleted := st.deleted
		st.mapStore.mu.Unlock()
		if deleted {
			break
		}
		require.True(t, time.Now().Before(deadline), "the finished job was never removed")
		time.Sleep(time.Millisecond)
	}
	require.NoError(t, b.Durable(context.Background()))
	st.mapStore.mu.Lock()
	defer st.mapStore.mu.Unlock()
	require.True(t, st.syncedDelete, "Durable answered before an earlier removal was synced")
}
