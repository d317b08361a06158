package gearmanapi

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gearwork/gearwork/gearman"
)

// This file holds the limits that keep one connection, or many hostile
// ones, from taking the server down:
//
//   - Read timeout. Once the first byte of a frame (a packet or an admin
//     line) has arrived, the rest must arrive within Config.ReadTimeout, or
//     the connection is closed: this drops slowloris clients. Each
//     readProgress bytes of a large frame count it again, so that a large
//     packet over a slow link gets in. Time between frames is not limited,
//     since Gearman workers sleep for hours.
//   - Write timeout. A write that cannot make progress for
//     Config.WriteTimeout (a peer that does not read) closes the
//     connection, so that its output buffer is freed.
//   - Idle release. A connection that has waited Config.IdleRelease for its
//     next frame drops its read buffer and parks without a goroutine (TCP
//     and TLS over TCP on Linux, see parker) or moves its reader to a fresh
//     goroutine with a small stack, so ten thousand idle connections cost a
//     few kilobytes each. A TLS connection idles only once its handshake is
//     done (Config.HandshakeTimeout bounds that).
//   - Connection count (Config.MaxConnections, and per source address
//     Config.MaxConnectionsPerAddress) and packet size, which is
//     smaller for connections the Authorizer grants nothing
//     (Config.MaxPacketUnauthenticated). Packet sizes are checked at the
//     header, and a body grows as its bytes arrive.
//
// Deadlines are enforced by one janitor goroutine per Server rather than by
// setting socket deadlines per frame, which would cost a timer update on
// every request. Connections record when their current frame or write
// began (on the server's coarse clock); the janitor closes those that
// exceed a limit. A frame therefore gets between ReadTimeout and
// ReadTimeout plus one janitor tick.

// errIdle is returned by connSource.Read when the janitor interrupted a
// wait for the next frame because the connection is idle: no byte of a
// frame has been consumed, so the reader can be released.
var errIdle = errors.New("gearmanapi: connection idle")

// pastDeadline wakes a blocked read at once.
var pastDeadline = time.Unix(1, 0)

// connReader is a frame reader that a connection holds only while it is
// active.
type connReader struct {
	r   *gearman.Reader
	src connSource
}

// connSource feeds a pooled reader from one connection: first the bytes
// that woke the connection, then the connection itself.
type connSource struct {
	c   *conn
	pre []byte
}

func (s *connSource) Read(p []byte) (int, error) {
	if len(s.pre) > 0 {
		n := copy(p, s.pre)
		s.pre = s.pre[n:]
		return n, nil
	}
	return s.c.readConn(p)
}

// readConn reads from the network for the frame reader. Called by the
// reader goroutine only.
func (c *conn) readConn(p []byte) (int, error) {
	n, err := c.read(p)
	if n == len(p) && 2*n >= c.rd.r.Size() {
		// The read took all the frame reader asked for, half its buffer
		// or more: the peer pipelines faster than one read takes in.
		c.growRead = true
	}
	if c.waiting {
		if n > 0 {
			c.frameBegins()
		} else if err != nil && errors.Is(err, os.ErrDeadlineExceeded) && c.takeKick() {
			return 0, errIdle
		}
	} else if c.frameRead += n; c.frameRead >= readProgress {
		// A large frame that keeps arriving is not a slowloris: its
		// time counts again from here, while it holds one of the
		// server's places for slow frames.
		c.frameRead = 0
		if c.frameStart.Load() != 0 && c.holdSlowFrame() {
			c.frameStart.Store(c.srv.now.Load())
		}
	}
	return n, err
}

// maxSlowFrames is the most connections whose frame in progress may have
// its read timeout counted again at once. The frames of the others must
// arrive within the read timeout, so that partial frames hold at most
// maxSlowFrames × --max-packet beside what peers send within
// --read-timeout: without the bound, peers each sending readProgress
// bytes per read timeout could keep --max-connections frames growing for
// hours.
const maxSlowFrames = 16

// holdSlowFrame takes one of the server's places for slow frames for the
// frame in progress, or reports that none is free.
func (c *conn) holdSlowFrame() bool {
	if c.slow.Load() {
		return true
	}
	if c.srv.slowFrames.Add(1) > maxSlowFrames {
		c.srv.slowFrames.Add(-1)
		return false
	}
	c.slow.Store(true)
	return true
}

// releaseSlowFrame gives back the place of a slow frame that ended, or of
// a connection that ended.
func (c *conn) releaseSlowFrame() {
	if c.slow.Swap(false) {
		c.srv.slowFrames.Add(-1)
	}
}

