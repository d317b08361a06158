package broker

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/gearwork/gearwork/internal/store"
)

// lifeState is the broker's lifecycle state. Guarded by Broker.mu.
type lifeState struct {
	// policies are explicit per-function policies; other functions use
	// defaultPol. configured names the functions of the configuration
	// (Config.Policies, Config.Schedules), which are never forgotten.
	policies   map[string]Policy
	configured map[string]bool
	defaultPol Policy
	rand       func() float64
	// dead holds dead letters by sequence number; deadLists orders them per
	// function name, oldest first (linked through job.prev/next).
	dead      map[uint64]*job
	deadLists map[string]*jobList
	// done holds jobs whose result is retained, by sequence number.
	done      map[uint64]*job
	timers    timerHeap[*lifeTimer]
	schedules []*schedule
	// meta is the store's optional metadata capability; nil without one.
	meta        store.MetaStore
	pendingMeta []store.Meta
	// replayTicks is the last tick per schedule seen in replayed jobs;
	// replayOrdered are replayed ordered jobs placed after the replay.
	replayTicks   map[string]int64
	replayOrdered []*job
}

// fnLife is the lifecycle state of one function. Guarded by Broker.mu.
type fnLife struct {
	pol Policy
	// paused functions hand out no jobs; pausedUntil (Unix nanoseconds)
	// ends the pause, 0 means until Resume.
	paused      bool
	pausedUntil int64
	pauseTimer  lifeTimer
	// tokens is the rate limiter's bucket as of tokensAt (Unix ns).
	tokens    float64
	tokensAt  int64
	rateTimer lifeTimer
	// lines are the ordered queues by ordering key.
	lines map[string]*orderLine
	// done indexes retained results by unique key.
	done map[string]*job
}

// jobLife is the lifecycle state of one job. Guarded by Broker.mu.
type jobLife struct {
	attempts    uint32
	maxAttempts int32
	timeout     time.Duration
	orderKey    string
	lastErr     string
	history     []store.Attempt
	// startedAt is when the current run started (Unix ns); worker names
	// the worker running it.
	startedAt int64
	worker    string
	// queuedAt is when the job last became runnable (Unix ns), for aging.
	queuedAt int64
	// notBefore ends the retry wait (Unix ns).
	notBefore  int64
	result     []byte
	finishedAt int64
	schedule   string
	tick       int64
}

func (b *Broker) initLife() {
	l := &b.life
	l.policies = make(map[string]Policy, len(b.cfg.Policies))
	l.configured = make(map[string]bool, len(b.cfg.Policies)+len(b.cfg.Schedules))
	for name, p := range b.cfg.Policies {
		l.policies[name] = p
		l.configured[name] = true
	}
	for _, s := range b.cfg.Schedules {
		l.configured[s.Function] = true
	}
	l.defaultPol = b.cfg.DefaultPolicy
	l.rand = b.cfg.RandFunc
	if l.rand == nil {
		l.rand = rand.Float64
	}
	l.dead = make(map[uint64]*job)
	l.deadLists = make(map[string]*jobList)
	l.done = make(map[uint64]*job)
	l.replayTicks = make(map[string]int64)
	if m, ok := b.store.(store.MetaStore); ok {
		l.meta = m
	}
	for _, s := range b.cfg.Schedules {
		l.schedules = append(l.schedules, &schedule{cfg: s, timer: lifeTimer{timerSlot: timerSlot{idx: -1}}})
	}
}

func (b *Broker) nowNanos() int64 { return b.clock.Now().UnixNano() }

// holdNow returns the clock's reading in Unix nanoseconds, read once per
// hold of the broker's lock: what happens in one broker call happens at
// one time, and a job's submit, start and end stamps cost one reading per
// call instead of one per stamp. Only for stamps and statistics: a hold
// that runs long (replay) must read the clock itself.
func (b *Broker) holdNow() int64 {
	if b.mu.now == 0 {
		b.mu.now = b.nowNanos()
	}
	return b.mu.now
}

// enterBurstLocked makes the current hold of the lock use the clock reading
// of s's burst, if it has one (Session.BeginBurst).
func (b *Broker) enterBurstLocked(s *Session) {
	if now := s.burst.Load(); now > 0 {
		b.mu.now = now
	}
}

// leaveBurstLocked keeps the hold's clock reading, if it took one, for the
// rest of s's burst.
func (b *Broker) leaveBurstLocked(s *Session) {
	if b.mu.now > 0 && s.burst.Load() < 0 {
		s.burst.Store(b.mu.now)
	}
}

// policyOf returns the policy of the function name.
func (b *Broker) policyOf(name string) Policy {
	if len(b.life.policies) == 0 {
		return b.life.defaultPol
	}
	if p, ok := b.life.policies[name]; ok {
		return p
	}
	return b.life.defaultPol
}

