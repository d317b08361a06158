package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/gearwork/gearwork/gearman"
	"github.com/gearwork/gearwork/internal/outbuf"
)

// conn is one connection to a server. Any number of goroutines send
// requests on it; one reader goroutine decodes the answers.
//
// Requests are answered in the order they were sent (the server handles a
// connection's packets one at a time), so every request that expects an
// answer is queued in pending in the same critical section that appends its
// bytes to out, and the reader pairs each answer with the oldest pending
// call. WORK_* packets of foreground jobs are routed by handle through
// tasks, which only the reader touches.
//
// Output is written in bursts: whoever appends while no write is in
// progress becomes the flusher and keeps writing until out is empty, so
// requests that arrive during a write leave together in the next one.
type conn struct {
	c    *Client
	addr string
	nc   net.Conn
	r    *gearman.Reader
	// done is closed when the reader goroutine has failed every waiter and
	// exited.
	done chan struct{}

	// mu guards the fields below.
	mu  sync.Mutex
	out outbuf.Buffer
	// err is set once the connection failed; later requests fail at once.
	// dead mirrors err != nil for readers that do not hold mu.
	err     error
	dead    atomic.Bool
	pending callQueue

	// tasks routes WORK_* packets to foreground jobs. Reader-owned.
	tasks map[string]*Task
}

// call is one request awaiting its in-order answer.
type call struct {
	// want is the answer's packet type.
	want gearman.Command
	// task is the foreground job being submitted, if any.
	task *Task
	// ready receives one value when the answer is in (cap 1).
	ready chan struct{}

	// Guarded by conn.mu: answered is set by the reader when it takes the
	// call; abandoned by a caller that stopped waiting.
	answered  bool
	abandoned bool

	// The answer, written by the reader before it signals ready.
	handle string
	status Status
	data   []byte
	err    error
}

var callPool = sync.Pool{New: func() any { return &call{ready: make(chan struct{}, 1)} }}

func getCall(want gearman.Command) *call {
	cl := callPool.Get().(*call)
	cl.want = want
	return cl
}

// putCall recycles a call whose answer was consumed. Abandoned calls are
// never recycled: the reader may still signal them.
func putCall(cl *call) {
	*cl = call{ready: cl.ready}
	callPool.Put(cl)
}

// callQueue is a FIFO of calls that reuses its storage.
type callQueue struct {
	buf  []*call
	head int
}

func (q *callQueue) push(c *call) { q.buf = append(q.buf, c) }

func (q *callQueue) pop() *call {
	if q.head == len(q.buf) {
		return nil
	}
	c := q.buf[q.head]
	q.buf[q.head] = nil
	q.head++
	if q.head == len(q.buf) {
		q.buf, q.head = q.buf[:0], 0
	}
	return c
}

func (q *callQueue) drain() []*call {
	out := append([]*call(nil), q.buf[q.head:]...)
	clear(q.buf)
	q.buf, q.head = q.buf[:0], 0
	return out
}

func newConn(c *Client, addr string, nc net.Conn) *conn {
	return &conn{
		c:     c,
		addr:  addr,
		nc:    nc,
		r:     gearman.NewReader(nc, c.dial.ReadBuffer),
		done:  make(chan struct{}),
		tasks: make(map[string]*Task),
	}
}

// errNotSent marks a request that was never written because the connection
// had already failed; the caller may safely try another server.
var errNotSent = errors.New("client: request not sent")

// send queues one request and writes it. It returns an error wrapping
// errNotSent if the connection had already failed.
func (cn *conn) send(cl *call, cmd gearman.Command, args ...[]byte) error {
	cn.mu.Lock()
	if cn.err != nil {
		err := cn.err
		cn.mu.Unlock()
		return fmt.Errorf("%w: %w", errNotSent, err)
	}
	cn.out.Out = gearman.AppendPacket(cn.out.Out, gearman.MagicReq, cmd, args...)
	if cl != nil {
		cn.pending.push(cl)
	}
	cn.flushLocked()
	cn.mu.Unlock()
	return nil
}

// flushLocked writes out until it is empty, unless another goroutine is
// already doing so. It releases mu while writing.
func (cn *conn) flushLocked() {
	cn.out.FlushLocked(&cn.mu, cn.nc, cn.c.dial.WriteTimeout, (*connWriter)(cn))
}

