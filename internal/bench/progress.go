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

	// mu guards phase.
	mu    sync.Mutex
	phase string

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
	phase := p.phase
	p.mu.Unlock()
	done, total := p.done.Load(), p.total.Load()
	frac := 0.0
	if total > 0 {
		frac = min(float64(done)/float64(total), 1)
	}
	n := int(frac * barWidth)
	fmt.Fprintf(p.w, "\r%s %-10s [%s%s] %3.0f%% %d/%d\x1b[K", p.name, phase,
		strings.Repeat("#", n), strings.Repeat(".", barWidth-n), frac*100, done, total)
}

// stop erases the bar. Safe to call twice.
func (p *progress) stop() {
	p.once.Do(func() {
		close(p.quit)
		p.wg.Wait()
	})
}