// applyPolicyLocked makes f follow its current policy.
func (b *Broker) applyPolicyLocked(f *function) {
	p := b.policyOf(f.name)
	f.maxQueue = p.MaxQueue
	f.histAge, f.histMax = p.historyLimits()
	if !p.needsLife() && f.life == nil {
		return
	}
	l := b.fnLifeLocked(f)
	old := l.pol
	l.pol = p
	if p.Rate != old.Rate || p.Burst != old.Burst {
		l.tokens = p.burst()
		l.tokensAt = b.nowNanos()
	}
	b.wakeReadyLocked(f)
}

func (b *Broker) fnLifeLocked(f *function) *fnLife {
	if f.life == nil {
		f.life = &fnLife{pol: b.policyOf(f.name), pauseTimer: lifeTimer{timerSlot: timerSlot{idx: -1}}, rateTimer: lifeTimer{timerSlot: timerSlot{idx: -1}}}
		f.life.tokens = f.life.pol.burst()
		f.life.tokensAt = b.nowNanos()
	}
	return f.life
}

// SetPolicy replaces the policy of the function name at once: jobs queued
// or running keep their attempts and ordering keys, new limits apply to
// the next job handed out. With a store that keeps metadata the change is
// stored and outlives a restart, where it takes precedence over the config
// file until ResetPolicy. It returns before the change is on disk: call
// Durable before acknowledging it.
func (b *Broker) SetPolicy(name string, p Policy) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.setPolicyLocked(name, p)
}

func (b *Broker) setPolicyLocked(name string, p Policy) {
	b.life.policies[name] = p
	if f := b.functions[name]; f != nil {
		b.applyPolicyLocked(f)
	}
	b.queueMetaLocked(metaKey(metaPolicy, name), []byte(p.Format()))
}

// ResetPolicy ends a change made by SetPolicy: the function name follows
// its policy of the config file (Config.Policies) again, or the default
// policy if the file has none for it. The reset is stored like SetPolicy,
// so that the file's policy applies after a restart too.
func (b *Broker) ResetPolicy(name string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.resetPolicyLocked(name)
	b.queueMetaLocked(metaKey(metaPolicy, name), []byte(policyReset))
}

// policyReset is the stored value of a policy reset to the config file's.
const policyReset = "default"

// resetPolicyLocked makes the function name follow its policy of the
// config file, or the default policy.
func (b *Broker) resetPolicyLocked(name string) {
	if p, ok := b.cfg.Policies[name]; ok {
		b.life.policies[name] = p
	} else {
		delete(b.life.policies, name)
	}
	if f := b.functions[name]; f != nil {
		b.applyPolicyLocked(f)
		b.mayIdleLocked(f)
	}
}

// isResetLocked reports whether the function name follows the policy a
// reset gives it (the config file's, or the default).
func (b *Broker) isResetLocked(name string) bool {
	cur, ok := b.life.policies[name]
	want, configured := b.cfg.Policies[name]
	return ok == configured && cur == want
}

// loadStoredPolicy applies a policy changed at runtime before a restart.
// It runs at start, before the broker is used.
func (b *Broker) loadStoredPolicy(name, value string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.applyStoredPolicyLocked(name, value)
}

// applyStoredPolicyLocked makes a stored policy (or reset) the function's
// policy without storing it again.
func (b *Broker) applyStoredPolicyLocked(name, value string) {
	if value == policyReset {
		b.resetPolicyLocked(name)
		return
	}
	p := b.life.defaultPol
	for _, kv := range strings.Fields(value) {
		k, v, _ := strings.Cut(kv, "=")
		if err := p.Set(k, v); err != nil {
			b.log.Warn("broker: ignoring a stored policy setting", slog.String("function", name),
				slog.String("setting", kv), slog.String("error", err.Error()))
		}
	}
	b.life.policies[name] = p
	if f := b.functions[name]; f != nil {
		b.applyPolicyLocked(f)
	}
}

// Policy returns the policy in force for the function name.
func (b *Broker) Policy(name string) Policy {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.policyOf(name)
}

// DefaultPolicy returns the policy of functions without their own.
func (b *Broker) DefaultPolicy() Policy {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.life.defaultPol
}

// FunctionPolicy is one line of "show policy".
type FunctionPolicy struct {
	Name   string
	Policy Policy
	// Explicit is false for functions that follow the default policy.
	Explicit bool
	// Paused is set while the function hands out no jobs; PausedUntil is
	// the end of the pause, zero for "until resumed".
	Paused      bool
	PausedUntil time.Time
}

