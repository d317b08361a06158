package pebble_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/internal/store"
	"github.com/gearwork/gearwork/internal/store/pebble"
	"github.com/gearwork/gearwork/internal/testlog"
)

// faultFS is the OS file system with a switch that makes write-ahead log
// syncs or writes fail, for as long as it is on.
type faultFS struct {
	vfs.FS
	failSync   atomic.Bool
	failWrite  atomic.Bool
	failCreate atomic.Bool // creating (or recycling) a log file fails with EMFILE
	injected   atomic.Int64
}

func newFaultFS() *faultFS {
	f := &faultFS{}
	f.FS = errorfs.Wrap(vfs.Default, errorfs.InjectorFunc(func(op errorfs.Op) error {
		if !strings.HasSuffix(op.Path, ".log") {
			return nil
		}
		switch op.Kind {
		case errorfs.OpCreate, errorfs.OpReuseForWrite:
			if f.failCreate.Load() {
				f.injected.Add(1)
				return &os.PathError{Op: "open", Path: op.Path, Err: syscall.EMFILE}
			}
		case errorfs.OpFileSync, errorfs.OpFileSyncData, errorfs.OpFileSyncTo:
			if f.failSync.Load() {
				f.injected.Add(1)
				return errorfs.ErrInjected
			}
		case errorfs.OpFileWrite, errorfs.OpFileWriteAt:
			if f.failWrite.Load() {
				f.injected.Add(1)
				return errorfs.ErrInjected
			}
		}
		return nil
	}))
	return f
}

// openFaulty opens the store in dir on a file system whose faults the test
// arms, with opts and a logger whose output it returns.
func openFaulty(t *testing.T, ctx context.Context, dir string, opts pebble.Options) (*pebble.Store, *faultFS, *testlog.Buffer) {
	t.Helper()
	fs := newFaultFS()
	logs := &testlog.Buffer{}
	opts.FS, opts.Logger = fs, slog.New(slog.NewTextHandler(logs, nil))
	s, err := pebble.Open(ctx, dir, opts)
	require.NoError(t, err)
	return s, fs, logs
}

// reopen opens the store in dir again, on the OS file system, and returns
// every job it loads, in order. The store is closed again.
func reopen(t *testing.T, dir string) []store.Job {
	t.Helper()
	s, err := pebble.Open(context.Background(), dir, pebble.Options{Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	defer s.Close()
	var jobs []store.Job
	require.NoError(t, s.Load(context.Background(), func(j store.Job) error {
		j.Payload = bytes.Clone(j.Payload)
		jobs = append(jobs, j)
		return nil
	}))
	return jobs
}

func TestSyncFailureStopsWrites(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		arm  func(*faultFS)
	}{
		{"sync", func(f *faultFS) { f.failSync.Store(true) }},
		{"write", func(f *faultFS) { f.failWrite.Store(true) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			dir := filepath.Join(t.TempDir(), "data")
			s, fs, logs := openFaulty(t, ctx, dir, pebble.Options{})
			require.NoError(t, s.Save(ctx, []store.Job{{Seq: 1, Function: "f", Payload: []byte("one")}}))

			tc.arm(fs)
			err := s.Save(ctx, []store.Job{{Seq: 2, Function: "f", Payload: []byte("two")}})
			require.Error(t, err, "a save whose log write or sync failed must fail")
			require.Positive(t, fs.injected.Load())
			require.Error(t, s.Err())

			// The disk is fine again, but the store must not trust it.
			fs.failSync.Store(false)
			fs.failWrite.Store(false)
			err = s.Save(ctx, []store.Job{{Seq: 3, Function: "f"}})
			require.ErrorIs(t, err, store.ErrFailed)
			require.ErrorIs(t, s.Delete(ctx, []uint64{1}), store.ErrFailed)
			require.Contains(t, logs.String(), "refusing every further write")
			_ = s.Close()

			// A restart recovers what was synced before the failure.
			var seqs []uint64
			for _, j := range reopen(t, dir) {
				seqs = append(seqs, j.Seq)
			}
			require.Contains(t, seqs, uint64(1))
			require.NotContains(t, seqs, uint64(3))
		})
	}
}

// TestLogCreateFailure makes the creation of a new write-ahead log fail, as
// running out of file descriptors does: the save that needed the new log
// fails, later writes are refused, the process lives on (Pebble itself
// panics there with its database mutex released, which would end the
// process with "sync: unlock of unlocked mutex"), Close returns, and a
// restart recovers what was synced before.
func TestLogCreateFailure(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "data")
	s, fs, logs := openFaulty(t, ctx, dir, pebble.Options{MemTableSize: 256 << 10})
	payload := bytes.Repeat([]byte("x"), 1000)
	seq := uint64(0)
	save := func() error {
		jobs := make([]store.Job, 20)
		for i := range jobs {
			seq++
			jobs[i] = store.Job{Seq: seq, Handle: fmt.Sprintf("H:x:%d", seq), Function: "f", Payload: payload}
		}
		return s.Save(ctx, jobs)
	}
	require.NoError(t, save())
	synced := seq

	fs.failCreate.Store(true)
	var err error
	for i := 0; err == nil; i++ {
		// A 256 KiB memtable fills, and the log rotates, within 13 saves.
		require.Less(t, i, 1000, "no save ever needed a new log")
		if err = save(); err == nil {
			synced = seq
		}
	}
	require.Positive(t, fs.injected.Load())
	t.Logf("reported: %v", err)
	require.ErrorIs(t, save(), store.ErrFailed)
	fs.failCreate.Store(false)
	require.ErrorIs(t, save(), store.ErrFailed, "the store must not trust the disk again before a restart")
	_ = s.Close()
	require.Contains(t, logs.String(), "refusing every further write")

	jobs := reopen(t, dir)
	for i, j := range jobs {
		require.Equal(t, uint64(i+1), j.Seq)
	}
	require.GreaterOrEqual(t, uint64(len(jobs)), synced, "every acknowledged save survives")
}

