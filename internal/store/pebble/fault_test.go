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
			s, err = pebble.Open(ctx, dir, pebble.Options{})
			require.NoError(t, err)
			defer s.Close()
			var seqs []uint64
			require.NoError(t, s.Load(ctx, func(j store.Job) error {
				seqs = append(seqs, j.Seq)
				return nil
			}))
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

	s, err = pebble.Open(ctx, dir, pebble.Options{Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	defer s.Close()
	n := uint64(0)
	require.NoError(t, s.Load(ctx, func(j store.Job) error {
		n++
		require.Equal(t, n, j.Seq)
		return nil
	}))
	require.GreaterOrEqual(t, n, synced, "every acknowledged save survives")
}
