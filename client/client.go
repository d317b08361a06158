package client

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gearwork/gearwork/gearman"
	"github.com/gearwork/gearwork/internal/backoff"
	"github.com/gearwork/gearwork/internal/serverdial"
)

// DefaultServer is the server used when Config.Servers is empty.
const DefaultServer = "127.0.0.1:4730"

// Config configures a Client. The zero value talks to DefaultServer.
type Config struct {
	// Servers are the host:port addresses of the job servers. Submits are
	// spread across them (see the package documentation). Default
	// [DefaultServer].
	Servers []string
	// DialFunc opens a connection; default a net.Dialer with DialTimeout.
	DialFunc func(ctx context.Context, network, addr string) (net.Conn, error)
	// DialTimeout bounds one connection attempt. Default 5s.
	DialTimeout time.Duration
	// WriteTimeout bounds one write to a server; a server that does not
	// read for this long is treated as down. Default 30s; negative means
	// no limit.
	WriteTimeout time.Duration
	// MinBackoff is how long a server that could not be reached is skipped
	// before the next attempt; the wait doubles (with jitter) up to
	// MaxBackoff while attempts keep failing. Defaults 100ms and 10s.
	MinBackoff, MaxBackoff time.Duration
	// ReadBuffer is the size of each connection's read buffer. Default
	// 64 KiB.
	ReadBuffer int
	// Logger receives connection failures. Default slog.Default().
	Logger *slog.Logger
}

// Client submits jobs to Gearman job servers. It keeps one connection per
// server, opened on first use and reopened after a failure, and
// multiplexes any number of concurrent requests over it. A Client is safe
// for concurrent use; create it with New and Close it when done.
type Client struct {
	// dial holds Config's connection settings, with defaults.
	dial    serverdial.Settings
	log     *slog.Logger
	servers []*server
	rr      atomic.Uint64
	// wg counts reader goroutines.
	wg sync.WaitGroup

	// mu guards closed and every server's connection state.
	mu     sync.Mutex
	closed bool
}

// server is the client's state for one address. Guarded by Client.mu.
type server struct {
	addr string
	// seed mixes the address into rendezvous scores.
	seed uint64
	// live is the current connection, readable without Client.mu.
	live atomic.Pointer[conn]
	// dialing is non-nil while a connection attempt runs; it is closed
	// when the attempt ends.
	dialing chan struct{}
	// backoff is the current wait after a failed attempt; retryAt is when
	// the server may be tried again.
	backoff time.Duration
	retryAt time.Time
	lastErr error
}

// New returns a Client for cfg. It does not connect: connections are
// opened by the first request that needs them. It returns an error for an
// invalid configuration.
func New(cfg Config) (*Client, error) {
	if len(cfg.Servers) == 0 {
		cfg.Servers = []string{DefaultServer}
	}
	dial, err := serverdial.Settings{Servers: cfg.Servers, DialFunc: cfg.DialFunc, DialTimeout: cfg.DialTimeout,
		WriteTimeout: cfg.WriteTimeout, MinBackoff: cfg.MinBackoff, MaxBackoff: cfg.MaxBackoff,
		ReadBuffer: cfg.ReadBuffer}.WithDefaults("client")
	if err != nil {
		return nil, err
	}
	c := &Client{dial: dial, log: cmp.Or(cfg.Logger, slog.Default())}
	for _, a := range dial.Servers {
		c.servers = append(c.servers, &server{addr: a, seed: hashString(fnvOffset, a)})
	}
	return c, nil
}

// Close closes every connection and waits for their goroutines. Requests
// still waiting fail with an error wrapping ErrClosed; foreground jobs are
// dropped by the servers. Safe to call more than once.
func (c *Client) Close() error {
	c.mu.Lock()
	c.closed = true
	var conns []*conn
	for _, s := range c.servers {
		if cn := s.live.Load(); cn != nil {
			conns = append(conns, cn)
		}
	}
	c.mu.Unlock()
	for _, cn := range conns {
		cn.close(ErrClosed)
	}
	c.wg.Wait()
	return nil
}

// Servers returns the configured server addresses.
func (c *Client) Servers() []string {
	out := make([]string, len(c.servers))
	for i, s := range c.servers {
		out[i] = s.addr
	}
	return out
}

// Submit submits a foreground job and returns once the server has created
// it (or attached the request to a live job with the same unique). Wait on
// the Task for the outcome. If ctx ends before the server answers, Submit
// returns ctx.Err(); the job may still be created and run, and its outcome
// is then discarded.
func (c *Client) Submit(ctx context.Context, req Request) (*Task, error) {
	cmd, err := req.submitCommand(false)
	if err != nil {
		return nil, err
	}
	t := &Task{update: req.UpdateFunc, done: make(chan struct{})}
	_, err = c.submit(ctx, &req, cmd, t)
	if err != nil {
		return nil, err
	}
	return t, nil
}

