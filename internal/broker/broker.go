// Package broker holds Gearwork's job logic: functions and their priority
// queues, the unique-id index, sessions of clients and workers, wake-ups and
// timers. It knows nothing of sockets: front ends translate their wire
// protocol into calls on a Broker and the broker's Events back into packets.
//
// # Concurrency
//
// One mutex (Broker.mu) guards all state. Every method takes it briefly;
// nothing blocks while holding it. Outbox.Send and DoneFunc are called with
// it held, so they must only queue output.
//
// # Durability
//
// With a Store, background jobs are written before they are acknowledged:
// Submit hands the job to the committer goroutine, which writes every job
// waiting at that moment in one synced batch (group commit) and then calls
// each submitter's DoneFunc. With a local store the job is runnable
// meanwhile (dispatch before durable, commitLoop): only the acknowledgement
// waits for the write, or for the job to end if that comes first.
// Foreground jobs live in memory only. A job running at a crash is queued
// again at restart (at-least-once).
//
// # Lifecycle
//
// Each function may have a Policy (its state is lifeState): retries with
// backoff and timeouts (retryWaitLocked, timeoutLocked), dead letters
// (DeadLetter), ordered queues (orderLine), concurrency and rate limits,
// bounded queues and priority aging (canStartLocked, overflowLocked),
// pauses (Pause), retained results (Result) and cron schedules
// (Schedule). Functions
// without one keep gearmand's behaviour and take the same code path as
// before: every lifecycle check on the hot path is a nil test of
// function.life or jobExtra.life. Lifecycle transitions are written
// through the committer as Saves; pauses and cron ticks use the optional
// store.MetaStore capability of the store.
package broker

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gearwork/gearwork/internal/store"
)

// Clock tells the time. Tests inject a fake one.
type Clock interface {
	Now() time.Time
}

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

