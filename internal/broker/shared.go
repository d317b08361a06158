package broker

import (
	"context"
	"log/slog"
	"math"
	"time"

	"github.com/gearwork/gearwork/internal/store"
)

// localSeqBit marks the sequence numbers a broker in shared mode gives
// out itself (foreground jobs, and background jobs until the store has
// numbered them); the shared store's numbers stay below it.
const localSeqBit = 1 << 62

const (
	// sharedPoll is how often a server looks for claimable jobs without
	// being notified (scheduled jobs becoming due, lost notifications),
	// and how long a function may have queued jobs here but no worker
	// before they are released to other servers (twice this).
	sharedPoll = time.Second
	// sharedStatusTimeout bounds a status lookup in the store.
	sharedStatusTimeout = 5 * time.Second
	// sharedWriteTimeout bounds one round of the committer.
	sharedWriteTimeout = 30 * time.Second
	// sharedFlushTimeout bounds the last store writes at Stop.
	sharedFlushTimeout = 10 * time.Second
	// seqFresh is how long reserved sequence numbers are used for new
	// jobs. Claims take jobs in sequence order within a priority, so a
	// number reserved long ago would put a job ahead of other servers'
	// older ones.
	seqFresh = 2 * time.Second
	// defaultEarlyInsertDelay is Config.EarlyInsertDelay's default.
	defaultEarlyInsertDelay = 20 * time.Millisecond
	// seqReserveMin and seqReserveMax bound one reservation.
	seqReserveMin, seqReserveMax = 64, 4096
)

// sharedMode is the shared-mode state of a Broker. Fields marked "mu" are
// guarded by Broker.mu.
type sharedMode struct {
	b *Broker
	// batchEnds (mu) are the ends of jobs of batches for the next round,
	// and depEnds those of background jobs, for the jobs that wait for
	// them (sharedMode.dependencyEndedLocked).
	batchEnds []store.BatchEnd
	depEnds   []store.DepEnd
	store     store.SharedStore
	// lookups gathers status lookups into one query at a time, when the
	// store can (store.ManyFinder); nil: one Find each.
	lookups    *statusLookups
	renewEvery time.Duration
	// wake makes the claim loop look for work.
	wake chan struct{}
	// loopDone is closed when the claim loop has returned.
	loopDone chan struct{}

	// empty (mu) marks functions for which the last claim found fewer
	// jobs than asked; they are not asked again until a notification, the
	// poll or a lease release says there may be more.
	empty map[*function]bool
	// idleSince (mu) is when a function with jobs held here was first
	// seen without workers.
	idleSince map[*function]time.Time
	// failing (mu) is set while store writes fail; it is cleared when the
	// store answers again. answeredAt (mu) is when the store last
	// answered a write or a probe of the committer.
	failing    bool
	answeredAt time.Time

	// trimDead (mu) names the functions that got dead letters since the
	// last expiry sweep, whose limit the sweep enforces.
	trimDead map[string]bool
	// counts caches the store's counts for the admin views.
	counts countsCache
	// meta (mu) is the shared metadata, ordering and limit state
	// (sharedMeta).
	meta sharedMeta
	// retryIn (mu) asks the claim loop to claim again this soon: a
	// rate-limited function may have run out of tokens. rateMisses (mu)
	// counts the empty claims in a row of a rate-limited function.
	retryIn    time.Duration
	rateMisses map[*function]int
	// rates (mu) measures, per function with workers here, how fast they
	// finish its jobs (claimTargetLocked).
	rates map[*function]*finishRate
	// now is the broker's clock.
	now func() time.Time

	// seqs (mu) are sequence numbers the store reserved for this server,
	// at seqsAt. A new background job that this server's workers will run
	// is numbered from them at submit, so that it can be handed to a
	// worker before it is inserted (earlySeqLocked). seqsWanted (mu)
	// counts the jobs that wanted one since the last reservation.
	seqs       []uint64
	seqsAt     time.Time
	seqsWanted int
	// early (mu) are the jobs handed out before their insert, in submit
	// order, waiting for the committer; it takes one once its insert is
	// due (holdLocked: grace, the insert delay, or longer while the job
	// is expected to queue; holdEarlyLocked).
	early []earlyJob
	grace time.Duration
	// progress (mu) is the progress of running jobs to write, by sequence
	// number (progressLocked).
	progress map[uint64]store.Progress
}

