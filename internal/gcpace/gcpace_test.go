package gcpace

import (
	"context"
	"runtime"
	"runtime/metrics"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/gearwork/gearwork/internal/testwait"
)

const mib = 1 << 20

// The room above the live heap leaves the pinned bytes out, within its
// bounds. The cases are named after what they show.
func TestPercent(t *testing.T) {
	t.Parallel()
	cfg := New(Config{}).cfg
	type heap struct{ live, pinned int64 }
	want := map[string]int{
		"nothing pinned: Go's default":   100,
		"a small heap keeps its room":    100,
		"heap of unknown size":           100,
		"the budget's payloads get none": 41,
		"the rest keeps its own room":    75,
		"pinned beyond live is all live": 32,
		"payloads alone: MinPercent":     10,
	}
	heaps := map[string]heap{
		"nothing pinned: Go's default": {500 * mib, 0},
		"a small heap keeps its room":  {40 * mib, 30 * mib},
		"heap of unknown size":         {0, 0},
		// 1M queued 1 KiB jobs with a 128 MiB budget: 134 MB of payloads
		// in 165 MB live; the rest (31 MB) is below the least room.
		"the budget's payloads get none": {165e6, 134e6},
		"the rest keeps its own room":    {400 * mib, 100 * mib},
		"pinned beyond live is all live": {200 * mib, 300 * mib},
		"payloads alone: MinPercent":     {6000 * mib, 5990 * mib},
	}
	require.Len(t, heaps, len(want))
	for name, h := range heaps {
		require.Equal(t, want[name], cfg.percent(h.live, h.pinned), name)
	}
	tight := New(Config{Percent: 50, MinHeadroom: 1, MinPercent: 5}).cfg
	require.Equal(t, 50, tight.percent(100*mib, 0), "never above Percent")
	require.Equal(t, 5, tight.percent(100*mib, 100*mib), "never below MinPercent")
	require.Equal(t, 25, tight.percent(100*mib, 50*mib), "Percent of the rest")
}

// gogc reads the collector's target from the runtime.
func gogc() uint64 {
	s := []metrics.Sample{{Name: "/gc/gogc:percent"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// Not parallel: it sets the process's GOGC.
func TestPacerSetsTargetAfterCollection(t *testing.T) {
	p := New(Config{MinHeadroom: 1})
	p.Stop() // before Start: nothing
	var pinned int64 = 1 << 40
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p.Start(ctx, func() int64 { return pinned })
	require.EqualValues(t, 100, gogc(), "Start sets Percent")
	testwait.Until(t, "the target of a heap of pinned bytes", func() bool {
		runtime.GC()
		return gogc() == DefaultMinPercent
	})
	p.Stop()
	require.EqualValues(t, 100, gogc(), "Stop restores Percent")
	p.Stop()
	var nilPacer *Pacer
	nilPacer.Start(ctx, nil)
	nilPacer.Stop()
}

// TestMain checks that no Pacer's goroutine outlives the tests.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
