package broker

import (
	"fmt"
	"log/slog"
	"strconv"
	"time"
)

// Pause stops handing out jobs of the function name until Resume or, when
// until is not zero, until that time. Submits are still accepted and jobs
// wait in their queues; running jobs finish. The pause is stored (when the
// store keeps metadata) and survives a restart. Pausing a paused function
// replaces its end time. The function is created if unknown. An until
// that is not after the broker's clock is refused with ErrPauseEnded, and
// leaves the function as it was. It returns before the pause is on disk:
// call Durable before acknowledging it.
func (b *Broker) Pause(name string, until time.Time) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	var at int64
	if !until.IsZero() {
		if !until.After(b.clock.Now()) {
			return fmt.Errorf("%w: %s", ErrPauseEnded, until.UTC().Format(time.RFC3339Nano))
		}
		at = timeNanos(until)
	}
	b.pauseLocked(b.function(name), at, true)
	return nil
}

// PauseFor pauses the function name for d by the broker's clock.
func (b *Broker) PauseFor(name string, d time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.pauseLocked(b.function(name), nanosAfter(b.clock.Now().UnixNano(), d), true)
}

func (b *Broker) pauseLocked(f *function, until int64, persist bool) {
	l := b.fnLifeLocked(f)
	l.paused = true
	l.pausedUntil = until
	if until != 0 {
		b.armLifeTimerLocked(&l.pauseTimer, until, func(now int64) {
			if l.paused && l.pausedUntil != 0 && l.pausedUntil <= now {
				b.resumeLocked(f, true)
			}
		})
	} else {
		b.removeLifeTimerLocked(&l.pauseTimer)
	}
	if persist {
		b.queueMetaLocked(metaKey(metaPause, f.name), strconv.AppendInt(nil, until, 10))
	}
	if until == 0 {
		b.log.Info("broker: function paused", slog.String("function", f.name))
	} else {
		b.log.Info("broker: function paused", slog.String("function", f.name),
			slog.Time("until", time.Unix(0, until)))
	}
}

// Resume lets a paused function hand out jobs again and wakes its
// sleeping workers. It reports false if the function was not paused. Like
// Pause, it returns before the change is on disk (Durable).
func (b *Broker) Resume(name string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	f := b.functions[name]
	if f == nil || f.life == nil || !f.life.paused {
		return false
	}
	b.resumeLocked(f, true)
	return true
}

// resumeLocked ends f's pause; persist deletes the stored pause (false
// when another server's resume is applied here).
func (b *Broker) resumeLocked(f *function, persist bool) {
	l := f.life
	l.paused = false
	l.pausedUntil = 0
	b.removeLifeTimerLocked(&l.pauseTimer)
	if persist {
		b.queueMetaLocked(metaKey(metaPause, f.name), nil)
	}
	b.log.Info("broker: function resumed", slog.String("function", f.name))
	b.wakeReadyLocked(f)
	b.mayIdleLocked(f)
}

// KnownFunction reports whether name is a function the broker knows: one
// it holds jobs or workers for, or held them for since it started (the
// "status" admin command lists it; "create function" makes one), or one
// with a policy of its own (from the configuration file or set at
// runtime). The front ends refuse to pause, resume or set the policy of
// an unknown name, so that a typo does not create a function nobody uses.
func (b *Broker) KnownFunction(name string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	_, policy := b.life.policies[name]
	return b.functions[name] != nil || policy
}
