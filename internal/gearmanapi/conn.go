package gearmanapi

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gearwork/gearwork/gearman"
	"github.com/gearwork/gearwork/internal/auth"
	"github.com/gearwork/gearwork/internal/broker"
)

// conn is one client or worker connection. Its reader goroutine decodes
// frames and calls the broker; output from the reader and from broker
// events is appended to out and written in bursts, either by the reader at
// the end of a burst of input or by a short-lived flusher goroutine.
type conn struct {
	srv    *Server
	nc     net.Conn
	remote string
	// from is the source address counted against
	// Config.MaxConnectionsPerAddress; the zero Addr when not counted.
	from netip.Addr
	// raw allows a non-blocking write attempt; nil for TLS connections.
	raw syscall.RawConn
	// poll is the socket's descriptor, for parking: raw, or for a TLS
	// connection the socket under it. Nil if there is none.
	poll syscall.RawConn
	// tls is set for TLS connections, which must not be kicked or parked
	// before their handshake completes.
	tls bool
	// sess is the connection's broker session, created with its first
	// valid frame; nil until then. Owned by the reader goroutine.
	sess *broker.Session

	// The fields up to rmu are owned by the reader goroutine.

	// rd is the frame reader, nil while the connection is idle and has
	// released it (see connReader).
	rd *connReader
	// small receives the first bytes after an idle wait.
	small [16]byte
	// growRead is set when a read filled the frame reader's buffer (see
	// readConn): serveFrames then grows it to grownReadBuffer.
	growRead bool
	// noAcks is set when no submit awaits its answer (acks is 0), as seen
	// at the start of the current frame, so that a request that must wait
	// for earlier answers (waitAcks) need not take mu to find none: only
	// the reader adds submits (newAckLocked clears it).
	noAcks bool
	// burstN counts the requests of the session's current burst
	// (Session.BeginBurst); 0 outside one.
	burstN int
	// maxBody is the packet size limit for this connection's identity.
	maxBody int
	// id and grant are the peer's identity and what it may do; grant is
	// nil when the server has no Authorizer.
	id     auth.Identity
	grant  *auth.Grant
	denied bool

	// rmu guards waiting, kicked and released, which the janitor reads.
	rmu sync.Mutex
	// waiting is set while the reader waits for the first byte of a frame
	// with nothing buffered.
	waiting bool
	// kicked is set when the janitor set a past read deadline to make an
	// idle reader release its buffer.
	kicked bool
	// released is set while the connection holds nothing the janitor
	// could release: its reader is released and it is parked, or it
	// cannot be parked and waits on a small goroutine.
	released bool
	// parkSlot is the connection's place in the server's parker, -1 while
	// it is not parked. Guarded by the parker's mutex.
	parkSlot int32

	// frameStart, waitStart and writeStart are coarse Unix nanosecond
	// times (Server.now) at which the current frame began arriving, the
	// wait for the next frame began, and the current write began; 0 when
	// none is in progress.
	frameStart, waitStart, writeStart atomic.Int64
	// frameRead counts the bytes read since frameStart was last set
	// (readConn). Used by the reader goroutine only.
	frameRead int
	// slow is set while the frame in progress holds one of the server's
	// maxSlowFrames places (readConn).
	slow atomic.Bool
	// aborted is set when a limit closed the connection.
	aborted atomic.Bool

	// mu guards the fields below. Lock order: broker.mu before conn.mu.
	mu sync.Mutex
	// out holds encoded output not yet written.
	out   []byte
	spare []byte
	// holding is set while an admin answer is passed on in parts (a long
	// listing, adminAnswer.spill): events for the connection's jobs
	// wait in held until the answer is whole, so that no packet lands
	// inside its text.
	holding bool
	held    []byte
	// flushing is set while a goroutine is writing out.
	flushing bool
	// inBurst is set while the reader processes input it already has; it
	// flushes at the end, so events need no flusher goroutine meanwhile.
	inBurst bool
	// dead is set once the connection failed or overflowed.
	dead bool
	// acks counts submits whose answer has not been queued yet; other
	// requests wait for it to reach zero so answers keep their order.
	// ackHead..ackTail is the queue of those submits in the order they
	// arrived: the broker may answer them in any order (a job that ends
	// before an earlier one is durable, an error, a coalesced job), so an
	// answer is held in its slot until every earlier one has been queued.
	acks             int
	ackHead, ackTail *ackSlot
	ackFree          *ackSlot
	ackCond          sync.Cond
	// flushed is signalled whenever a flush ends (flushing became false)
	// or takes the output to write it.
	flushed sync.Cond
	scratch [96]byte
	// rio is the reader goroutine's raw read, wio the raw write of
	// whichever goroutine writes (see read and tryWrite).
	rio, wio rawCall
}