// Config configures a Broker. The zero value is usable.
type Config struct {
	// HandlePrefix starts every job handle; a handle is the prefix followed
	// by the job's sequence number. Default "H:gearwork:".
	HandlePrefix string
	// HandlePrefixAliases are prefixes that the handles this broker gave
	// out before may have instead of HandlePrefix (a default prefix made
	// from a host name that is now kept shorter): such a handle names the
	// job with the same number, without a store shared with other servers
	// (which reads any prefix). Handles are given out with HandlePrefix.
	HandlePrefixAliases []string
	// JobRetries limits how often a job is taken back from a worker that
	// disconnected or timed out, as gearmand 1.1's --job-retries: 0 (or
	// negative) means no limit; N>0 fails the job (WORK_FAIL to its
	// clients) when it is taken back for the Nth time.
	JobRetries int
	// Store makes background jobs durable on this server; nil keeps
	// everything in memory (unless Shared is set).
	Store store.Store
	// Shared, when set, runs the broker in shared mode on a store that
	// several servers share (see store.SharedStore); Store must then be
	// nil. The mode is chosen here, once: a store given as Store always
	// runs as a local store, whatever else it implements.
	Shared store.SharedStore
	// Clock defaults to the system clock.
	Clock Clock
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// CommitBatch is the most jobs written in one store batch. Default 4096.
	CommitBatch int
	// CommitBytes bounds the payload bytes of the new jobs and of the
	// jobs written again (retries, jobs taken back) in one store batch (a
	// job larger alone is written alone); the others wait for the next
	// round, as past CommitBatch. Default 1 GiB, which the
	// default MaxQueuedBytes never passes: Pebble panics on a batch of
	// 4 GiB, which a round of many large submits could reach.
	CommitBytes int64
	// RecordPace is the least time between the starts of two commit
	// rounds that write job records to a store that keeps them, when a
	// round carries nothing else that someone waits for (records, forgets
	// and removals of ended jobs only): a steady stream of ending jobs
	// then costs one write per RecordPace instead of one after another
	// (one transaction per RecordPace in shared mode). 0 means 2ms;
	// negative means no pacing.
	RecordPace time.Duration
	// RecordReadWait is the longest a lookup or listing (Job, ListJobs,
	// a retained result, a dead letter, a batch's state) waits for the
	// commit round of what it would answer that is not on disk yet. Past
	// it (a disk or database that hangs), or while the store refuses
	// writes, that is answered from memory (a job's record marked
	// JobSnapshot.Unstored). 0 means 5s.
	RecordReadWait time.Duration
	// EarlyInsertDelay is, in shared mode, how long a new background job
	// of a function that this server's workers finish fast waits for its
	// insert (up to five times as long while it is expected to queue
	// longer): one that ends before is never inserted, and its submitter
	// is answered when it ends (holdEarlyLocked). Default 20ms; negative
	// for none.
	EarlyInsertDelay time.Duration
	// DefaultPolicy applies to every function without an entry in
	// Policies. The zero value keeps gearmand's behaviour (see Policy).
	DefaultPolicy Policy
	// Policies are per-function lifecycle policies, by function name.
	Policies map[string]Policy
	// Schedules are cron schedules that submit a background job per tick.
	Schedules []Schedule
	// RandFunc returns a random number in [0, 1) for backoff jitter.
	// Default math/rand/v2.Float64.
	RandFunc func() float64
	// MaxQueuedBytes is a memory budget for live jobs: a submit that would
	// take the payload and unique bytes of all live jobs beyond it fails
	// with ErrQueueFull. Jobs replayed from the store count but are never
	// refused; dead letters and retained results do not count (their own
	// retention bounds them). 0 means no budget.
	MaxQueuedBytes int64
	// BatchRetention is how long a completed batch is kept (its status
	// answered, jobs refused with ErrBatchComplete) once its callbacks were
	// submitted; then it is forgotten, in memory and in the store. 0 means
	// DefaultBatchRetention; negative keeps completed batches forever.
	BatchRetention time.Duration
	// MemoryBudget bounds the payload bytes of stored background jobs kept
	// in memory when the Store is a store.PayloadReader; payloads beyond it are
	// read back from the store when their job is handed out. 0 means no
	// limit (every payload stays in memory); negative keeps none.
	MemoryBudget int64
	// MaxFunctions bounds the function names the broker knows. Each name
	// costs about a kilobyte of memory and is kept until "drop function",
	// so without a bound one peer could name functions until memory runs
	// out. A submit, CanDo, CreateFunction or SetMaxQueue naming a new
	// function while the broker knows this many makes it forget functions
	// that hold nothing (forget.go), and fails with ErrTooManyFunctions
	// only when every one holds something. Functions replayed from the
	// store, read from the configuration or learnt from servers sharing
	// the store count but are never refused. 0 means DefaultMaxFunctions;
	// negative means no limit.
	MaxFunctions int
	// MaxWorkerFunctions bounds the functions one session may register
	// (CanDo): a worker of more fails with ErrTooManyWorkerFunctions.
	// Handing a worker a job, and putting it to sleep, look through
	// every function it registered while holding the broker's lock, so
	// without a bound one connection could make every other request
	// wait. 0 means DefaultMaxWorkerFunctions; negative means no limit.
	MaxWorkerFunctions int
	// MaxOpenBatches bounds the batches that have not completed (open, or
	// closed with jobs still to finish): CreateBatch fails with
	// ErrTooManyBatches beyond it. A batch is kept until it completes and
	// then for BatchRetention, so without a bound a client that creates
	// batches and never closes them would fill memory and the store.
	// Batches replayed from the store count but are never refused; in
	// shared mode the store keeps the batches and this bound does not
	// apply. 0 means DefaultMaxOpenBatches; negative means no limit.
	MaxOpenBatches int
	// MaxRecordBytes bounds the memory the records of ended jobs take in
	// the broker, whatever their functions' history limits (Policy.History,
	// Policy.HistoryMax) allow: counted from what each record holds
	// (payload, result, error, attempts and the record itself), beyond it
	// the records of the jobs that ended first are forgotten first, across
	// functions. Without a store that keeps records that is every kept
	// record; with one, the records not yet written to it. Without a
	// bound, records of many functions could fill memory. 0 means
	// DefaultMaxRecordBytes; negative means no bound.
	MaxRecordBytes int64
}

// The defaults of Config.MaxFunctions, Config.MaxWorkerFunctions and
// Config.MaxOpenBatches.
const (
	DefaultMaxFunctions       = 100_000
	DefaultMaxWorkerFunctions = 10_000
	DefaultMaxOpenBatches     = 100_000
	// DefaultMaxRecordBytes is the default of Config.MaxRecordBytes.
	DefaultMaxRecordBytes = 256 << 20
)

