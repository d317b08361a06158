package pebble_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"testing"

	pebbledb "github.com/cockroachdb/pebble/v2"
	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/internal/store"
	"github.com/gearwork/gearwork/internal/store/pebble"
)

// damagedJobs is how many jobs makeStore writes.
const damagedJobs = 4000

// makeStore writes jobs 1..damagedJobs into a new store in dir with a small
// memtable, so that the directory holds sstables as well as a log.
func makeStore(t *testing.T, dir string) {
	t.Helper()
	ctx := context.Background()
	quiet := slog.New(slog.DiscardHandler)
	s, err := pebble.Open(ctx, dir, pebble.Options{MemTableSize: 256 << 10, Logger: quiet})
	require.NoError(t, err)
	for i := range damagedJobs / 100 {
		jobs := make([]store.Job, 100)
		for k := range jobs {
			q := uint64(i*100 + k + 1)
			jobs[k] = store.Job{Seq: q, Handle: fmt.Sprintf("H:x:%d", q), Function: "f", Payload: fmt.Appendf(nil, "%0200d", q)}
		}
		require.NoError(t, s.Save(ctx, jobs))
	}
	require.NoError(t, s.Close())
}

// files returns the paths in dir matching pattern, failing if none does.
func files(t *testing.T, dir, pattern string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, pattern))
	require.NoError(t, err)
	require.NotEmpty(t, m, "no %s in %s", pattern, dir)
	return m
}

// garble flips the bits of n bytes in the middle of the file.
func garble(t *testing.T, path string, n int) {
	t.Helper()
	fi, err := os.Stat(path)
	require.NoError(t, err)
	garbleAt(t, path, (int(fi.Size())-n)/2, n)
}

// garbleAt flips the bits of n bytes at off. (The end of a log file may be
// space that was never written: damage there is no damage.)
func garbleAt(t *testing.T, path string, off, n int) {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	require.GreaterOrEqual(t, len(b), off+n)
	for i := range n {
		b[off+i] ^= 0x5a
	}
	require.NoError(t, os.WriteFile(path, b, 0o644))
}

func truncate(t *testing.T, path string, frac float64) {
	t.Helper()
	fi, err := os.Stat(path)
	require.NoError(t, err)
	require.NoError(t, os.Truncate(path, int64(float64(fi.Size())*frac)))
}

// rawSet writes a key straight into the Pebble database under the store.
func rawSet(t *testing.T, dir string, key, value []byte) {
	t.Helper()
	// Writing changes the log: forget the clean stop, as an operator who
	// edits the directory must.
	require.NoError(t, os.Remove(filepath.Join(dir, pebble.CleanStopFile)))
	db, err := pebbledb.Open(dir, &pebbledb.Options{Logger: quietLogger{}})
	require.NoError(t, err)
	require.NoError(t, db.Set(key, value, pebbledb.Sync))
	require.NoError(t, db.Close())
}

func jobKey(seq uint64) []byte {
	return []byte{'j', byte(seq >> 56), byte(seq >> 48), byte(seq >> 40), byte(seq >> 32), byte(seq >> 24), byte(seq >> 16), byte(seq >> 8), byte(seq)}
}

