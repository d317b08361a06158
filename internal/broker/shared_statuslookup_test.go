package broker_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/internal/broker"
	"github.com/gearwork/gearwork/internal/store"
	"github.com/gearwork/gearwork/internal/store/postgres"
	"github.com/gearwork/gearwork/internal/store/postgres/pgtest"
)

// countingStore counts the status lookups a server sends its store.
type countingStore struct {
	*postgres.Store
	finds, findManys, looked atomic.Int64
}

func (s *countingStore) Find(ctx context.Context, seq uint64, unique string) (store.Found, bool, error) {
	s.finds.Add(1)
	return s.Store.Find(ctx, seq, unique)
}

func (s *countingStore) FindMany(ctx context.Context, seqs []uint64, uniques []string) (map[uint64]store.Found, map[string]store.Found, error) {
	s.findManys.Add(1)
	s.looked.Add(int64(len(seqs) + len(uniques)))
	return s.Store.FindMany(ctx, seqs, uniques)
}

// GET_STATUS and GET_STATUS_UNIQUE of jobs another server holds or stored
// are answered from the store, many clients' lookups sharing a query
// (not one query each, which let clients asking for unknown handles load
// the database at will); a job submitted on another server just before is
// found.
func TestSharedStatusLookupsShareQueries(t *testing.T) {
	t.Parallel()
	url := pgtest.Schema(t)
	a, _ := startShared(t, url, "a", broker.Config{})
	st, err := postgres.Open(context.Background(), postgres.Config{URL: url, Name: "b", Logger: quiet})
	require.NoError(t, err)
	cs := &countingStore{Store: st}
	b := broker.New(broker.Config{Shared: cs, HandlePrefix: "H:b:", Logger: quiet})
	require.NoError(t, b.Start(context.Background()))
	t.Cleanup(func() {
		b.Stop()
		_ = st.Close()
	})

	client := a.NewSession("client", newOutbox())
	const jobs = 20
	var seqs []uint64
	for i := range jobs {
		r := submit(t, a, client, bgJob("f", fmt.Sprint("u", i), "p"))
		require.NoError(t, r.err)
		seqs = append(seqs, r.seq)
		require.True(t, b.GetStatus([]byte(a.Handle(r.seq))).Known, "a job submitted on a a moment ago")
	}

	const clients, each = 16, 50
	var wg sync.WaitGroup
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				k := (c*each + i) % jobs
				if !assertLookup(t, b.GetStatus([]byte(a.Handle(seqs[k]))), seqs[k], true) ||
					!assertLookup(t, b.GetStatus(fmt.Appendf(nil, "H:a:%d", seqs[jobs-1]+1000+uint64(i))), 0, false) ||
					!assertLookup(t, b.GetStatusUnique(fmt.Appendf(nil, "u%d", k)), seqs[k], true) ||
					!assertLookup(t, b.GetStatusUnique(fmt.Appendf(nil, "nope%d", i)), 0, false) {
					return
				}
			}
		}()
	}
	wg.Wait()
	require.Zero(t, cs.finds.Load(), "lookups go through FindMany")
	lookups := int64(jobs + clients*each*4)
	require.Equal(t, lookups, cs.looked.Load(), "every lookup asked the store once")
	t.Logf("%d lookups in %d queries", lookups, cs.findManys.Load())
}

func assertLookup(t *testing.T, st broker.JobStatus, seq uint64, known bool) bool {
	if st.Known != known || known && st.Seq != seq {
		t.Errorf("status %+v, want known=%v seq=%d", st, known, seq)
		return false
	}
	return true
}
