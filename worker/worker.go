package worker

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime/debug"
	"strconv"
	"sync"
	"time"

	"github.com/gearwork/gearwork/gearman"
	"github.com/gearwork/gearwork/internal/backoff"
	"github.com/gearwork/gearwork/internal/serverdial"
)

// DefaultServer is the server used when Config.Servers is empty.
const DefaultServer = "127.0.0.1:4730"

// Config configures a Worker. The zero value serves one job at a time from
// DefaultServer.
type Config struct {
	// Servers are the host:port addresses of the job servers. The worker
	// keeps one connection to each and takes jobs from all of them.
	// Default [DefaultServer].
	Servers []string
	// Concurrency is the most jobs run at once, across all servers.
	// Default 1.
	Concurrency int
	// GrabsInFlight is the most GRAB_JOB requests outstanding on one
	// connection. A connection that just woke up grabs one job at a time
	// and pipelines more (up to this many) while jobs keep coming, which
	// drains a deep queue quickly without answering every wake-up with a
	// burst of NO_JOBs. Default min(Concurrency, 4).
	GrabsInFlight int
	// ClientID, if set, is sent with SET_CLIENT_ID and shown by the
	// server's "workers" admin command.
	ClientID string
	// DialFunc opens a connection; default a net.Dialer with DialTimeout.
	DialFunc func(ctx context.Context, network, addr string) (net.Conn, error)
	// DialTimeout bounds one connection attempt. Default 5s.
	DialTimeout time.Duration
	// WriteTimeout bounds one write to a server; a server that does not
	// read for this long is treated as gone. Default 30s; negative means
	// no limit.
	WriteTimeout time.Duration
	// MinBackoff and MaxBackoff bound the wait between attempts to reach a
	// server that is down; the wait doubles (with jitter) from MinBackoff
	// up to MaxBackoff. Defaults 100ms and 10s.
	MinBackoff, MaxBackoff time.Duration
	// ReadBuffer is each connection's read buffer size. Default 64 KiB.
	ReadBuffer int
	// Logger receives connection failures and failed jobs. Default
	// slog.Default().
	Logger *slog.Logger
}

// Function is a function the worker can run.
type Function struct {
	// Name is the function name clients submit to; 1 to 511 bytes.
	Name string
	// Handler runs its jobs.
	Handler Handler
	// Timeout, if positive, limits how long one job may run: the worker
	// registers with CAN_DO_TIMEOUT, so when the time passes (servers round
	// it up to at least a second) Gearwork fails the job, sending its
	// clients WORK_FAIL, unless the function's retry policy allows another
	// attempt (gearmand hands it out again), and the job's context is
	// cancelled with cause ErrTimeout.
	Timeout time.Duration
}

// Worker takes jobs from Gearman job servers and runs them with registered
// Handlers. Create it with New, register functions, call Start, and end it
// with Shutdown (graceful) or Stop. Its methods are safe for concurrent
// use.
type Worker struct {
	cfg Config
	// dial holds cfg's connection settings, with defaults.
	dial serverdial.Settings
	log  *slog.Logger

	// mu guards everything below, and the scheduling fields of every
	// wconn. Lock order: Worker.mu before wconn.wmu.
	mu    sync.Mutex
	funcs map[string]*Function
	// names lists funcs in registration order.
	names []string
	conns []*wconn
	rr    int
	// free counts concurrency slots held neither by a running job nor by
	// an outstanding GRAB_JOB; grabs counts outstanding GRAB_JOBs.
	free  int
	grabs int
	// running counts jobs whose handler has not finished (or whose result
	// is not yet written).
	running  int
	started  bool
	draining bool
	// idle is closed when draining and nothing runs or is being grabbed.
	idle       chan struct{}
	base       context.Context
	cancelBase context.CancelCauseFunc

	loops sync.WaitGroup
	jobs  sync.WaitGroup
}

// New returns a Worker for cfg. It returns an error for an invalid
// configuration.
func New(cfg Config) (*Worker, error) {
	if len(cfg.Servers) == 0 {
		cfg.Servers = []string{DefaultServer}
	}
	dial, err := serverdial.Settings{Servers: cfg.Servers, DialFunc: cfg.DialFunc, DialTimeout: cfg.DialTimeout,
		WriteTimeout: cfg.WriteTimeout, MinBackoff: cfg.MinBackoff, MaxBackoff: cfg.MaxBackoff,
		ReadBuffer: cfg.ReadBuffer}.WithDefaults("worker")
	if err != nil {
		return nil, err
	}
	if cfg.Concurrency < 0 || cfg.GrabsInFlight < 0 {
		return nil, errors.New("worker: Concurrency and GrabsInFlight must not be negative")
	}
	cfg.Concurrency = cmp.Or(cfg.Concurrency, 1)
	cfg.GrabsInFlight = min(cmp.Or(cfg.GrabsInFlight, 4), cfg.Concurrency)
	return &Worker{
		cfg:   cfg,
		dial:  dial,
		log:   cmp.Or(cfg.Logger, slog.Default()),
		funcs: make(map[string]*Function),
		free:  cfg.Concurrency,
	}, nil
}