// Policies lists the policy of every known function and of every function
// with an explicit policy, sorted by name.
func (b *Broker) Policies() []FunctionPolicy {
	b.mu.Lock()
	defer b.mu.Unlock()
	seen := make(map[string]bool)
	var out []FunctionPolicy
	add := func(name string) {
		if seen[name] {
			return
		}
		seen[name] = true
		_, explicit := b.life.policies[name]
		fp := FunctionPolicy{Name: name, Policy: b.policyOf(name), Explicit: explicit}
		if f := b.functions[name]; f != nil && f.life != nil && f.life.paused {
			fp.Paused = true
			if f.life.pausedUntil != 0 {
				fp.PausedUntil = time.Unix(0, f.life.pausedUntil)
			}
		}
		out = append(out, fp)
	}
	for name := range b.functions {
		add(name)
	}
	for name := range b.life.policies {
		add(name)
	}
	sort.Slice(out, func(i, k int) bool { return out[i].Name < out[k].Name })
	return out
}

// initJobLifeLocked gives a new job its lifecycle state.
func (b *Broker) initJobLifeLocked(j *job, p *SubmitParams) {
	l := &jobLife{maxAttempts: int32(max(min(p.Attempts, 1<<31-1), -1)), timeout: p.Timeout,
		schedule: p.schedule, tick: p.tick}
	l.orderKey = p.OrderingKey
	if l.orderKey == "" && j.fn.life != nil {
		l.orderKey = j.fn.life.pol.orderingKey(p.Unique)
	}
	if l.orderKey != "" {
		b.fnLifeLocked(j.fn)
	}
	j.extra().life = l
}

func (b *Broker) recordLife(r *store.Job, j *job) {
	l := j.x.life
	switch j.state {
	case stateRetryWait:
		r.State = store.StateRetryWait
		r.NotBefore = l.notBefore
	case stateDead:
		r.State = store.StateDead
	case stateDone:
		r.State = store.StateDone
		r.Result = l.result
		// When the result expires, so that any server sharing the store can
		// expire it.
		r.NotBefore = j.x.timer.at
	}
	r.Attempts = l.attempts
	r.LastError = l.lastErr
	r.History = slices.Clone(l.history)
	r.FinishedAt = l.finishedAt
	r.OrderingKey = l.orderKey
	r.MaxAttempts = l.maxAttempts
	r.Timeout = int64(l.timeout)
	r.Schedule = l.schedule
	r.Tick = l.tick
}

// saveLocked writes a background job's new state through the committer.
// A job whose first write the committer has not taken yet needs nothing:
// that write takes the job as it is then.
func (b *Broker) saveLocked(j *job) {
	if !j.background || b.store == nil {
		return
	}
	if j.saveState() == saveQueued {
		b.mode.savePendingInsertLocked(j)
		return
	}
	b.pendingRetries = append(b.pendingRetries, b.record(j))
	b.kickCommitter()
}

// deleteStoredLocked deletes a background job from the store. Submitters
// still waiting for its first write are told it was accepted: it has ended
// (settleEndedLocked).
func (b *Broker) deleteStoredLocked(j *job) {
	b.settleEndedLocked(j)
	b.tierForgetLocked(j)
	if !j.background || b.store == nil {
		return
	}
	b.pendingDeletes = append(b.pendingDeletes, j.seq)
	b.kickCommitterLater()
}

// unlinkLifeLocked releases what a job leaving the live indexes held.
func (b *Broker) unlinkLifeLocked(j *job) {
	if j.x.life.orderKey != "" {
		b.releaseLineLocked(j)
	}
}

// dropFunctionLifeLocked forgets the lifecycle state of a dropped
// function, before its queues are emptied: blocked jobs are dropped with
// it, retained results expire. Dead letters stay (they are listed by
// name). The dropped jobs are cancelled by why.
func (b *Broker) dropFunctionLifeLocked(f *function, why string) {
	if f.life == nil {
		return
	}
	for _, line := range f.life.lines {
		for _, j := range slices.Clone(line.waiting) {
			j.failClients()
			b.dropLocked(j, why)
		}
	}
	for _, j := range f.life.done {
		b.removeTimerLocked(j)
		b.expireResultLocked(j)
	}
	b.removeLifeTimerLocked(&f.life.pauseTimer)
	b.removeLifeTimerLocked(&f.life.rateTimer)
}

