package pebble

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"syscall"
	"time"

	pebbledb "github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// Pebble retries a failed flush at once, forever (see the TODO in
// DB.flush), and Open waits for the flush of the log it replayed: on a full
// disk it never returns, burns a core and reports the same error
// thousands of times a second. The store therefore
//
//   - checks the free space before it opens a directory (checkSpace),
//   - slows every retry down after consecutive failures (backOff, called
//     by Pebble's flush goroutine with Pebble's mutex held, so the wait is
//     short),
//   - gives up opening after openFailureLimit consecutive failures, or
//     when ctx ends (a SIGTERM during a start that cannot finish), and
//     leaves the opening to finish or spin in the background: the caller
//     is expected to exit.
const (
	openFailureLimit = 8
	maxRetryDelay    = time.Second
)

// ErrNoSpace is wrapped by Open's error when the file system holding the
// directory has too little space to start.
var ErrNoSpace = errors.New("not enough free disk space")

// backgroundError logs a failure of Pebble's background work and slows
// its retries down.
func (s *Store) backgroundError(err error) {
	s.logLimited(slog.LevelError, "background", "pebble store: background error", slog.String("error", err.Error()))
	n := s.bgFailures.Add(1)
	if n >= openFailureLimit {
		select {
		case s.openFailed <- err:
		default:
		}
	}
	time.Sleep(min(time.Duration(n)*10*time.Millisecond, maxRetryDelay))
}

// backgroundOK resets the count of consecutive failures.
func (s *Store) backgroundOK(err error) {
	if err == nil {
		s.bgFailures.Store(0)
	}
}

// openDB opens the Pebble database, giving up when ctx ends or the
// background work keeps failing while it opens. When it fails it releases
// lock, the directory's lock that po holds: at once, or, when it gives up
// on an open under way, once that open ended and its database is closed.
func (s *Store) openDB(ctx context.Context, po *pebbledb.Options, lock io.Closer) (*pebbledb.DB, error) {
	type opened struct {
		db  *pebbledb.DB
		err error
	}
	done := make(chan opened, 1)
	go func() {
		var db *pebbledb.DB
		err := guard(func() error {
			var err error
			db, err = pebbledb.Open(s.dir, po)
			return err
		})
		done <- opened{db, err}
	}()
	abandon := func(err error) (*pebbledb.DB, error) {
		go func() {
			if r := <-done; r.db != nil {
				_ = guard(r.db.Close)
			}
			_ = lock.Close() // once nothing uses the directory
		}()
		return nil, err
	}
	select {
	case r := <-done:
		if r.err != nil {
			_ = lock.Close()
		}
		return r.db, r.err
	case <-ctx.Done():
		return abandon(fmt.Errorf("gave up opening: %w", ctx.Err()))
	case err := <-s.openFailed:
		if isNoSpace(err) {
			err = fmt.Errorf("%w: %w", ErrNoSpace, err)
		}
		return abandon(fmt.Errorf("gave up after %d failed attempts to write the replayed log into a table: %w", openFailureLimit, err))
	}
}

func isNoSpace(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) || strings.Contains(err.Error(), "no space left")
}

// checkSpace refuses to open dir when its file system has less free space
// than the store needs to start: opening writes the jobs of the logs it
// replays into a new table, plus a few small files.
func checkSpace(fs vfs.FS, dir string) error {
	names, err := fs.List(dir)
	if err != nil {
		return nil //nolint:nilerr // a new directory: Open reports an unusable one itself
	}
	need := uint64(1 << 20)
	for _, name := range names {
		if !isLogFile(name) {
			continue
		}
		if fi, err := fs.Stat(fs.PathJoin(dir, name)); err == nil {
			need += uint64(fi.Size())
		}
	}
	du, err := fs.GetDiskUsage(dir)
	if err != nil || du.TotalBytes == 0 {
		return nil //nolint:nilerr // unknown: let Open try
	}
	if du.AvailBytes < need {
		return fmt.Errorf("%w: %d bytes free on the file system of the directory, and starting needs about %d "+
			"(the log to replay and a few small files); free some space there, or move the directory to a larger file system",
			ErrNoSpace, du.AvailBytes, need)
	}
	return nil
}
