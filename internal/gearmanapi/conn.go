package gearmanapi

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/gearwork/gearwork/gearman"
	"github.com/gearwork/gearwork/internal/broker"
)

// conn is one client or worker connection. Its reader goroutine decodes
// frames and calls the broker; output from the reader and from broker
// events is appended to out and written in bursts, either by the reader at
// the end of a burst of input or by a short-lived flusher goroutine.
type conn struct {
	srv  *Server
	nc   net.Conn
	sess *broker.Session
	r    *gearman.Reader
	done broker.DoneFunc

	// mu guards the fields below. Lock order: broker.mu before conn.mu.
	mu sync.Mutex
	// out holds encoded output not yet written.
	out   []byte
	spare []byte
	// flushing is set while a goroutine is writing out.
	flushing bool
	// inBurst is set while the reader processes input it already has; it
	// flushes at the end, so events need no flusher goroutine meanwhile.
	inBurst bool
	// dead is set once the connection failed or overflowed.
	dead bool
	// acks counts submits whose JOB_CREATED has not been queued yet;
	// other requests wait for it to reach zero so answers keep their order.
	acks    int
	ackCond sync.Cond
	// flushed is signalled whenever a flush ends (flushing became false).
	flushed sync.Cond
	scratch [96]byte
}

func newConn(s *Server, nc net.Conn) *conn {
	c := &conn{srv: s, nc: nc}
	c.ackCond.L = &c.mu
	c.flushed.L = &c.mu
	c.r = gearman.NewReader(nc, s.cfg.ReadBuffer)
	c.r.MaxBody = s.cfg.MaxPacket
	c.done = c.submitDone
	return c
}

func (c *conn) serve(ctx context.Context) {
	c.sess = c.srv.b.NewSession(c.nc.RemoteAddr().String(), c)
	defer func() {
		c.srv.b.CloseSession(c.sess)
		c.mu.Lock()
		c.dead = true
		c.ackCond.Broadcast()
		c.mu.Unlock()
		c.nc.Close()
	}()
	var f gearman.Frame
	for {
		err := c.r.Next(&f)
		if err != nil {
			c.readError(ctx, err)
			return
		}
		c.mu.Lock()
		c.inBurst = true
		c.mu.Unlock()
		if f.Text {
			if !c.admin(f.Line) {
				c.flush()
				return
			}
		} else {
			c.packet(&f)
		}
		if !c.r.HasFrame() {
			if !c.flush() {
				return
			}
		}
	}
}

func (c *conn) readError(ctx context.Context, err error) {
	var he *gearman.HeaderError
	switch {
	case errors.As(err, &he):
		c.srv.log.WarnContext(ctx, "gearmanapi: closing connection after bad header",
			slog.String("remote", c.nc.RemoteAddr().String()), slog.String("error", err.Error()))
		c.errorPacket(he.Code, he.Text)
		c.flush()
	case errors.Is(err, gearman.ErrLineTooLong):
		c.write([]byte("ERR LINE_TOO_LONG Admin+line+exceeds+8192+bytes\r\n"))
		c.flush()
	case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed):
	default:
		c.srv.log.DebugContext(ctx, "gearmanapi: connection ended",
			slog.String("remote", c.nc.RemoteAddr().String()), slog.String("error", err.Error()))
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
	switch ev.Kind {
	case broker.EventNoop:
		c.out = gearman.AppendPacket(c.out, gearman.MagicRes, gearman.Noop)
	case broker.EventData:
		c.out = gearman.AppendPacket(c.out, gearman.MagicRes, gearman.WorkData, h, ev.Data)
	case broker.EventWarning:
		c.out = gearman.AppendPacket(c.out, gearman.MagicRes, gearman.WorkWarning, h, ev.Data)
	case broker.EventComplete:
		c.out = gearman.AppendPacket(c.out, gearman.MagicRes, gearman.WorkComplete, h, ev.Data)
	case broker.EventException:
		c.out = gearman.AppendPacket(c.out, gearman.MagicRes, gearman.WorkException, h, ev.Data)
	case broker.EventFail:
		c.out = gearman.AppendPacket(c.out, gearman.MagicRes, gearman.WorkFail, h)
	case broker.EventStatus:
		var nb, db [10]byte
		c.out = gearman.AppendPacket(c.out, gearman.MagicRes, gearman.WorkStatus, h,
			strconv.AppendUint(nb[:0], uint64(ev.Numerator), 10),
			strconv.AppendUint(db[:0], uint64(ev.Denominator), 10))
	}
	c.afterAppendLocked()
}

// afterAppendLocked enforces the output cap and starts a flusher if none
// runs.
func (c *conn) afterAppendLocked() {
	if len(c.out) > c.srv.cfg.MaxOutput {
		c.dead = true
		c.out = nil
		c.nc.Close()
		c.srv.log.Warn("gearmanapi: dropped slow reader", slog.String("remote", c.nc.RemoteAddr().String()))
		return
	}
	if !c.flushing && !c.inBurst {
		c.flushing = true
		go c.flushLoop()
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
		c.mu.Unlock()
		_, err := c.nc.Write(buf)
		c.mu.Lock()
		if cap(buf) <= 1<<20 {
			c.spare = buf[:0]
		}
		if err != nil {
			c.dead = true
			c.out = nil
			c.nc.Close()
		}
	}
	c.flushing = false
	c.flushed.Broadcast()
	return !c.dead
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
	c.mu.Unlock()
	c.nc.Close()
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

func (c *conn) packetOut(cmd gearman.Command, args ...[]byte) {
	c.mu.Lock()
	c.out = gearman.AppendPacket(c.out, gearman.MagicRes, cmd, args...)
	c.mu.Unlock()
}

func (c *conn) errorPacket(code, text string) {
	c.packetOut(gearman.Error, []byte(code), []byte(text))
}

// waitAcks blocks until every earlier submit has been answered.
func (c *conn) waitAcks() {
	c.mu.Lock()
	for c.acks > 0 && !c.dead {
		c.ackCond.Wait()
	}
	c.mu.Unlock()
}

// submitDone answers a submit; called with the broker's lock held.
func (c *conn) submitDone(seq uint64, _ bool, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.acks--
	if c.acks == 0 {
		c.ackCond.Broadcast()
	}
	if c.dead {
		return
	}
	if err != nil {
		code := "QUEUE_ERROR"
		c.out = gearman.AppendPacket(c.out, gearman.MagicRes, gearman.Error, []byte(code), []byte(err.Error()))
	} else {
		h := c.srv.b.AppendHandle(c.scratch[:0], seq)
		c.out = gearman.AppendPacket(c.out, gearman.MagicRes, gearman.JobCreated, h)
	}
	c.afterAppendLocked()
}
