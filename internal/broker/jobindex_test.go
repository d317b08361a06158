package broker

import (
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"
)

// The job index behaves as a map from sequence number to job under a random
// mix of puts (in order, out of order and far apart), replacements, deletes
// of present and absent numbers, and deletes during a walk; a page goes when
// its last job does.
func TestJobIndexMatchesAMap(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(1, 2))
	x := newJobIndex()
	model := map[uint64]*job{}
	next := uint64(1_000_000)
	// The pages kept at hand are the index's own, after every operation.
	checkAtHand := func() {
		t.Helper()
		if x.hot != nil {
			require.Same(t, x.pages[x.hotKey], x.hot, "the page of the latest put")
		}
		if x.last != nil {
			require.Same(t, x.pages[x.lastKey], x.last, "the page of the latest get or delete")
		}
	}
	check := func() {
		t.Helper()
		checkAtHand()
		require.Equal(t, len(model), x.len())
		seen := 0
		for seq, j := range x.all() {
			if model[seq] != j {
				t.Fatalf("index yields job %p as %d, the map holds %p", j, seq, model[seq])
			}
			seen++
		}
		require.Equal(t, len(model), seen, "every job is yielded once")
		for seq, j := range model {
			require.Same(t, j, x.get(seq))
		}
	}
	for i := range 20_000 {
		var seq uint64
		switch r := rng.IntN(10); {
		case r < 4: // the next number, as submits take them
			seq = next
			next++
		case r < 5: // far away, as another server's numbers or a replay's
			seq = rng.Uint64N(1 << 40)
		default: // near the recent ones
			seq = next - min(next, rng.Uint64N(200))
		}
		switch op := rng.IntN(10); {
		case op < 5:
			j := &job{seq: seq}
			x.put(seq, j)
			model[seq] = j
		case op < 9:
			x.delete(seq)
			delete(model, seq)
		default:
			require.Equal(t, model[seq], x.get(seq))
		}
		checkAtHand()
		if i%2000 == 0 {
			check()
		}
	}
	check()
	// A walk that deletes every other job it sees.
	n := 0
	for seq := range x.all() {
		if n++; n%2 == 0 {
			x.delete(seq)
			delete(model, seq)
		}
	}
	check()
	// A walk that ends every job it sees and starts one elsewhere (the
	// page freed may serve the new number): whatever it yields is live
	// under the number it yields.
	far := uint64(1<<50 + jobPageSize - 1) // the last slot of its page
	for seq, j := range x.all() {
		require.Same(t, model[seq], j)
		x.delete(seq)
		delete(model, seq)
		nj := &job{seq: far}
		x.put(far, nj)
		model[far] = nj
		far += jobPageSize
	}
	check()
	for seq := range model {
		x.delete(seq)
	}
	require.Zero(t, x.len())
	require.LessOrEqual(t, len(x.pages), 1, "pages of ended jobs are freed, but for the one new jobs go to")
	for key, p := range x.pages {
		require.Equal(t, x.hotKey, key)
		require.Zero(t, p.n)
	}
	require.Nil(t, x.get(next-1))
}
