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

// hookOnCleanStopFS calls hook once, when the record of a clean stop is
// about to be written.
type hookOnCleanStopFS struct {
	vfs.FS
	hook func()
}

func (fs *hookOnCleanStopFS) Create(name string, category vfs.DiskWriteCategory) (vfs.File, error) {
	if h := fs.hook; h != nil && strings.Contains(name, pebble.CleanStopFile) {
		fs.hook = nil
		h()
	}
	return fs.FS.Create(name, category)
}

// TestSecondStoreWhileTheFirstStops opens a second store on the directory
// while the first one closes, just before it records its clean stop. The
// second must not open then: it would take over (and recycle) the logs
// the record is about, and once it died without a clean stop of its own
// the next start would find the recorded logs changed and refuse the
// directory as damaged. Whenever the second store opens, a start after it
// died must succeed and find its jobs.
func TestSecondStoreWhileTheFirstStops(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	quiet := slog.New(slog.DiscardHandler)
	mem := vfs.NewCrashableMem()
	const dir = "/data"
	fs := &hookOnCleanStopFS{FS: mem}
	a, err := pebble.Open(ctx, dir, pebble.Options{FS: fs, Logger: quiet})
	require.NoError(t, err)
	require.NoError(t, a.Save(ctx, []store.Job{{Seq: 1, Function: "f", Payload: []byte("one"), Priority: 1}}))

	var b *pebble.Store
	var bErr error
	fs.hook = func() { b, bErr = pebble.Open(ctx, dir, pebble.Options{FS: mem, Logger: quiet}) }
	require.NoError(t, a.Close())
	if bErr != nil {
		require.Nil(t, b)
		t.Logf("the second store, opened while the first was closing: %v", bErr)
		b, err = pebble.Open(ctx, dir, pebble.Options{FS: mem, Logger: quiet})
		require.NoError(t, err, "the second store, once the first closed")
	}
	require.NoError(t, b.Save(ctx, []store.Job{{Seq: 2, Function: "f", Payload: []byte("two"), Priority: 1}}))
	// The second store dies (SIGKILL: everything written stays).
	killed := mem.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: 100, RNG: rand.New(rand.NewPCG(3, 4))}) //nolint:gosec // test randomness
	require.NoError(t, b.Close())

	c, err := pebble.Open(ctx, dir, pebble.Options{FS: killed, Logger: quiet})
	require.NoError(t, err, "the start after the second store died")
	var payloads []string
	require.NoError(t, c.Load(ctx, func(j store.Job) error {
		payloads = append(payloads, string(j.Payload))
		return nil
	}))
	require.NoError(t, c.Close())
	require.Equal(t, []string{"one", "two"}, payloads)
}