// replayLifeLocked restores a stored job that carries lifecycle state. It
// reports false for plain queued jobs, which replay restores itself.
func (b *Broker) replayLifeLocked(r store.Job) bool {
	f := b.functions[r.Function]
	plain := r.State == store.StateQueued && r.Attempts == 0 && r.LastError == "" &&
		len(r.History) == 0 && r.OrderingKey == "" && r.MaxAttempts == 0 && r.Timeout == 0 &&
		r.Schedule == "" && (f == nil || f.life == nil) && !b.policyOf(r.Function).needsLife()
	if plain {
		return false
	}
	if r.State == store.StateDead && f == nil {
		// A dead letter does not make its function known ("status");
		// retrying it does.
		f = &function{name: r.Function}
	} else {
		f = b.function(r.Function)
	}
	j := storedJob(f, r)
	x := j.extra()
	l := &jobLife{attempts: r.Attempts, maxAttempts: r.MaxAttempts, timeout: time.Duration(r.Timeout),
		orderKey: r.OrderingKey, lastErr: r.LastError, history: r.History, result: r.Result,
		finishedAt: r.FinishedAt, schedule: r.Schedule, tick: r.Tick}
	x.life = l
	b.tierAdmitLocked(j, false)
	if r.Schedule != "" && r.Tick > b.life.replayTicks[r.Schedule] {
		b.life.replayTicks[r.Schedule] = r.Tick
	}
	now := b.nowNanos()
	switch r.State {
	case store.StateDead:
		b.addDeadLocked(j)
		return true
	case store.StateDone:
		ret := b.policyOf(r.Function).ResultRetention
		if ret <= 0 || nanosAfter(r.FinishedAt, ret) <= now {
			b.deleteStoredLocked(j)
			return true
		}
		b.addResultLocked(j, nanosAfter(r.FinishedAt, ret))
		return true
	}
	b.addLiveLocked(j)
	b.setUniqueLocked(j)
	if l.orderKey != "" {
		b.fnLifeLocked(f)
	}
	if r.State == store.StateRetryWait && r.NotBefore > now {
		l.notBefore = r.NotBefore
		b.setStateLocked(j, stateRetryWait)
		b.addTimerLocked(j, l.notBefore)
		if l.orderKey != "" {
			b.claimLineLocked(j)
		}
		return true
	}
	if l.orderKey != "" {
		// Placed once every retry-waiting head has claimed its line.
		b.setStateLocked(j, stateGone)
		b.life.replayOrdered = append(b.life.replayOrdered, j)
		return true
	}
	b.makeRunnableLocked(j, false)
	return true
}

func (b *Broker) finishReplayLocked() {
	for _, j := range b.life.replayOrdered {
		b.makeRunnableLocked(j, false)
	}
	b.life.replayOrdered = nil
}

// storedLife is the metadata loadLife read for startLife: the cron
// schedules' last ticks and the pauses.
type storedLife struct {
	ticks  map[string]int64
	pauses []storedPause
}

type storedPause struct {
	name  string
	until int64
}

// loadLife loads stored metadata: it applies the policies set at run time
// (policy, maxqueue) at once, and returns the cron ticks and pauses for
// startLife. Start calls it before the replay, which judges each stored
// job by its function's policy: a retained result replayed under the
// policy of the configuration alone would be taken for expired, and
// deleted, when result_retention was set at run time.
func (b *Broker) loadLife(ctx context.Context) (storedLife, error) {
	l := storedLife{ticks: make(map[string]int64)}
	if b.life.meta != nil {
		err := b.life.meta.LoadMeta(ctx, func(m store.Meta) error {
			if name, ok := strings.CutPrefix(m.Key, metaPolicy+"/"); ok {
				b.loadStoredPolicy(name, string(m.Value))
				return nil
			}
			if strings.HasPrefix(m.Key, metaBatch+"/") {
				return nil // loaded before the replay (loadBatchesLocked)
			}
			switch kind, name, value, ok := parseMeta(m); {
			case !ok:
				b.log.Warn("broker: ignoring unknown stored metadata", slog.String("key", m.Key))
			case kind == metaCron:
				l.ticks[name] = value
			case kind == metaPause:
				l.pauses = append(l.pauses, storedPause{name, value})
			}
			return nil
		})
		if err != nil {
			return storedLife{}, fmt.Errorf("broker: load metadata: %w", err)
		}
	} else if b.store != nil && (len(b.life.schedules) > 0) {
		b.log.Warn("broker: the store keeps no metadata; cron ticks are recovered from stored jobs only")
	}
	return l, nil
}

// startLife applies the pauses loadLife read and arms the cron schedules.
// Start calls it after the replay.
func (b *Broker) startLife(l storedLife) {
	ticks, pauses := l.ticks, l.pauses
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.nowNanos()
	for _, p := range pauses {
		if p.until != 0 && p.until <= now {
			b.queueMetaLocked(metaKey(metaPause, p.name), nil)
			continue
		}
		b.pauseLocked(b.function(p.name), p.until, false)
	}
	for _, s := range b.life.schedules {
		last := max(ticks[s.cfg.Name], b.life.replayTicks[s.cfg.Name])
		b.startScheduleLocked(s, last, now)
	}
	b.life.replayTicks = nil
}