// connWriter is a conn as its output buffer sees it (outbuf.Conn), with
// mu held.
type connWriter conn

func (w *connWriter) Writable() bool { return w.err == nil }

func (w *connWriter) WriteFailed(err error) {
	if w.err == nil {
		w.err = fmt.Errorf("%w: writing to %s: %w", ErrConnLost, w.addr, err)
		w.dead.Store(true)
		w.nc.Close()
	}
}

// wait waits for cl's answer. If ctx ends first the call is abandoned (the
// reader will discard its answer) and ctx.Err() is returned. The caller
// owns cl again after a nil return.
func (cn *conn) wait(ctx context.Context, cl *call) error {
	select {
	case <-cl.ready:
		return nil
	case <-ctx.Done():
	}
	cn.mu.Lock()
	if cl.answered {
		cn.mu.Unlock()
		<-cl.ready
		return nil
	}
	cl.abandoned = true
	cn.mu.Unlock()
	return ctx.Err()
}

// roundTrip sends one request and waits for its answer. On success the
// caller must putCall(cl) after reading the answer.
func (cn *conn) roundTrip(ctx context.Context, cl *call, cmd gearman.Command, args ...[]byte) error {
	if err := cn.send(cl, cmd, args...); err != nil {
		putCall(cl)
		return err
	}
	return cn.wait(ctx, cl)
}

// close closes the socket; the reader then fails every waiter with err.
func (cn *conn) close(err error) {
	cn.mu.Lock()
	if cn.err == nil {
		cn.err = err
		cn.dead.Store(true)
	}
	cn.mu.Unlock()
	cn.nc.Close()
}

// readLoop decodes packets until the connection fails, then fails every
// pending call and running foreground job.
func (cn *conn) readLoop() {
	defer close(cn.done)
	var f gearman.Frame
	var err error
	for {
		if err = cn.r.Next(&f); err != nil {
			break
		}
		if err = cn.handle(&f); err != nil {
			cn.c.log.Warn("client: closing connection", slog.String("server", cn.addr), slog.String("error", err.Error()))
			break
		}
	}
	cn.mu.Lock()
	if cn.err == nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			err = fmt.Errorf("%w: server %s closed the connection", ErrConnLost, cn.addr)
		} else {
			err = fmt.Errorf("%w: %s: %w", ErrConnLost, cn.addr, err)
		}
		cn.err = err
	}
	cn.dead.Store(true)
	err = cn.err
	calls := cn.pending.drain()
	cn.mu.Unlock()
	cn.nc.Close()
	for _, cl := range calls {
		cn.answer(cl, func(cl *call) { cl.err = err })
	}
	for h, t := range cn.tasks {
		terr := fmt.Errorf("job %s: %w", h, err)
		t.finish(nil, terr)
		for _, o := range t.coalesced {
			o.finish(nil, terr)
		}
	}
	clear(cn.tasks)
}

// answer completes cl with fill, unless the caller abandoned it. For an
// abandoned call it reports false.
func (cn *conn) answer(cl *call, fill func(*call)) bool {
	fill(cl)
	cn.mu.Lock()
	cl.answered = true
	abandoned := cl.abandoned
	cn.mu.Unlock()
	if abandoned {
		return false
	}
	cl.ready <- struct{}{}
	return true
}

func (cn *conn) handle(f *gearman.Frame) error {
	if f.Text {
		return &protocolError{"unexpected text line from server: " + strconv.Quote(string(f.Line))}
	}
	p := &f.Packet
	if p.Magic != gearman.MagicRes {
		return &protocolError{"request magic from server"}
	}
	if !p.Command.Valid() {
		cn.c.log.Debug("client: ignoring unknown packet", slog.String("server", cn.addr), slog.String("type", p.Command.String()))
		return nil
	}
	if !f.ArgsOK {
		return &protocolError{p.Command.String() + " with too few arguments"}
	}
	switch p.Command {
	case gearman.JobCreated, gearman.StatusRes, gearman.StatusResUnique, gearman.EchoRes,
		gearman.OptionRes, gearman.Error:
		return cn.response(p)
	case gearman.WorkData, gearman.WorkWarning, gearman.WorkStatus,
		gearman.WorkComplete, gearman.WorkFail, gearman.WorkException:
		cn.route(p)
	case gearman.Noop:
	default:
		cn.c.log.Debug("client: ignoring unexpected packet", slog.String("server", cn.addr), slog.String("type", p.Command.String()))
	}
	return nil
}