func newConn(s *Server, nc net.Conn) *conn {
	c := &conn{srv: s, nc: nc, remote: nc.RemoteAddr().String(), waiting: true, parkSlot: -1}
	if sc, ok := nc.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			c.raw, c.poll = raw, raw
			c.newRawCalls()
		}
	} else if tc, ok := nc.(*tls.Conn); ok {
		c.tls = true
		if sc, ok := tc.NetConn().(syscall.Conn); ok {
			if raw, err := sc.SyscallConn(); err == nil {
				c.poll = raw
			}
		}
	}
	// A new connection that can be parked is kicked like an idle one if
	// it sends nothing; one that cannot keeps waiting on its goroutine. A
	// TLS connection is not kicked before its handshake is done.
	c.released = !c.parkable() || c.tls
	c.ackCond.L = &c.mu
	c.flushed.L = &c.mu
	c.waitStart.Store(s.now.Load())
	return c
}

// run is the connection's goroutine: it completes the TLS handshake,
// works out the peer's identity and serves frames until the connection
// ends.
func (c *conn) run(ctx context.Context) {
	if !c.handshake(ctx) {
		c.finish()
		return
	}
	if c.tls && c.parkable() {
		// From now on it idles, and parks, like a plain connection.
		c.waitStart.Store(c.srv.now.Load())
		c.rmu.Lock()
		c.released = false
		c.rmu.Unlock()
	}
	c.wake(ctx)
}

// wake waits, holding no read buffer, for the first bytes of the next
// frame, then serves frames until the connection is idle again (when it
// parks without a goroutine, or hands over to a fresh goroutine, whose
// stack starts small) or ends.
func (c *conn) wake(ctx context.Context) {
	for {
		n, err := c.read(c.small[:])
		if n > 0 {
			c.frameBegins()
			if c.small[0] == 0 {
				// A packet: its header is checked before anything is
				// allocated for the connection.
				if n, err = c.readHeader(n); err != nil {
					c.readError(ctx, err)
					c.finish()
					return
				}
			}
			c.acquireReader(c.small[:n])
			break
		}
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) && c.takeKick() {
				// A connection that has sent nothing since it was
				// accepted or woken.
				c.rmu.Lock()
				c.released = true
				c.rmu.Unlock()
				if c.srv.park(ctx, c) {
					return
				}
				continue
			}
			c.readError(ctx, err)
			c.finish()
			return
		}
	}
	if c.serveFrames(ctx) {
		if !c.srv.park(ctx, c) {
			go c.wake(ctx)
		}
		return
	}
	c.finish()
}

// readHeader completes the packet header whose first n bytes are in
// c.small and checks it, so that a connection whose first packet is
// malformed or too large is refused without a read buffer or a broker
// session. It returns how many bytes c.small holds, or the header's error.
func (c *conn) readHeader(n int) (int, error) {
	for n < gearman.HeaderSize {
		m, err := c.nc.Read(c.small[n:])
		n += m
		if err != nil && n < gearman.HeaderSize {
			return n, err
		}
	}
	if _, _, _, err := gearman.ParseHeader(c.small[:gearman.HeaderSize], c.maxBody); err != nil {
		return n, err
	}
	return n, nil
}

// parkable reports whether the connection can wait for input without a
// goroutine: it has a socket (plain TCP or TLS over TCP) and the server a
// parker.
func (c *conn) parkable() bool {
	return c.poll != nil && c.srv.parker != nil
}

// closeNet closes the socket from outside the reader goroutine, resuming
// the connection if it is parked so that its reader sees the close and
// ends it.
func (c *conn) closeNet() {
	c.nc.Close()
	if c.parkable() {
		c.srv.parker.unpark(c)
	}
}

// finish ends the connection: its session, its socket and its place in
// the server.
func (c *conn) finish() {
	if c.sess != nil {
		c.srv.b.CloseSession(c.sess)
	}
	c.mu.Lock()
	c.dead = true
	c.ackCond.Broadcast()
	c.mu.Unlock()
	c.nc.Close()
	c.releaseSlowFrame()
	c.srv.connDone(c)
}