func (c *sharedMode) kick() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

const (
	// claimHorizon is how much work, at the rate the workers here have
	// lately been finishing a function's jobs, a server holds queued for
	// them (claimTargetLocked).
	claimHorizon = 250 * time.Millisecond
	// claimMax bounds what a server holds queued of one function
	// (claimTargetLocked): at most that many jobs wait for its lease to
	// run out when it dies. A claim starts when the function falls to
	// half of its target, so the half left is what the workers run
	// while the claim's round trip and commit take their time: 512 jobs
	// (17 ms of work at 30,000 jobs/s) left them idle whenever a claim
	// of a deep queue took longer on a loaded machine.
	claimMax = 4096
	// rateWindow is how often that rate is measured again.
	rateWindow = 100 * time.Millisecond
)

// finishRate is the rate at which the workers here finish a function's
// jobs.
type finishRate struct {
	at       time.Time // start of the current window
	finished uint64    // the function's results counted at that time
	perSec   float64   // smoothed over the windows so far
	// runSum and runs are the function's run-time sum (seconds) and count
	// at the start of the window; run is the mean run time, smoothed, or
	// 0 while unknown.
	runSum float64
	runs   uint64
	run    float64
}

// claimTargetLocked is how many jobs of f this server wants to hold queued
// for its workers: enough to keep them busy between two claims (8 per
// worker, or claimHorizon of work at the rate they have lately finished
// f's jobs when that is more), few enough that other servers' workers are
// not starved and that a server's death delays few jobs (at most
// claimMax).
// For fast jobs the horizon matters: a job inserted already claimed costs
// the database one row write fewer than a job claimed later, and the
// workers do not wait for a claim round trip.
func (c *sharedMode) claimTargetLocked(f *function) int {
	n := 8 * f.workers
	if r := c.finishRateLocked(f); r > 0 {
		n = max(n, int(r*claimHorizon.Seconds()))
	}
	return min(max(n, 32), claimMax)
}

// finishRateLocked returns the rate, in jobs per second, at which the
// workers here have lately been finishing f's jobs.
func (c *sharedMode) finishRateLocked(f *function) float64 {
	r := c.finishRateOfLocked(f)
	return r.perSec
}

// finishRateOfLocked returns f's finish rate, brought up to date.
func (c *sharedMode) finishRateOfLocked(f *function) *finishRate {
	now := c.now()
	k := &f.counters
	finished := k.Completed + k.Failed + k.Exceptions
	r := c.rates[f]
	if r == nil {
		r = &finishRate{at: now, finished: finished, runSum: k.Run.Sum, runs: k.Run.Count}
		c.rates[f] = r
		return r
	}
	if el := now.Sub(r.at); el >= rateWindow {
		var rate float64
		if finished >= r.finished { // counters restart when f is dropped
			rate = float64(finished-r.finished) / el.Seconds()
		}
		if r.perSec == 0 || el > 10*rateWindow {
			r.perSec = rate // the first window, or idle for a while
		} else {
			r.perSec = (r.perSec + rate) / 2
		}
		if k.Run.Count > r.runs {
			run := (k.Run.Sum - r.runSum) / float64(k.Run.Count-r.runs)
			if r.run == 0 {
				r.run = run
			} else {
				r.run = (r.run + run) / 2
			}
		}
		r.at, r.finished, r.runSum, r.runs = now, finished, k.Run.Sum, k.Run.Count
	} else if r.run == 0 && k.Run.Count > r.runs {
		// The first run times are known before the first window ends.
		r.run = (k.Run.Sum - r.runSum) / float64(k.Run.Count-r.runs)
	}
	return r
}