// Broker is the job server's core. Create it with New, call Start before
// use and Stop when done.
type Broker struct {
	cfg    Config
	clock  Clock
	log    *slog.Logger
	store  store.Store
	prefix string
	// forgotUnsynced is set when ForgetRecord deleted a record from the
	// store itself, outside the committer, and no sync has covered that
	// delete yet: the committer's next barrier (Durable) syncs it.
	forgotUnsynced atomic.Bool
	// listHeld, when set (by tests), is told after each hold of the lock
	// that ListJobs takes for live jobs how many of them it looked at.
	listHeld func(looked int)

	// mu guards everything below it.
	mu        hookedMutex
	functions map[string]*function
	// idleFns are the functions that may hold nothing, for
	// Config.MaxFunctions (forget.go).
	idleFns fnList
	// uniques finds live jobs by unique across functions (uniques.go).
	uniques  uniqueIndex
	jobs     jobIndex
	nextSeq  uint64
	nextSess uint64
	sessions map[uint64]*Session
	timers   timerHeap[*job]
	draining bool
	stopped  bool
	idle     chan struct{} // closed when draining and nothing runs
	running  int

	// closeReason, when set (Stopping), is the reason logged for jobs
	// taken back from sessions closed from then on.
	closeReason string

	// pendingSaves and pendingDeletes wait for the committer.
	pendingSaves   []*job
	pendingRetries []store.Job
	pendingDeletes []uint64
	// unsaved counts the jobs of pendingSaves held by workers or about to
	// be (runningUnsavedLocked).
	unsaved unsavedCounts
	// spareExtras are extras of finished jobs, for jobs that start and
	// foreground jobs (extraLocked).
	spareExtras []*jobExtra
	// barriers are the waiters of Durable.
	barriers []chan error
	// records, when set, keeps the records of ended jobs; recq holds
	// those on their way there.
	records  store.RecordStore
	recq     recordQueue
	storeErr error
	// life is the lifecycle state: policies, dead letters, retained
	// results, function timers and cron schedules.
	life lifeState
	// watchers of jobs by seq (Watch); commitHist and commitJobs
	// measure the committer (Stats).
	watchers   map[uint64][]*Session
	commitHist Histogram
	commitJobs uint64
	// canDoRefused counts refused registrations (Stats.CanDoRefused).
	canDoRefused uint64
	// liveBytes is the payload and unique bytes of the jobs in b.jobs, and
	// the payloads of the callbacks of the batches in memory
	// (batch.callbackBytes).
	liveBytes int64
	tier      tiering
	// hist keeps the records of jobs that ended without a store that
	// keeps records (historyState); recq those on their way to one.
	hist historyState
	// batches are the batches of jobs (batchState).
	batches batchState
	// dependents are the jobs waiting for each job (dependencyEndedLocked);
	// cancelAfterReplay the replayed jobs to cancel once the replay is
	// done.
	dependents        map[uint64][]*job
	cancelAfterReplay []cancelAfter
	// retries maps a job that RetryJob ran again to the job that runs it
	// (RetryJob).
	retries map[uint64]uint64
	// mode is localMode, or a *sharedMode when Config.Shared is set: the
	// broker reaches what differs between the two only through it.
	mode mode

	commitWake chan struct{}
	// commitUrgent is signalled with commitWake by every write that
	// someone waits for; it ends a wait of paceRecords.
	commitUrgent chan struct{}
	// gatherAt, when above zero, is the number of waiting first writes
	// (pendingSaves) at which queueSaveLocked signals gatherFull, ending
	// the committer's gathering wait (gatherer.wait); with gatherRunning
	// set, settleEndedLocked signals it once no job waiting for its first
	// write is held by a worker. Both are guarded by mu.
	gatherAt      int
	gatherRunning bool
	gatherFull    chan struct{}
	timerWake     chan struct{}
	cancel        context.CancelFunc
	wg            sync.WaitGroup
	startOnce     sync.Once
	stopOnce      sync.Once
}