// serveFrames reads and answers frames. It reports true when the
// connection went idle and released its reader, false when it ended.
func (c *conn) serveFrames(ctx context.Context) bool {
	var f gearman.Frame
	for {
		err := c.rd.r.Next(&f)
		if err != nil {
			if err == errIdle {
				c.releaseReader()
				return true
			}
			c.readError(ctx, err)
			return false
		}
		if c.sess == nil {
			// A connection joins the broker with its first valid frame:
			// one that never sends one (a malformed or slow one) never
			// takes the broker's lock.
			c.sess = c.srv.b.NewSession(c.remote, c)
		}
		c.mu.Lock()
		c.inBurst = true
		over := len(c.out) > c.srv.cfg.MaxOutput/2
		c.noAcks = c.acks == 0
		c.mu.Unlock()
		if over && !c.waitOutput(c.srv.cfg.MaxOutput/2) {
			return false
		}
		if c.burstN == 0 {
			c.sess.BeginBurst()
		}
		c.burstN++
		if f.Text {
			if !c.admin(ctx, f.Line) {
				c.flush()
				return false
			}
		} else {
			c.packet(ctx, &f)
		}
		if c.growRead {
			c.growRead = false
			c.rd.r.Grow(grownReadBuffer)
		}
		more := c.rd.r.HasFrame()
		if !more || c.burstN >= maxBurstFrames {
			c.endBurst()
		}
		if !more {
			if !c.flush() {
				return false
			}
		}
		if c.rd.r.Buffered() == 0 {
			c.frameEnds()
		} else {
			c.frameStart.Store(c.srv.now.Load())
		}
	}
}

// waitOutput writes the connection's pending output before its next
// request is served, after any flush under way: the answers to requests
// read in one go (admin commands especially) can be far larger than the
// requests, and a peer that sends them faster than it reads their
// answers is served at the pace it reads, so that what waits for it stays
// near half of MaxOutput instead of growing with every request (the
// write timeout drops a peer that never reads). It reports false once the
// connection is dead. Called by the reader goroutine, which serveFrames
// has marked in a burst.
func (c *conn) waitOutput(mark int) bool {
	c.srv.stats.outputWaits.Add(1)
	// The wait may be long: later requests read the clock again.
	c.endBurst()
	c.frameStart.Store(0)
	c.mu.Lock()
	defer c.mu.Unlock()
	// A flush under way takes the output as it goes: wait only until what
	// is left for it is back under the mark.
	for c.flushing && !c.dead && len(c.out) > mark {
		c.flushed.Wait()
	}
	if c.dead {
		return false
	}
	c.inBurst = true
	if c.flushing || len(c.out) == 0 {
		return true
	}
	c.flushing = true
	ok := c.flushLocked()
	c.inBurst = ok
	return ok
}

// grownReadBuffer is the read buffer of a connection whose reads fill the
// configured one (Config.ReadBuffer), until it idles and releases it: a
// client that keeps 64 requests of 100 bytes in flight sends more than
// 4 KiB at once, and with the smaller buffer every burst took two reads
// and two writes to answer.
const grownReadBuffer = 16 << 10

// maxBurstFrames is the most requests that share one clock reading
// (Session.BeginBurst): a burst read at once is processed in microseconds,
// and this bounds how old its reading gets.
const maxBurstFrames = 64

// endBurst ends the session's burst, if one is under way. Called by the
// reader goroutine.
func (c *conn) endBurst() {
	if c.burstN > 0 {
		c.sess.EndBurst()
		c.srv.requests.Add(uint64(c.burstN))
		c.burstN = 0
	}
}

func (c *conn) readError(ctx context.Context, err error) {
	var he *gearman.HeaderError
	switch {
	case errors.As(err, &he):
		c.srv.stats.badFrames.Add(1)
		c.srv.limited.log(c.srv.log, slog.LevelWarn, "gearmanapi: closing connection after bad header",
			slog.String("remote", c.remote), slog.String("error", err.Error()))
		// Earlier submits' answers go first: they are accepted jobs.
		c.waitAcks()
		c.errorPacket(he.Code, he.Text)
		c.flush()
	case errors.Is(err, gearman.ErrLineTooLong):
		c.srv.stats.badFrames.Add(1)
		c.waitAcks()
		c.write([]byte("ERR LINE_TOO_LONG Admin+line+exceeds+8192+bytes\r\n"))
		c.flush()
	case c.aborted.Load(), errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed):
	default:
		c.srv.log.DebugContext(ctx, "gearmanapi: connection ended",
			slog.String("remote", c.remote), slog.String("error", err.Error()))
	}
}

