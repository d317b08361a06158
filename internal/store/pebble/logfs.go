package pebble

import (
	"fmt"
	"io/fs"
	"strings"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// logGuardFS wraps the store's file system so that a failure to create a
// write-ahead log file never reaches Pebble as an error. Pebble creates the
// next log while it holds its database mutex released and the commit
// pipeline's mutex held, and panics when that fails (DB.rotateWAL): the
// deferred unlock of a caller then ends the process with "fatal error:
// sync: unlock of unlocked mutex", which no recover catches. Running out of
// file descriptors is enough to get there.
//
// Instead, the failure marks the store failed (failFunc) and Pebble gets a
// log file whose every write and sync fails with the original error: the
// commit that needed the new log fails through Pebble's ordinary error
// path, later writes are refused by the store, and a restart recovers what
// was synced before.
type logGuardFS struct {
	vfs.FS
	failFunc func(error)
}

func isLogFile(name string) bool { return strings.HasSuffix(name, ".log") }

// Create creates a file; for a write-ahead log it never fails.
func (g logGuardFS) Create(name string, category vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := g.FS.Create(name, category)
	if err != nil && isLogFile(name) {
		return g.broken(name, err), nil
	}
	return f, err
}

// ReuseForWrite recycles an old write-ahead log as a new one; it never
// fails for a log.
func (g logGuardFS) ReuseForWrite(oldname, newname string, category vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := g.FS.ReuseForWrite(oldname, newname, category)
	if err != nil && isLogFile(newname) {
		return g.broken(newname, err), nil
	}
	return f, err
}

func (g logGuardFS) broken(name string, err error) vfs.File {
	err = fmt.Errorf("cannot create the write-ahead log %s: %w", g.FS.PathBase(name), err)
	g.failFunc(err)
	return brokenFile{name: g.FS.PathBase(name), err: err}
}

// brokenFile stands for a write-ahead log that could not be created: every
// operation that would reach the disk fails with err.
type brokenFile struct {
	name string
	err  error
}

func (f brokenFile) Close() error                       { return nil }
func (f brokenFile) Read([]byte) (int, error)           { return 0, f.err }
func (f brokenFile) ReadAt([]byte, int64) (int, error)  { return 0, f.err }
func (f brokenFile) Write([]byte) (int, error)          { return 0, f.err }
func (f brokenFile) WriteAt([]byte, int64) (int, error) { return 0, f.err }
func (f brokenFile) Preallocate(int64, int64) error     { return nil }
func (f brokenFile) Sync() error                        { return f.err }
func (f brokenFile) SyncData() error                    { return f.err }
func (f brokenFile) SyncTo(int64) (bool, error)         { return false, f.err }
func (f brokenFile) Prefetch(int64, int64) error        { return nil }
func (f brokenFile) Fd() uintptr                        { return vfs.InvalidFd }
func (f brokenFile) Stat() (vfs.FileInfo, error)        { return brokenInfo(f), nil }

// brokenInfo is an empty file's information: Pebble stats a recycled log
// for its size.
type brokenInfo brokenFile

func (i brokenInfo) Name() string           { return i.name }
func (i brokenInfo) Size() int64            { return 0 }
func (i brokenInfo) Mode() fs.FileMode      { return 0o644 }
func (i brokenInfo) ModTime() time.Time     { return time.Time{} }
func (i brokenInfo) IsDir() bool            { return false }
func (i brokenInfo) Sys() any               { return nil }
func (i brokenInfo) DeviceID() vfs.DeviceID { return vfs.DeviceID{} }

// Unwrap returns the wrapped file system.
func (g logGuardFS) Unwrap() vfs.FS { return g.FS }
