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
// Pacer therefore runs with every processor from the start, falls to one
// after the process used less than Config.Lower of a core for
// Config.LowerAfter intervals in a row, and goes back to every processor
// as soon as one interval used Config.Raise of a core or more.
//
// # Guarantees and caveats
//
//   - The count is only ever 1 or Config.Max, the runtime's count when the
//     Pacer was made; Stop sets Config.Max again.
//   - A burst that arrives while the count is 1 runs on one processor for
//     at most one interval (Config.Interval) before the count is raised.
//   - Changing the count stops the world for a moment; with the
//     thresholds apart (a load costs no less CPU on more processors) the
//     count does not flap.
//   - Set GOMAXPROCS in the environment to fix the count instead (the
//     server then starts no Pacer).
package procpace

import (
	"cmp"
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
	DefaultLowerAfter = 40
)

// Config configures a Pacer. Zero fields take their defaults; none may be
// negative.
type Config struct {
	// Max is the count while the process is busy; 0 means the runtime's
	// count when the Pacer is made.
	Max int
	// Interval is how often the CPU used is read.
	Interval time.Duration
	// Raise is the share of a core that, used over one interval while
	// the count is 1, raises it to Max.
	Raise float64
	// Lower is the share of a core below which the process must stay for
	// LowerAfter intervals in a row before the count falls to 1.
	Lower      float64
	LowerAfter int
}

func (c Config) withDefaults() Config {
	c.Max = cmp.Or(c.Max, runtime.GOMAXPROCS(0))
	c.Interval = cmp.Or(c.Interval, DefaultInterval)
	c.Raise = cmp.Or(c.Raise, DefaultRaise)
	c.Lower = cmp.Or(c.Lower, DefaultLower)
	c.LowerAfter = cmp.Or(c.LowerAfter, DefaultLowerAfter)
	return c
}

// next returns the count to use after an interval in which the process
// used used cores (CPU time over wall time) with cur processors, and how
// many calm intervals in a row there have been, given calm before it.
func (c Config) next(cur int, used float64, calm int) (int, int) {
	if cur < c.Max {
		if used >= c.Raise {
			return c.Max, 0
		}
		return cur, 0
	}
	if used >= c.Lower {
		return cur, 0
	}
	calm++
	if calm >= c.LowerAfter {
		return 1, 0
	}
	return cur, calm
}

// A Pacer sets the runtime's processor count from the CPU the process
// uses (see the package comment). Start it once; Stop ends it. A nil
// *Pacer does nothing.
type Pacer struct {
	cfg Config
	log *slog.Logger
	// cpu returns the CPU time the process has used, false when it
	// cannot be read; set returns the count in force and sets a new one
	// when n > 0 (runtime.GOMAXPROCS). Tests replace both.
	cpu    func() (time.Duration, bool)
	set    func(n int) int
	now    func() time.Time
	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once
}

// New returns a Pacer, or nil when the count cannot be lowered (one
// processor) or the process's CPU time cannot be read on this system.
func New(cfg Config, log *slog.Logger) *Pacer {
	cfg = cfg.withDefaults()
	if cfg.Max <= 1 {
		return nil
	}
	if _, ok := processCPU(); !ok {
		return nil
	}
	return &Pacer{cfg: cfg, log: log, cpu: processCPU, set: runtime.GOMAXPROCS, now: time.Now}
}

// Start begins reading the CPU used every interval and setting the count.
func (p *Pacer) Start(ctx context.Context) {
	if p == nil {
		return
	}
	ctx, p.cancel = context.WithCancel(ctx)
	p.done = make(chan struct{})
	go p.run(ctx)
}

// Stop ends the Pacer and sets the count to Config.Max again. It may be
// called more than once.
func (p *Pacer) Stop() {
	if p == nil || p.cancel == nil {
		return
	}
	p.once.Do(func() {
		p.cancel()
		<-p.done
	})
}

func (p *Pacer) run(ctx context.Context) {
	defer close(p.done)
	defer p.restore()
	t := time.NewTicker(p.cfg.Interval)
	defer t.Stop()
	lastCPU, _ := p.cpu()
	lastWall := p.now()
	calm := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cpu, ok := p.cpu()
		wall := p.now()
		elapsed := wall.Sub(lastWall)
		if !ok || elapsed <= 0 {
			continue
		}
		used := float64(cpu-lastCPU) / float64(elapsed)
		lastCPU, lastWall = cpu, wall
		cur := p.set(0)
		n, c := p.cfg.next(cur, used, calm)
		calm = c
		if n != cur {
			p.set(n)
			p.log.Debug("procpace: processors", slog.Int("from", cur), slog.Int("to", n), slog.Float64("cores_used", used))
		}
	}
}

// restore gives the runtime back the count it had when the Pacer was made.
func (p *Pacer) restore() {
	if p.set(0) != p.cfg.Max {
		p.set(p.cfg.Max)
	}
}