// Send implements broker.Outbox. It is called with the broker's lock held.
func (c *conn) Send(ev broker.Event) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dead {
		return
	}
	h := c.srv.b.AppendHandle(c.scratch[:0], ev.Seq)
	o := &c.out
	if c.holding {
		o = &c.held
	}
	switch ev.Kind {
	case broker.EventNoop:
		*o = gearman.AppendPacket(*o, gearman.MagicRes, gearman.Noop)
	case broker.EventData:
		*o = gearman.AppendPacket(*o, gearman.MagicRes, gearman.WorkData, h, ev.Data)
	case broker.EventWarning:
		*o = gearman.AppendPacket(*o, gearman.MagicRes, gearman.WorkWarning, h, ev.Data)
	case broker.EventComplete:
		*o = gearman.AppendPacket(*o, gearman.MagicRes, gearman.WorkComplete, h, ev.Data)
	case broker.EventException:
		*o = gearman.AppendPacket(*o, gearman.MagicRes, gearman.WorkException, h, ev.Data)
	case broker.EventFail:
		*o = gearman.AppendPacket(*o, gearman.MagicRes, gearman.WorkFail, h)
	case broker.EventStatus:
		if ev.Data != nil {
			// The worker's own text of the numbers (statusText).
			*o = gearman.AppendPacket(*o, gearman.MagicRes, gearman.WorkStatus, h, ev.Data)
			break
		}
		var nb, db [10]byte
		*o = gearman.AppendPacket(*o, gearman.MagicRes, gearman.WorkStatus, h,
			strconv.AppendUint(nb[:0], uint64(ev.Numerator), 10),
			strconv.AppendUint(db[:0], uint64(ev.Denominator), 10))
	}
	c.afterAppendLocked()
}

// afterAppendLocked enforces the output cap and starts a flusher if none
// runs.
func (c *conn) afterAppendLocked() {
	if len(c.out)+len(c.held) > c.srv.cfg.MaxOutput {
		c.markDeadLocked()
		c.out, c.held = nil, nil
		c.closeNet()
		c.srv.limited.log(c.srv.log, slog.LevelWarn, "gearmanapi: dropped slow reader",
			slog.String("remote", c.remote), slog.Int("max_output", c.srv.cfg.MaxOutput))
		return
	}
	if !c.flushing && !c.inBurst {
		c.flushing = true
		c.srv.markDirty(c)
	}
}

// flushLoop writes out until it is empty. The caller set c.flushing.
func (c *conn) flushLoop() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.flushLocked()
}

func (c *conn) flushLocked() bool {
	for len(c.out) > 0 && !c.dead {
		buf := c.out
		c.out = c.spare[:0]
		c.spare = nil
		// A reader waiting for the output to shrink (waitOutput) may go on.
		c.flushed.Broadcast()
		c.mu.Unlock()
		c.writeStart.Store(max(c.srv.now.Load(), 1))
		err := c.writeAll(buf)
		c.writeStart.Store(0)
		c.mu.Lock()
		if cap(buf) <= 1<<20 {
			c.spare = buf[:0]
		}
		if err != nil {
			c.markDeadLocked()
			c.out = nil
			c.closeNet()
		}
	}
	c.flushing = false
	c.flushed.Broadcast()
	return !c.dead
}

// writeProgress is how much of a long write must reach the socket for the
// write timeout to count again from there: the timeout drops a peer that
// does not read, not one that reads a large answer over a slow link. (The
// socket takes more once its buffer is half free.)
const writeProgress = 256 << 10

// writeAll writes b, waiting while the socket buffer is full: on a plain
// socket first up to maxRawWrite bytes in one attempt through sysWrite,
// the rest through the connection's Write, in parts of writeProgress.
func (c *conn) writeAll(b []byte) error {
	if c.raw != nil {
		n, err := c.tryWrite(b)
		if err != nil || n == len(b) {
			return err
		}
		b = b[n:]
	}
	for len(b) > writeProgress {
		if _, err := c.nc.Write(b[:writeProgress]); err != nil {
			return err
		}
		b = b[writeProgress:]
		c.writeStart.Store(max(c.srv.now.Load(), 1))
	}
	_, err := c.nc.Write(b)
	return err
}

// flushAndClose writes what is still queued for the peer (waiting for a
// running flush first), bounded by deadline, then closes the connection.
// The server calls it when it stops, so that results produced just before
// (for example by the last job of a graceful stop) reach their clients.
func (c *conn) flushAndClose(deadline time.Time) {
	_ = c.nc.SetWriteDeadline(deadline)
	c.mu.Lock()
	for c.flushing && !c.dead {
		c.flushed.Wait()
	}
	if !c.dead && len(c.out) > 0 {
		c.flushing = true
		c.flushLocked()
	}
	// Nothing more is written; a reader waiting for submit answers stops
	// waiting, so the connection ends without waiting for the store.
	c.markDeadLocked()
	c.mu.Unlock()
	c.nc.Close()
}

