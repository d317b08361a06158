package bench

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"sync/atomic"
	"time"

	"github.com/gearwork/gearwork/gearman"
)

// progressBatch is how many answers a loop counts before it updates the
// shared progress counter.
const progressBatch = 256

// pipeline sends n requests on c, each queued by req, keeping at most depth
// of them unanswered. Each answer must be a want packet that check (if set)
// accepts. Round trips are recorded in h when it is not nil.
func (r *run) pipeline(c *conn, n, depth int, h *Histogram, want gearman.Command,
	req func(c *conn), check func(p *gearman.Packet) error) error {
	sentAt := make([]int64, depth)
	sent, recv, counted := 0, 0, 0
	for recv < n {
		for sent < n && sent-recv < depth {
			sentAt[sent%depth] = r.now()
			req(c)
			sent++
		}
		p, err := c.next()
		if err != nil {
			return err
		}
		if p.Command != want {
			return fmt.Errorf("got %s, want %s", p.Command, want)
		}
		if check != nil {
			if err := check(p); err != nil {
				return err
			}
		}
		if h != nil {
			h.Record(time.Duration(r.now() - sentAt[recv%depth]))
		}
		recv++
		if recv-counted == progressBatch {
			r.prog.add(recv - counted)
			counted = recv
		}
	}
	r.prog.add(recv - counted)
	return nil
}

// clients dials the Connections client connections of a scenario that
// submits over them, and records them and Inflight in the result.
func (r *run) clients(ctx context.Context) ([]*conn, error) {
	r.res.Connections, r.res.Inflight = r.cfg.Connections, r.cfg.Inflight
	return r.dialClients(ctx, r.cfg.Connections)
}

func (r *run) dialClients(ctx context.Context, n int) ([]*conn, error) {
	cs := make([]*conn, n)
	for i := range cs {
		c, err := r.dial(ctx, 32<<10)
		if err != nil {
			return nil, err
		}
		cs[i] = c
	}
	return cs, nil
}

