package pebble_test

import (
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
