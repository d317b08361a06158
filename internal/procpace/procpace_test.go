package procpace

import (
	"context"
	"log/slog"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/gearwork/gearwork/internal/testlog"
	"github.com/gearwork/gearwork/internal/testwait"
)

// TestMain checks that no Pacer's goroutine outlives the tests.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestNext(t *testing.T) {
	c := Config{Raise: 0.6, Lower: 0.5, LowerAfter: 3}
	type step struct {
		used   float64
		change bool
		calm   int
	}
	for _, tc := range []struct {
		name  string
		one   bool
		steps []step
	}{
		{"calm intervals lower the count after LowerAfter", false, []step{{0.1, false, 1}, {0.49, false, 2}, {0, true, 0}}},
		{"a busy interval starts the calm count again", false, []step{{0.1, false, 1}, {0.1, false, 2}, {0.5, false, 0}, {0.1, false, 1}}},
		{"one processor stays below Raise", true, []step{{0.59, false, 0}, {0, false, 0}}},
		{"one busy interval raises the count", true, []step{{0.6, true, 0}}},
		{"more than a core counts as busy", true, []step{{1.7, true, 0}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			calm := 0
			for i, s := range tc.steps {
				var change bool
				change, calm = c.next(tc.one, s.used, calm)
				require.Equal(t, s.change, change, "step %d", i)
				require.Equal(t, s.calm, calm, "step %d", i)
			}
		})
	}
}

func TestConfigDefaults(t *testing.T) {
	got := Config{Interval: -time.Second, Raise: 0.9, Lower: -1}.withDefaults()
	require.Equal(t, Config{Interval: DefaultInterval, Raise: 0.9, Lower: DefaultLower, LowerAfter: DefaultLowerAfter,
		Idle: DefaultIdle, IdleEvery: DefaultIdleEvery}, got)
}

func TestStartAndStopAnyOrder(t *testing.T) {
	p := New(Config{}, slog.New(slog.DiscardHandler))
	require.NotNil(t, p, "this system's CPU time is readable and the tests run on more than one processor")
	p.Stop() // before Start: nothing to do
	p.Start(testwait.Context(t))
	p.Start(testwait.Context(t)) // a second Start does nothing
	p.Stop()
	p.Stop()
	p.Start(testwait.Context(t)) // after Stop: nothing
	var nilPacer *Pacer
	nilPacer.Start(context.Background())
	nilPacer.Stop()
}

// fakeRuntime stands for the process's CPU clock and the runtime's count.
type fakeRuntime struct {
	mu      sync.Mutex
	cpu     time.Duration
	wall    time.Time
	procs   int
	def     int
	changes []int
	// load is the share of a core used per interval of wall time.
	load float64
}

func (f *fakeRuntime) pacer(cfg Config) *Pacer {
	p := New(cfg, slog.New(slog.DiscardHandler))
	p.cpuFunc = func() (time.Duration, bool) {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.wall = f.wall.Add(p.cfg.Interval) // every reading is one interval on
		f.cpu += time.Duration(f.load * float64(p.cfg.Interval))
		return f.cpu, true
	}
	p.nowFunc = func() time.Time {
		f.mu.Lock()
		defer f.mu.Unlock()
		return f.wall
	}
	p.countFunc = func() int {
		f.mu.Lock()
		defer f.mu.Unlock()
		return f.procs
	}
	p.lowerFunc = func() { f.set(1) }
	p.raiseFunc = func() { f.set(f.def) }
	return p
}

func (f *fakeRuntime) set(n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.procs = n
	f.changes = append(f.changes, n)
}

func (f *fakeRuntime) get() (procs int, changes []int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.procs, append([]int(nil), f.changes...)
}

func (f *fakeRuntime) setLoad(l float64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.load = l
}

func (f *fakeRuntime) waitFor(t *testing.T, what string, procs int) {
	t.Helper()
	testwait.Until(t, what, func() bool {
		n, _ := f.get()
		return n == procs
	})
}

