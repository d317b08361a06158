package pebble_test

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/internal/store"
	"github.com/gearwork/gearwork/internal/store/pebble"
)

// cloneOnCleanStopFS clones its crashable file system as a SIGKILL would
// leave it (everything written so far, synced or not) at the first write
// to a file whose name holds the record of a clean stop's name.
type cloneOnCleanStopFS struct {
	vfs.FS
	mem   *vfs.MemFS
	clone *vfs.MemFS
}

func (fs *cloneOnCleanStopFS) Create(name string, category vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := fs.FS.Create(name, category)
	if err != nil || !strings.Contains(name, pebble.CleanStopFile) {
		return f, err
	}
	return &cloneOnWriteFile{File: f, fs: fs}, nil
}

type cloneOnWriteFile struct {
	vfs.File
	fs *cloneOnCleanStopFS
}

func (f *cloneOnWriteFile) Write(p []byte) (int, error) {
	if f.fs.clone == nil {
		f.fs.clone = f.fs.mem.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: 100,
			RNG: rand.New(rand.NewPCG(1, 2))}) //nolint:gosec // test randomness
	}
	return f.File.Write(p)
}

// TestKilledWhileRecordingACleanStop kills the store (a copy of its files
// as they are) as Close begins to write the record of the clean stop: the
// next start must find its jobs, not a record cut short that it takes for
// a damaged directory.
func TestKilledWhileRecordingACleanStop(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	quiet := slog.New(slog.DiscardHandler)
	mem := vfs.NewCrashableMem()
	fs := &cloneOnCleanStopFS{FS: mem, mem: mem}
	const dir = "/data"
	s, err := pebble.Open(ctx, dir, pebble.Options{FS: fs, Logger: quiet})
	require.NoError(t, err)
	require.NoError(t, s.Save(ctx, []store.Job{{Seq: 1, Function: "f", Payload: []byte("keep me"), Priority: 1}}))
	require.NoError(t, s.Close())
	require.NotNil(t, fs.clone, "Close wrote no record of its clean stop")

	s, err = pebble.Open(ctx, dir, pebble.Options{FS: fs.clone, Logger: quiet})
	require.NoError(t, err, "the start after a kill while the record of a clean stop was written")
	var jobs []store.Job
	require.NoError(t, s.Load(ctx, func(j store.Job) error {
		jobs = append(jobs, j)
		return nil
	}))
	require.NoError(t, s.Close())
	require.Len(t, jobs, 1)
	require.Equal(t, "keep me", string(jobs[0].Payload))

	// A clean stop after that start is recorded, and checked, as before.
	s, err = pebble.Open(ctx, dir, pebble.Options{FS: fs.clone, Logger: quiet})
	require.NoError(t, err, "the start after a clean stop")
	require.NoError(t, s.Close())
}
