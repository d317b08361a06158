// Package bench is a load generator for any Gearman job server, Gearwork or
// gearmand alike. It speaks the raw binary protocol through the gearman
// codec, so what it measures is the server, not a client library.
//
// # Scenarios
//
//   - submit: background submits (SUBMIT_JOB_BG) over Connections
//     connections with Inflight requests in flight on each, timed until
//     every JOB_CREATED arrived. With Backlog > 0 that many jobs are queued
//     first, untimed, so the rate with a deep queue can be compared.
//   - drain1, drain8: a backlog of Jobs is queued (untimed), then Workers
//     workers complete it with 1 or 8 GRAB_JOB_UNIQ in flight each. The
//     clock stops when the server has acknowledged the last WORK_COMPLETE
//     (the answer to a later packet on the same connection proves it was
//     processed); the admin "status" command then must show an empty queue.
//   - steady: submitters (Connections, at most Inflight unanswered each)
//     and Workers workers (Grabs GRAB_JOB_UNIQ in flight each) run at
//     once. At most Workers × Grabs jobs are submitted but not yet started
//     at any time, so a job finds a free (or soon free) worker and the
//     latency from submit to JOB_ASSIGN (a timestamp travels in the
//     payload) measures dispatch, not a backlog.
//   - fg1, fg64: foreground round trips (SUBMIT_JOB until WORK_COMPLETE)
//     from 1 client with 1 worker, and from 64 clients with 64 workers.
//   - echo: ECHO_REQ round trips, pipelined like submit.
//   - memory (needs PID): the server's RSS before and after queueing Jobs
//     background jobs, reported per job.
//   - idle (needs PID): the server's RSS once IdleConns connections have
//     been open and idle for IdleSettle, reported per connection.
//   - verify (needs Queue): Workers workers complete Jobs jobs of the
//     function Queue that an earlier memory run queued (before a restart
//     of the server, say) and check every payload: its size, its
//     content, and that no job comes back twice. The rest of the queue
//     stays.
//
// With Queue set, memory queues into that function (no random suffix) and
// its payloads are checkable: each starts with the job's index (8 bytes,
// big-endian) and the rest is a pattern derived from it, which verify
// recomputes.
//
// Workers sleep with PRE_SLEEP and wake on NOOP, as real workers do; no
// scenario polls. Every scenario is bounded by its job count and by
// Timeout. Each uses its own function name, and unless NoCleanup is set it
// completes the jobs it left queued (untimed) and drops its function
// ("drop function") before returning, so scenarios can run one after
// another against one server and leave nothing behind.
//
// # Server statistics
//
// With PID set (the server must run on this machine), each scenario also
// reports the server's resident memory (VmRSS) at its end and the CPU time
// (user + system) the server spent per job while measured.
package bench

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"sync"
	"time"
)

// Config configures a benchmark run. Zero values take the documented
// defaults; negative values are invalid.
type Config struct {
	// Addr is the server's host:port. Required.
	Addr string
	// Jobs is how many jobs (or requests) each scenario measures.
	// Default 200000.
	Jobs int
	// Payload is the size of each job's payload in bytes, at least 8 (steady
	// carries a timestamp in it). Default 64.
	Payload int
	// Connections is the number of client connections of submit, echo,
	// memory, steady and of untimed loading. Default 4.
	Connections int
	// Inflight is how many requests each client connection keeps
	// unanswered. Default 64.
	Inflight int
	// Workers is the number of worker connections of drain1, drain8 and
	// steady (fg1 and fg64 use 1 and 64). Default 8.
	Workers int
	// Grabs is how many GRAB_JOB_UNIQ each steady worker keeps in flight.
	// Default 1.
	Grabs int
	// Rate, when positive, paces steady's submitters to that many jobs
	// per second in all (each connection its share, on a fixed schedule).
	// Default 0: as fast as the server and the workers allow.
	Rate float64
	// Backlog is how many jobs submit queues (untimed) before it measures.
	// Default 0.
	Backlog int
	// IdleConns is how many connections the idle scenario opens.
	// Default 10000.
	IdleConns int
	// IdleSettle is how long the idle scenario keeps its connections open
	// and idle before it reads the server's RSS, so that a server which
	// gives back the memory of idle connections after a while is measured
	// once it has. It counts against Timeout. Default 10 seconds.
	IdleSettle time.Duration
	// PID is the server's process id, for memory and CPU figures; 0 means
	// unknown (memory and idle then cannot run).
	PID int
	// Timeout bounds each scenario, loading and cleanup included.
	// Default 2 minutes.
	Timeout time.Duration
	// Function prefixes the function name of every scenario; a random
	// suffix keeps runs apart. Default "gearwork-bench".
	Function string
	// Queue, when set, is the exact function name of memory and verify,
	// whose payloads are then checkable (see Scenarios); other scenarios
	// refuse it. Empty means a random function per scenario.
	Queue string
	// NoCleanup leaves queued jobs and the scenario's function on the
	// server after a scenario (faster when the server is thrown away
	// afterwards). By default the jobs are completed, the queue is checked
	// to be empty and the function is dropped (not with Queue set: that
	// function is the caller's).
	NoCleanup bool
	// Progress receives a progress bar (carriage-return updates); nil
	// means none. Pass a terminal, not a file.
	Progress io.Writer
	// BeginFunc, when set, is called right before the clock of a
	// scenario's measured part starts, after any untimed loading (so a
	// caller can reset counters of its own, such as the database's
	// statement statistics). nil means nothing is called.
	BeginFunc func()
}

