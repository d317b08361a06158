// Package procpace sets how many processors the Go runtime schedules
// goroutines on (GOMAXPROCS) from the CPU the process used lately: one
// while the load fits well within one core, all of them once it does not.
//
// A job server at a moderate rate spends most of a job's CPU on wake-ups:
// a request arrives, its goroutine becomes runnable, and with other
// processors idle the runtime wakes a second thread to look for work
// that the first one is about to do. With one processor there is no
// second thread to wake, and the same load costs markedly less CPU per
// job; with one processor a busy server would be capped at one core. The
// Pacer therefore leaves the runtime its default count at first, sets one
// processor after the process used less than Config.Lower of a core for
// Config.LowerAfter intervals in a row, and gives the runtime its default
// back as soon as one interval at one processor used Config.Raise of a
// core or more.
//
// # Guarantees and caveats
//
//   - The count is either one or the runtime's default (the machine's
//     CPUs, or a container's CPU limit, which the runtime follows while
//     the count is its default); Stop gives the default back.
//   - A burst that arrives while the count is one runs on one processor
//     for one or two intervals (Config.Interval; Config.IdleEvery if the
//     process was idle before it) before the count is raised, longer
//     while a garbage collection is under way: a change of the count
//     waits for it to end.
//   - Changing the count stops the world for a moment. The thresholds are
//     apart (a load costs no less CPU on more processors), so a steady
//     load does not make the count flap.
//   - Set GOMAXPROCS in the environment to fix the count instead (the
//     server then starts no Pacer).
package procpace

import (
	"context"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults of Config.
const (
	DefaultInterval   = 25 * time.Millisecond
	DefaultRaise      = 0.8
	DefaultLower      = 0.5
	DefaultLowerAfter = 40
	DefaultIdle       = 0.02
	DefaultIdleEvery  = 200 * time.Millisecond
)

// Config configures a Pacer. Fields that are not positive take their
// defaults.
type Config struct {
	// Interval is how often the CPU used is read.
	Interval time.Duration
	// Raise is the share of a core that, used over one interval while
	// the count is one, gives the runtime its default count back.
	Raise float64
	// Lower is the share of a core below which the process must stay for
	// LowerAfter intervals in a row before the count falls to one.
	Lower      float64
	LowerAfter int
	// While the count is one and an interval used less than Idle of a
	// core, the next reading comes after IdleEvery instead of Interval,
	// so that an idle server wakes up seldom.
	Idle      float64
	IdleEvery time.Duration
}

func (c Config) withDefaults() Config {
	c.Interval = orDefault(c.Interval, DefaultInterval)
	c.Raise = orDefault(c.Raise, DefaultRaise)
	c.Lower = orDefault(c.Lower, DefaultLower)
	c.LowerAfter = orDefault(c.LowerAfter, DefaultLowerAfter)
	c.Idle = orDefault(c.Idle, DefaultIdle)
	c.IdleEvery = orDefault(c.IdleEvery, DefaultIdleEvery)
	return c
}

// orDefault returns v if it is positive, else d.
func orDefault[T int | float64 | time.Duration](v, d T) T {
	if v > 0 {
		return v
	}
	return d
}

// next reports whether to change the count after an interval in which the
// process used used cores (CPU time over wall time), one telling whether
// the count is one, and how many calm intervals in a row there have been,
// given calm before it.
func (c Config) next(one bool, used float64, calm int) (bool, int) {
	if one {
		return used >= c.Raise, 0
	}
	if used >= c.Lower {
		return false, 0
	}
	calm++
	if calm >= c.LowerAfter {
		return true, 0
	}
	return false, calm
}

// A Pacer sets the runtime's processor count from the CPU the process
// uses (see the package comment). Start it once; Stop ends it. A nil
// *Pacer does nothing.
type Pacer struct {
	cfg Config
	log *slog.Logger
	// cpuFunc returns the CPU time the process has used, false when it
	// cannot be read; countFunc returns the count in force, lowerFunc
	// sets one processor and raiseFunc gives the runtime its default
	// back. Tests replace them.
	cpuFunc   func() (time.Duration, bool)
	nowFunc   func() time.Time
	countFunc func() int
	lowerFunc func()
	raiseFunc func()
	started   atomic.Bool
	cancel    context.CancelFunc
	done      chan struct{}
	once      sync.Once
}

// New returns a Pacer, or nil when the runtime has one processor to begin
// with or the process's CPU time cannot be read on this system.
func New(cfg Config, log *slog.Logger) *Pacer {
	if runtime.GOMAXPROCS(0) <= 1 {
		return nil
	}
	if _, ok := processCPU(); !ok {
		return nil
	}
	return &Pacer{
		cfg: cfg.withDefaults(), log: log,
		cpuFunc:   processCPU,
		nowFunc:   time.Now,
		countFunc: func() int { return runtime.GOMAXPROCS(0) },
		lowerFunc: func() { runtime.GOMAXPROCS(1) },
		raiseFunc: runtime.SetDefaultGOMAXPROCS,
	}
}

// Start begins reading the CPU used every interval and setting the count.
// Only its first call does anything.
func (p *Pacer) Start(ctx context.Context) {
	if p == nil || !p.started.CompareAndSwap(false, true) {
		return
	}
	ctx, p.cancel = context.WithCancel(ctx)
	p.done = make(chan struct{})
	go p.run(ctx)
}

// Stop ends the Pacer and gives the runtime its default count back. It may
// be called more than once, and before Start.
func (p *Pacer) Stop() {
	if p == nil || !p.started.Load() {
		return
	}
	p.once.Do(func() {
		p.cancel()
		<-p.done
	})
}

func (p *Pacer) run(ctx context.Context) {
	defer close(p.done)
	one := false
	defer func() {
		if one {
			p.raiseFunc()
		}
	}()
	t := time.NewTimer(p.cfg.Interval)
	defer t.Stop()
	lastCPU, known := p.cpuFunc()
	lastWall := p.nowFunc()
	calm := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		t.Reset(p.cfg.Interval)
		cpu, ok := p.cpuFunc()
		wall := p.nowFunc()
		elapsed := wall.Sub(lastWall)
		if !ok || elapsed <= 0 {
			continue
		}
		if !known { // the first reading failed: start from this one
			lastCPU, lastWall, known = cpu, wall, true
			continue
		}
		used := float64(cpu-lastCPU) / float64(elapsed)
		lastCPU, lastWall = cpu, wall
		if one && used < p.cfg.Idle {
			t.Reset(p.cfg.IdleEvery)
		}
		var change bool
		change, calm = p.cfg.next(one, used, calm)
		if !change {
			continue
		}
		from := p.countFunc()
		if one {
			p.raiseFunc()
		} else if from > 1 {
			p.lowerFunc()
		} else {
			continue // the default is one processor already
		}
		one = !one
		p.log.Debug("procpace: processors", slog.Int("from", from), slog.Int("to", p.countFunc()), slog.Float64("cores_used", used))
	}
}
