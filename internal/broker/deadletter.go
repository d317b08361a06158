package broker

import (
	"cmp"
	"context"
	"log/slog"
	"slices"
	"time"

	"github.com/gearwork/gearwork/internal/store"
)

// deadLocked keeps a background job that is out of attempts as a dead
// letter (or drops it when its policy keeps none). The job must be in
// stateGone, outside every queue and timer. Waiting clients must have been
// told already.
func (b *Broker) deadLocked(j *job, now int64) {
	x := j.extra()
	if x.life == nil {
		x.life = &jobLife{attempts: j.retries, lastErr: outcomeVanished}
	}
	l := x.life
	l.finishedAt = now
	l.notBefore = 0
	b.statDeadLocked(j)
	if j.background {
		b.recordEndLocked(j, jobEnd{state: FinalDead})
	} else {
		// A foreground job out of attempts failed for its client.
		b.recordEndLocked(j, jobEnd{state: FinalFailed})
	}
	b.setStateLocked(j, stateGone)
	b.unlinkLocked(j)
	if !j.background || b.policyOf(j.fn.name).maxDeadLetters() == 0 {
		b.log.Warn("broker: dropped failed job", slog.String("handle", b.Handle(j.seq)),
			slog.String("function", j.fn.name), slog.String("error", l.lastErr))
		b.deleteStoredLocked(j)
		return
	}
	b.mode.deadLocked(j)
	b.log.Warn("broker: job moved to dead letters", slog.String("handle", b.Handle(j.seq)),
		slog.String("function", j.fn.name), slog.Int("attempts", int(l.attempts)),
		slog.String("error", l.lastErr))
}

// addDeadLocked indexes a dead letter, purging the function's oldest ones
// beyond its limit.
func (b *Broker) addDeadLocked(j *job) {
	b.setStateLocked(j, stateDead)
	b.tierDeadLocked(j)
	b.life.dead[j.seq] = j
	name := j.fn.name
	list := b.life.deadLists[name]
	if list == nil {
		list = &jobList{}
		b.life.deadLists[name] = list
	}
	list.pushBack(j)
	limit := b.policyOf(name).maxDeadLetters()
	for list.n > limit {
		old := list.popFront()
		delete(b.life.dead, old.seq)
		b.setStateLocked(old, stateGone)
		b.deleteStoredLocked(old)
	}
	if list.n == 0 {
		delete(b.life.deadLists, name)
	}
}

func (b *Broker) removeDeadLocked(j *job) {
	delete(b.life.dead, j.seq)
	if list := b.life.deadLists[j.fn.name]; list != nil {
		list.remove(j)
		if list.n == 0 {
			delete(b.life.deadLists, j.fn.name)
		}
	}
	b.setStateLocked(j, stateGone)
}

// DeadLetter is a job that ran out of attempts.
type DeadLetter struct {
	Seq uint64
	// Handle is the job's handle as its submitter got it (in shared mode,
	// with the prefix of the server that took the submit).
	Handle   string
	Function string
	// Unique is the unique as the client sent it.
	Unique   string
	Priority Priority
	// Payload must not be modified.
	Payload  []byte
	Attempts uint32
	// LastError is the last WORK_EXCEPTION data, a failed run's last
	// warning, or "failed", "exception", "timed out", "worker vanished",
	// "lease ran out".
	LastError string
	// History lists the most recent attempts, oldest first.
	History []store.Attempt
	DiedAt  time.Time
}

func deadLetterOf(j *job, handle string) DeadLetter {
	l := j.x.life
	return DeadLetter{Seq: j.seq, Handle: handle, Function: j.fn.name, Unique: j.displayUnique(), Priority: j.priority,
		Payload: j.payload, Attempts: l.attempts, LastError: l.lastErr,
		History: slices.Clone(l.history), DiedAt: time.Unix(0, l.finishedAt)}
}

// DeadLetters lists the dead letters of a function ("" for all), by
// function name and then in the order they died, at most limit of them
// (limit ≤ 0: all). In shared mode it lists those of every server sharing
// the store, from the store.
func (b *Broker) DeadLetters(ctx context.Context, function string, limit int) ([]DeadLetter, error) {
	return b.mode.deadLetters(ctx, function, limit)
}

func (b *Broker) deadLetters(function string) []DeadLetter {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []DeadLetter
	for name, list := range b.life.deadLists {
		if function != "" && name != function {
			continue
		}
		for j := list.head; j != nil; j = j.next {
			out = append(out, deadLetterOf(j, b.Handle(j.seq)))
		}
	}
	slices.SortStableFunc(out, func(a, c DeadLetter) int {
		return cmp.Compare(a.Function, c.Function)
	})
	return out
}

