package pebble

import (
	"fmt"
	"log/slog"
)

// pebbleLogger hands Pebble's messages to the store's slog.Logger.
type pebbleLogger struct{ s *Store }

// Infof logs Pebble's informational messages at debug level.
func (l pebbleLogger) Infof(format string, args ...any) {
	l.s.log.Debug("pebble: " + fmt.Sprintf(format, args...))
}

// Errorf logs Pebble's errors.
func (l pebbleLogger) Errorf(format string, args ...any) {
	l.s.log.Error("pebble: "+fmt.Sprintf(format, args...), slog.String("dir", l.s.dir))
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
		l.s.log.Error("pebble store: fatal storage error", slog.String("dir", l.s.dir), slog.String("error", err.msg))
	}
	panic(err)
}

// fatalError is the panic value of Fatalf.
type fatalError struct{ msg string }

func (e *fatalError) Error() string { return e.msg }