// Register adds a function, or replaces the one with the same name. It may
// be called before or after Start; after Start the servers are told at
// once. It panics if the name or handler is invalid (a programming error).
func (w *Worker) Register(fn Function) {
	if fn.Name == "" || len(fn.Name) > gearman.MaxFunctionSize {
		panic(fmt.Sprintf("worker: function name %q must be 1 to %d bytes", fn.Name, gearman.MaxFunctionSize))
	}
	if fn.Handler == nil {
		panic("worker: nil Handler for function " + fn.Name)
	}
	var fl flushList
	w.mu.Lock()
	if _, ok := w.funcs[fn.Name]; !ok {
		w.names = append(w.names, fn.Name)
	}
	w.funcs[fn.Name] = &fn
	for _, c := range w.conns {
		c.canDo(&fn)
		fl.add(c)
	}
	w.mu.Unlock()
	fl.flush()
}

// Handle registers h for the function name, without a timeout.
func (w *Worker) Handle(name string, h Handler) {
	w.Register(Function{Name: name, Handler: h})
}

// HandleFunc registers f for the function name, without a timeout.
func (w *Worker) HandleFunc(name string, f func(ctx context.Context, j *Job) ([]byte, error)) {
	w.Register(Function{Name: name, Handler: HandlerFunc(f)})
}

// Start connects to every server and starts taking jobs; it returns at
// once. Servers that are down are retried with backoff in the background.
// Jobs' contexts derive from ctx: cancelling it stops the worker as Stop
// does, except that it does not wait. Start returns an error if no
// function is registered or if it was already called.
func (w *Worker) Start(ctx context.Context) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case w.started:
		return errors.New("worker: already started")
	case len(w.funcs) == 0:
		return errors.New("worker: no function registered")
	}
	w.started = true
	w.base, w.cancelBase = context.WithCancelCause(ctx)
	for _, addr := range w.dial.Servers {
		w.loops.Add(1)
		go w.serverLoop(w.base, addr)
	}
	return nil
}

// Shutdown stops the worker gracefully: it stops taking jobs, waits for the
// running ones to finish and their results to be sent, then closes its
// connections. If ctx ends first, it cancels the running jobs' contexts
// (cause ErrStopped), closes the connections (the servers hand those jobs
// to other workers) and returns ctx.Err() without waiting for the handlers
// to return; call Stop to wait for them. Safe to call more than once, and
// before Start.
func (w *Worker) Shutdown(ctx context.Context) error {
	w.mu.Lock()
	if !w.started {
		w.mu.Unlock()
		return nil
	}
	w.draining = true
	if w.idle == nil {
		w.idle = make(chan struct{})
	}
	w.checkIdleLocked()
	idle := w.idle
	w.mu.Unlock()
	select {
	case <-idle:
	case <-ctx.Done():
		w.cancelBase(ErrStopped)
		w.loops.Wait()
		return ctx.Err()
	}
	w.cancelBase(ErrStopped)
	w.loops.Wait()
	w.jobs.Wait()
	return nil
}

// Stop stops the worker now: running jobs' contexts are cancelled (cause
// ErrStopped), connections close (the servers hand unfinished jobs to other
// workers), and Stop waits for the handlers to return. Safe to call more
// than once, and before Start.
func (w *Worker) Stop() {
	w.mu.Lock()
	started := w.started
	w.draining = true
	w.mu.Unlock()
	if !started {
		return
	}
	w.cancelBase(ErrStopped)
	w.loops.Wait()
	w.jobs.Wait()
}