var (
	_ mode = localMode{}
	_ mode = (*sharedMode)(nil)
)

// The hooks below are sharedMode's side of mode; the longer ones live
// beside the state they use (holdEarlyLocked, deadLocked, addCounts …).

// parseHandle accepts the handles of every server sharing the store: it
// reads the number after the last ':'.
func (c *sharedMode) parseHandle(h []byte) (uint64, bool) { return parseSeqSuffix(h) }

// submitLocked hands a new background job out before its insert when it
// may (holdEarlyLocked); otherwise the shared store's insert gives the job
// its handle and decides which server runs it.
func (c *sharedMode) submitLocked(j *job) bool {
	// A job of a batch is never handed out before its insert: the store
	// counts it in its batch as it inserts it, and a job that ended
	// before would be counted nowhere while the batch could complete
	// without it.
	// Nor is a job that waits for others: the store decides, as it
	// inserts it, whether it waits.
	if (j.x == nil || (j.x.batch == nil && len(j.x.after) == 0)) && c.holdEarlyLocked(j) {
		return true
	}
	c.b.setStateLocked(j, statePending)
	c.b.queueSaveLocked(j)
	return false
}

// watchesAfterInsert: a job that waits for its insert gets its handle
// from it, and one handed out before may become another job there.
func (c *sharedMode) watchesAfterInsert() bool { return true }

// savePendingInsertLocked: a job handed out before its insert, which may
// be held back (holdEarlyLocked), has what must be stored now inserted in
// the next round.
func (c *sharedMode) savePendingInsertLocked(j *job) { c.b.queueSaveLocked(j) }

// slotFreedLocked: other servers may claim a job in the freed slot, or
// the next job of a key that no server holds yet, once the job's new
// state is written.
func (c *sharedMode) slotFreedLocked(f *function) { c.notifyLocked(f) }

// functionGoneLocked forgets what the claim loop keeps about f: the store
// keeps its jobs by name, and a function of that name made again starts
// afresh.
func (c *sharedMode) functionGoneLocked(f *function) {
	delete(c.empty, f)
	delete(c.idleSince, f)
	delete(c.rateMisses, f)
	delete(c.rates, f)
}

// retryDueLocked: under limits shared by every server, the retry takes a
// slot and a token like any job: it goes back to the store to be claimed.
func (c *sharedMode) retryDueLocked(j *job) bool {
	if j.background && sharedLimits(j.fn) && j.saveState() == saveNone {
		c.releaseLocked(j)
		return true
	}
	return false
}

// pendingLocked: jobs handed out before their insert wait for the
// committer.
func (c *sharedMode) pendingLocked() bool { return len(c.early) > 0 }

// newSharedMode returns the shared-mode state of b on sh.
func newSharedMode(b *Broker, sh store.SharedStore) *sharedMode {
	var lookups *statusLookups
	if mf, ok := sh.(store.ManyFinder); ok {
		lookups = &statusLookups{find: mf, log: b.log}
	}
	return &sharedMode{
		lookups:    lookups,
		b:          b,
		store:      sh,
		wake:       make(chan struct{}, 1),
		loopDone:   make(chan struct{}),
		empty:      make(map[*function]bool),
		rateMisses: make(map[*function]int),
		idleSince:  make(map[*function]time.Time),
		trimDead:   make(map[string]bool),
		counts:     countsCache{sem: make(chan struct{}, 1)},
		rates:      make(map[*function]*finishRate),
		now:        b.clock.Now,
		grace:      b.cfg.EarlyInsertDelay,
	}
}

// start starts shared mode: the broker registers with the store instead
// of replaying it.
func (c *sharedMode) start(ctx context.Context) error {
	b, sh := c.b, c.store
	b.mu.Lock()
	b.nextSeq |= localSeqBit
	// A server in shared mode holds only the few jobs it claims for its
	// workers: payload tiering has nothing to do.
	b.tier.off()
	b.mu.Unlock()
	every, err := sh.Join(ctx, func(fn string) {
		b.mu.Lock()
		if fn == "" {
			clear(c.empty)
		} else if f := b.functions[fn]; f != nil {
			delete(c.empty, f)
		}
		b.mu.Unlock()
		c.kick()
	}, c.metaChanged, c.storeLost)
	if err != nil {
		return err
	}
	c.renewEvery = max(every, 10*time.Millisecond)
	b.log.Info("broker: joined the shared store", slog.Duration("renew_every", c.renewEvery))
	return nil
}