// TestDamagedDirectory damages a store in various ways and checks that
// opening and loading it fails with an error that names the directory
// where the damage must be reported, and where docs/durability.md says the
// store opens (damage that looks like a crash, an OPTIONS file) that it
// opens and loads jobs in order without inventing any; nothing panics.
func TestDamagedDirectory(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		damage func(t *testing.T, dir string)
		// mustFail: the damage must be reported; otherwise the store must
		// open and load a subset of the jobs, in order.
		mustFail bool
		corrupt  bool // the error must wrap store.ErrCorrupt
	}{
		{"garbled MANIFEST", func(t *testing.T, dir string) { garble(t, files(t, dir, "MANIFEST-*")[0], 16) }, true, true},
		// A MANIFEST cut short is indistinguishable from a crash while it was
		// appended to: Pebble opens the older state it describes, without the
		// files that later edits added (a known limit, see
		// docs/durability.md). The store must still open and load in order.
		{"truncated MANIFEST", func(t *testing.T, dir string) { truncate(t, files(t, dir, "MANIFEST-*")[0], 0.5) }, false, false},
		{"missing MANIFEST", func(t *testing.T, dir string) { require.NoError(t, os.Remove(files(t, dir, "MANIFEST-*")[0])) }, true, false},
		// OPTIONS only records the settings a store was last opened with.
		{"garbled OPTIONS", func(t *testing.T, dir string) { garble(t, files(t, dir, "OPTIONS-*")[0], 200) }, false, false},
		{"garbled sstable", func(t *testing.T, dir string) { garble(t, files(t, dir, "*.sst")[0], 64) }, true, true},
		{"truncated sstable", func(t *testing.T, dir string) { truncate(t, files(t, dir, "*.sst")[0], 0.5) }, true, false},
		{"missing sstable", func(t *testing.T, dir string) { require.NoError(t, os.Remove(files(t, dir, "*.sst")[0])) }, true, false},
		{"garbled log", func(t *testing.T, dir string) {
			logs := files(t, dir, "*.log")
			garbleAt(t, logs[len(logs)-1], 4096, 64)
		}, true, true},
		// After a clean stop, a log cut short is refused (see
		// TestTruncatedLogAfterCleanStop).
		{"truncated log", func(t *testing.T, dir string) {
			logs := files(t, dir, "*.log")
			truncate(t, logs[len(logs)-1], 0.5)
		}, true, true},
		// After a crash (no record of a clean stop), a log cut short at
		// its end looks exactly like a crash in the middle of a write:
		// Pebble keeps the intact prefix.
		{"truncated log after a crash", func(t *testing.T, dir string) {
			require.NoError(t, os.Remove(filepath.Join(dir, pebble.CleanStopFile)))
			logs := files(t, dir, "*.log")
			truncate(t, logs[len(logs)-1], 0.5)
		}, false, false},
		{"undecodable record", func(t *testing.T, dir string) {
			rawSet(t, dir, jobKey(77), []byte{9, 1, 2, 3})
		}, true, true},
		{"record cut short", func(t *testing.T, dir string) {
			rawSet(t, dir, jobKey(78), []byte{1, 1, 0, 0, 50, 'H'})
		}, true, true},
		{"foreign format", func(t *testing.T, dir string) {
			rawSet(t, dir, []byte("\x00gearwork-format"), []byte("gearwork/pebble 99"))
		}, true, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := filepath.Join(t.TempDir(), "data")
			makeStore(t, dir)
			tc.damage(t, dir)
			var seqs []uint64
			s, err := pebble.Open(context.Background(), dir, pebble.Options{})
			if err == nil {
				err = s.Load(context.Background(), func(j store.Job) error {
					seqs = append(seqs, j.Seq)
					return nil
				})
				require.NoError(t, s.Close())
			}
			if err != nil {
				t.Logf("reported: %v", err)
				require.True(t, tc.mustFail, "the store must open despite this damage: %v", err)
				require.Contains(t, err.Error(), dir, "the error must name the directory")
				if tc.corrupt {
					require.ErrorIs(t, err, store.ErrCorrupt)
				}
				return
			}
			require.False(t, tc.mustFail, "the damage went unnoticed (%d jobs loaded)", len(seqs))
			require.True(t, slices.IsSorted(seqs))
			require.LessOrEqual(t, len(seqs), damagedJobs)
			if len(seqs) > 0 {
				require.GreaterOrEqual(t, seqs[0], uint64(1))
				require.LessOrEqual(t, seqs[len(seqs)-1], uint64(damagedJobs))
			}
			t.Logf("loaded %d of %d jobs", len(seqs), damagedJobs)
		})
	}
}

func TestOpenNotADirectory(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "file")
	require.NoError(t, os.WriteFile(path, []byte("not a store"), 0o644))
	_, err := pebble.Open(context.Background(), path, pebble.Options{})
	require.Error(t, err)
	require.Contains(t, err.Error(), path)
}

func TestOpenLocked(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s, err := pebble.Open(context.Background(), dir, pebble.Options{})
	require.NoError(t, err)
	defer s.Close()
	_, err = pebble.Open(context.Background(), dir, pebble.Options{})
	require.Error(t, err, "a second server must not open a directory in use")
	t.Logf("reported: %v", err)
}