// pipelineAll spreads n requests over the connections, pipelined, and
// returns the merged round-trip histogram.
func (r *run) pipelineAll(cs []*conn, n int, want gearman.Command,
	newReq func() func(c *conn), check func(p *gearman.Packet) error) (*Histogram, error) {
	hs := make([]Histogram, len(cs))
	g := group{r: r}
	for i, c := range cs {
		req := newReq()
		g.Go(func() error {
			return r.pipeline(c, share(n, len(cs), i), r.cfg.Inflight, &hs[i], want, req, check)
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	var h Histogram
	for i := range hs {
		h.Merge(&hs[i])
	}
	return &h, nil
}

// submitBackground queues n background jobs over cs. With Config.Queue
// set their payloads are checkable (fillPayload, checkPayload).
func (r *run) submitBackground(cs []*conn, n int) (*Histogram, error) {
	if r.cfg.Queue != "" {
		var next atomic.Uint64
		return r.pipelineAll(cs, n, gearman.JobCreated, func() func(c *conn) {
			payload := make([]byte, r.cfg.Payload)
			return func(c *conn) {
				fillPayload(payload, next.Add(1)-1)
				c.send(gearman.SubmitJobBg, r.fn, nil, payload)
			}
		}, nil)
	}
	payload := bytes.Repeat([]byte{'x'}, r.cfg.Payload)
	return r.pipelineAll(cs, n, gearman.JobCreated, func() func(c *conn) {
		return func(c *conn) { c.send(gearman.SubmitJobBg, r.fn, nil, payload) }
	}, nil)
}

// load queues n background jobs, untimed.
func (r *run) load(ctx context.Context, n int) error {
	r.prog.start("loading", n)
	cs, err := r.dialClients(ctx, r.cfg.Connections)
	if err != nil {
		return err
	}
	defer func() {
		for _, c := range cs {
			c.close()
		}
	}()
	if _, err := r.submitBackground(cs, n); err != nil {
		return fmt.Errorf("loading %d jobs: %w", n, err)
	}
	return nil
}

func (r *run) setLatency(h *Histogram) {
	r.res.LatencyOf = r.latency
	r.res.P50 = h.Quantile(0.50)
	r.res.P99 = h.Quantile(0.99)
}

func runSubmit(ctx context.Context, r *run) error {
	cfg := r.cfg
	r.res.Backlog = cfg.Backlog
	if cfg.Backlog > 0 {
		if err := r.load(ctx, cfg.Backlog); err != nil {
			return err
		}
	}
	cs, err := r.clients(ctx)
	if err != nil {
		return err
	}
	if err := r.beginPhase("submit", cfg.Jobs); err != nil {
		return err
	}
	h, err := r.submitBackground(cs, cfg.Jobs)
	if err != nil {
		return err
	}
	if err := r.end(cfg.Jobs); err != nil {
		return err
	}
	r.setLatency(h)
	return r.cleanup(ctx, cfg.Backlog+cfg.Jobs)
}

func runDrain(ctx context.Context, r *run, grabs int) error {
	cfg := r.cfg
	r.res.Workers, r.res.Grabs, r.res.Backlog = cfg.Workers, grabs, cfg.Jobs
	if err := r.load(ctx, cfg.Jobs); err != nil {
		return err
	}
	r.prog.start("drain", cfg.Jobs)
	return r.drainQueue(ctx, drainParams{workers: cfg.Workers, grabs: grabs, total: cfg.Jobs, measure: true})
}

// runSteady submits and works at once. Submitters take a token per job and
// workers give it back when the job starts, so at most Workers × Grabs jobs wait
// between submit and start: the queue stays as short as the workers allow
// and the latency is the server's, not a backlog's (with a longer queue it
// would only be queue length / rate, by Little's law).
func runSteady(ctx context.Context, r *run) error {
	cfg := r.cfg
	r.res.Workers, r.res.Grabs = cfg.Workers, cfg.Grabs
	window := cfg.Workers * cfg.Grabs
	tokens := make(chan struct{}, window)
	for range window {
		tokens <- struct{}{}
	}
	cs, err := r.clients(ctx)
	if err != nil {
		return err
	}
	hs := make([]Histogram, cfg.Workers)
	newJobFunc := func(i int) func([]byte) []byte {
		h := &hs[i]
		return func(payload []byte) []byte {
			if len(payload) >= 8 {
				h.Record(time.Duration(r.now() - int64(binary.BigEndian.Uint64(payload))))
			}
			select {
			case tokens <- struct{}{}:
			default:
			}
			return nil
		}
	}
	var submitters []func() error
	// With a rate, each connection submits its share on a schedule: its
	// k-th job is due k intervals after its start, and connection i
	// starts i/len(cs) of an interval after the first, so that the jobs
	// arrive one by one rather than a burst of one per connection.
	var interval time.Duration
	if cfg.Rate > 0 {
		interval = time.Duration(float64(len(cs)) * float64(time.Second) / cfg.Rate)
		r.res.Paced = cfg.Rate
	}
	for i, c := range cs {
		n := share(cfg.Jobs, len(cs), i)
		offset := interval * time.Duration(i) / time.Duration(len(cs))
		submitters = append(submitters, func() error { return r.steadySubmit(ctx, c, n, tokens, interval, offset) })
	}
	r.prog.start("steady", cfg.Jobs)
	err = r.drainQueue(ctx, drainParams{workers: cfg.Workers, grabs: cfg.Grabs, total: cfg.Jobs, measure: true,
		newJobFunc: newJobFunc, alongside: submitters})
	if err != nil {
		return err
	}
	var h Histogram
	for i := range hs {
		h.Merge(&hs[i])
	}
	if h.Count() != uint64(cfg.Jobs) {
		return fmt.Errorf("workers saw %d timestamps, want %d", h.Count(), cfg.Jobs)
	}
	r.setLatency(&h)
	return nil
}

// steadySubmit submits n background jobs carrying their submit time,
// taking a token for each and keeping at most Inflight unanswered. With
// interval > 0 the k-th job is not submitted before offset plus k
// intervals from the start.
func (r *run) steadySubmit(ctx context.Context, c *conn, n int, tokens chan struct{}, interval, offset time.Duration) error {
	payload := bytes.Repeat([]byte{'x'}, r.cfg.Payload)
	timer := time.NewTimer(time.Until(r.deadline))
	defer timer.Stop()
	start := time.Now().Add(offset)
	sent, recv := 0, 0
	for recv < n {
		if wait := time.Until(start.Add(time.Duration(sent) * interval)); interval > 0 && sent < n && wait > 0 {
			if sent > recv {
				// Read an answer while the next job is not due yet.
				if _, err := c.expect(gearman.JobCreated); err != nil {
					return err
				}
				recv++
				continue
			}
			if err := c.flush(); err != nil {
				return err
			}
			if err := sleepCtx(ctx, wait); err != nil {
				return err
			}
		}
		if sent < n && sent-recv < r.cfg.Inflight {
			got := false
			if sent == recv {
				// Nothing to read: wait for a token.
				if err := c.flush(); err != nil {
					return err
				}
				select {
				case <-tokens:
					got = true
				case <-ctx.Done():
					return ctx.Err()
				case <-timer.C:
					return fmt.Errorf("waiting for workers to start jobs: %w", os.ErrDeadlineExceeded)
				}
			} else {
				select {
				case <-tokens:
					got = true
				default:
				}
			}
			if got {
				binary.BigEndian.PutUint64(payload, uint64(r.now()))
				c.send(gearman.SubmitJobBg, r.fn, nil, payload)
				sent++
				continue
			}
		}
		if _, err := c.expect(gearman.JobCreated); err != nil {
			return err
		}
		recv++
	}
	return nil
}

// sleepCtx waits for d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func runForeground(ctx context.Context, r *run, concurrency int) error {
	cfg := r.cfg
	r.res.Connections, r.res.Inflight = concurrency, 1
	r.res.Workers, r.res.Grabs = concurrency, 1
	cs, err := r.dialClients(ctx, concurrency)
	if err != nil {
		return err
	}
	ws, err := r.dialWorkers(ctx, concurrency)
	if err != nil {
		return err
	}
	var stopping atomic.Bool
	var acked atomic.Int64
	if err := r.beginPhase("round trips", cfg.Jobs); err != nil {
		return err
	}
	wg := group{r: r}
	for _, c := range ws {
		wp := workerParams{grabs: 1, acked: &acked, stopping: &stopping,
			jobFunc: func(p []byte) []byte { return p }}
		wg.Go(func() error { return runWorker(c, wp) })
	}
	hs := make([]Histogram, concurrency)
	cg := group{r: r}
	payload := bytes.Repeat([]byte{'x'}, cfg.Payload)
	for i, c := range cs {
		n := share(cfg.Jobs, concurrency, i)
		cg.Go(func() error { return r.roundTrips(c, n, payload, &hs[i]) })
	}
	cerr := cg.Wait()
	if cerr == nil {
		cerr = r.end(cfg.Jobs)
	}
	stopWorkers(ws, &stopping)
	werr := wg.Wait()
	if cerr != nil {
		return cerr
	}
	if werr != nil {
		return werr
	}
	var h Histogram
	for i := range hs {
		h.Merge(&hs[i])
	}
	r.setLatency(&h)
	return nil
}

// roundTrips submits n foreground jobs one after another and waits for
// each result, which must echo the payload.
func (r *run) roundTrips(c *conn, n int, payload []byte, h *Histogram) error {
	for range n {
		t0 := r.now()
		c.send(gearman.SubmitJob, r.fn, nil, payload)
		p, err := c.expect(gearman.JobCreated)
		if err != nil {
			return err
		}
		handle := p.Args[0] // the frame's body is never reused
	wait:
		for {
			p, err := c.next()
			if err != nil {
				return err
			}
			switch p.Command {
			case gearman.WorkComplete:
				if !bytes.Equal(p.Args[0], handle) {
					return fmt.Errorf("WORK_COMPLETE for %q, want %q", p.Args[0], handle)
				}
				if !bytes.Equal(p.Args[1], payload) {
					return fmt.Errorf("WORK_COMPLETE carries %d bytes, want the %d-byte payload", len(p.Args[1]), len(payload))
				}
				break wait
			case gearman.WorkData, gearman.WorkWarning, gearman.WorkStatus:
			default:
				return fmt.Errorf("waiting for WORK_COMPLETE: got %s", p.Command)
			}
		}
		h.Record(time.Duration(r.now() - t0))
		r.prog.add(1)
	}
	return nil
}

func runEcho(ctx context.Context, r *run) error {
	cfg := r.cfg
	cs, err := r.clients(ctx)
	if err != nil {
		return err
	}
	payload := bytes.Repeat([]byte{'e'}, cfg.Payload)
	if err := r.beginPhase("echo", cfg.Jobs); err != nil {
		return err
	}
	h, err := r.pipelineAll(cs, cfg.Jobs, gearman.EchoRes, func() func(c *conn) {
		return func(c *conn) { c.send(gearman.EchoReq, payload) }
	}, func(p *gearman.Packet) error {
		if !bytes.Equal(p.Args[0], payload) {
			return fmt.Errorf("ECHO_RES carries %d bytes, want the %d sent", len(p.Args[0]), len(payload))
		}
		return nil
	})
	if err != nil {
		return err
	}
	if err := r.end(cfg.Jobs); err != nil {
		return err
	}
	r.setLatency(h)
	return nil
}

func runMemory(ctx context.Context, r *run) error {
	cfg := r.cfg
	cs, err := r.clients(ctx)
	if err != nil {
		return err
	}
	before, err := readRSS(cfg.PID)
	if err != nil {
		return err
	}
	if err := r.beginPhase("queueing", cfg.Jobs); err != nil {
		return err
	}
	if _, err := r.submitBackground(cs, cfg.Jobs); err != nil {
		return err
	}
	if err := r.end(cfg.Jobs); err != nil {
		return err
	}
	r.res.RSSBefore = before
	r.res.RSSPerJob = float64(r.res.RSS-before) / float64(cfg.Jobs)
	return r.cleanup(ctx, cfg.Jobs)
}

// idleDialers bounds how many connections idle opens at once.
const idleDialers = 16

func runIdle(ctx context.Context, r *run) error {
	cfg := r.cfg
	before, err := readRSS(cfg.PID)
	if err != nil {
		return err
	}
	if err := r.beginPhase("connecting", cfg.IdleConns); err != nil {
		return err
	}
	g := group{r: r}
	for i := range idleDialers {
		g.Go(func() error {
			for range share(cfg.IdleConns, idleDialers, i) {
				// A small buffer: the client should not need 10k × 32 KiB.
				c, err := r.dial(ctx, 256)
				if err != nil {
					return err
				}
				// The answer shows the server has set the connection up.
				if err := c.echo(); err != nil {
					return err
				}
				r.prog.add(1)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	// The clock (connections per second) stops here; the memory is read
	// once the connections have idled.
	if err := r.end(cfg.IdleConns); err != nil {
		return err
	}
	r.prog.start("idling", 0)
	settle := time.NewTimer(cfg.IdleSettle)
	defer settle.Stop()
	deadline := time.NewTimer(time.Until(r.deadline))
	defer deadline.Stop()
	select {
	case <-settle.C:
	case <-deadline.C:
		return fmt.Errorf("letting connections idle: %w", os.ErrDeadlineExceeded)
	case <-ctx.Done():
		return ctx.Err()
	}
	rss, err := readRSS(cfg.PID)
	if err != nil {
		return err
	}
	file, err := readRSSFile(cfg.PID)
	if err != nil {
		return err
	}
	r.res.RSS = rss
	r.res.RSSFile = file
	r.res.IdleSettle = cfg.IdleSettle
	r.res.Connections = cfg.IdleConns
	r.res.RSSBefore = before
	r.res.RSSPerJob = float64(r.res.RSS-before) / float64(cfg.IdleConns)
	return nil
}