func (c Config) withDefaults() Config {
	c.Jobs = cmp.Or(c.Jobs, 200000)
	c.Payload = cmp.Or(c.Payload, 64)
	c.Connections = cmp.Or(c.Connections, 4)
	c.Inflight = cmp.Or(c.Inflight, 64)
	c.Workers = cmp.Or(c.Workers, 8)
	c.Grabs = cmp.Or(c.Grabs, 1)
	c.IdleConns = cmp.Or(c.IdleConns, 10000)
	c.IdleSettle = cmp.Or(c.IdleSettle, 10*time.Second)
	c.Timeout = cmp.Or(c.Timeout, 2*time.Minute)
	c.Function = cmp.Or(c.Function, "gearwork-bench")
	return c
}

// maxPayload keeps payloads well inside every server's packet limit.
const maxPayload = 16 << 20

// minRate is the slowest pace (Config.Rate) taken: a job every 100 s.
const minRate = 0.01

// Validate reports the first invalid field, after defaults are applied.
func (c Config) Validate() error {
	c = c.withDefaults()
	if c.Addr == "" {
		return errors.New("bench: no server address")
	}
	for _, n := range []struct {
		what  string
		count int
	}{
		{"jobs", c.Jobs},
		{"connections", c.Connections},
		{"in-flight requests", c.Inflight},
		{"workers", c.Workers},
		{"grabs", c.Grabs},
		{"idle connections", c.IdleConns},
	} {
		if n.count < 1 {
			return fmt.Errorf("bench: %s must be at least 1, not %d", n.what, n.count)
		}
	}
	switch {
	case c.Payload < 8 || c.Payload > maxPayload:
		return fmt.Errorf("bench: payload must be 8 to %d bytes, not %d", maxPayload, c.Payload)
	case c.Backlog < 0:
		return fmt.Errorf("bench: backlog must not be negative, not %d", c.Backlog)
	case c.Rate < 0 || math.IsNaN(c.Rate) || math.IsInf(c.Rate, 0) || (c.Rate > 0 && c.Rate < minRate):
		return fmt.Errorf("bench: rate must be 0 (not paced) or from %v to a finite number of jobs per second, not %v", minRate, c.Rate)
	case c.PID < 0:
		return fmt.Errorf("bench: invalid pid %d", c.PID)
	case c.Timeout <= 0:
		return fmt.Errorf("bench: timeout must be positive, not %s", c.Timeout)
	case c.IdleSettle < 0:
		return fmt.Errorf("bench: idle settle time must not be negative, not %s", c.IdleSettle)
	case len(c.Function) > 400 || strings.ContainsRune(c.Function, 0):
		return errors.New("bench: function prefix must be at most 400 bytes without NUL")
	case len(c.Queue) > 400 || strings.ContainsRune(c.Queue, 0):
		return errors.New("bench: queue name must be at most 400 bytes without NUL")
	}
	return nil
}

// scenario describes one scenario.
type scenario struct {
	name    string
	needPID bool
	// queue: the scenario takes Config.Queue; needQueue: it needs it.
	queue, needQueue bool
	// latency says what P50 and P99 measure.
	latency string
	run     func(ctx context.Context, r *run) error
}