// serverLoop keeps one connection to addr until ctx ends.
func (w *Worker) serverLoop(ctx context.Context, addr string) {
	defer w.loops.Done()
	var delay time.Duration
	for ctx.Err() == nil {
		nc, err := w.dial.DialFunc(ctx, "tcp", addr)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			delay = backoff.Next(delay, w.dial.MinBackoff, w.dial.MaxBackoff)
			wait := backoff.Jitter(delay)
			w.log.Warn("worker: cannot reach server", slog.String("server", addr),
				slog.String("error", err.Error()), slog.Duration("retry_in", wait))
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return
			}
			continue
		}
		delay = 0
		c := newWConn(w, addr, nc)
		stop := context.AfterFunc(ctx, func() { nc.Close() })
		if w.attach(c) {
			err = c.readLoop()
			if ctx.Err() == nil {
				w.log.Warn("worker: lost connection to server; reconnecting", slog.String("server", addr),
					slog.String("error", err.Error()))
			}
		}
		stop()
		nc.Close()
		w.detach(c)
	}
}

// attach registers a new connection: it tells the server the client id and
// functions and starts grabbing. It reports false if the worker is
// stopping.
func (w *Worker) attach(c *wconn) bool {
	var fl flushList
	w.mu.Lock()
	if w.base.Err() != nil {
		w.mu.Unlock()
		return false
	}
	if w.cfg.ClientID != "" {
		c.write(gearman.SetClientID, []byte(w.cfg.ClientID))
	}
	for _, name := range w.names {
		c.canDo(w.funcs[name])
	}
	w.conns = append(w.conns, c)
	c.awake = true
	c.depth = 1
	fl.add(c)
	w.dispatchLocked(&fl)
	w.mu.Unlock()
	fl.flush()
	return true
}

// detach forgets a closed connection: its outstanding grabs return their
// slots, and its running jobs are cancelled (the server has taken them
// back).
func (w *Worker) detach(c *wconn) {
	var fl flushList
	w.mu.Lock()
	for i, x := range w.conns {
		if x == c {
			w.conns = append(w.conns[:i], w.conns[i+1:]...)
			break
		}
	}
	w.free += c.grabs
	w.grabs -= c.grabs
	c.grabs = 0
	c.awake = false
	cause := ErrConnLost
	if w.base.Err() != nil {
		// The worker is stopping; that is why the connection closed.
		cause = context.Cause(w.base)
	}
	for _, cancel := range c.jobs {
		cancel(cause)
	}
	w.dispatchLocked(&fl)
	w.checkIdleLocked()
	w.mu.Unlock()
	fl.flush()
}

// dispatchLocked gives free slots to awake connections as GRAB_JOB
// requests, round-robin, each up to its current grab depth.
func (w *Worker) dispatchLocked(fl *flushList) {
	if w.draining {
		return
	}
	for w.free > 0 && len(w.conns) > 0 {
		progressed := false
		n := len(w.conns)
		for i := 0; i < n && w.free > 0; i++ {
			c := w.conns[(w.rr+i)%n]
			if !c.awake || c.grabs >= c.depth {
				continue
			}
			c.grabs++
			w.grabs++
			w.free--
			c.write(gearman.GrabJobUniq)
			fl.add(c)
			progressed = true
		}
		w.rr++
		if !progressed {
			return
		}
	}
}

func (w *Worker) checkIdleLocked() {
	if w.draining && w.idle != nil && w.running == 0 && w.grabs == 0 {
		select {
		case <-w.idle:
		default:
			close(w.idle)
		}
	}
}

// noJob handles NO_JOB: the slot returns, and once no grab is outstanding
// the connection sleeps until the server sends NOOP.
func (w *Worker) noJob(c *wconn, fl *flushList) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if c.grabs == 0 {
		return
	}
	c.grabs--
	w.grabs--
	w.free++
	c.awake = false
	c.depth = 1
	w.settleLocked(c, fl)
	w.dispatchLocked(fl)
	w.checkIdleLocked()
}

// settleLocked puts a connection to sleep (PRE_SLEEP) once the server said
// it has no job and no grab is outstanding on it. The server answers with
// NOOP when work arrives, or at once if some came in meanwhile.
func (w *Worker) settleLocked(c *wconn, fl *flushList) {
	if c.grabs == 0 && !c.awake && !c.sleeping && !w.draining {
		c.sleeping = true
		c.write(gearman.PreSleep)
		fl.add(c)
	}
}

// noop handles NOOP: the server has work again.
func (w *Worker) noop(c *wconn, fl *flushList) {
	w.mu.Lock()
	defer w.mu.Unlock()
	c.sleeping = false
	c.awake = true
	w.dispatchLocked(fl)
}

