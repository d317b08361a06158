package worker

import (
	"context"
	"errors"
	"net"
	"strconv"
	"sync"

	"github.com/gearwork/gearwork/gearman"
	"github.com/gearwork/gearwork/internal/outbuf"
)

// wconn is one connection to a server. Its reader goroutine (the server
// loop) handles NOOP, NO_JOB and job assignments; job goroutines write
// their updates and results. Output is appended to out and written in
// bursts by whoever finds no write in progress.
type wconn struct {
	w    *Worker
	addr string
	nc   net.Conn
	r    *gearman.Reader

	// wmu guards the output fields.
	wmu  sync.Mutex
	out  outbuf.Buffer
	dead bool

	// Scheduling state, guarded by Worker.mu: awake means the server may
	// have work (a fresh connection, or NOOP received); sleeping means
	// PRE_SLEEP was sent; grabs counts outstanding GRAB_JOBs and depth
	// their current limit; jobs are the running jobs taken on this
	// connection.
	awake    bool
	sleeping bool
	grabs    int
	depth    int
	jobs     map[*Job]context.CancelCauseFunc
}

func newWConn(w *Worker, addr string, nc net.Conn) *wconn {
	return &wconn{
		w:    w,
		addr: addr,
		nc:   nc,
		r:    gearman.NewReader(nc, w.dial.ReadBuffer),
		jobs: make(map[*Job]context.CancelCauseFunc),
	}
}

// canDo queues CAN_DO or CAN_DO_TIMEOUT for fn.
func (c *wconn) canDo(fn *Function) {
	if fn.Timeout > 0 {
		c.write(gearman.CanDoTimeout, []byte(fn.Name), formatMillis(fn.Timeout))
		return
	}
	c.write(gearman.CanDo, []byte(fn.Name))
}

// write queues a packet. It reports false if the connection is dead.
func (c *wconn) write(cmd gearman.Command, args ...[]byte) bool {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.dead {
		return false
	}
	c.out.Out = gearman.AppendPacket(c.out.Out, gearman.MagicReq, cmd, args...)
	return true
}

// flush writes queued output unless another goroutine is writing (it will
// write this too).
func (c *wconn) flush() {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.out.FlushLocked(&c.wmu, c.nc, c.w.dial.WriteTimeout, (*wconnWriter)(c))
}

// wconnWriter is a wconn as its output buffer sees it (outbuf.Conn), with
// wmu held.
type wconnWriter wconn

func (w *wconnWriter) Writable() bool { return !w.dead }

func (w *wconnWriter) WriteFailed(error) {
	w.dead = true
	w.out.Out = nil
	w.nc.Close()
}

// readLoop handles packets from the server until the connection fails,
// and returns why.
func (c *wconn) readLoop() error {
	defer func() {
		c.wmu.Lock()
		c.dead = true
		c.out.Out = nil
		c.wmu.Unlock()
	}()
	var f gearman.Frame
	var fl flushList
	for {
		if err := c.r.Next(&f); err != nil {
			return err
		}
		if f.Text {
			return errors.New("unexpected text line from server: " + strconv.Quote(string(f.Line)))
		}
		p := &f.Packet
		if p.Magic != gearman.MagicRes {
			return errors.New("request magic from server")
		}
		switch {
		case !p.Command.Valid():
		case !f.ArgsOK:
			return errors.New(p.Command.String() + " with too few arguments")
		case p.Command == gearman.JobAssign, p.Command == gearman.JobAssignUniq, p.Command == gearman.JobAssignAll:
			c.w.assigned(c, p, &fl)
		case p.Command == gearman.NoJob:
			c.w.noJob(c, &fl)
		case p.Command == gearman.Noop:
			c.w.noop(c, &fl)
		case p.Command == gearman.Error:
			c.w.log.Debug("worker: server error", "server", c.addr,
				"code", string(p.Arg(0)), "text", string(p.Arg(1)))
		}
		if c.r.Buffered() == 0 {
			fl.flush()
		}
	}
}