var scenarios = []scenario{
	{name: "submit", latency: "SUBMIT_JOB_BG→JOB_CREATED", run: runSubmit},
	{name: "drain1", run: func(ctx context.Context, r *run) error { return runDrain(ctx, r, 1) }},
	{name: "drain8", run: func(ctx context.Context, r *run) error { return runDrain(ctx, r, 8) }},
	{name: "steady", latency: "submit→start", run: runSteady},
	{name: "fg1", latency: "SUBMIT_JOB→WORK_COMPLETE", run: func(ctx context.Context, r *run) error { return runForeground(ctx, r, 1) }},
	{name: "fg64", latency: "SUBMIT_JOB→WORK_COMPLETE", run: func(ctx context.Context, r *run) error { return runForeground(ctx, r, 64) }},
	{name: "echo", latency: "ECHO_REQ→ECHO_RES", run: runEcho},
	{name: "memory", needPID: true, queue: true, run: runMemory},
	{name: "idle", needPID: true, run: runIdle},
	{name: "verify", queue: true, needQueue: true, run: runVerify},
}

// groups are names that stand for several scenarios.
var groups = map[string][]string{
	"drain": {"drain1", "drain8"},
	"fg":    {"fg1", "fg64"},
}

func findScenario(name string) (scenario, bool) {
	i := slices.IndexFunc(scenarios, func(s scenario) bool { return s.name == name })
	if i < 0 {
		return scenario{}, false
	}
	return scenarios[i], true
}

// Scenarios returns the name of every scenario, in the order "all" runs
// them.
func Scenarios() []string {
	names := make([]string, len(scenarios))
	for i, s := range scenarios {
		names[i] = s.name
	}
	return names
}