// New returns a Broker configured by cfg. It panics when cfg sets both
// Store and Shared.
func New(cfg Config) *Broker {
	if cfg.Store != nil && cfg.Shared != nil {
		panic("broker: Config.Store and Config.Shared are exclusive")
	}
	b := &Broker{
		cfg:          cfg,
		clock:        cmp.Or[Clock](cfg.Clock, systemClock{}),
		log:          cmp.Or(cfg.Logger, slog.Default()),
		store:        cfg.Store,
		prefix:       cmp.Or(cfg.HandlePrefix, "H:gearwork:"),
		functions:    make(map[string]*function),
		jobs:         newJobIndex(),
		nextSeq:      1,
		sessions:     make(map[uint64]*Session),
		commitWake:   make(chan struct{}, 1),
		commitUrgent: make(chan struct{}, 1),
		gatherFull:   make(chan struct{}, 1),
		timerWake:    make(chan struct{}, 1),
	}
	b.mode = localMode{b}
	if cfg.Shared != nil {
		b.store = cfg.Shared
	}
	b.records = recordStoreOf(cfg, b.store)
	b.cfg.CommitBatch = cmp.Or(cfg.CommitBatch, 4096)
	b.cfg.CommitBytes = cmp.Or(cfg.CommitBytes, 1<<30)
	b.cfg.RecordPace = cmp.Or(cfg.RecordPace, 2*time.Millisecond)
	b.cfg.RecordReadWait = cmp.Or(cfg.RecordReadWait, 5*time.Second)
	b.cfg.EarlyInsertDelay = max(cmp.Or(cfg.EarlyInsertDelay, defaultEarlyInsertDelay), 0)
	b.cfg.MaxFunctions = cmp.Or(cfg.MaxFunctions, DefaultMaxFunctions)
	b.cfg.MaxWorkerFunctions = cmp.Or(cfg.MaxWorkerFunctions, DefaultMaxWorkerFunctions)
	b.cfg.MaxOpenBatches = cmp.Or(cfg.MaxOpenBatches, DefaultMaxOpenBatches)
	b.cfg.MaxRecordBytes = cmp.Or(cfg.MaxRecordBytes, DefaultMaxRecordBytes)
	b.initLife()
	b.initTiering()
	if cfg.Shared != nil {
		b.mode = newSharedMode(b, cfg.Shared)
	}
	return b
}

// Start replays the store (if any) and starts the timer and committer
// goroutines. It returns an error if the store cannot be read.
func (b *Broker) Start(ctx context.Context) error {
	var err error
	b.startOnce.Do(func() {
		// Start numbering at the current time in microseconds, so that
		// handles are not reused after a restart even when the store is
		// empty or absent; replay raises it past every stored job.
		b.nextSeq = max(b.nextSeq, uint64(max(b.clock.Now().UnixMicro(), 1)))
		var life storedLife
		if life, err = b.loadLife(ctx); err != nil {
			return
		}
		if err = b.mode.start(ctx); err != nil {
			return
		}
		b.startLife(life)
		runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		b.cancel = cancel
		b.wg.Add(2)
		go b.timerLoop(runCtx)
		go b.historyLoop(runCtx)
		b.mode.run(runCtx)
	})
	return err
}

// Stop stops the broker's goroutines after writing what the committer still
// holds. It does not close the store. Safe to call twice or before Start.
func (b *Broker) Stop() {
	b.stopOnce.Do(func() {
		b.mu.Lock()
		b.stopped = true
		b.mu.Unlock()
		if b.cancel != nil {
			b.cancel()
		}
		b.wg.Wait()
	})
}

// HandlePrefix returns the prefix of every job handle.
func (b *Broker) HandlePrefix() string { return b.prefix }

// AppendHandle appends the handle of job seq to dst.
func (b *Broker) AppendHandle(dst []byte, seq uint64) []byte {
	dst = append(dst, b.prefix...)
	return strconv.AppendUint(dst, seq, 10)
}

// Handle returns the handle of job seq.
func (b *Broker) Handle(seq uint64) string {
	return string(b.AppendHandle(nil, seq))
}

// ParseHandle returns the sequence number in a handle of this broker.
func (b *Broker) ParseHandle(h []byte) (uint64, bool) {
	return b.mode.parseHandle(h)
}

// parseOwnHandle parses a handle that this broker gave out, with its
// prefix or one of Config.HandlePrefixAliases.
func (b *Broker) parseOwnHandle(h []byte) (uint64, bool) {
	if n, ok := parseHandleOf(h, b.prefix); ok {
		return n, true
	}
	for _, p := range b.cfg.HandlePrefixAliases {
		if n, ok := parseHandleOf(h, p); ok {
			return n, true
		}
	}
	return 0, false
}