// assigned handles JOB_ASSIGN, JOB_ASSIGN_UNIQ and JOB_ASSIGN_ALL: the job
// takes over the slot its grab held.
func (w *Worker) assigned(c *wconn, p *gearman.Packet, fl *flushList) {
	j := &Job{Handle: string(p.Arg(0)), Function: string(p.Arg(1)), Server: c.addr, conn: c}
	switch p.Command {
	case gearman.JobAssign:
		j.Payload = p.Arg(2)
	case gearman.JobAssignUniq:
		j.Unique, j.Payload = string(p.Arg(2)), p.Arg(3)
	case gearman.JobAssignAll:
		j.Unique, j.Payload = string(p.Arg(2)), p.Arg(4)
	}
	w.mu.Lock()
	if c.grabs > 0 {
		c.grabs--
		w.grabs--
	} else {
		// An assignment nobody asked for; run it if a slot is free.
		w.free--
	}
	// Jobs are flowing: keep grabbing, and pipeline more grabs.
	c.awake = true
	c.depth = min(2*c.depth, w.cfg.GrabsInFlight)
	fn := w.funcs[j.Function]
	ctx, cancel := context.WithCancelCause(w.base)
	j.cancel = cancel
	c.jobs[j] = cancel
	w.running++
	w.dispatchLocked(fl)
	w.mu.Unlock()
	w.jobs.Add(1)
	go w.run(ctx, fn, j)
}

// run runs one job and sends its outcome.
func (w *Worker) run(ctx context.Context, fn *Function, j *Job) {
	defer w.jobs.Done()
	c := j.conn
	var result []byte
	var err error
	if fn == nil {
		err = fmt.Errorf("function %q is not registered", j.Function)
	} else {
		jctx := ctx
		if fn.Timeout > 0 {
			var cancel context.CancelFunc
			jctx, cancel = context.WithTimeoutCause(ctx, fn.Timeout, ErrTimeout)
			defer cancel()
		}
		result, err = w.serve(jctx, fn.Handler, j)
		if err != nil && jctx.Err() != nil {
			// Timed out, stopped or disconnected: the server takes the job
			// back (or already has), so it will run again.
			w.log.Info("worker: job abandoned", slog.String("handle", j.Handle),
				slog.String("function", j.Function), slog.String("cause", context.Cause(jctx).Error()))
			j.ended.Store(true)
			w.finished(c, j, false)
			return
		}
	}
	j.ended.Store(true)
	var exc *Exception
	switch {
	case err == nil:
		w.finished(c, j, c.write(gearman.WorkComplete, []byte(j.Handle), result))
	case errors.As(err, &exc):
		w.finished(c, j, c.write(gearman.WorkException, []byte(j.Handle), exc.Data))
	default:
		w.log.Info("worker: job failed", slog.String("handle", j.Handle),
			slog.String("function", j.Function), slog.String("error", err.Error()))
		w.finished(c, j, c.write(gearman.WorkFail, []byte(j.Handle)))
	}
}

// serve calls the handler, turning a panic into an error.
func (w *Worker) serve(ctx context.Context, h Handler, j *Job) (result []byte, err error) {
	defer func() {
		if v := recover(); v != nil {
			w.log.Error("worker: handler panicked", slog.String("function", j.Function),
				slog.String("handle", j.Handle), slog.Any("panic", v), slog.String("stack", string(debug.Stack())))
			result, err = nil, fmt.Errorf("handler panicked: %v", v)
		}
	}()
	return h.ServeJob(ctx, j)
}

// finished releases a job's slot, letting its connection grab the next job
// in the same write as the result, and counts the job as done once the
// result is written.
func (w *Worker) finished(c *wconn, j *Job, wrote bool) {
	var fl flushList
	if wrote {
		fl.add(c)
	}
	w.mu.Lock()
	delete(c.jobs, j)
	w.free++
	w.dispatchLocked(&fl)
	w.mu.Unlock()
	fl.flush()
	j.cancel(nil)
	w.mu.Lock()
	w.running--
	w.checkIdleLocked()
	w.mu.Unlock()
}

// flushList collects connections with output to write once locks are
// released. It holds up to a few entries without allocating.
type flushList struct {
	small [4]*wconn
	list  []*wconn
}

func (f *flushList) add(c *wconn) {
	if f.list == nil {
		f.list = f.small[:0]
	}
	for _, x := range f.list {
		if x == c {
			return
		}
	}
	f.list = append(f.list, c)
}

func (f *flushList) flush() {
	for _, c := range f.list {
		c.flush()
	}
	f.list = f.list[:0]
}

// formatMillis formats a duration as whole milliseconds, rounded up.
func formatMillis(d time.Duration) []byte {
	ms := (d + time.Millisecond - 1) / time.Millisecond
	return strconv.AppendInt(nil, int64(ms), 10)
}