// ParseScenarios turns a comma-separated list into scenario names, in the
// order given and without repeats. "drain" stands for drain1,drain8 and
// "fg" for fg1,fg64. An empty list or "all" means every scenario, leaving
// out memory and idle when havePID is false, and verify. Naming memory or
// idle without havePID is an error.
func ParseScenarios(list string, havePID bool) ([]string, error) {
	var names []string
	add := func(n string) {
		if !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	for _, word := range strings.Split(list, ",") {
		word = strings.ToLower(strings.TrimSpace(word))
		switch {
		case word == "" && strings.TrimSpace(list) != "":
			return nil, errors.New("bench: empty scenario name in list")
		case word == "" || word == "all":
			for _, s := range scenarios {
				if (havePID || !s.needPID) && !s.needQueue {
					add(s.name)
				}
			}
		case groups[word] != nil:
			for _, n := range groups[word] {
				add(n)
			}
		default:
			s, ok := findScenario(word)
			if !ok {
				return nil, fmt.Errorf("bench: unknown scenario %q (known: %s, drain, fg, all)",
					word, strings.Join(Scenarios(), ", "))
			}
			if s.needPID && !havePID {
				return nil, fmt.Errorf("bench: scenario %s needs the server's pid", s.name)
			}
			add(s.name)
		}
	}
	return names, nil
}

// Run runs one scenario against cfg.Addr and returns what it measured. It
// returns an error when the server misbehaves (an ERROR packet, a wrong
// answer, a queue not empty afterwards), when cfg.Timeout passes, or when
// ctx is cancelled; connections are closed in every case.
func Run(ctx context.Context, cfg Config, name string) (Result, error) {
	if err := cfg.Validate(); err != nil {
		return Result{}, err
	}
	cfg = cfg.withDefaults()
	s, ok := findScenario(name)
	if !ok {
		return Result{}, fmt.Errorf("bench: unknown scenario %q", name)
	}
	if s.needPID && cfg.PID == 0 {
		return Result{}, fmt.Errorf("bench: scenario %s needs the server's pid", name)
	}
	switch {
	case s.needQueue && cfg.Queue == "":
		return Result{}, fmt.Errorf("bench: scenario %s needs a queue name", name)
	case !s.queue && cfg.Queue != "":
		return Result{}, fmt.Errorf("bench: scenario %s does not take a queue name", name)
	}
	var suffix [4]byte
	_, _ = rand.Read(suffix[:])
	fn := cfg.Function + "." + name + "." + hex.EncodeToString(suffix[:])
	if cfg.Queue != "" {
		fn = cfg.Queue
	}
	r := &run{
		cfg:      cfg,
		name:     name,
		fn:       []byte(fn),
		base:     time.Now(),
		deadline: time.Now().Add(cfg.Timeout),
		res: Result{
			Scenario: name, Server: cfg.Addr, Payload: cfg.Payload,
		},
		latency: s.latency,
	}
	r.prog = newProgress(cfg.Progress, name)
	defer r.prog.stop()
	stop := context.AfterFunc(ctx, r.interrupt)
	defer stop()
	defer r.closeAll()

	err := s.run(ctx, r)
	if err == nil && !cfg.NoCleanup && cfg.Queue == "" {
		// Close the scenario's workers first: a function with workers
		// cannot be dropped.
		r.closeAll()
		err = r.dropFunction(ctx)
	}
	if err != nil {
		switch {
		case ctx.Err() != nil:
			err = fmt.Errorf("bench %s: interrupted: %w", name, ctx.Err())
		case isDeadline(err) && !time.Now().Before(r.deadline):
			err = fmt.Errorf("bench %s: timed out after %s (%s)", name, cfg.Timeout, r.prog.status())
		default:
			err = fmt.Errorf("bench %s: %w", name, err)
		}
		return Result{}, err
	}
	r.res.finish()
	return r.res, nil
}

// run is the state of one scenario run.
type run struct {
	cfg      Config
	name     string
	fn       []byte
	base     time.Time
	deadline time.Time
	prog     *progress
	res      Result
	latency  string
	// cpu0 is the server's CPU time when measuring started.
	cpu0 time.Duration
	t0   time.Time

	// mu guards conns and halted.
	mu     sync.Mutex
	conns  []*conn
	halted bool
}

// now returns monotonic nanoseconds since the run began; it is what
// payload timestamps carry.
func (r *run) now() int64 { return int64(time.Since(r.base)) }

// dial opens a connection that interrupt and closeAll reach.
func (r *run) dial(ctx context.Context, bufSize int) (*conn, error) {
	c, err := dialConn(ctx, r.cfg.Addr, r.deadline, bufSize)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.halted {
		c.close()
		return nil, fmt.Errorf("connect: %w", errHalted)
	}
	r.conns = append(r.conns, c)
	return c, nil
}

// dropFunction removes the scenario's function from the server ("drop
// function"), so that runs leave no gearwork-bench.* functions behind. The
// server may still count the workers just closed for a moment: it retries
// for up to five seconds. A function the server does not know (a scenario
// that registered none) is fine.
func (r *run) dropFunction(ctx context.Context) error {
	c, err := r.dial(ctx, 4<<10)
	if err != nil {
		return fmt.Errorf("cleanup: %w", err)
	}
	defer c.close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		line, err := c.adminLine("drop function " + string(r.fn))
		switch {
		case err != nil:
			return fmt.Errorf("cleanup: drop function %s: %w", r.fn, err)
		case line == "OK" || strings.Contains(strings.ToLower(line), "not found"):
			return nil
		case time.Now().After(deadline) || ctx.Err() != nil:
			return fmt.Errorf("cleanup: drop function %s: %s", r.fn, line)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ErrConnect is wrapped by Run's error when a connection to the server
// could not be made.
var ErrConnect = errors.New("connect")

// errHalted is returned by dial after interrupt.
var errHalted = errors.New("run interrupted")

// interrupt makes every blocked read or write of the run fail at once.
func (r *run) interrupt() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.halted = true
	for _, c := range r.conns {
		_ = c.nc.SetDeadline(time.Unix(1, 0))
	}
}

func (r *run) closeAll() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range r.conns {
		c.close()
	}
	r.conns = nil
}

// beginPhase shows the measured phase, of total operations, in the
// progress line and starts its clock (see begin).
func (r *run) beginPhase(phase string, total int) error {
	r.prog.start(phase, total)
	return r.begin()
}

// begin starts the clock (and the server CPU reading) of the measured part.
func (r *run) begin() error {
	if r.cfg.BeginFunc != nil {
		r.cfg.BeginFunc()
	}
	if r.cfg.PID != 0 {
		cpu, err := readCPU(r.cfg.PID)
		if err != nil {
			return err
		}
		r.cpu0 = cpu
	}
	r.t0 = time.Now()
	return nil
}

// end stops the clock; ops is how many operations were measured.
func (r *run) end(ops int) error {
	r.res.Elapsed = time.Since(r.t0)
	r.res.Jobs = ops
	if r.cfg.PID != 0 {
		cpu, err := readCPU(r.cfg.PID)
		if err != nil {
			return err
		}
		r.res.CPU = cpu - r.cpu0
		rss, err := readRSS(r.cfg.PID)
		if err != nil {
			return err
		}
		r.res.RSS = rss
	}
	return nil
}

// group runs goroutines and keeps the first error; the first failure
// interrupts the whole run so that the others return too.
type group struct {
	r    *run
	wg   sync.WaitGroup
	once sync.Once
	err  error
}

func (g *group) Go(f func() error) {
	g.wg.Go(func() {
		if err := f(); err != nil {
			g.once.Do(func() {
				g.err = err
				g.r.interrupt()
			})
		}
	})
}

func (g *group) Wait() error {
	g.wg.Wait()
	return g.err
}

// share returns the part of n that worker i of k takes.
func share(n, k, i int) int {
	s := n / k
	if i < n%k {
		s++
	}
	return s
}