// parseHandleOf parses h as prefix followed by a job's number.
func parseHandleOf(h []byte, prefix string) (uint64, bool) {
	if prefix == "" || len(h) <= len(prefix) || string(h[:len(prefix)]) != prefix {
		return 0, false
	}
	var n uint64
	for _, c := range h[len(prefix):] {
		if c < '0' || c > '9' || n > (1<<63)/10 {
			return 0, false
		}
		n = n*10 + uint64(c-'0')
	}
	return n, true
}

// NewSession registers a connection. addr is shown by the "workers" admin
// command.
func (b *Broker) NewSession(addr string, out Outbox) *Session {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.nextSess++
	s := &Session{id: b.nextSess, out: out, addr: addr, clientID: "-"}
	b.sessions[s.id] = s
	return s
}

// CloseSession ends a session: jobs it ran go back to their queues (counted
// as retries), and foreground jobs nobody else waits on are dropped.
// Idempotent.
func (b *Broker) CloseSession(s *Session) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if s.closed {
		return
	}
	s.closed = true
	delete(b.sessions, s.id)
	b.unwatchAllLocked(s)
	why := "worker disconnected"
	if b.closeReason != "" {
		why = b.closeReason
	}
	for len(s.running) > 0 {
		j := s.running[len(s.running)-1]
		b.requeueLocked(j, why)
	}
	for _, a := range s.abilities {
		if a.fn.workers--; a.fn.workers == 0 {
			b.mayIdleLocked(a.fn)
		}
	}
	s.abilities = nil
	for _, j := range s.waiting {
		x := j.x
		x.clients = removeUnordered(x.clients, s)
		if len(x.clients) == 0 && !j.background {
			b.abandonLocked(j)
		}
	}
	s.waiting = nil
}

// abandonLocked drops a foreground job nobody waits for: a queued one is
// removed, a running one finishes unobserved.
func (b *Broker) abandonLocked(j *job) {
	switch j.state {
	case stateQueued, stateScheduled, statePending, stateBlocked:
		b.dropLocked(j, "every client left")
	case stateRunning:
		j.flags |= jobCancelled
	}
}

// SetClientID sets the id shown by the "workers" admin command.
func (b *Broker) SetClientID(s *Session, id string) {
	b.mu.Lock()
	s.clientID = id
	b.mu.Unlock()
}

// SetExceptions records that the session's client wants WORK_EXCEPTION
// packets (OPTION_REQ "exceptions").
func (b *Broker) SetExceptions(s *Session) {
	b.mu.Lock()
	s.exceptions = true
	b.mu.Unlock()
}

func (b *Broker) function(name string) *function {
	if f := b.functions[name]; f != nil {
		return f
	}
	f := &function{name: name, known: true}
	b.functions[name] = f
	b.applyPolicyLocked(f)
	b.mayIdleLocked(f)
	return f
}

// admitFunctionLocked finds a function without allocating when it exists,
// or creates it, forgetting functions that hold nothing while the broker
// knows Config.MaxFunctions functions (forget.go), unless every one holds
// something. Requests of peers (submits, CAN_DO, admin commands) create
// functions through it; what is already accepted (the store's jobs, the
// configuration) uses function.
func (b *Broker) admitFunctionLocked(name []byte) (*function, error) {
	if f := b.functions[string(name)]; f != nil {
		return f, nil
	}
	if limit := b.cfg.MaxFunctions; limit > 0 && len(b.functions) >= limit && !b.makeRoomLocked(limit) {
		return nil, fmt.Errorf("%w: the server knows %d functions, its limit (--max-functions), and each has jobs, workers, a pause or a policy of its own",
			ErrTooManyFunctions, len(b.functions))
	}
	return b.function(string(name)), nil
}

// ownFunctionLocked finds or creates a function for what the server
// submits itself (a schedule's tick, a batch's callback, a stored job run
// again): never refused, but at Config.MaxFunctions it first forgets
// functions that hold nothing, as admitFunctionLocked does, so that such
// submits take the broker past the limit only while every function holds
// something.
func (b *Broker) ownFunctionLocked(name []byte) *function {
	if f := b.functions[string(name)]; f != nil {
		return f
	}
	if limit := b.cfg.MaxFunctions; limit > 0 && len(b.functions) >= limit {
		b.makeRoomLocked(limit)
	}
	return b.function(string(name))
}