// Do submits a foreground job and waits for its outcome: the result of
// WORK_COMPLETE, or an error as described at Task.Wait. Updates go to
// req.UpdateFunc. If ctx ends first Do returns ctx.Err() and the result is
// discarded (a Gearman client cannot detach from a job it submitted; the
// server drops it only when the connection closes).
func (c *Client) Do(ctx context.Context, req Request) ([]byte, error) {
	t, err := c.Submit(ctx, req)
	if err != nil {
		return nil, err
	}
	return t.Wait(ctx)
}

// SubmitBackground submits a background job and returns once the server
// has accepted it (for a durable server: stored it). With a Unique that
// matches a live job the request attaches to that job and its Job is
// returned. Cancelling ctx stops the wait; the job may still be created.
func (c *Client) SubmitBackground(ctx context.Context, req Request) (Job, error) {
	cmd, err := req.submitCommand(true)
	if err != nil {
		return Job{}, err
	}
	return c.submit(ctx, &req, cmd, nil)
}

// submit sends a submit packet to the first reachable server in the
// request's order and waits for JOB_CREATED.
func (c *Client) submit(ctx context.Context, req *Request, cmd gearman.Command, t *Task) (Job, error) {
	var epoch [20]byte
	fn, uq := []byte(req.Function), []byte(req.Unique)
	var job Job
	err := c.failover(ctx, req.Unique, func(s *server, cn *conn) error {
		cl := getCall(gearman.JobCreated)
		cl.task = t
		var err error
		if cmd == gearman.SubmitJobEpoch {
			at := strconv.AppendInt(epoch[:0], req.RunAt.Unix(), 10)
			err = cn.roundTrip(ctx, cl, cmd, fn, uq, at, req.Payload)
		} else {
			err = cn.roundTrip(ctx, cl, cmd, fn, uq, req.Payload)
		}
		if err != nil {
			return err
		}
		job, err = Job{Handle: cl.handle, Server: s.addr}, cl.err
		putCall(cl)
		return err
	})
	if err != nil {
		return Job{}, err
	}
	return job, nil
}

// failover calls send with a connection to each server in the order for
// unique (see order), moving on to the next server while the server cannot
// be reached or send returns an error wrapping errNotSent, and returns what
// send returns. It stops at once if ctx ends or the Client is closed, and
// returns an error wrapping ErrNoServer when every server failed.
func (c *Client) failover(ctx context.Context, unique string, send func(s *server, cn *conn) error) error {
	var order [8]*server
	var lastErr error
	for _, s := range c.order(order[:0], unique) {
		cn, err := c.conn(ctx, s)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, ErrClosed) {
				return err
			}
			lastErr = err
			continue
		}
		err = send(s, cn)
		if errors.Is(err, errNotSent) {
			lastErr = err
			continue
		}
		return err
	}
	return fmt.Errorf("%w: %w", ErrNoServer, lastErr)
}

// Status asks the server holding job for its status (GET_STATUS). If
// job.Server is empty or not one of the configured servers, every server is
// asked in turn and the first that knows the handle answers.
func (c *Client) Status(ctx context.Context, job Job) (Status, error) {
	for _, s := range c.servers {
		if s.addr == job.Server {
			return c.status(ctx, s, gearman.StatusRes, gearman.GetStatus, job.Handle)
		}
	}
	return c.firstKnown(ctx, c.servers, gearman.StatusRes, gearman.GetStatus, job.Handle)
}

// StatusUnique asks for the status of the job with the given unique id
// (GET_STATUS_UNIQUE). Servers are asked in the order a submit with that
// unique would use them, until one knows the job; Known is false if none
// does. The answer carries no function name: a server reports the first
// live job with that unique it finds.
func (c *Client) StatusUnique(ctx context.Context, unique string) (Status, error) {
	var order [8]*server
	return c.firstKnown(ctx, c.order(order[:0], unique), gearman.StatusResUnique, gearman.GetStatusUnique, unique)
}

// firstKnown asks the servers in turn for a status until one knows the
// job. If none does, it returns an unknown Status when at least one server
// answered, or else the last error.
func (c *Client) firstKnown(ctx context.Context, servers []*server, want, cmd gearman.Command, arg string) (Status, error) {
	var lastErr error
	reached := false
	for _, s := range servers {
		st, err := c.status(ctx, s, want, cmd, arg)
		switch {
		case ctx.Err() != nil:
			return Status{}, ctx.Err()
		case err != nil:
			lastErr = err
		case st.Known:
			return st, nil
		default:
			reached = true
		}
	}
	if reached {
		return Status{}, nil
	}
	return Status{}, lastErr
}