// readProgress is how much of a frame must arrive for the read timeout to
// count again from there, so that a large packet sent over a slow link is
// not cut off while a peer that trickles bytes still is (admin lines and
// the packets of connections the auth rules grant nothing are smaller).
const readProgress = 256 << 10

// acquireReader gives the connection a reader, primed with the bytes in
// pre (which must stay untouched until they are read). Readers are not
// pooled: a connection acquires one only after an idle period, and a
// dropped reader is freed by the next collection.
func (c *conn) acquireReader(pre []byte) {
	pr := &connReader{}
	pr.r = gearman.NewReader(&pr.src, c.srv.cfg.ReadBuffer)
	pr.src.c = c
	pr.src.pre = pre
	pr.r.MaxBody = c.maxBody
	// Work results are handled before the next frame is read and keep
	// only their data, which packet copies, and an echo's answer is
	// encoded from its request at once: their bodies need no allocation
	// of their own.
	pr.r.Borrow(gearman.WorkComplete, gearman.WorkException, gearman.WorkFail,
		gearman.WorkStatus, gearman.WorkData, gearman.WorkWarning, gearman.EchoReq)
	c.rd = pr
}

// releaseReader drops the reader, which must hold no buffered input, and
// the output buffers kept for reuse; the next burst reallocates them.
func (c *conn) releaseReader() {
	size := c.rd.r.Size()
	c.rd = nil
	c.rmu.Lock()
	c.released = true
	c.rmu.Unlock()
	c.mu.Lock()
	if !c.flushing {
		c.spare = nil
		if len(c.out) == 0 {
			c.out = nil
		}
	}
	c.mu.Unlock()
	c.srv.releasedBytes.Add(int64(size) + releasedStackGuess)
}

// releasedStackGuess estimates the stack memory a released connection
// frees by moving to a fresh goroutine.
const releasedStackGuess = 4 << 10

// returnMemory gives memory freed by released connections back to the
// operating system once enough has accumulated and releases have settled
// (none since the previous tick), or at most every returnMemoryEvery while
// they keep coming; a smaller amount (the tail of a burst) is returned
// once releases have settled, at most every returnMemorySmallEvery.
// Without it an idle server would not collect garbage (nothing allocates),
// and its resident size would stay at the peak of the last burst of
// activity.
func (s *Server) returnMemory(now int64) {
	released := s.releasedBytes.Load()
	settled := released == s.lastReleased
	s.lastReleased = released
	since := now - s.lastReturn
	switch {
	case released >= returnMemoryBytes && (settled || since >= int64(returnMemoryEvery)):
	case released >= returnMemorySmall && settled && since >= int64(returnMemorySmallEvery):
	default:
		return
	}
	s.releasedBytes.Add(-released)
	s.lastReleased = 0
	s.lastReturn = now
	debug.FreeOSMemory()
}

const (
	returnMemoryBytes      = 16 << 20
	returnMemoryEvery      = time.Minute
	returnMemorySmall      = 1 << 20
	returnMemorySmallEvery = 10 * time.Second
)

// frameBegins records that the first byte of a frame has arrived. Called
// by the reader goroutine.
func (c *conn) frameBegins() {
	c.rmu.Lock()
	c.waiting = false
	c.released = false
	if c.kicked {
		// The janitor set a past deadline to release an idle reader just
		// as input arrived; undo it so that the frame can be read.
		c.kicked = false
		_ = c.nc.SetReadDeadline(time.Time{})
	}
	c.rmu.Unlock()
	c.frameRead = 0
	c.releaseSlowFrame()
	c.frameStart.Store(c.srv.now.Load())
}

// frameEnds records that the reader now waits for the next frame with
// nothing buffered. Called by the reader goroutine.
func (c *conn) frameEnds() {
	now := c.srv.now.Load()
	c.releaseSlowFrame()
	c.frameStart.Store(0)
	c.waitStart.Store(now)
	c.rmu.Lock()
	c.waiting = true
	c.rmu.Unlock()
}

// takeKick reports whether a read deadline error was the janitor's idle
// kick, and clears the deadline if so.
func (c *conn) takeKick() bool {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	if !c.kicked {
		return false
	}
	c.kicked = false
	_ = c.nc.SetReadDeadline(time.Time{})
	return true
}

// janitorTick returns how often the janitor runs for the configured
// timeouts: a quarter of the shortest, between 5 ms and 500 ms.
func janitorTick(cfg Config) time.Duration {
	tick := 500 * time.Millisecond
	for _, d := range []time.Duration{cfg.ReadTimeout, cfg.WriteTimeout, cfg.IdleRelease} {
		if d > 0 {
			tick = min(tick, d/4)
		}
	}
	return max(tick, 5*time.Millisecond)
}