// quietLogger drops Pebble's messages.
type quietLogger struct{}

func (quietLogger) Infof(string, ...any)  {}
func (quietLogger) Errorf(string, ...any) {}
func (quietLogger) Fatalf(format string, args ...any) {
	panic(fmt.Sprintf(format, args...))
}

// TestTornManifestIsNotDamage cuts a real MANIFEST at every length, as a
// crash while Pebble appends to it would: the store must open every time.
func TestTornManifestIsNotDamage(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "data")
	makeStore(t, dir)
	b, err := os.ReadFile(files(t, dir, "MANIFEST-*")[0])
	require.NoError(t, err)
	for n := range len(b) {
		_, damaged := pebble.ManifestDamage(b[:n])
		require.False(t, damaged, "a MANIFEST cut at byte %d of %d was taken for damage", n, len(b))
	}
	garbled := slices.Clone(b)
	garbled[len(b)/3] ^= 0xff
	_, damaged := pebble.ManifestDamage(garbled)
	require.True(t, damaged, "a flipped byte in the middle must be found")
}

// TestMissingManifest removes the MANIFEST (and with it, or not, the marker
// file naming it): the error must say that the MANIFEST is missing, not
// send the operator looking for something else.
func TestMissingManifest(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		remove []string
	}{
		{"MANIFEST", []string{"MANIFEST-*"}},
		{"MANIFEST and its marker", []string{"MANIFEST-*", "marker.manifest.*"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := filepath.Join(t.TempDir(), "data")
			makeStore(t, dir)
			for _, pattern := range tc.remove {
				for _, f := range files(t, dir, pattern) {
					require.NoError(t, os.Remove(f))
				}
			}
			s, err := pebble.Open(context.Background(), dir, pebble.Options{Logger: slog.New(slog.DiscardHandler)})
			if err == nil {
				_ = s.Close()
			}
			require.Error(t, err)
			t.Logf("reported: %v", err)
			require.Contains(t, err.Error(), dir)
			require.Contains(t, err.Error(), "MANIFEST")
			require.Contains(t, err.Error(), "missing")
			require.NotContains(t, err.Error(), "format marker")
			require.ErrorIs(t, err, store.ErrCorrupt)
		})
	}
}

// TestTruncatedLogAfterCleanStop stops cleanly with jobs queued (in the
// log: they were never written into a table), cuts bytes off the newest
// log and starts again: refused, with a message that names the log, says
// what happened and how to proceed. Following that advice starts with the
// jobs that are left.
func TestTruncatedLogAfterCleanStop(t *testing.T) {
	t.Parallel()
	for _, cut := range []int64{20, 1000} {
		t.Run(fmt.Sprint(cut), func(t *testing.T) {
			t.Parallel()
			dir := storeWithLog(t)
			logs := files(t, dir, "*.log")
			newest := logs[len(logs)-1]
			fi, err := os.Stat(newest)
			require.NoError(t, err)
			require.NoError(t, os.Truncate(newest, fi.Size()-cut))

			_, err = pebble.Open(context.Background(), dir, pebble.Options{Logger: slog.New(slog.DiscardHandler)})
			require.ErrorIs(t, err, store.ErrCorrupt)
			t.Logf("reported: %v", err)
			require.Contains(t, err.Error(), filepath.Base(newest))
			require.Contains(t, err.Error(), fmt.Sprintf("is %d bytes shorter", cut))
			require.Contains(t, err.Error(), "stopped cleanly")
			require.Contains(t, err.Error(), "remove "+filepath.Join(dir, pebble.CleanStopFile))

			require.NoError(t, os.Remove(filepath.Join(dir, pebble.CleanStopFile)))
			s, err := pebble.Open(context.Background(), dir, pebble.Options{Logger: slog.New(slog.DiscardHandler)})
			require.NoError(t, err)
			n := 0
			require.NoError(t, s.Load(context.Background(), func(store.Job) error { n++; return nil }))
			require.NoError(t, s.Close())
			require.Less(t, n, 500, "the cut jobs are gone")
			t.Logf("started with %d of 500 jobs", n)
		})
	}
}