// markDeadLocked records that nothing more can be written to the
// connection and releases a reader waiting for submit answers (waitAcks).
func (c *conn) markDeadLocked() {
	c.dead = true
	c.ackCond.Broadcast()
}

// flush writes pending output from the reader goroutine, unless a flusher
// already runs (it will write it). It reports false once the connection is
// dead.
func (c *conn) flush() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.inBurst = false
	if c.flushing {
		return !c.dead
	}
	c.flushing = true
	return c.flushLocked()
}

// write queues raw bytes from the reader goroutine.
func (c *conn) write(b []byte) {
	c.mu.Lock()
	c.out = append(c.out, b...)
	c.mu.Unlock()
}

// writePart queues part of an admin answer from the reader goroutine; the
// events for the connection's jobs wait until endAnswer.
func (c *conn) writePart(b []byte) {
	c.mu.Lock()
	c.out = append(c.out, b...)
	c.holding = true
	c.mu.Unlock()
}

// endAnswer queues the last part of an admin answer, then the events that
// waited for it (writePart).
func (c *conn) endAnswer(b []byte) {
	c.mu.Lock()
	c.out = append(c.out, b...)
	if c.holding {
		c.out = append(c.out, c.held...)
		c.held, c.holding = nil, false
	}
	c.mu.Unlock()
}

func (c *conn) packetOut(cmd gearman.Command, args ...[]byte) {
	c.mu.Lock()
	c.out = gearman.AppendPacket(c.out, gearman.MagicRes, cmd, args...)
	c.mu.Unlock()
}

func (c *conn) errorPacket(code, text string) {
	c.packetOut(gearman.Error, []byte(code), []byte(text))
}

// waitAcks blocks until every earlier submit has been answered. The
// request that waits has arrived whole, so the wait is no frame that is slow
// to arrive: it does not count towards the read timeout, however long the
// store takes (serveFrames sets frameStart again after the request).
func (c *conn) waitAcks() {
	if c.noAcks {
		return
	}
	c.mu.Lock()
	if c.acks > 0 && !c.dead {
		// The store may take long: later requests read the clock again.
		c.endBurst()
		c.frameStart.Store(0)
		for c.acks > 0 && !c.dead {
			c.ackCond.Wait()
		}
	}
	c.mu.Unlock()
}

// ackSlot is one submit waiting for its answer. Slots and their done
// functions are reused, so a submit allocates nothing for its answer.
type ackSlot struct {
	c     *conn
	next  *ackSlot
	done  broker.DoneFunc
	ready bool
	seq   uint64
	err   error
}

// newAckLocked queues a slot for a submit about to be made and returns the
// function that answers it.
func (c *conn) newAckLocked() broker.DoneFunc {
	s := c.ackFree
	if s != nil {
		c.ackFree = s.next
		s.next = nil
	} else {
		s = &ackSlot{c: c}
		s.done = s.answer
	}
	if c.ackTail != nil {
		c.ackTail.next = s
	} else {
		c.ackHead = s
	}
	c.ackTail = s
	c.acks++
	c.noAcks = false
	return s.done
}

// answer records a submit's outcome; called with the broker's lock held.
func (s *ackSlot) answer(seq uint64, _ bool, err error) {
	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	s.ready, s.seq, s.err = true, seq, err
	if c.ackHead != s {
		return // an earlier submit is still waiting; it will queue this one
	}
	for s := c.ackHead; s != nil && s.ready; s = c.ackHead {
		c.ackHead = s.next
		if c.ackHead == nil {
			c.ackTail = nil
		}
		c.acks--
		if !c.dead {
			if s.err != nil {
				c.out = gearman.AppendPacket(c.out, gearman.MagicRes, gearman.Error, []byte("QUEUE_ERROR"), []byte(s.err.Error()))
			} else {
				h := c.srv.b.AppendHandle(c.scratch[:0], s.seq)
				c.out = gearman.AppendPacket(c.out, gearman.MagicRes, gearman.JobCreated, h)
			}
		}
		s.next, s.ready, s.err = c.ackFree, false, nil
		c.ackFree = s
	}
	if c.acks == 0 {
		c.ackCond.Broadcast()
	}
	if !c.dead {
		c.afterAppendLocked()
	}
}
