package gearmanapi

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gearwork/gearwork/internal/backoff"
)

// parker holds idle connections (plain TCP and TLS) without a goroutine. A
// connection that has idled for Config.IdleRelease registers its socket
// with the parker's epoll instance (one-shot, readable) and its goroutine
// ends; when the socket becomes readable (a request, or the peer closing)
// the parker starts a fresh goroutine that reads it. An idle connection
// then costs its socket, its conn and its broker session, and no goroutine
// stack: ten thousand idle connections need no ten thousand stacks.
//
// The epoll instance is itself registered with Go's network poller, so the
// parker's goroutine waits like any other reader and holds no thread.
//
// Epoll events carry a slot index and a generation rather than a file
// descriptor: a descriptor that was closed and reused while an event was
// on its way can never wake the wrong connection.
//
// If waiting on the epoll instance fails with anything but EINTR (which
// should never happen), the parker logs it once, resumes every parked
// connection on a goroutine of its own, parks no more and tries again
// after a pause that doubles up to parkerMaxBackoff; once a wait works
// again it parks again. It never spins on a persistent error.
type parker struct {
	f    *os.File
	raw  syscall.RawConn
	epfd int
	log  *slog.Logger
	done chan struct{}
	// closing is closed by close, so that a backoff pause ends at once.
	closing chan struct{}
	once    sync.Once
	err     error
	// wait is epoll_wait; tests replace it to inject errors.
	wait atomic.Pointer[epollWaitFunc]
	// logged is set once a wait error has been logged.
	logged bool

	// mu guards the fields below and every conn's parkSlot. It is a leaf
	// lock: nothing else is locked while it is held.
	mu     sync.Mutex
	closed bool
	// suspended is set while waits fail: nothing parks.
	suspended bool
	slots     []parkSlot
	free      []int32
}

// epollWaitFunc has the signature of syscall.EpollWait.
type epollWaitFunc func(epfd int, events []syscall.EpollEvent, msec int) (int, error)

// The parker's pause after a failed wait: parkerMinBackoff after the
// first, doubling up to parkerMaxBackoff.
const (
	parkerMinBackoff = 10 * time.Millisecond
	parkerMaxBackoff = time.Second
)

// parkSlot is one parked connection; gen changes each time the slot is
// freed.
type parkSlot struct {
	c   *conn
	ctx context.Context
	gen int32
}

// newParker starts a parker that logs to log. It returns nil (connections
// then keep a small goroutine while idle) if the epoll instance cannot be
// set up.
func newParker(log *slog.Logger) *parker {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil
	}
	if err := syscall.SetNonblock(epfd, true); err != nil {
		syscall.Close(epfd)
		return nil
	}
	f := os.NewFile(uintptr(epfd), "gearmanapi-epoll")
	raw, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil
	}
	p := &parker{f: f, raw: raw, epfd: epfd, log: log, done: make(chan struct{}), closing: make(chan struct{})}
	wait := epollWaitFunc(syscall.EpollWait)
	p.wait.Store(&wait)
	go p.loop()
	return p
}

// loop dispatches readable parked connections until the parker closes.
func (p *parker) loop() {
	defer close(p.done)
	events := make([]syscall.EpollEvent, 64)
	var delay time.Duration
	for {
		var (
			n    int
			werr error
		)
		err := p.raw.Read(func(fd uintptr) bool {
			n, werr = (*p.wait.Load())(int(fd), events, 0)
			if werr == syscall.EINTR {
				// Try again at once rather than wait for an edge that may
				// already have passed.
				n, werr = 0, nil
				return true
			}
			if werr == nil && delay != 0 {
				// Waiting works again (before the next event, which
				// only a parked connection can cause).
				delay = 0
				p.mu.Lock()
				p.suspended = false
				p.mu.Unlock()
			}
			return werr != nil || n > 0
		})
		if err != nil {
			// Closed, or the runtime cannot poll an epoll descriptor:
			// either way no parked connection may be left behind.
			p.shut()
			return
		}
		if werr != nil {
			if delay == 0 {
				p.suspend(werr)
			}
			delay = backoff.Next(delay, parkerMinBackoff, parkerMaxBackoff)
			select {
			case <-time.After(delay):
				continue
			case <-p.closing:
				p.shut()
				return
			}
		}
		for _, ev := range events[:n] {
			p.dispatch(ev.Fd, ev.Pad)
		}
	}
}

