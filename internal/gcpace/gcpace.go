// Package gcpace sets the Go collector's target (GOGC) after each
// collection so that the heap's headroom is measured against the memory the
// collector has to work through, not against payload bytes that a server
// keeps for as long as their jobs are queued.
//
// With GOGC=100 the heap may grow to twice what was live at the last
// collection before the next one starts. A server that keeps 128 MiB of
// queued payloads within --memory-budget would so leave 128 MiB of room
// above them that only serves to collect less often. Those payloads are
// long-lived, contain no pointers (the collector marks each one without
// reading it) and are not allocated again while they stay, so room over
// them buys little; the Pacer gives the rest of the heap its usual room
// instead.
//
// # Guarantees and caveats
//
//   - The target never rises above the Percent it starts from, so a heap
//     without pinned bytes behaves as before, and a soft memory limit
//     (GOMEMLIMIT, --memory-limit) still applies as well.
//   - The room above the live heap is at least MinHeadroom and at least
//     MinPercent of the live heap, so that a heap of payloads alone is not
//     collected over and over.
//   - The target is set after a collection from the heap it found live;
//     between collections it stays as set.
package gcpace

import (
	"context"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
)

// Defaults of Config.
const (
	DefaultPercent     = 100
	DefaultMinHeadroom = 64 << 20
	DefaultMinPercent  = 10
)

// Config configures a Pacer.
type Config struct {
	// Percent is the target for the rest of the heap and the highest the
	// Pacer sets; 0 means DefaultPercent (Go's own default).
	Percent int
	// MinHeadroom is the least room in bytes left above the live heap; 0
	// means DefaultMinHeadroom.
	MinHeadroom int64
	// MinPercent is the least target the Pacer sets; 0 means
	// DefaultMinPercent.
	MinPercent int
}

// percent returns the collector's target for a heap with live bytes live
// at the last collection, pinned of which are pinned payloads: the room
// above the live heap is Percent of the rest of it, but at least
// MinHeadroom and MinPercent of the live heap, and the result is at most
// Percent.
func (c Config) percent(live, pinned int64) int {
	if live <= 0 {
		return c.Percent
	}
	rest := max(live-min(max(pinned, 0), live), 0)
	room := max(rest/100*int64(c.Percent), c.MinHeadroom, live/100*int64(c.MinPercent))
	p := int((room*100 + live - 1) / live) // rounded up
	return min(max(p, c.MinPercent), c.Percent)
}

// A Pacer sets the collector's target after each collection (see the
// package comment). Start it once; Stop restores Config.Percent. A nil
// *Pacer does nothing.
type Pacer struct {
	cfg    Config
	pinned func() int64
	cancel context.CancelFunc
	done   chan struct{}
	// collected gets a value after each collection (one at most waits).
	collected chan struct{}
	stopOnce  sync.Once
	// set is the target last set; only the Pacer's goroutine uses it.
	set int
	// samples is the live heap's metric, read after each collection.
	samples []metrics.Sample
}

// New returns a Pacer for cfg with its defaults filled in.
func New(cfg Config) *Pacer {
	if cfg.Percent <= 0 {
		cfg.Percent = DefaultPercent
	}
	if cfg.MinHeadroom <= 0 {
		cfg.MinHeadroom = DefaultMinHeadroom
	}
	if cfg.MinPercent <= 0 {
		cfg.MinPercent = DefaultMinPercent
	}
	cfg.MinPercent = min(cfg.MinPercent, cfg.Percent)
	return &Pacer{cfg: cfg, done: make(chan struct{}), collected: make(chan struct{}, 1), set: cfg.Percent,
		samples: []metrics.Sample{{Name: "/gc/heap/live:bytes"}}}
}

// sentinel is allocated for each collection to be noticed by: its cleanup
// runs once a collection has found it unreachable. It holds a pointer so
// that it is not combined with other small objects in one allocation,
// which could keep it reachable.
type sentinel struct{ _ *int }

// arm allocates a sentinel whose cleanup tells the Pacer that a collection
// ran.
func (p *Pacer) arm() {
	runtime.AddCleanup(new(sentinel), func(ch chan struct{}) {
		select {
		case ch <- struct{}{}:
		default:
		}
	}, p.collected)
}

// Start sets the target to Config.Percent and starts adjusting it after
// each collection until ctx ends or Stop is called. pinned returns the
// bytes of long-lived, pointer-free data the heap holds now (the payloads
// of queued jobs kept in memory); it is called from the Pacer's goroutine
// once per collection, so it must be safe for concurrent use and must not
// wait for long.
func (p *Pacer) Start(ctx context.Context, pinned func() int64) {
	if p == nil {
		return
	}
	p.pinned = pinned
	ctx, p.cancel = context.WithCancel(ctx)
	debug.SetGCPercent(p.cfg.Percent)
	p.arm()
	go func() {
		defer close(p.done)
		for {
			select {
			case <-ctx.Done():
				return
			case <-p.collected:
				p.arm()
				p.adjust()
			}
		}
	}()
}

// adjust sets the target from the heap live at the last collection.
func (p *Pacer) adjust() {
	metrics.Read(p.samples)
	if p.samples[0].Value.Kind() != metrics.KindUint64 {
		return
	}
	live := int64(p.samples[0].Value.Uint64())
	if want := p.cfg.percent(live, p.pinned()); want != p.set {
		debug.SetGCPercent(want)
		p.set = want
	}
}

// Stop stops the Pacer and sets the target back to Config.Percent. It is
// safe to call twice, and before Start (when it does nothing).
func (p *Pacer) Stop() {
	if p == nil || p.cancel == nil {
		return
	}
	p.stopOnce.Do(func() {
		p.cancel()
		<-p.done
		debug.SetGCPercent(p.cfg.Percent)
	})
}