// Drain stops handing out jobs (graceful shutdown). The returned channel is
// closed once no job is running.
func (b *Broker) Drain() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.idle == nil {
		b.idle = make(chan struct{})
		b.draining = true
		b.checkIdleLocked()
	}
	return b.idle
}

// Stopping records why the server is about to close its sessions, such as
// "shutdown deadline" when a graceful stop ran out of time: jobs taken
// back from sessions closed afterwards are logged with that reason instead
// of "worker disconnected".
func (b *Broker) Stopping(reason string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closeReason = reason
}

// Draining reports whether Drain was called: a graceful stop is under way.
// Front ends refuse new submits meanwhile (the Gearman port has stopped
// accepting connections; the HTTP API answers 503), since no job would be
// handed out before the server stops.
func (b *Broker) Draining() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.draining
}

func (b *Broker) checkIdleLocked() {
	if b.draining && b.running == 0 && b.idle != nil {
		select {
		case <-b.idle:
		default:
			close(b.idle)
		}
	}
}

// replay loads the store into memory at start.
func (b *Broker) replay(ctx context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	// n counts the records read; dead and done those kept as dead letters
	// and retained results, which are not live jobs (JobCount).
	n, dead, done := 0, 0, 0
	if err := b.loadBatchesLocked(ctx); err != nil {
		return fmt.Errorf("broker: replay store: %w", err)
	}
	place := func(r store.Job) error {
		if r.Seq >= b.nextSeq {
			b.nextSeq = r.Seq + 1
		}
		if b.jobs.get(r.Seq) != nil {
			return nil
		}
		if b.replayLifeLocked(r) {
			n++
			switch r.State {
			case store.StateDead:
				dead++
			case store.StateDone:
				done++
			}
			return nil
		}
		if b.replayFrozenLocked(r) {
			n++
			return nil
		}
		j := storedJob(b.function(r.Function), r)
		b.addLiveLocked(j)
		b.setUniqueLocked(j)
		b.tierAdmitLocked(j, false)
		b.makeRunnableLocked(j, false)
		b.freezeLocked(j)
		n++
		return nil
	}
	var waiting []uint64
	err := b.tierLoadLocked(ctx, func(r store.Job) error {
		err := place(r)
		if r.Batch != 0 && err == nil {
			b.replayBatchJobLocked(r)
		}
		if len(r.After) > 0 {
			waiting = append(waiting, r.Seq)
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("broker: replay store: %w", err)
	}
	b.finishReplayLocked()
	for _, q := range waiting {
		b.replayAfterLocked(q)
	}
	b.finishAfterReplayLocked()
	b.finishBatchReplayLocked()
	// jobs is what JobCount (and the server's "listening" line) reports:
	// the records that are not dead letters or retained results.
	b.log.Info("broker: replayed stored jobs", slog.Int("jobs", b.jobs.len()),
		slog.Int("dead_letters", dead), slog.Int("results", done), slog.Int("records", n))
	return nil
}

// storedJob rebuilds the in-memory job of a stored background job of f,
// without its lifecycle state.
func storedJob(f *function, r store.Job) *job {
	j := &job{seq: r.Seq, fn: f, unique: r.Unique, payload: r.Payload,
		priority: Priority(min(r.Priority, 2)), background: true, retries: r.Retries, submitted: r.Submitted}
	if r.Reducer != "" || r.RunAt != 0 {
		x := j.extra()
		x.reducer = r.Reducer
		x.runAt = r.RunAt
	}
	if len(r.After) > 0 {
		// Waiting (makeRunnableLocked) until replayAfterLocked links it.
		x := j.extra()
		x.after, x.anyway = r.After, r.AfterAnyway
	}
	return j
}

// addLiveLocked makes j a live job of j.fn: findable by seq, and counted
// in the memory budget and in the function's total. Its unique is left to
// the caller (setUniqueLocked or claimUniqueLocked).
func (b *Broker) addLiveLocked(j *job) {
	b.jobs.put(j.seq, j)
	b.liveBytes += j.size()
	j.fn.total++
}

// errStopped is returned to submitters when the broker has stopped.
var errStopped = errors.New("server is shutting down")