// run starts the claim loop, the shared-mode committer and the lifecycle
// sweep.
func (c *sharedMode) run(ctx context.Context) {
	b := c.b
	b.wg.Add(3)
	go c.claimLoop(ctx)
	go c.sharedCommitLoop(ctx)
	go c.sweepLoop(ctx)
}

// wantWorkLocked wakes the claim loop when one of the session's functions
// runs short of queued jobs here and the store may have more.
func (c *sharedMode) wantWorkLocked(s *Session) {
	for _, a := range s.abilities {
		if !c.empty[a.fn] && a.fn.queued() <= c.claimTargetLocked(a.fn)/2 {
			c.kick()
			return
		}
	}
}

// claimLoop claims jobs for local workers when they run short, renews the
// lease, and releases jobs of functions that lost their workers. The
// renewal shares the goroutine with the claims, so that a lease found
// lost is dealt with (renewLease) before anything is claimed under the
// new registration; a renewal due during a burst of claims runs between
// two of them.
func (c *sharedMode) claimLoop(ctx context.Context) {
	b := c.b
	defer b.wg.Done()
	defer close(c.loopDone)
	renew := time.NewTicker(c.renewEvery)
	defer renew.Stop()
	poll := time.NewTicker(sharedPoll)
	defer poll.Stop()
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	defer retry.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.wake:
		case <-retry.C:
			// Rate-limited functions may have tokens again.
			b.mu.Lock()
			for f := range c.empty {
				if f.life != nil && f.life.pol.Rate > 0 {
					delete(c.empty, f)
				}
			}
			b.mu.Unlock()
		case <-renew.C:
			c.renewLease(ctx)
		case <-poll.C:
			b.mu.Lock()
			clear(c.empty)
			release := c.idleJobsLocked()
			b.mu.Unlock()

			if len(release) > 0 {
				if err := c.store.Release(ctx, release); err != nil && ctx.Err() == nil {
					b.log.Warn("broker: releasing jobs without local workers failed",
						slog.Int("jobs", len(release)), slog.String("error", err.Error()))
				}
			}
		}
		c.syncMeta(ctx)
		for ctx.Err() == nil && c.claimOnce(ctx) {
			// A burst of claims (a deep queue drained by fast workers)
			// may last longer than a lease: the renewal that falls due
			// meanwhile goes between two claims, late by one claim at
			// most (docs/postgres.md, "Leases").
			select {
			case <-renew.C:
				c.renewLease(ctx)
			default:
			}
		}
		b.mu.Lock()
		if d := c.retryIn; d > 0 && d < sharedPoll {
			retry.Reset(d)
		}
		c.retryIn = 0
		b.mu.Unlock()
	}
}