// DeadLetterByHandle returns one dead letter; ok is false when the handle
// names none.
func (b *Broker) DeadLetterByHandle(ctx context.Context, handle []byte) (dl DeadLetter, ok bool, err error) {
	seq, ok := b.ParseHandle(handle)
	if !ok {
		return dl, false, nil
	}
	return b.mode.deadLetter(ctx, seq)
}

// RetryDeadLetter queues a dead letter again, with the same handle and a
// fresh count of attempts (its history is kept). It returns ErrJobNotFound
// for a handle that is not a dead letter. A retried job whose unique is in
// use by a live job runs without joining that job's coalescing. In shared
// mode any server may run it.
func (b *Broker) RetryDeadLetter(ctx context.Context, handle []byte) error {
	return b.oneDeadLetter(ctx, handle, b.mode.retryDead)
}

// oneDeadLetter applies action (the mode's retryDead or purgeDead) to the
// dead letter named by handle and waits for the change to be durable. It
// returns ErrJobNotFound when the handle names no dead letter.
func (b *Broker) oneDeadLetter(ctx context.Context, handle []byte, action func(ctx context.Context, seq uint64, function string) (int, error)) error {
	seq, ok := b.ParseHandle(handle)
	if !ok {
		return ErrJobNotFound
	}
	n, err := action(ctx, seq, "")
	if err == nil && n == 0 {
		err = ErrJobNotFound
	}
	if err != nil {
		return err
	}
	return b.Durable(ctx)
}

// RetryDeadLetters queues every dead letter of a function again and
// returns how many. Like every method here that changes stored state, it
// returns once the change is durable (Durable).
func (b *Broker) RetryDeadLetters(ctx context.Context, function string) (int, error) {
	if function == "" {
		return 0, nil
	}
	return b.durableCount(ctx)(b.mode.retryDead(ctx, 0, function))
}

// durableCount waits for the change that an action counted to be durable
// when there was one.
func (b *Broker) durableCount(ctx context.Context) func(int, error) (int, error) {
	return func(n int, err error) (int, error) {
		if err != nil || n == 0 {
			return n, err
		}
		if err := b.Durable(ctx); err != nil {
			return 0, err
		}
		return n, nil
	}
}

func (b *Broker) retryDeadLocked(j *job) {
	b.removeDeadLocked(j)
	f := b.function(j.fn.name)
	j.fn = f
	l := j.x.life
	l.attempts = 0
	l.finishedAt = 0
	l.startedAt = 0
	b.tierReviveLocked(j)
	// It lives again: its record goes, and it will end with a new one.
	j.flags &^= jobRecorded
	if j.x.batch != nil {
		b.batchReviveLocked(j)
	}
	if b.records != nil {
		b.forgetStoredLocked(j.seq)
	} else if r := b.hist.bySeq.get(j.seq); r != nil {
		b.dropRecordLocked(r)
	}
	b.addLiveLocked(j)
	b.claimUniqueLocked(j)
	b.queueLocked(j, true)
	b.saveLocked(j)
	b.log.Info("broker: dead letter queued again", slog.String("handle", b.Handle(j.seq)),
		slog.String("function", f.name))
}

// PurgeDeadLetter deletes one dead letter. It returns ErrJobNotFound when
// the handle names no dead letter.
func (b *Broker) PurgeDeadLetter(ctx context.Context, handle []byte) error {
	return b.oneDeadLetter(ctx, handle, b.mode.purgeDead)
}

// PurgeDeadLetters deletes every dead letter of a function ("" for every
// function) and returns how many.
func (b *Broker) PurgeDeadLetters(ctx context.Context, function string) (int, error) {
	return b.durableCount(ctx)(b.mode.purgeDead(ctx, 0, function))
}

func (b *Broker) purgeDeadLocked(j *job) {
	b.removeDeadLocked(j)
	b.deleteStoredLocked(j)
}

// withDeadLetter calls fn, under b.mu, with dead letter seq. It reports
// false, without calling fn, when there is none.
func (b *Broker) withDeadLetter(seq uint64, fn func(j *job)) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	j := b.life.dead[seq]
	if j == nil {
		return false
	}
	fn(j)
	return true
}

// takeDeadLetters calls take, under b.mu, with each dead letter of
// function, oldest first, and returns how many. take must remove the job
// from the dead letters.
func (b *Broker) takeDeadLetters(function string, take func(j *job)) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	list := b.life.deadLists[function]
	if list == nil {
		return 0
	}
	n := 0
	for j := list.head; j != nil; j = list.head {
		take(j)
		n++
	}
	return n
}