func (c *Client) status(ctx context.Context, s *server, want, cmd gearman.Command, arg string) (Status, error) {
	cn, err := c.conn(ctx, s)
	if err != nil {
		return Status{}, err
	}
	cl := getCall(want)
	if err := cn.roundTrip(ctx, cl, cmd, []byte(arg)); err != nil {
		return Status{}, err
	}
	st, err := cl.status, cl.err
	putCall(cl)
	return st, err
}

// Echo sends data to a server (ECHO_REQ) and returns what it echoed. It
// tries the servers in round-robin order and fails over like a submit
// without a unique.
func (c *Client) Echo(ctx context.Context, data []byte) ([]byte, error) {
	var out []byte
	err := c.failover(ctx, "", func(_ *server, cn *conn) error {
		cl := getCall(gearman.EchoRes)
		if err := cn.roundTrip(ctx, cl, gearman.EchoReq, data); err != nil {
			return err
		}
		var err error
		out, err = cl.data, cl.err
		putCall(cl)
		return err
	})
	return out, err
}

// order appends the servers to dst in the order a request with the given
// unique tries them: by rendezvous (highest random weight) hashing of the
// unique, so that a unique keeps its server while that server is up and
// moves only when it is down; or round-robin when there is no unique.
func (c *Client) order(dst []*server, unique string) []*server {
	n := len(c.servers)
	if unique == "" {
		start := int(c.rr.Add(1) % uint64(n))
		for i := range n {
			dst = append(dst, c.servers[(start+i)%n])
		}
		return dst
	}
	dst = append(dst, c.servers...)
	if n == 1 {
		return dst
	}
	h := hashString(fnvOffset, unique)
	slices.SortFunc(dst, func(a, b *server) int {
		return cmp.Compare(mix(b.seed^h), mix(a.seed^h))
	})
	return dst
}

// conn returns a live connection to s, dialing if there is none. It fails
// at once while s is in its backoff period.
func (c *Client) conn(ctx context.Context, s *server) (*conn, error) {
	if cn := s.live.Load(); cn != nil && !cn.dead.Load() {
		return cn, nil
	}
	c.mu.Lock()
	for {
		if c.closed {
			c.mu.Unlock()
			return nil, ErrClosed
		}
		if cn := s.live.Load(); cn != nil && !cn.dead.Load() {
			c.mu.Unlock()
			return cn, nil
		}
		if s.dialing == nil {
			break
		}
		ch := s.dialing
		c.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		c.mu.Lock()
	}
	if now := time.Now(); now.Before(s.retryAt) {
		err := fmt.Errorf("server %s is down (retrying in %v): %w", s.addr, s.retryAt.Sub(now).Round(time.Millisecond), s.lastErr)
		c.mu.Unlock()
		return nil, err
	}
	ch := make(chan struct{})
	s.dialing = ch
	c.mu.Unlock()

	nc, err := c.dial.DialFunc(ctx, "tcp", s.addr)

	c.mu.Lock()
	defer c.mu.Unlock()
	close(ch)
	s.dialing = nil
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		s.backoff = backoff.Next(s.backoff, c.dial.MinBackoff, c.dial.MaxBackoff)
		wait := backoff.Jitter(s.backoff)
		s.retryAt = time.Now().Add(wait)
		s.lastErr = err
		c.log.Warn("client: cannot reach server", slog.String("server", s.addr),
			slog.String("error", err.Error()), slog.Duration("retry_in", wait))
		return nil, fmt.Errorf("server %s: %w", s.addr, err)
	}
	if c.closed {
		nc.Close()
		return nil, ErrClosed
	}
	s.backoff, s.retryAt, s.lastErr = 0, time.Time{}, nil
	cn := newConn(c, s.addr, nc)
	s.live.Store(cn)
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		cn.readLoop()
	}()
	// Ask for WORK_EXCEPTION packets. The answer (OPTION_RES, or ERROR
	// from a server without the option) is not waited for.
	cl := getCall(gearman.OptionRes)
	cl.abandoned = true
	_ = cn.send(cl, gearman.OptionReq, []byte("exceptions"))
	return cn, nil
}

// FNV-1a and a final mixer (from SplitMix64): fixed, so that every client
// process orders servers the same way for a unique.
const (
	fnvOffset = 14695981039346656037
	fnvPrime  = 1099511628211
)

func hashString(h uint64, s string) uint64 {
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= fnvPrime
	}
	return h
}

func mix(z uint64) uint64 {
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}
