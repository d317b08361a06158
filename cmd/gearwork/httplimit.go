package main

import (
	"crypto/tls"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gearwork/gearwork/internal/gearmanapi"
)

// limitListener accepts at most cap(slots) connections at once: while that
// many are open, Accept waits for one to close (further connections wait in
// the kernel's listen backlog meanwhile, holding no descriptor of the
// server's; the one Accept took waits with it). It keeps a flood of HTTP
// connections from taking the descriptors the store needs. A connection
// kept alive between requests holds its slot for up to the server's idle
// timeout (two minutes), so a new connection that finds every slot taken
// closes the one idle for the longest time (told by ConnState), as it
// would otherwise wait for it: one client that kept every connection alive
// with a cheap request had all others wait. With a limit per address, a connection from
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
	// idle are the connections waiting between requests, with the time
	// they began to (ConnState).
	idle map[*limitedConn]time.Time
	// idled is told (without blocking) when a connection goes idle, so
	// that an Accept waiting for a slot closes it.
	idled chan struct{}
	// waiting counts the connections Accept holds while it waits for a
	// slot (0 or 1).
	waiting atomic.Int32
}

// newLimitListener limits ln to n open connections (0: no limit) and to
// perAddress from one source (0: no limit); refused, if not nil, is told
// of each connection closed for the latter.
func newLimitListener(ln net.Listener, n, perAddress int, refused func(net.Addr)) *limitListener {
	l := &limitListener{Listener: ln, done: make(chan struct{}), perAddress: perAddress, refused: refused,
		open: map[netip.Addr]int{}, idle: map[*limitedConn]time.Time{},
		idled: make(chan struct{}, 1)}
	if n > 0 {
		l.slots = make(chan struct{}, n)
	}
	return l
}

// Accept waits for a connection from a source with room, then for a free
// slot, closing the connection idle for the longest time if there is none.
func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		from, ok := l.admit(c)
		if !ok {
			c.Close()
			if l.refused != nil {
				l.refused(c.RemoteAddr())
			}
			continue
		}
		if !l.takeSlot() {
			c.Close()
			l.release(from)
			return nil, net.ErrClosed
		}
		lc := &limitedConn{Conn: c}
		lc.release = func() { l.closed(lc, from) }
		return lc, nil
	}
}

// takeSlot takes a free slot; when there is none, it closes the connection
// idle for the longest time, if any, and waits for a slot, closing the
// first connection that goes idle meanwhile (all may be busy with a
// request now, then kept alive for their idle timeout). It reports false
// when the listener is closed first.
func (l *limitListener) takeSlot() bool {
	if l.slots == nil {
		return true
	}
	select {
	case l.slots <- struct{}{}:
		return true
	default:
	}
	l.waiting.Add(1)
	defer l.waiting.Add(-1)
	for {
		idled := l.idled
		if oldest := l.oldestIdle(); oldest != nil {
			oldest.Close() // gives its slot back
			idled = nil
		}
		select {
		case l.slots <- struct{}{}:
			return true
		case <-idled:
		case <-l.done:
			return false
		}
	}
}

// oldestIdle returns the connection idle for the longest time, taken out
// of the idle ones; nil when none is idle.
func (l *limitListener) oldestIdle() *limitedConn {
	l.mu.Lock()
	defer l.mu.Unlock()
	var oldest *limitedConn
	var since time.Time
	for c, t := range l.idle {
		if oldest == nil || t.Before(since) {
			oldest, since = c, t
		}
	}
	delete(l.idle, oldest)
	return oldest
}

// ConnState follows the connections' states (http.Server.ConnState): an
// idle one may be closed to make room for a new one.
func (l *limitListener) ConnState(nc net.Conn, st http.ConnState) {
	if tc, ok := nc.(*tls.Conn); ok {
		nc = tc.NetConn()
	}
	c, ok := nc.(*limitedConn)
	if !ok {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if st == http.StateIdle {
		l.idle[c] = time.Now()
		select {
		case l.idled <- struct{}{}:
		default:
		}
	} else {
		delete(l.idle, c)
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

// release takes a connection's count at from back (the zero Addr: none).
func (l *limitListener) release(from netip.Addr) {
	if !from.IsValid() {
		return
	}
	l.mu.Lock()
	if l.open[from]--; l.open[from] <= 0 {
		delete(l.open, from)
	}
	l.mu.Unlock()
}

// closed gives back a closed connection's slot and count.
func (l *limitListener) closed(c *limitedConn, from netip.Addr) {
	l.mu.Lock()
	delete(l.idle, c)
	l.mu.Unlock()
	l.release(from)
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
