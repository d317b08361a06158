package testwait_test

import (
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/internal/testwait"
)

func TestUntilReturnsOnceTheConditionHolds(t *testing.T) {
	t.Parallel()
	var n atomic.Int32
	testwait.Until(t, "the third poll", func() bool { return n.Add(1) == 3 })
	require.Equal(t, int32(3), n.Load(), "polls until the condition holds, then stops")
}
