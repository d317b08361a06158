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
// core or more. Not every calm load is cheaper on one processor (one
// request at a time back and forth can cost more there), so when it can
// count the work done the Pacer keeps one processor only if a window of
// LowerAfter intervals there cost no more CPU per unit of work than the
// window at the default count before it and did about as much work per
// second (a load that waits on its answers, such as clients with a fixed
// number of requests in flight, gets fewer done where each waits longer),
// and compares again after Config.Hold.
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
//   - Changing the count stops the world for a moment. A comparison's
//     choice, and the default count after a busy interval at one
//     processor, are held for Config.Hold, so a load with bursts does not
//     make the count flap.
//   - Set GOMAXPROCS in the environment to fix the count instead (the
//     server then starts no Pacer).
package procpace

import (
	"context"
	"log/slog"
	"runtime"
	"sync"
	"time"
)

// Defaults of Config.
const (
	DefaultInterval   = 25 * time.Millisecond
	DefaultRaise      = 0.8
	DefaultLower      = 0.5
	DefaultLowerAfter = 20
	DefaultIdle       = 0.02
	DefaultIdleEvery  = 200 * time.Millisecond
	DefaultHold       = 30 * time.Second
	DefaultMinWork    = 500
	DefaultSlowdown   = 0.05
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
	// After an interval that used less than Idle of a core the next
	// reading comes after IdleEvery instead of Interval, so that an idle
	// server wakes up seldom.
	Idle      float64
	IdleEvery time.Duration
	// Hold is how long the count stays as a comparison of the CPU per
	// unit of work at one processor and at the default chose (see New),
	// and MinWork the least work a window must count for such a
	// comparison.
	Hold    time.Duration
	MinWork uint64
	// Slowdown is the share by which the work done per second at one
	// processor may fall short of the default count's before the default
	// is kept.
	Slowdown float64
	// compare is set when the work done is counted (New).
	compare bool
}

func (c Config) withDefaults() Config {
	c.Interval = orDefault(c.Interval, DefaultInterval)
	c.Raise = orDefault(c.Raise, DefaultRaise)
	c.Lower = orDefault(c.Lower, DefaultLower)
	c.LowerAfter = orDefault(c.LowerAfter, DefaultLowerAfter)
	c.Idle = orDefault(c.Idle, DefaultIdle)
	c.IdleEvery = orDefault(c.IdleEvery, DefaultIdleEvery)
	c.Hold = orDefault(c.Hold, DefaultHold)
	c.MinWork = orDefault(c.MinWork, DefaultMinWork)
	c.Slowdown = orDefault(c.Slowdown, DefaultSlowdown)
	return c
}

// orDefault returns v if it is positive, else d.
func orDefault[T int | uint64 | float64 | time.Duration](v, d T) T {
	if v > 0 {
		return v
	}
	return d
}

// Changes step asks for.
const (
	keep = iota
	lower
	raise
)

// state is what a Pacer decides by between readings.
type state struct {
	// one is set while the count is one.
	one bool
	// calm counts the calm intervals in a row of the current window, and
	// cpu and work sum their CPU time and work.
	calm int
	cpu  time.Duration
	work uint64
	// wall is the window's wall time so far.
	wall time.Duration
	// def is what the last window at the default count measured, which a
	// window at one (probing) is compared with.
	def     measure
	probing bool
	// Until holdUntil the count stays as the last comparison chose.
	holdUntil time.Time
}

// measure is what a window measured: CPU per unit of work, and work per
// second.
type measure struct{ cost, rate float64 }

// add counts one calm interval (CPU time, wall time and work) into the
// window. Once the window has LowerAfter of them it reports what it
// measured (ok false when too little work was done for it to mean
// anything) and starts a new one; full is false until then.
func (c Config) add(s *state, cpu, wall time.Duration, work uint64) (m measure, ok, full bool) {
	s.calm++
	s.cpu += cpu
	s.wall += wall
	s.work += work
	if s.calm < c.LowerAfter {
		return measure{}, false, false
	}
	if s.work >= c.MinWork && s.wall > 0 {
		m, ok = measure{cost: float64(s.cpu) / float64(s.work), rate: float64(s.work) / s.wall.Seconds()}, true
	}
	s.newWindow()
	return m, ok, true
}

// worse reports whether m, measured at one processor, is worse than the
// default count's d: dearer per unit of work, or slower by more than
// Config.Slowdown (a load that waits on its answers gets fewer of them
// done where each waits longer).
func (c Config) worse(m, d measure) bool {
	return m.cost > d.cost || m.rate < d.rate*(1-c.Slowdown)
}

func (s *state) newWindow() { s.calm, s.cpu, s.wall, s.work = 0, 0, 0, 0 }

// cores returns the cores that cpu of CPU time over wall time used.
func cores(cpu, wall time.Duration) float64 { return float64(cpu) / float64(wall) }

