// Package gearmanapi is Gearwork's Gearman front end: it accepts
// connections, decodes binary packets and admin text lines, calls the
// broker, and encodes the broker's answers and events back into packets.
// No job logic lives here.
package gearmanapi

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gearwork/gearwork/internal/broker"
)

// Config configures a Server.
type Config struct {
	Broker *broker.Broker
	// MaxPacket is the largest packet body accepted; a larger header gets
	// an ERROR and the connection is closed. Default 64 MiB.
	MaxPacket int
	// MaxOutput is how many bytes may wait to be written to one connection
	// before it is dropped as a slow reader. Default max(4*MaxPacket, 64 MiB).
	MaxOutput int
	// Version is answered to the "version" admin command.
	Version string
	// Verbose is answered to the "verbose" admin command, e.g. "INFO".
	Verbose string
	// ShutdownFunc is called by the "shutdown [graceful]" admin command;
	// nil disables the command.
	ShutdownFunc func(graceful bool)
	Logger       *slog.Logger
	// ReadBuffer is the size of a connection's read buffer. Default 4096.
	// A connection whose reads fill half of it or more (a client that
	// pipelines) gets 16 KiB if that is larger. Idle connections drop
	// theirs (see IdleRelease).
	ReadBuffer int

	// Authorizer decides what each connection may do (see Authorizer);
	// nil allows everything to everyone, as gearmand does.
	Authorizer Authorizer
	// HandshakeTimeout bounds the TLS handshake of connections that the
	// listener returns as *tls.Conn; a slower handshake closes the
	// connection. Default 10s.
	HandshakeTimeout time.Duration
	// ReadTimeout bounds how long a frame (a packet or an admin line) may
	// take to arrive once its first byte has; a connection that exceeds it
	// is closed. Time between frames is not limited. Default 30s; negative
	// disables the limit.
	ReadTimeout time.Duration
	// WriteTimeout bounds how long one write to a peer may block; a peer
	// that does not read for this long is disconnected. Default 60s;
	// negative disables the limit.
	WriteTimeout time.Duration
	// IdleRelease is how long a connection waits for its next frame before
	// it gives its read buffer back and parks without a goroutine (TCP and
	// TLS over TCP on Linux) or moves to a fresh small goroutine. Default 2s;
	// negative keeps buffers and goroutines for the life of the connection.
	IdleRelease time.Duration
	// MaxConnections limits the open connections; a connection accepted
	// beyond it is closed at once. 0 means no limit.
	MaxConnections int
	// MaxConnectionsPerAddress limits the open connections from one source
	// IPv4 address or IPv6 /64 network (a host's usual share, any address
	// of which it may use), so that one host cannot take all of
	// MaxConnections; a connection accepted beyond it is closed at once. 0
	// means no limit.
	MaxConnectionsPerAddress int
	// MaxPacketUnauthenticated is the largest packet body accepted from a
	// connection to which the Authorizer grants nothing (so it can only
	// echo and read status). Ignored without an Authorizer. Default 16 KiB;
	// never more than MaxPacket.
	MaxPacketUnauthenticated int
}

// Server serves the Gearman protocol. Create it with New.
type Server struct {
	cfg Config
	b   *broker.Broker
	log *slog.Logger

	// mu guards conns, perAddr, lns and closed.
	mu    sync.Mutex
	conns map[*conn]struct{}
	// perAddr counts open connections per source address when
	// MaxConnectionsPerAddress is set.
	perAddr map[netip.Addr]int
	lns     []net.Listener
	closed  bool
	// wg counts connections (one that is parked, or hands its reader to a
	// fresh goroutine, counts once).
	wg sync.WaitGroup
	// parker holds idle connections without a goroutine (see parker);
	// nil until the first Serve, and where epoll is not available. Set
	// under mu before the first connection exists.
	parker *parker

	// releasedBytes estimates the memory freed by idle connections since
	// the janitor last returned memory to the system at lastReturn;
	// lastReturn and lastReleased are owned by the janitor.
	releasedBytes atomic.Int64
	// slowFrames counts the connections whose frame in progress has had
	// its read timeout counted again (readConn), at most maxSlowFrames.
	slowFrames   atomic.Int64
	lastReturn   int64
	lastReleased int64
	// now is a coarse clock in Unix nanoseconds, advanced by the janitor.
	now         atomic.Int64
	janitorOnce sync.Once
	janitorWG   sync.WaitGroup
	stop        chan struct{}
	stopOnce    sync.Once
	stats       limitStats
	// requests counts the requests served, by bursts (see Requests).
	requests atomic.Uint64
	// limited rate-limits warnings caused by peers.
	limited logLimiter

	// dirty lists connections with queued event output and no writer;
	// flushDirty writes it after the broker's lock is released.
	dirtyMu sync.Mutex
	dirty   []*conn
	spareD  []*conn
	dirtyN  atomic.Int32
}

