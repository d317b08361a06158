package pebble

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// pebbleLogger hands Pebble's messages to the store's slog.Logger.
type pebbleLogger struct{ s *Store }

// Infof logs Pebble's informational messages at debug level.
func (l pebbleLogger) Infof(format string, args ...any) {
	l.s.log.Debug("pebble: " + fmt.Sprintf(format, args...))
}

// Errorf logs Pebble's errors, at most one line per format and period.
func (l pebbleLogger) Errorf(format string, args ...any) {
	l.s.logLimited(slog.LevelError, format, "pebble: "+fmt.Sprintf(format, args...))
}

// Fatalf is called by Pebble when it cannot go on, for instance when a
// write-ahead log or MANIFEST sync failed. Instead of exiting the process
// as Pebble's default logger does, it marks the store failed and panics
// with fatalError. When the call came from one of the store's methods,
// guard turns the panic into that method's error, so the broker can answer
// the submitter with an ERROR. When it came from one of Pebble's background
// goroutines (a flush or compaction), the panic ends the process after the
// log line has said why: restarting recovers from the data on disk.
func (l pebbleLogger) Fatalf(format string, args ...any) {
	err := &fatalError{msg: fmt.Sprintf(format, args...)}
	if !l.s.fail(err) {
		l.s.logLimited(slog.LevelError, "fatal", "pebble store: fatal storage error", slog.String("error", err.msg))
	}
	panic(err)
}

// fatalError is the panic value of Fatalf.
type fatalError struct{ msg string }

func (e *fatalError) Error() string { return e.msg }

// logLimited logs msg with the store's directory, unless a line of the
// same kind was logged less than a period ago; the next line that goes
// through says how many were suppressed. A failing disk makes Pebble
// retry its background work, and report each failure, many times a
// second.
func (s *Store) logLimited(level slog.Level, kind, msg string, attrs ...any) {
	n, ok := s.limiter.allow(kind)
	if !ok {
		return
	}
	attrs = append(attrs, slog.String("dir", s.dir))
	if n > 0 {
		attrs = append(attrs, slog.Int("suppressed", n))
	}
	s.log.Log(context.Background(), level, msg, attrs...)
}

// logLimiter lets one message of each kind through per period.
type logLimiter struct {
	period time.Duration
	now    func() time.Time

	// mu guards kinds.
	mu    sync.Mutex
	kinds map[string]*limitedKind
}

type limitedKind struct {
	next       time.Time // when the next line may go through
	suppressed int       // lines dropped since the last one logged
}

// allow reports whether a message of kind may be logged now and, if so,
// how many of its kind were suppressed since the last one.
func (l *logLimiter) allow(kind string) (suppressed int, ok bool) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.kinds == nil {
		l.kinds = map[string]*limitedKind{}
	}
	k := l.kinds[kind]
	if k == nil {
		if len(l.kinds) >= 1024 {
			clear(l.kinds) // bound the memory; kinds are format strings
		}
		k = &limitedKind{}
		l.kinds[kind] = k
	}
	if now.Before(k.next) {
		k.suppressed++
		return 0, false
	}
	n := k.suppressed
	k.suppressed = 0
	k.next = now.Add(l.period)
	return n, true
}
