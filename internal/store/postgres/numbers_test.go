package postgres

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// No reserved number is used more than poolFresh after its reservation,
// also when newer numbers were added behind it.
func TestNumberPoolDropsNumbersReservedTooLongAgo(t *testing.T) {
	t0 := time.Unix(1000, 0)
	var p numberPool
	p.add([]uint64{1, 2, 3, 4}, false, t0)
	require.Equal(t, []int64{1, 2}, p.take(2, t0.Add(500*time.Millisecond)))
	p.add([]uint64{5, 6, 7, 8}, false, t0.Add(900*time.Millisecond)) // kept behind 3 and 4
	require.Equal(t, []int64{3}, p.take(1, t0.Add(poolFresh)))
	require.Nil(t, p.take(1, t0.Add(poolFresh+time.Millisecond)), "4 was reserved too long ago, and the pool with it")
	p.add([]uint64{9, 10}, false, t0.Add(2*poolFresh))
	require.Equal(t, []int64{9, 10}, p.take(2, t0.Add(2*poolFresh+poolFresh/2)), "a fresh reservation on an empty pool")
}

// A round that did not use the pool replaces what is left in it; one that
// did keeps it ahead of the new numbers; fewer numbers than asked for empty
// the pool.
func TestNumberPoolKeepsOrder(t *testing.T) {
	t0 := time.Unix(1000, 0)
	var p numberPool
	p.add([]uint64{1, 2, 3}, false, t0)
	p.add([]uint64{10, 11}, true, t0)
	require.Equal(t, []int64{10}, p.take(1, t0))
	p.add([]uint64{20}, false, t0)
	require.Equal(t, []int64{11, 20}, p.take(2, t0))
	p.add([]uint64{30}, false, t0)
	require.Nil(t, p.take(2, t0))
	require.Nil(t, p.take(1, t0), "emptied by the take it could not serve")
}