// suspend stops parking after a failed wait and resumes every parked
// connection, logging the first failure of the parker's life.
func (p *parker) suspend(err error) {
	if !p.logged {
		p.logged = true
		p.log.Error("gearmanapi: waiting for parked connections failed; idle connections keep a goroutine until it works again (not logged again)",
			slog.String("error", err.Error()))
	}
	p.stopParking(&p.suspended)
}

// park registers c, whose reader has been released, and reports whether it
// is parked; if not (the parker is closed, or the socket is), the caller
// keeps serving c. The caller's goroutine must return without touching the
// reader's state once park reports true.
func (p *parker) park(ctx context.Context, c *conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || p.suspended {
		return false
	}
	var slot int32
	if n := len(p.free); n > 0 {
		slot = p.free[n-1]
		p.free = p.free[:n-1]
	} else {
		slot = int32(len(p.slots))
		p.slots = append(p.slots, parkSlot{})
	}
	s := &p.slots[slot]
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLONESHOT, Fd: slot, Pad: s.gen}
	var cerr error
	// Control holds the descriptor open, so it cannot be a reused one.
	err := c.poll.Control(func(fd uintptr) {
		cerr = syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_ADD, int(fd), &ev)
	})
	if err != nil || cerr != nil {
		p.free = append(p.free, slot)
		return false
	}
	s.c, s.ctx = c, ctx
	c.parkSlot = slot
	return true
}

// unpark resumes c if it is parked: a fresh goroutine reads it. Whoever
// closes a connection's socket other than its reader calls it, since a
// closed socket leaves the epoll set without an event.
func (p *parker) unpark(c *conn) {
	p.mu.Lock()
	slot := c.parkSlot
	if slot < 0 {
		p.mu.Unlock()
		return
	}
	ctx := p.takeLocked(slot)
	p.mu.Unlock()
	go c.wake(ctx)
}

// dispatch resumes the connection an event names, unless it is no longer
// parked there.
func (p *parker) dispatch(slot, gen int32) {
	p.mu.Lock()
	if slot < 0 || int(slot) >= len(p.slots) || p.slots[slot].gen != gen || p.slots[slot].c == nil {
		p.mu.Unlock()
		return
	}
	c := p.slots[slot].c
	ctx := p.takeLocked(slot)
	p.mu.Unlock()
	go c.wake(ctx)
}

// takeLocked removes the connection parked in slot from the epoll set and
// frees the slot. Called with p.mu held.
func (p *parker) takeLocked(slot int32) context.Context {
	s := &p.slots[slot]
	c, ctx := s.c, s.ctx
	// A closed socket has left the epoll set by itself.
	_ = c.poll.Control(func(fd uintptr) {
		_ = syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_DEL, int(fd), nil)
	})
	c.parkSlot = -1
	*s = parkSlot{gen: s.gen + 1}
	p.free = append(p.free, slot)
	return ctx
}

// shut stops parking and resumes every parked connection.
func (p *parker) shut() {
	p.stopParking(&p.closed)
}

// stopParking sets stop (p.closed or p.suspended) under p.mu, which makes
// park refuse, unparks every parked connection, and resumes them once p.mu
// is released.
func (p *parker) stopParking(stop *bool) {
	var woken []*conn
	var ctxs []context.Context
	p.mu.Lock()
	*stop = true
	for i := range p.slots {
		if c := p.slots[i].c; c != nil {
			woken = append(woken, c)
			ctxs = append(ctxs, p.takeLocked(int32(i)))
		}
	}
	p.mu.Unlock()
	for i, c := range woken {
		go c.wake(ctxs[i])
	}
}

// close resumes every parked connection (the server closes their sockets
// first, so that they end), stops the parker's goroutine and releases the
// epoll instance. Safe to call twice.
func (p *parker) close() error {
	p.once.Do(func() {
		p.shut()
		close(p.closing)
		if err := p.f.Close(); err != nil {
			p.err = fmt.Errorf("gearmanapi: closing epoll instance: %w", err)
		}
		<-p.done
	})
	return p.err
}