// response pairs an answer with the oldest pending call.
func (cn *conn) response(p *gearman.Packet) error {
	cn.mu.Lock()
	cl := cn.pending.pop()
	cn.mu.Unlock()
	if cl == nil {
		if p.Command == gearman.Error {
			cn.c.log.Warn("client: unsolicited server error", slog.String("server", cn.addr),
				slog.String("code", string(p.Arg(0))), slog.String("text", string(p.Arg(1))))
			return nil
		}
		return &protocolError{"unexpected " + p.Command.String()}
	}
	if p.Command != gearman.Error && p.Command != cl.want {
		// Put it back so the reader's exit path fails it.
		cn.mu.Lock()
		cn.pending.buf = append([]*call{cl}, cn.pending.drain()...)
		cn.mu.Unlock()
		return &protocolError{fmt.Sprintf("got %s, expected %s", p.Command, cl.want)}
	}
	var task *Task
	answered := cn.answer(cl, func(cl *call) {
		switch p.Command {
		case gearman.Error:
			cl.err = &ServerError{Code: string(p.Arg(0)), Text: string(p.Arg(1))}
		case gearman.JobCreated:
			cl.handle = string(p.Arg(0))
			if cl.task != nil {
				task = cl.task
				task.job = Job{Handle: cl.handle, Server: cn.addr}
			}
		case gearman.StatusRes, gearman.StatusResUnique:
			cl.status = Status{
				Known:       string(p.Arg(1)) == "1",
				Running:     string(p.Arg(2)) == "1",
				Numerator:   atou32(p.Arg(3)),
				Denominator: atou32(p.Arg(4)),
			}
			if p.Command == gearman.StatusResUnique {
				cl.status.Waiting = int(atou32(p.Arg(5)))
			}
		case gearman.EchoRes, gearman.OptionRes:
			cl.data = p.Arg(0)
		}
	})
	// Register the foreground job before reading the next packet, which
	// may already be one of its updates. A job whose submitter gave up is
	// not registered: its updates are dropped.
	if task != nil && answered {
		if head := cn.tasks[task.job.Handle]; head != nil && !head.finished {
			head.coalesced = append(head.coalesced, task)
		} else {
			cn.tasks[task.job.Handle] = task
		}
	}
	return nil
}

// route delivers a WORK_* packet to the foreground job it names.
func (cn *conn) route(p *gearman.Packet) {
	t := cn.tasks[string(p.Arg(0))]
	if t == nil {
		return
	}
	// The server sends each packet once per submit attached to the job;
	// every Task got this one already from its first copy.
	if t.skip > 0 {
		t.skip--
		if t.finished && t.skip == 0 {
			delete(cn.tasks, t.job.Handle)
		}
		return
	}
	t.skip = len(t.coalesced)
	switch p.Command {
	case gearman.WorkData, gearman.WorkWarning, gearman.WorkStatus:
		u := Update{Kind: UpdateData, Data: p.Arg(1)}
		switch p.Command {
		case gearman.WorkWarning:
			u.Kind = UpdateWarning
		case gearman.WorkStatus:
			u = Update{Kind: UpdateStatus, Numerator: atou32(p.Arg(1)), Denominator: atou32(p.Arg(2))}
		}
		t.deliver(u)
		for _, o := range t.coalesced {
			o.deliver(u)
		}
		return
	}
	var result []byte
	var err error
	switch p.Command {
	case gearman.WorkComplete:
		result = p.Arg(1)
	case gearman.WorkFail:
		err = fmt.Errorf("%w (job %s)", ErrJobFailed, t.job.Handle)
	case gearman.WorkException:
		err = &ExceptionError{Handle: t.job.Handle, Data: p.Arg(1)}
	}
	t.finished = true
	t.finish(result, err)
	for _, o := range t.coalesced {
		o.finish(result, err)
	}
	if t.skip == 0 {
		delete(cn.tasks, t.job.Handle)
	}
}

func (t *Task) deliver(u Update) {
	if t.update != nil {
		t.update(u)
	}
}

// atou32 parses a decimal number leniently, like C's atoi: leading digits
// count, the rest is ignored.
func atou32(b []byte) uint32 {
	var n uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			break
		}
		n = min(n*10+uint64(c-'0'), 1<<32-1)
	}
	return uint32(n)
}