// startJanitor starts the janitor goroutine once. Close stops it.
func (s *Server) startJanitor() {
	s.janitorOnce.Do(func() {
		s.janitorWG.Add(1)
		go s.janitor()
	})
}

func (s *Server) janitor() {
	defer s.janitorWG.Done()
	t := time.NewTicker(janitorTick(s.cfg))
	defer t.Stop()
	var batch []*conn
	for {
		select {
		case <-s.stop:
			return
		case now := <-t.C:
			s.now.Store(now.UnixNano())
			batch = s.sweep(now.UnixNano(), batch[:0])
			clear(batch)
			s.returnMemory(now.UnixNano())
		}
	}
}

// sweep closes connections that exceeded the read or write timeout and
// kicks idle ones into releasing their reader.
func (s *Server) sweep(now int64, batch []*conn) []*conn {
	s.mu.Lock()
	for c := range s.conns {
		batch = append(batch, c)
	}
	s.mu.Unlock()
	rt, wt, idle := int64(s.cfg.ReadTimeout), int64(s.cfg.WriteTimeout), int64(s.cfg.IdleRelease)
	for _, c := range batch {
		if start := c.frameStart.Load(); rt > 0 && start != 0 && now-start > rt {
			c.abort(&s.stats.readTimeouts, "read timeout: frame incomplete")
			continue
		}
		if start := c.writeStart.Load(); wt > 0 && start != 0 && now-start > wt {
			c.abort(&s.stats.writeTimeouts, "write timeout: peer does not read")
			continue
		}
		if idle > 0 && now-c.waitStart.Load() > idle {
			c.rmu.Lock()
			if c.waiting && !c.kicked && !c.released {
				c.kicked = true
				_ = c.nc.SetReadDeadline(pastDeadline)
			}
			c.rmu.Unlock()
		}
	}
	return batch
}

// abort closes a connection that broke a limit.
func (c *conn) abort(counter *atomic.Int64, reason string) {
	if !c.aborted.CompareAndSwap(false, true) {
		return
	}
	counter.Add(1)
	c.srv.limited.log(c.srv.log, slog.LevelInfo, "gearmanapi: closing connection: "+reason,
		slog.String("remote", c.remote))
	c.mu.Lock()
	c.markDeadLocked()
	c.mu.Unlock()
	c.closeNet()
}

// limitStats counts connections closed by limits; see Server.LimitStats.
type limitStats struct {
	readTimeouts, writeTimeouts, rejected, badFrames, handshakeFailures atomic.Int64
	outputWaits                                                         atomic.Int64
}

// LimitStats counts the connections a Server closed because they broke a
// limit, since it started.
type LimitStats struct {
	// ReadTimeouts are connections that did not complete a frame in time.
	ReadTimeouts int64
	// WriteTimeouts are connections that did not read their output.
	WriteTimeouts int64
	// Rejected are connections closed at accept (MaxConnections or
	// MaxConnectionsPerAddress).
	Rejected int64
	// BadFrames are connections closed after an invalid header or an
	// overlong admin line.
	BadFrames int64
	// HandshakeFailures are TLS connections whose handshake failed or
	// timed out.
	HandshakeFailures int64
	// OutputWaits counts the times a connection's next request waited for
	// the peer to read earlier answers: more than half of MaxOutput was
	// waiting for it (see conn.waitOutput).
	OutputWaits int64
}

// LimitStats returns the counts so far. Safe for concurrent use.
func (s *Server) LimitStats() LimitStats {
	return LimitStats{
		ReadTimeouts:      s.stats.readTimeouts.Load(),
		WriteTimeouts:     s.stats.writeTimeouts.Load(),
		Rejected:          s.stats.rejected.Load(),
		BadFrames:         s.stats.badFrames.Load(),
		HandshakeFailures: s.stats.handshakeFailures.Load(),
		OutputWaits:       s.stats.outputWaits.Load(),
	}
}

// logLimiter lets at most logBurst messages per second through, so that a
// flood of hostile connections cannot flood the log; it reports how many it
// suppressed on the next message it lets through.
type logLimiter struct {
	mu         sync.Mutex
	second     int64
	n          int
	suppressed int
}

const logBurst = 10

func (l *logLimiter) log(log *slog.Logger, level slog.Level, msg string, attrs ...slog.Attr) {
	sec := time.Now().Unix()
	l.mu.Lock()
	if sec != l.second {
		l.second, l.n = sec, 0
	}
	l.n++
	if l.n > logBurst {
		l.suppressed++
		l.mu.Unlock()
		return
	}
	if l.suppressed > 0 {
		attrs = append(attrs, slog.Int("suppressed", l.suppressed))
		l.suppressed = 0
	}
	l.mu.Unlock()
	log.LogAttrs(context.Background(), level, msg, attrs...)
}
