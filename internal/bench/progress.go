package bench

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// progress draws a progress bar on a terminal. Its counters are safe for
// concurrent use; with a nil writer it only counts.
type progress struct {
	w     io.Writer
	name  string
	done  atomic.Int64
	total atomic.Int64

	// mu guards phase and since.
	mu    sync.Mutex
	phase string
	since time.Time // when phase started

	quit chan struct{}
	wg   sync.WaitGroup
	once sync.Once
}

func newProgress(w io.Writer, name string) *progress {
	p := &progress{w: w, name: name, quit: make(chan struct{})}
	if w != nil {
		p.wg.Go(p.loop)
	}
	return p
}

// start begins a phase (such as "loading" or "measuring") of total steps.
func (p *progress) start(phase string, total int) {
	p.mu.Lock()
	p.phase = phase
	p.since = time.Now()
	p.mu.Unlock()
	p.done.Store(0)
	p.total.Store(int64(total))
}

// add counts n steps; a nil progress ignores them.
func (p *progress) add(n int) {
	if p != nil {
		p.done.Add(int64(n))
	}
}

// status describes how far the current phase got, for error messages.
func (p *progress) status() string {
	p.mu.Lock()
	phase := p.phase
	p.mu.Unlock()
	return fmt.Sprintf("%s: %d of %d done", phase, p.done.Load(), p.total.Load())
}

func (p *progress) loop() {
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-p.quit:
			fmt.Fprint(p.w, "\r\x1b[K")
			return
		case <-t.C:
			p.draw()
		}
	}
}

const barWidth = 30

func (p *progress) draw() {
	p.mu.Lock()
	phase, since := p.phase, p.since
	p.mu.Unlock()
	fmt.Fprint(p.w, "\r"+progressLine(p.name, phase, p.done.Load(), p.total.Load(), time.Since(since))+"\x1b[K")
}

// progressLine is one state of the progress bar: the phase, how far it
// got, its rate so far, the time it took and an estimate of the time left.
func progressLine(name, phase string, done, total int64, elapsed time.Duration) string {
	frac := 0.0
	if total > 0 {
		frac = min(float64(done)/float64(total), 1)
	}
	n := int(frac * barWidth)
	rate, eta := 0.0, "?"
	if secs := elapsed.Seconds(); secs > 0 && done > 0 {
		rate = float64(done) / secs
		eta = time.Duration(float64(total-min(done, total)) / rate * float64(time.Second)).Round(time.Second).String()
	}
	return fmt.Sprintf("%s %-10s [%s%s] %3.0f%% %d/%d  %.0f/s  elapsed %s  eta %s", name, phase,
		strings.Repeat("#", n), strings.Repeat(".", barWidth-n), frac*100, done, total,
		rate, elapsed.Round(time.Second), eta)
}

// stop erases the bar. Safe to call twice.
func (p *progress) stop() {
	p.once.Do(func() {
		close(p.quit)
		p.wg.Wait()
	})
}
