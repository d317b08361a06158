package procpace

import (
	"context"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/internal/testlog"
	"github.com/gearwork/gearwork/internal/testwait"
)

func TestNext(t *testing.T) {
	c := Config{Max: 4, Raise: 0.6, Lower: 0.5, LowerAfter: 3}
	type step struct {
		used       float64
		procs, cal int
	}
	for _, tc := range []struct {
		name  string
		cur   int
		steps []step
	}{
		{"calm intervals lower the count after LowerAfter", 4, []step{{0.1, 4, 1}, {0.49, 4, 2}, {0, 1, 0}}},
		{"a busy interval starts the calm count again", 4, []step{{0.1, 4, 1}, {0.1, 4, 2}, {0.5, 4, 0}, {0.1, 4, 1}}},
		{"one processor stays below Raise", 1, []step{{0.59, 1, 0}, {0, 1, 0}}},
		{"one busy interval raises the count to Max", 1, []step{{0.6, 4, 0}}},
		{"more than a core counts as busy", 1, []step{{1.7, 4, 0}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cur, calm := tc.cur, 0
			for i, s := range tc.steps {
				cur, calm = c.next(cur, s.used, calm)
				require.Equal(t, s.procs, cur, "step %d", i)
				require.Equal(t, s.cal, calm, "step %d", i)
			}
		})
	}
}

func TestNewNeedsMoreThanOneProcessor(t *testing.T) {
	require.Nil(t, New(Config{Max: 1}, slog.Default()))
	p := New(Config{Max: 2}, slog.Default())
	require.NotNil(t, p, "this system's CPU time is readable")
	p.Stop() // never started: nothing to do
	var nilPacer *Pacer
	nilPacer.Start(context.Background())
	nilPacer.Stop()
}

// fakeRuntime stands for the process's CPU clock and the runtime's count.
type fakeRuntime struct {
	mu    sync.Mutex
	cpu   time.Duration
	wall  time.Time
	procs int
	sets  []int
	// load is the share of a core used per interval of wall time.
	load float64
}

func (f *fakeRuntime) tick(d time.Duration) {
	f.wall = f.wall.Add(d)
	f.cpu += time.Duration(f.load * float64(d))
}

func (f *fakeRuntime) pacer(cfg Config) *Pacer {
	p := New(cfg, slog.New(slog.DiscardHandler))
	p.cpu = func() (time.Duration, bool) {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.tick(cfg.Interval) // every reading is one interval on
		return f.cpu, true
	}
	p.now = func() time.Time {
		f.mu.Lock()
		defer f.mu.Unlock()
		return f.wall
	}
	p.set = func(n int) int {
		f.mu.Lock()
		defer f.mu.Unlock()
		was := f.procs
		if n > 0 {
			f.procs = n
			f.sets = append(f.sets, n)
		}
		return was
	}
	return p
}

func (f *fakeRuntime) get() (procs int, sets []int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.procs, append([]int(nil), f.sets...)
}

func (f *fakeRuntime) setLoad(l float64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.load = l
}

func TestPacerFollowsLoad(t *testing.T) {
	f := &fakeRuntime{procs: 3, wall: time.Unix(0, 0)}
	p := f.pacer(Config{Max: 3, Interval: time.Millisecond, LowerAfter: 5})
	f.setLoad(0.2)
	p.Start(testwait.Context(t))
	testwait.Until(t, "one processor while calm", func() bool {
		n, _ := f.get()
		return n == 1
	})
	f.setLoad(0.9)
	testwait.Until(t, "every processor under load", func() bool {
		n, _ := f.get()
		return n == 3
	})
	f.setLoad(0.1)
	testwait.Until(t, "one processor again", func() bool {
		n, _ := f.get()
		return n == 1
	})
	p.Stop()
	p.Stop()
	n, sets := f.get()
	require.Equal(t, 3, n, "Stop sets Max again")
	require.Equal(t, []int{1, 3, 1, 3}, sets, "no change but those")
}

// Not parallel: it changes the test process's own count. With the real
// clock and runtime, an idle process falls to one processor and rises
// again while goroutines spin.
func TestPacerWithTheRuntime(t *testing.T) {
	maxProcs := runtime.GOMAXPROCS(0)
	if maxProcs < 2 {
		maxProcs = 2
		defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(2))
	}
	var logs testlog.Buffer
	p := New(Config{Interval: 10 * time.Millisecond, Raise: 0.2, Lower: 0.1, LowerAfter: 3},
		slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	require.NotNil(t, p)
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
	p.Stop()
	require.Equal(t, maxProcs, runtime.GOMAXPROCS(0), "Stop sets Max again")
	require.Contains(t, logs.String(), "msg=\"procpace: processors\" from=1 to=")
}