func TestPacerFollowsLoad(t *testing.T) {
	f := &fakeRuntime{procs: 3, def: 3, wall: time.Unix(0, 0)}
	p := f.pacer(Config{Interval: time.Millisecond, LowerAfter: 5})
	f.setLoad(0.2)
	p.Start(testwait.Context(t))
	f.waitFor(t, "one processor while calm", 1)
	f.setLoad(0.9)
	f.waitFor(t, "the default under load", 3)
	f.setLoad(0.1)
	f.waitFor(t, "one processor again", 1)
	f.mu.Lock()
	f.def = 4 // a container's limit rose meanwhile
	f.mu.Unlock()
	p.Stop()
	n, changes := f.get()
	require.Equal(t, 4, n, "Stop gives the default back")
	require.Equal(t, []int{1, 3, 1, 4}, changes, "no change but those")
}

func TestPacerLeavesADefaultOfOne(t *testing.T) {
	f := &fakeRuntime{procs: 1, def: 1, wall: time.Unix(0, 0)}
	p := f.pacer(Config{Interval: time.Millisecond, LowerAfter: 2})
	p.Start(testwait.Context(t))
	testwait.Until(t, "some intervals", func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return f.wall.After(time.Unix(0, 0).Add(20 * time.Millisecond))
	})
	f.setLoad(0.9)
	testwait.Until(t, "some busy intervals", func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return f.cpu > 20*time.Millisecond
	})
	p.Stop()
	_, changes := f.get()
	require.Empty(t, changes, "a runtime on one processor is not lowered, so not raised either")
}

// At one processor and idle, the readings come IdleEvery apart.
func TestIdleReadsSeldom(t *testing.T) {
	f := &fakeRuntime{procs: 2, def: 2, wall: time.Unix(0, 0)}
	p := f.pacer(Config{Interval: time.Millisecond, LowerAfter: 2, IdleEvery: time.Hour})
	var readings atomic.Int64
	cpu := p.cpuFunc
	p.cpuFunc = func() (time.Duration, bool) {
		readings.Add(1)
		return cpu()
	}
	p.Start(testwait.Context(t))
	defer p.Stop()
	f.waitFor(t, "one processor while idle", 1)
	n := readings.Load()
	time.Sleep(50 * time.Millisecond) // fifty intervals
	require.LessOrEqual(t, readings.Load(), n+1, "at most the reading after the change, then an hour's wait")
}

// Not parallel: it changes the test process's own count. With the real
// clock and runtime, an idle process falls to one processor and rises
// again while goroutines spin.
func TestPacerWithTheRuntime(t *testing.T) {
	forced := runtime.GOMAXPROCS(0) < 2
	if forced {
		defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(2))
	}
	maxProcs := runtime.GOMAXPROCS(0)
	var logs testlog.Buffer
	p := New(Config{Interval: 10 * time.Millisecond, Raise: 0.2, Lower: 0.1, LowerAfter: 3},
		slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	require.NotNil(t, p)
	if forced { // the default is one processor here
		p.raiseFunc = func() { runtime.GOMAXPROCS(maxProcs) }
	}
	p.Start(testwait.Context(t))
	defer p.Stop()
	testwait.Until(t, "one processor while idle", func() bool { return runtime.GOMAXPROCS(0) == 1 })

	var stop atomic.Bool
	var wg sync.WaitGroup
	for range maxProcs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; !stop.Load(); i++ {
				if i%1024 == 0 {
					runtime.Gosched()
				}
			}
		}()
	}
	testwait.Until(t, "every processor while goroutines spin", func() bool { return runtime.GOMAXPROCS(0) == maxProcs })
	stop.Store(true)
	wg.Wait()
	require.Contains(t, logs.String(), `msg="procpace: processors" from=1 to=`+strconv.Itoa(maxProcs))
}