// step takes one interval's reading (CPU time, wall time, which is
// positive, and work done) at time now and returns the change to make:
// keep, lower or raise.
func (c Config) step(s *state, now time.Time, cpu, wall time.Duration, work uint64) int {
	used := cores(cpu, wall)
	if s.one {
		if used >= c.Raise {
			// Busy: the default count, held so that a load with bursts
			// does not go back and forth.
			*s = state{holdUntil: now.Add(c.Hold)}
			return raise
		}
		m, ok, full := c.add(s, cpu, wall, work)
		if !full {
			return keep
		}
		switch {
		case s.probing:
			s.probing = false
			s.holdUntil = now.Add(c.Hold)
			if ok && c.worse(m, s.def) {
				s.one = false
				return raise
			}
		case ok && !now.Before(s.holdUntil):
			// Time to compare again: a window at the default count first.
			s.one = false
			return raise
		}
		return keep
	}
	if used >= c.Lower {
		s.newWindow()
		return keep
	}
	m, ok, full := c.add(s, cpu, wall, work)
	if !full {
		return keep
	}
	if now.Before(s.holdUntil) {
		return keep // the default count was the cheaper one lately
	}
	if c.compare && !ok {
		return keep // idle: nothing to compare, and nothing gained
	}
	s.one = true
	s.def, s.probing = m, ok
	return lower
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
	workFunc  func() uint64
	nowFunc   func() time.Time
	countFunc func() int
	lowerFunc func()
	raiseFunc func()
	// mu guards started, cancel and done.
	mu      sync.Mutex
	started bool
	cancel  context.CancelFunc
	done    chan struct{}
}

// New returns a Pacer, or nil when the runtime has one processor to begin
// with or the process's CPU time cannot be read on this system. work, if
// not nil, counts the work the process has done (requests served, say):
// with it the Pacer compares the CPU per unit of work at one processor
// with the default's before it keeps one, and compares again after
// Config.Hold; without it a calm process stays at one.
func New(cfg Config, work func() uint64, log *slog.Logger) *Pacer {
	if runtime.GOMAXPROCS(0) <= 1 {
		return nil
	}
	if _, ok := processCPU(); !ok {
		return nil
	}
	cfg = cfg.withDefaults()
	cfg.compare = work != nil
	if work == nil {
		work = func() uint64 { return 0 }
	}
	return &Pacer{
		cfg: cfg, log: log,
		cpuFunc:   processCPU,
		workFunc:  work,
		nowFunc:   time.Now,
		countFunc: func() int { return runtime.GOMAXPROCS(0) },
		lowerFunc: func() { runtime.GOMAXPROCS(1) },
		raiseFunc: runtime.SetDefaultGOMAXPROCS,
	}
}

// Start begins reading the CPU used every interval and setting the count.
// Only its first call does anything.
func (p *Pacer) Start(ctx context.Context) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.started {
		return
	}
	p.started = true
	ctx, p.cancel = context.WithCancel(ctx)
	p.done = make(chan struct{})
	go p.run(ctx)
}

// Stop ends the Pacer and gives the runtime its default count back. It may
// be called more than once, and before Start (which then does nothing).
func (p *Pacer) Stop() {
	if p == nil {
		return
	}
	p.mu.Lock()
	p.started = true // a later Start does nothing
	cancel, done := p.cancel, p.done
	p.cancel = nil
	p.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
}

func (p *Pacer) run(ctx context.Context) {
	defer close(p.done)
	var st state
	defer func() {
		if st.one {
			p.raiseFunc()
		}
	}()
	t := time.NewTimer(p.cfg.Interval)
	defer t.Stop()
	lastCPU, known := p.cpuFunc()
	lastWork := p.workFunc()
	lastWall := p.nowFunc()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		t.Reset(p.cfg.Interval)
		cpu, ok := p.cpuFunc()
		work := p.workFunc()
		wall := p.nowFunc()
		elapsed := wall.Sub(lastWall)
		if !ok || elapsed <= 0 {
			continue
		}
		if !known { // the first reading failed: start from this one
			lastCPU, lastWork, lastWall, known = cpu, work, wall, true
			continue
		}
		used := cores(cpu-lastCPU, elapsed)
		change := p.cfg.step(&st, wall, cpu-lastCPU, elapsed, work-lastWork)
		lastCPU, lastWork, lastWall = cpu, work, wall
		if used < p.cfg.Idle {
			t.Reset(p.cfg.IdleEvery)
		}
		from := p.countFunc()
		switch {
		case change == raise:
			p.raiseFunc()
		case change == lower && from > 1:
			p.lowerFunc()
		case change == lower:
			st = state{holdUntil: wall.Add(p.cfg.Hold)} // the default is one processor already
			continue
		default:
			continue
		}
		p.log.Debug("procpace: processors", slog.Int("from", from), slog.Int("to", p.countFunc()),
			slog.Float64("cores_used", used), slog.Bool("comparing", st.probing))
	}
}
