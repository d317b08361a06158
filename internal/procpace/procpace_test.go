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

// comparing returns the configuration of the step tests that count work,
// a fresh state and a start time.
func comparing() (Config, state, time.Time) {
	return Config{Raise: 0.8, Lower: 0.5, LowerAfter: 2, Hold: time.Second, MinWork: 10, compare: true}.withDefaults(),
		state{}, time.Unix(0, 0)
}

// reading is one interval's reading for step.
type reading struct {
	used float64
	work uint64
	want int
}

// steps feeds readings one interval (10 ms) apart from at on and checks
// each change; it returns the time after the last.
func steps(t *testing.T, c Config, s *state, at time.Time, rs ...reading) time.Time {
	t.Helper()
	for i, r := range rs {
		cpu := time.Duration(r.used * float64(10*time.Millisecond))
		require.Equal(t, r.want, c.step(s, at, cpu, 10*time.Millisecond, r.work), "reading %d", i)
		at = at.Add(10 * time.Millisecond)
	}
	return at
}

func TestStepWithoutWork(t *testing.T) {
	c := Config{Raise: 0.6, Lower: 0.5, LowerAfter: 3, Hold: time.Second, MinWork: 10}.withDefaults()
	var s state
	at := time.Unix(0, 0)
	at = steps(t, c, &s, at, reading{0.1, 0, keep}, reading{0.49, 0, keep}, reading{0.5, 0, keep}) // busy: calm again
	at = steps(t, c, &s, at, reading{0.1, 0, keep}, reading{0.1, 0, keep}, reading{0, 0, lower})
	require.True(t, s.one)
	require.False(t, s.probing, "no work to compare")
	at = steps(t, c, &s, at, reading{0.59, 0, keep}, reading{0.3, 0, keep}, reading{0.3, 0, keep}, reading{0.3, 0, keep})
	at = steps(t, c, &s, at.Add(time.Hour), reading{0.1, 0, keep}, reading{0.1, 0, keep}, reading{0.1, 0, keep})
	at = steps(t, c, &s, at, reading{1.7, 0, raise})
	require.Equal(t, state{holdUntil: at.Add(c.Hold - 10*time.Millisecond)}, s, "busy: the default, held")
}

// A load calm at the default count but with bursts at one processor
// changes the count once a Hold, not at every burst.
func TestStepHoldsTheDefaultAfterABurst(t *testing.T) {
	c, s, at := comparing()
	changes := 0
	for range 1000 { // ten seconds of 10 ms readings
		used := 0.45
		if s.one {
			used = 0.9 // a burst
		}
		if c.step(&s, at, time.Duration(used*float64(10*time.Millisecond)), 10*time.Millisecond, 100) != keep {
			changes++
		}
		at = at.Add(10 * time.Millisecond)
	}
	require.LessOrEqual(t, changes, 2*10, "a lowering and a raise a second at most")
	require.GreaterOrEqual(t, changes, 2, "it did compare")
}

func TestStepKeepsOneWhereItIsCheaper(t *testing.T) {
	c, s, at := comparing()
	// At the default: 0.4 of a core for 100 units of work an interval.
	at = steps(t, c, &s, at, reading{0.4, 100, keep}, reading{0.4, 100, lower})
	require.True(t, s.probing)
	// At one: 0.3 of a core for the same work: kept, and held.
	at = steps(t, c, &s, at, reading{0.3, 100, keep}, reading{0.3, 100, keep})
	require.True(t, s.one)
	require.False(t, s.probing)
	at = steps(t, c, &s, at, reading{0.3, 100, keep}, reading{0.3, 100, keep})
	// After Hold, the default is measured again.
	at = steps(t, c, &s, at.Add(time.Second), reading{0.3, 100, keep}, reading{0.3, 100, raise})
	require.False(t, s.one)
	at = steps(t, c, &s, at, reading{0.4, 100, keep}, reading{0.4, 100, lower})
	require.True(t, s.probing)
	// Idle windows at one compare nothing and stay.
	steps(t, c, &s, at.Add(time.Hour), reading{0, 0, keep}, reading{0, 0, keep}, reading{0, 0, keep}, reading{0, 0, keep})
	require.True(t, s.one)
}

// Cheaper per unit of work at one processor but slower (a load that waits
// on its answers): the default is kept.
func TestStepReturnsToTheDefaultWhereOneIsSlower(t *testing.T) {
	c, s, at := comparing()
	at = steps(t, c, &s, at, reading{0.4, 100, keep}, reading{0.4, 100, lower})
	at = steps(t, c, &s, at, reading{0.3, 94, keep}, reading{0.3, 94, raise}) // 6% slower
	require.False(t, s.one)
	at = steps(t, c, &s, at.Add(time.Second), reading{0.4, 100, keep}, reading{0.4, 100, lower})
	steps(t, c, &s, at, reading{0.3, 96, keep}, reading{0.3, 96, keep}) // 4% slower, and cheaper
	require.True(t, s.one)
}

