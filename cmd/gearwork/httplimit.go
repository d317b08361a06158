package main

import (
	"net"
	"net/netip"
	"sync"

	"github.com/gearwork/gearwork/internal/gearmanapi"
)

// limitListener accepts at most cap(slots) connections at once: while that
// many are open, Accept waits for one to close (new connections wait in the
// kernel's listen backlog meanwhile, holding no descriptor of the
// server's). It keeps a flood of HTTP connections from taking the
// descriptors the store needs. With a limit per address, a connection from
// a source (an IPv4 address or IPv6 /64 network, gearmanapi.SourceAddr)
// that already has that many open is closed at once, so that one host
// cannot take every slot and keep the others waiting.
type limitListener struct {
	net.Listener
	// slots is nil when the number of connections is not limited.
	slots     chan struct{}
	done      chan struct{}
	closeOnce sync.Once
	// perAddress is the most open connections from one source; 0 means
	// no limit.
	perAddress int
	// refused is called (without locks held) for each connection closed
	// for the limit per address; may be nil.
	refused func(remote net.Addr)
	mu      sync.Mutex
	// open counts the open connections per source, when perAddress > 0.
	open map[netip.Addr]int
}

// newLimitListener limits ln to n open connections (0: no limit) and to
// perAddress from one source (0: no limit); refused, if not nil, is told
// of each connection closed for the latter.
func newLimitListener(ln net.Listener, n, perAddress int, refused func(net.Addr)) *limitListener {
	l := &limitListener{Listener: ln, done: make(chan struct{}), perAddress: perAddress, refused: refused,
		open: map[netip.Addr]int{}}
	if n > 0 {
		l.slots = make(chan struct{}, n)
	}
	return l
}

// Accept waits for a free slot, then for a connection from a source with
// room.
func (l *limitListener) Accept() (net.Conn, error) {
	for {
		if l.slots != nil {
			select {
			case l.slots <- struct{}{}:
			case <-l.done:
				return nil, net.ErrClosed
			}
		}
		c, err := l.Listener.Accept()
		if err != nil {
			l.freeSlot()
			return nil, err
		}
		from, ok := l.admit(c)
		if !ok {
			c.Close()
			l.freeSlot()
			if l.refused != nil {
				l.refused(c.RemoteAddr())
			}
			continue
		}
		return &limitedConn{Conn: c, release: func() { l.release(from) }}, nil
	}
}

// admit counts c against its source's limit; ok is false when the source
// has no room left. from is the source counted (the zero Addr when none).
func (l *limitListener) admit(c net.Conn) (from netip.Addr, ok bool) {
	if l.perAddress <= 0 {
		return netip.Addr{}, true
	}
	from = gearmanapi.SourceAddr(c)
	if !from.IsValid() {
		return from, true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.open[from] >= l.perAddress {
		return netip.Addr{}, false
	}
	l.open[from]++
	return from, true
}

// release gives back a closed connection's slot and its count at from.
func (l *limitListener) release(from netip.Addr) {
	if from.IsValid() {
		l.mu.Lock()
		if l.open[from]--; l.open[from] <= 0 {
			delete(l.open, from)
		}
		l.mu.Unlock()
	}
	l.freeSlot()
}

func (l *limitListener) freeSlot() {
	if l.slots != nil {
		<-l.slots
	}
}

// Close closes the listener and ends a waiting Accept.
func (l *limitListener) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return l.Listener.Close()
}

// limitedConn gives its slot back when it is closed (once).
type limitedConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