// claimOnce asks the store for jobs for every function that runs short
// here. It reports whether it should be called again at once (some
// function got all it asked for, so more may be waiting).
func (c *sharedMode) claimOnce(ctx context.Context) bool {
	b := c.b
	b.mu.Lock()
	if b.draining || b.stopped || c.failing {
		b.mu.Unlock()
		return false
	}
	var req []store.ClaimRequest
	for _, f := range b.functions {
		if f.workers == 0 || c.empty[f] || (f.life != nil && f.life.paused) {
			continue
		}
		target, q := c.claimTargetLocked(f), f.queued()
		if sharedLimits(f) {
			// Jobs held here count against the limits of every server:
			// hold no more than the workers here can run now.
			pol := f.life.pol
			n := f.workers
			if pol.Concurrency > 0 {
				n = min(n, pol.Concurrency)
			}
			if n -= f.running + q; n > 0 {
				req = append(req, store.ClaimRequest{Function: f.name, Max: n, Limit: pol.Concurrency,
					Rate: pol.Rate, Burst: pol.burst()})
			}
			continue
		}
		if q > target/2 {
			continue
		}
		req = append(req, store.ClaimRequest{Function: f.name, Max: target - q})
	}
	b.mu.Unlock()
	if len(req) == 0 {
		return false
	}
	jobs, err := c.store.Claim(ctx, req)
	if err != nil {
		if ctx.Err() == nil {
			b.log.Warn("broker: claiming jobs failed", slog.String("error", err.Error()))
		}
		return false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	got := make(map[string]int, len(req))
	for _, r := range jobs {
		c.admitClaimedLocked(r)
		got[r.Function]++
	}
	b.finishReplayLocked()
	again := false
	for _, r := range req {
		f := b.functions[r.Function]
		if f == nil {
			continue
		}
		if got[r.Function] > 0 {
			// Jobs with lifecycle state are admitted as a replay admits
			// them, without waking anyone.
			b.wakeReadyLocked(f)
		}
		n := got[r.Function]
		if r.Rate > 0 {
			// The function may be out of tokens rather than jobs: ask
			// again when the next token is due, backing off while claims
			// come back empty (there may be no jobs at all), rather than
			// wait for the next poll.
			if n > 0 {
				delete(c.rateMisses, f)
			} else {
				c.rateMisses[f] = min(c.rateMisses[f]+1, 8)
			}
			d := tokenRetryIn(r.Rate, c.rateMisses[f])
			if n < r.Max && (c.retryIn == 0 || d < c.retryIn) {
				c.retryIn = d
			}
		}
		if n >= r.Max {
			again = true
		} else {
			c.empty[f] = true
		}
	}
	return again
}

// tokenRetryIn is how soon to claim again for a function limited to rate
// jobs a second that came back short misses times in a row: when its next
// token is due (at least 10 ms), doubled for each miss, at most
// math.MaxInt64 (a time.Duration of a second over a rate below about 1e-9,
// or doubled past 292 years, wrapped into 10 ms polling).
func tokenRetryIn(rate float64, misses int) time.Duration {
	d := max(durationOfNanos(float64(time.Second)/rate), 10*time.Millisecond)
	if d > math.MaxInt64>>misses {
		return math.MaxInt64
	}
	return d << misses
}

// admitClaimedLocked makes a claimed job runnable here, restoring its
// lifecycle state as a replay does. Call finishReplayLocked after a batch.
func (c *sharedMode) admitClaimedLocked(r store.Job) {
	b := c.b
	if b.jobs.get(r.Seq) != nil {
		return
	}
	if b.life.replayTicks == nil {
		// Replay's record of cron ticks is gone after start; ticks of
		// claimed jobs need no recording.
		b.life.replayTicks = map[string]int64{}
		defer func() { b.life.replayTicks = nil }()
	}
	if b.replayLifeLocked(r) {
		j := b.jobs.get(r.Seq)
		if j != nil && r.Batch != 0 {
			j.extra().batch = &batch{id: r.Batch, shared: true}
		}
		// A replay queues without waking anyone; a claimed job must wake
		// a sleeping worker as a submitted one does.
		if j != nil && j.state == stateQueued && (j.fn.life == nil || b.hasWorkLocked(j.fn)) {
			j.fn.wakeOne()
		}
		return
	}
	j := storedJob(b.function(r.Function), r)
	if r.Batch != 0 {
		j.extra().batch = &batch{id: r.Batch, shared: true}
	}
	b.addLiveLocked(j)
	b.claimUniqueLocked(j)
	b.makeRunnableLocked(j, true)
}

// forgetLocked drops a job that is not running from memory without
// touching the store (another server holds it, or will). It does not
// count as dropped.
func (c *sharedMode) forgetLocked(j *job) {
	b := c.b
	b.dropWatchersLocked(j.seq) // it goes on elsewhere: no final event here
	j.flags |= jobFinished
	b.settleEndedLocked(j)
	b.unlinkLocked(j)
}

// idleJobsLocked forgets the queued background jobs of functions that have
// had no worker here for two polls, and returns them for release.
func (c *sharedMode) idleJobsLocked() []uint64 {
	b := c.b
	now := c.now()
	var out []uint64
	for _, f := range b.functions {
		if f.workers == 0 {
			delete(c.rates, f)
		}
		if f.workers > 0 || f.queued() == 0 {
			delete(c.idleSince, f)
			continue
		}
		since, ok := c.idleSince[f]
		if !ok {
			c.idleSince[f] = now
			continue
		}
		if now.Sub(since) < 2*sharedPoll {
			continue
		}
		delete(c.idleSince, f)
		for p := range numPriorities {
			for j := f.queues[p].head; j != nil; {
				next := j.next
				if j.background && j.saveState() == saveNone { // the others are still being inserted
					out = append(out, j.seq)
					c.forgetLocked(j)
				}
				j = next
			}
		}
	}
	return out
}

// renewLease renews this server's lease; when the lease had been lost,
// the jobs held here that are not running are forgotten (other servers
// may hand them out now).
func (c *sharedMode) renewLease(ctx context.Context) {
	b := c.b
	lost, err := c.store.Renew(ctx)
	if err != nil {
		if ctx.Err() == nil {
			b.log.Warn("broker: renewing the lease failed", slog.String("error", err.Error()))
		}
		return
	}
	if !lost {
		return
	}
	b.mu.Lock()
	var release []uint64
	n := 0
	for _, j := range b.jobs.all() {
		// A job still being inserted is inserted unclaimed, and dropped
		// then (settleEarlyLocked).
		if j.background && j.saveState() == saveNone && (j.state == stateQueued || j.state == stateScheduled ||
			j.state == stateRetryWait || j.state == stateBlocked) {
			release = append(release, j.seq)
			c.forgetLocked(j)
			n++
		}
	}
	clear(c.empty)
	b.mu.Unlock()
	b.log.Warn("broker: lease lost; dropped the queued jobs held here", slog.Int("jobs", n))
	// Rows inserted under the new registration while it was renewed are
	// this server's again: give them back, before this (the claim loop's)
	// goroutine claims anything under the new registration.
	if len(release) > 0 {
		if err := c.store.Release(ctx, release); err != nil && ctx.Err() == nil {
			b.log.Warn("broker: releasing the jobs dropped after the lease was lost failed",
				slog.Int("jobs", len(release)), slog.String("error", err.Error()))
		}
	}
	c.kick()
}

// status answers a status request for a job this server does not hold
// from the shared store.
func (c *sharedMode) status(seq uint64, unique string) JobStatus {
	b := c.b
	var f store.Found
	var ok bool
	if c.lookups != nil {
		f, ok = c.lookups.lookup(seq, unique)
	} else {
		ctx, cancel := context.WithTimeout(context.Background(), sharedStatusTimeout)
		defer cancel()
		var err error
		if f, ok, err = c.store.Find(ctx, seq, unique); err != nil {
			b.log.Warn("broker: looking a job up in the store failed", slog.String("error", err.Error()))
			return JobStatus{}
		}
	}
	if !ok {
		return JobStatus{}
	}
	// A job its server holds until its retry is due is not running.
	running := f.Claimed && f.RetryAt <= b.nowNanos()
	return JobStatus{Seq: f.Seq, Known: true, Running: running, Numerator: f.Numerator, Denominator: f.Denominator}
}

// parseSeqSuffix parses the number after the last ':' of a handle, so
// that a server in shared mode knows handles other servers gave out.
func parseSeqSuffix(h []byte) (uint64, bool) {
	i := len(h)
	for i > 0 && h[i-1] != ':' {
		i--
	}
	if i == 0 || i == len(h) {
		return 0, false
	}
	var n uint64
	for _, c := range h[i:] {
		if c < '0' || c > '9' || n > (1<<63)/10 {
			return 0, false
		}
		n = n*10 + uint64(c-'0')
	}
	return n, true
}