func TestStepReturnsToTheDefaultWhereItIsCheaper(t *testing.T) {
	c, s, at := comparing()
	at = steps(t, c, &s, at, reading{0.4, 100, keep}, reading{0.4, 100, lower})
	// At one: more CPU for the same work.
	at = steps(t, c, &s, at, reading{0.45, 100, keep}, reading{0.45, 100, raise})
	require.False(t, s.one)
	// Held at the default: calm windows do not lower it.
	require.True(t, s.holdUntil.After(at))
	at = steps(t, c, &s, at, reading{0.4, 100, keep}, reading{0.4, 100, keep}, reading{0.4, 100, keep}, reading{0.4, 100, keep})
	// After Hold, compared again.
	at = steps(t, c, &s, at.Add(time.Second), reading{0.4, 100, keep}, reading{0.4, 100, lower})
	require.True(t, s.probing)
	// Busy: the default, then idle windows there are not compared and
	// stay.
	at = steps(t, c, &s, at, reading{0.9, 100, raise})
	steps(t, c, &s, at.Add(time.Second), reading{0.01, 1, keep}, reading{0.01, 1, keep}, reading{0.01, 1, keep}, reading{0.01, 1, keep})
	require.False(t, s.one)
}

func TestConfigDefaults(t *testing.T) {
	got := Config{Interval: -time.Second, Raise: 0.9, Lower: -1}.withDefaults()
	require.Equal(t, Config{Interval: DefaultInterval, Raise: 0.9, Lower: DefaultLower, LowerAfter: DefaultLowerAfter,
		Idle: DefaultIdle, IdleEvery: DefaultIdleEvery, Hold: DefaultHold, MinWork: DefaultMinWork, Slowdown: DefaultSlowdown}, got)
}

func TestStartAndStopAnyOrder(t *testing.T) {
	p := New(Config{}, nil, slog.New(slog.DiscardHandler))
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
	// load is the share of a core used per interval of wall time, or
	// loadAt's for the count in force if set; every reading does work
	// units of work.
	load   float64
	loadAt map[int]float64
	work   uint64
	done   uint64
}

func (f *fakeRuntime) pacer(cfg Config) *Pacer {
	p := New(cfg, nil, slog.New(slog.DiscardHandler))
	p.cpuFunc = func() (time.Duration, bool) {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.wall = f.wall.Add(p.cfg.Interval) // every reading is one interval on
		load := f.load
		if l, ok := f.loadAt[f.procs]; ok {
			load = l
		}
		f.cpu += time.Duration(load * float64(p.cfg.Interval))
		f.done += f.work
		return f.cpu, true
	}
	p.workFunc = func() uint64 {
		f.mu.Lock()
		defer f.mu.Unlock()
		return f.done
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
	p := f.pacer(Config{Interval: time.Millisecond, LowerAfter: 5, Hold: 5 * time.Millisecond})
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

// Where one processor costs more CPU for the same work, the Pacer goes
// back to the default after comparing and stays there for Hold.
func TestPacerComparesCostPerWork(t *testing.T) {
	f := &fakeRuntime{procs: 2, def: 2, wall: time.Unix(0, 0), work: 100, loadAt: map[int]float64{1: 0.45, 2: 0.4}}
	p := f.pacer(Config{Interval: time.Millisecond, LowerAfter: 5, MinWork: 10, Hold: time.Hour})
	p.Start(testwait.Context(t))
	testwait.Until(t, "a comparison", func() bool {
		_, changes := f.get()
		return len(changes) >= 2
	})
	f.mu.Lock()
	f.loadAt = map[int]float64{1: 0.3, 2: 0.4} // cheaper at one now, but the comparison holds
	f.mu.Unlock()
	testwait.Until(t, "many intervals", func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return f.done > 100*100
	})
	p.Stop()
	n, changes := f.get()
	require.Equal(t, 2, n)
	require.Equal(t, []int{1, 2}, changes, "lowered to compare, raised back, held")
}

func TestPacerLeavesADefaultOfOne(t *testing.T) {
	f := &fakeRuntime{procs: 1, def: 1, wall: time.Unix(0, 0)}
	p := f.pacer(Config{Interval: time.Millisecond, IdleEvery: time.Millisecond, LowerAfter: 2})
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

// While idle, the readings come IdleEvery apart.
func TestIdleReadsSeldom(t *testing.T) {
	f := &fakeRuntime{procs: 2, def: 2, wall: time.Unix(0, 0)}
	p := f.pacer(Config{Interval: time.Millisecond, IdleEvery: time.Hour})
	var readings atomic.Int64
	cpu := p.cpuFunc
	p.cpuFunc = func() (time.Duration, bool) {
		readings.Add(1)
		return cpu()
	}
	p.Start(testwait.Context(t))
	defer p.Stop()
	testwait.Until(t, "a reading after the first", func() bool { return readings.Load() >= 2 })
	time.Sleep(50 * time.Millisecond) // fifty intervals
	require.Equal(t, int64(2), readings.Load(), "the first, one an interval later, then an hour's wait")
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
	p := New(Config{Interval: 10 * time.Millisecond, Raise: 0.2, Lower: 0.1, LowerAfter: 3}, nil,
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