// New returns a Server for cfg. It panics if cfg.Broker is nil.
func New(cfg Config) *Server {
	if cfg.Broker == nil {
		panic("gearmanapi: Config.Broker is nil")
	}
	cfg.MaxPacket = cmp.Or(cfg.MaxPacket, 64<<20)
	cfg.MaxOutput = cmp.Or(cfg.MaxOutput, max(4*cfg.MaxPacket, 64<<20))
	cfg.ReadBuffer = cmp.Or(cfg.ReadBuffer, 4096)
	cfg.Version = cmp.Or(cfg.Version, "gearwork")
	cfg.Verbose = cmp.Or(cfg.Verbose, "INFO")
	cfg.HandshakeTimeout = cmp.Or(cfg.HandshakeTimeout, 10*time.Second)
	cfg.ReadTimeout = cmp.Or(cfg.ReadTimeout, 30*time.Second)
	cfg.WriteTimeout = cmp.Or(cfg.WriteTimeout, 60*time.Second)
	cfg.IdleRelease = cmp.Or(cfg.IdleRelease, 2*time.Second)
	cfg.MaxPacketUnauthenticated = cmp.Or(cfg.MaxPacketUnauthenticated, 16<<10)
	s := &Server{cfg: cfg, b: cfg.Broker, log: cmp.Or(cfg.Logger, slog.Default()),
		conns: make(map[*conn]struct{}), perAddr: make(map[netip.Addr]int), stop: make(chan struct{})}
	s.now.Store(time.Now().UnixNano())
	s.b.OnUnlock(s.flushDirty)
	return s
}

// ErrServerClosed is returned by Serve after Close.
var ErrServerClosed = errors.New("gearmanapi: server closed")

// Serve accepts connections on ln until Close is called or ln fails. It
// backs off when accept fails temporarily (for example when out of file
// descriptors) instead of spinning.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		ln.Close()
		return ErrServerClosed
	}
	s.lns = append(s.lns, ln)
	if s.parker == nil && s.cfg.IdleRelease > 0 {
		s.parker = newParker(s.log)
	}
	s.mu.Unlock()
	s.startJanitor()
	var delay time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed {
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || isTemporary(err) {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				s.log.WarnContext(ctx, "gearmanapi: accept failed; backing off",
					slog.String("error", err.Error()), slog.Duration("delay", delay))
				select {
				case <-time.After(delay):
					continue
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			return err
		}
		// A *net.TCPConn from a net.Listen listener already has TCP_NODELAY
		// and keep-alive on; setting them again would cost two system calls
		// per connection, hostile ones included.
		delay = 0
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			nc.Close()
			return ErrServerClosed
		}
		if s.cfg.MaxConnections > 0 && len(s.conns) >= s.cfg.MaxConnections {
			s.mu.Unlock()
			s.refuse(nc, "too many connections", slog.Int("max_connections", s.cfg.MaxConnections))
			continue
		}
		var from netip.Addr
		if s.cfg.MaxConnectionsPerAddress > 0 {
			from = SourceAddr(nc)
			if from.IsValid() && s.perAddr[from] >= s.cfg.MaxConnectionsPerAddress {
				s.mu.Unlock()
				s.refuse(nc, "too many connections from one address",
					slog.Int("max_connections_per_address", s.cfg.MaxConnectionsPerAddress))
				continue
			}
			if from.IsValid() {
				s.perAddr[from]++
			}
		}
		c := newConn(s, nc)
		c.from = from
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go c.run(ctx)
	}
}

// refuse closes a new connection that a connection limit turns away,
// counting it and logging (rate-limited) which limit it met.
func (s *Server) refuse(nc net.Conn, why string, limit slog.Attr) {
	s.stats.rejected.Add(1)
	s.limited.log(s.log, slog.LevelWarn, "gearmanapi: "+why+"; closing a new one",
		slog.String("remote", nc.RemoteAddr().String()), limit)
	nc.Close()
}

// park parks c, whose reader is released, if it can be parked; see parker.
func (s *Server) park(ctx context.Context, c *conn) bool {
	return c.parkable() && s.parker.park(ctx, c)
}

// connDone removes a finished connection.
func (s *Server) connDone(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	if c.from.IsValid() {
		if s.perAddr[c.from]--; s.perAddr[c.from] <= 0 {
			delete(s.perAddr, c.from)
		}
	}
	s.mu.Unlock()
	s.wg.Done()
}

// SourceAddr returns the source a TCP connection (plain or TLS) counts
// against MaxConnectionsPerAddress: its IPv4 address, or the /64 network
// of its IPv6 address; the zero Addr for other connections. The HTTP
// port's limit per address counts the same way.
func SourceAddr(nc net.Conn) netip.Addr {
	ta, ok := nc.RemoteAddr().(*net.TCPAddr)
	if !ok {
		return netip.Addr{}
	}
	a := ta.AddrPort().Addr().Unmap()
	if a.Is6() {
		// An IPv6 host is given a whole /64 and may use any address
		// in it: the network is the source.
		p, err := a.WithZone("").Prefix(64)
		if err == nil {
			return p.Addr()
		}
	}
	return a
}

// CloseListeners stops accepting new connections; existing ones stay.
func (s *Server) CloseListeners() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	for _, ln := range s.lns {
		ln.Close()
	}
}

// closeFlushTimeout bounds how long Close spends writing output that is
// still queued for the peers.
const closeFlushTimeout = 2 * time.Second

// Close stops accepting, writes what is still queued for each connection
// (for at most closeFlushTimeout in all), closes every connection and waits
// for their goroutines to end. Safe to call twice.
func (s *Server) Close() {
	s.CloseListeners()
	s.mu.Lock()
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	deadline := time.Now().Add(closeFlushTimeout)
	for _, c := range conns {
		c.flushAndClose(deadline)
	}
	s.mu.Lock()
	p := s.parker
	s.mu.Unlock()
	if p != nil {
		// Parked connections, whose sockets are closed now, resume and end.
		if err := p.close(); err != nil {
			s.log.Warn(err.Error())
		}
	}
	s.wg.Wait()
	s.stopOnce.Do(func() { close(s.stop) })
	s.janitorWG.Wait()
}

// Requests returns how many requests (packets and admin lines) the server
// has served since it started; a burst of them is counted when it ends.
func (s *Server) Requests() uint64 { return s.requests.Load() }

// Connections returns the number of open connections.
func (s *Server) Connections() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}
