package broker

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/internal/store"
	"github.com/gearwork/gearwork/internal/testwait"
)

// gateFinder answers FindMany for even numbers and the unique "known",
// holding its first query until gate is closed, and notes the size of
// each query.
type gateFinder struct {
	mu      sync.Mutex
	queries []int
	entered chan struct{}
	gate    chan struct{}
}

func (f *gateFinder) FindMany(_ context.Context, seqs []uint64, uniques []string) (map[uint64]store.Found, map[string]store.Found, error) {
	f.mu.Lock()
	f.queries = append(f.queries, len(seqs)+len(uniques))
	first := len(f.queries) == 1
	f.mu.Unlock()
	if first {
		close(f.entered)
		<-f.gate
	}
	bySeq, byUnique := map[uint64]store.Found{}, map[string]store.Found{}
	for _, s := range seqs {
		if s%2 == 0 {
			bySeq[s] = store.Found{Seq: s, Numerator: uint32(s)}
		}
	}
	for _, u := range uniques {
		if u == "known" {
			byUnique[u] = store.Found{Seq: 7, Claimed: true}
		}
	}
	return bySeq, byUnique, nil
}

// Status lookups that arrive while one query is under way wait for the
// next, which takes them all: two queries for 100 lookups, each answered
// as a query of its own would.
func TestStatusLookupsShareOneQueryAtATime(t *testing.T) {
	t.Parallel()
	f := &gateFinder{entered: make(chan struct{}), gate: make(chan struct{})}
	l := &statusLookups{find: f, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	const n = 100
	type answer struct {
		found store.Found
		ok    bool
	}
	answers := make([]answer, n)
	var wg sync.WaitGroup
	ask := func(i int) {
		defer wg.Done()
		u := ""
		if i%10 == 9 {
			u = "known"
		} else if i%10 == 8 {
			u = fmt.Sprint("unknown", i)
		}
		found, ok := l.lookup(uint64(i), u)
		answers[i] = answer{found, ok}
	}
	wg.Add(1)
	go ask(0)
	<-f.entered
	for i := 1; i < n; i++ {
		wg.Add(1)
		go ask(i)
	}
	testwait.Until(t, "the other lookups to wait for the next query", func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		return len(l.pending) == n-1
	})
	close(f.gate)
	wg.Wait()
	require.Equal(t, []int{1, n - 1}, f.queries)
	for i, a := range answers {
		switch {
		case i%10 == 9:
			require.Equal(t, answer{store.Found{Seq: 7, Claimed: true}, true}, a, i)
		case i%10 == 8 || i%2 == 1:
			require.False(t, a.ok, i)
		default:
			require.Equal(t, answer{store.Found{Seq: uint64(i), Numerator: uint32(i)}, true}, a, i)
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	require.False(t, l.running, "no query under way once all are answered")
}