// spaceFS reports a fixed amount of free space.
type spaceFS struct {
	vfs.FS
	avail uint64
}

func (f spaceFS) GetDiskUsage(string) (vfs.DiskUsage, error) {
	return vfs.DiskUsage{AvailBytes: f.avail, TotalBytes: 1 << 30, UsedBytes: 1<<30 - f.avail}, nil
}

// storeWithLog writes jobs that stay in the write-ahead log (the memtable
// is never flushed), so that the next open must write them into a table.
func storeWithLog(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "data")
	s, err := pebble.Open(context.Background(), dir, pebble.Options{Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	for i := range 10 {
		jobs := make([]store.Job, 50)
		for k := range jobs {
			q := uint64(i*50 + k + 1)
			jobs[k] = store.Job{Seq: q, Handle: fmt.Sprintf("H:x:%d", q), Function: "f", Payload: []byte(strings.Repeat("p", 500))}
		}
		require.NoError(t, s.Save(context.Background(), jobs))
	}
	require.NoError(t, s.Close())
	return dir
}

// TestOpenOnFullDisk starts on a disk too full to write the replayed log
// into a table, which made Pebble's Open retry forever: Open must fail, at
// once and with a clear error, and log little.
func TestOpenOnFullDisk(t *testing.T) {
	t.Parallel()
	t.Run("space check", func(t *testing.T) {
		t.Parallel()
		dir := storeWithLog(t)
		_, err := pebble.Open(context.Background(), dir, pebble.Options{FS: spaceFS{FS: vfs.Default, avail: 4096},
			Logger: slog.New(slog.DiscardHandler)})
		require.ErrorIs(t, err, pebble.ErrNoSpace)
		require.Contains(t, err.Error(), dir)
		require.Contains(t, err.Error(), "4096 bytes free")
		t.Logf("reported: %v", err)
	})
	t.Run("table writes fail", func(t *testing.T) {
		t.Parallel()
		dir := storeWithLog(t)
		var full atomic.Bool
		full.Store(true)
		fs := errorfs.Wrap(vfs.Default, errorfs.InjectorFunc(func(op errorfs.Op) error {
			if full.Load() && strings.HasSuffix(op.Path, ".sst") && (op.Kind == errorfs.OpFileWrite || op.Kind == errorfs.OpCreate) {
				return &os.PathError{Op: "write", Path: op.Path, Err: syscall.ENOSPC}
			}
			return nil
		}))
		var logs testlog.Buffer
		_, err := pebble.Open(context.Background(), dir, pebble.Options{FS: fs, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
		require.ErrorIs(t, err, pebble.ErrNoSpace)
		require.Contains(t, err.Error(), dir)
		t.Logf("reported: %v", err)
		// One line for the first failure; the rest wait for the period.
		require.Equal(t, 1, strings.Count(logs.String(), "level=ERROR"), logs.String())
		full.Store(false)
		waitReleased(t, dir)
	})
	t.Run("context ends", func(t *testing.T) {
		t.Parallel()
		dir := storeWithLog(t)
		entered := make(chan struct{}, 1)
		release := make(chan struct{})
		fs := errorfs.Wrap(vfs.Default, errorfs.InjectorFunc(func(op errorfs.Op) error {
			if strings.HasSuffix(op.Path, ".sst") && op.Kind == errorfs.OpCreate {
				select {
				case entered <- struct{}{}:
				default:
				}
				<-release // a disk that does not answer
			}
			return nil
		}))
		ctx, cancel := context.WithCancel(context.Background())
		go func() {
			<-entered
			cancel()
		}()
		_, err := pebble.Open(ctx, dir, pebble.Options{FS: fs, Logger: slog.New(slog.DiscardHandler)})
		require.ErrorIs(t, err, context.Canceled)
		close(release)
		waitReleased(t, dir)
	})
}

// waitReleased waits until an abandoned open has finished and closed the
// database, so that a new one can lock the directory, and checks that no
// job was lost.
func waitReleased(t *testing.T, dir string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		s, err := pebble.Open(context.Background(), dir, pebble.Options{Logger: slog.New(slog.DiscardHandler)})
		if err == nil {
			n := 0
			require.NoError(t, s.Load(context.Background(), func(store.Job) error { n++; return nil }))
			require.NoError(t, s.Close())
			require.Equal(t, 500, n)
			return
		}
		require.True(t, time.Now().Before(deadline), "the abandoned open never released the directory: %v", err)
		time.Sleep(10 * time.Millisecond)
	}
}

// After a failed write, reads of job records go on working for records
// that were fsynced; while records were written without an fsync, reads
// of records answer ErrFailed (they may not be on disk) instead of
// writing to the broken log: no read hangs, and Close returns.
func TestRecordReadsAfterFailure(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	job := func(q uint64) store.Job {
		return store.Job{Seq: q, Handle: fmt.Sprintf("H:x:%d", q), Function: "f", Payload: []byte("p")}
	}
	rec := func(q uint64) store.Record {
		return store.Record{Seq: q, Function: "f", State: "complete", Finished: int64(q), Data: []byte("r")}
	}
	for _, unsynced := range []bool{false, true} {
		t.Run(fmt.Sprintf("unsynced=%v", unsynced), func(t *testing.T) {
			t.Parallel()
			s, fs, _ := openFaulty(t, ctx, filepath.Join(t.TempDir(), "data"), pebble.Options{})
			require.NoError(t, s.Save(ctx, []store.Job{job(1), job(2)}))
			require.NoError(t, s.EndJobs(ctx, []uint64{1}, []store.Record{rec(1)}, nil))
			_, err := s.Record(ctx, 1) // fsyncs record 1
			require.NoError(t, err)
			if unsynced {
				require.NoError(t, s.EndJobs(ctx, []uint64{2}, []store.Record{rec(2)}, nil))
			}
			fs.failSync.Store(true)
			require.Error(t, s.Save(ctx, []store.Job{job(3)}))
			fs.failSync.Store(false)
			for range 3000 { // more than a block of the log holds of empty syncs
				_, err = s.Record(ctx, 1)
				if unsynced {
					require.ErrorIs(t, err, store.ErrFailed)
				} else {
					require.NoError(t, err)
				}
			}
			_, err = s.Record(ctx, 99)
			_, err2 := s.RecordCounts(ctx)
			if unsynced {
				require.ErrorIs(t, err, store.ErrFailed)
				require.ErrorIs(t, err2, store.ErrFailed)
			} else {
				require.ErrorIs(t, err, store.ErrNotFound)
				require.NoError(t, err2)
			}
			closed := make(chan error, 1)
			go func() { closed <- s.Close() }()
			select {
			case <-closed:
			case <-time.After(time.Minute):
				t.Fatal("Close hangs after the failure")
			}
		})
	}
}
