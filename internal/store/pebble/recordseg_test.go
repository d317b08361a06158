package pebble_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/internal/store"
	"github.com/gearwork/gearwork/internal/store/pebble"
)

// openData opens the store in "data" on fs.
func openData(t *testing.T, fs vfs.FS) *pebble.Store {
	t.Helper()
	st, err := pebble.Open(context.Background(), "data", pebble.Options{FS: fs, Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	return st
}

// beforeWriteFS calls hook before every write to a file it created whose
// name ends in suffix.
type beforeWriteFS struct {
	vfs.FS
	suffix string
	hook   func()
}

func (f beforeWriteFS) Create(name string, c vfs.DiskWriteCategory) (vfs.File, error) {
	file, err := f.FS.Create(name, c)
	if err != nil || !strings.HasSuffix(name, f.suffix) {
		return file, err
	}
	return hookedFile{File: file, hook: f.hook}, nil
}

type hookedFile struct {
	vfs.File
	hook func()
}

func (f hookedFile) Write(p []byte) (int, error) {
	f.hook()
	return f.File.Write(p)
}

// storedState opens the store on fs and returns the Seqs of its jobs and
// of its records.
func storedState(t *testing.T, fs vfs.FS) (jobs, recs map[uint64]bool) {
	t.Helper()
	ctx := context.Background()
	st := openData(t, fs)
	defer st.Close()
	jobs, recs = map[uint64]bool{}, map[uint64]bool{}
	require.NoError(t, st.Load(ctx, func(j store.Job) error { jobs[j.Seq] = true; return nil }))
	all, err := st.Records(ctx, store.RecordQuery{Limit: 1 << 20})
	require.NoError(t, err)
	for _, r := range all {
		recs[r.Seq] = true
	}
	return jobs, recs
}

// A job's record reaches its segment before the write that removes the
// job: a crash at the moment the record is appended, after everything
// written to Pebble so far was synced (by any later synced write, or the
// kernel writing the log back), still finds the jobs, and a crash after
// EndJobs (only what was synced on disk: the removal waits for no fsync)
// finds the records, and the store drops the jobs that ended. Never
// neither, never both.
func TestRecordAppendedBeforeJobRemoved(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	mem := vfs.NewCrashableMem()
	// Segments are written by the goroutine that calls EndJobs: the hook
	// runs in this one.
	armed := false
	var atAppend *vfs.MemFS
	var st *pebble.Store
	var syncErr error
	st = openData(t, beforeWriteFS{FS: mem, suffix: ".seg", hook: func() {
		if armed {
			armed = false
			syncErr = st.Sync(ctx)
			atAppend = mem.CrashClone(vfs.CrashCloneCfg{})
		}
	}})
	defer st.Close()
	var jobs []store.Job
	var recs []store.Record
	var seqs []uint64
	for q := uint64(1); q <= 4; q++ {
		jobs = append(jobs, store.Job{Seq: q, Function: "f", Unique: fmt.Sprint(q), Payload: []byte("p")})
		recs = append(recs, store.Record{Seq: q, Function: "f", State: "complete", Finished: int64(q), Data: []byte("r")})
		seqs = append(seqs, q)
	}
	require.NoError(t, st.Save(ctx, jobs))
	// The first job ends on its own, so that the segment exists.
	require.NoError(t, st.EndJobs(ctx, seqs[:1], recs[:1], nil))
	armed = true
	require.NoError(t, st.EndJobs(ctx, seqs[1:], recs[1:], nil))
	require.NotNil(t, atAppend, "the records were not appended to a segment")
	require.NoError(t, syncErr)
	afterEnd := mem.CrashClone(vfs.CrashCloneCfg{})

	for _, c := range []struct {
		name string
		fs   *vfs.MemFS
	}{{"a crash while the records are appended", atAppend}, {"a crash after EndJobs returned", afterEnd}} {
		jobs, recs := storedState(t, c.fs)
		for _, q := range seqs {
			require.True(t, jobs[q] || recs[q], "%s: job %d is neither stored nor recorded", c.name, q)
			require.False(t, jobs[q] && recs[q], "%s: job %d is both stored and recorded", c.name, q)
		}
	}
	jobs2, recs2 := storedState(t, afterEnd)
	require.Empty(t, jobs2, "a record that EndJobs wrote is on disk once it returns")
	require.Len(t, recs2, 4)
}

// segmentFiles lists the record segments in the store "data" on fs.
func segmentFiles(t *testing.T, fs vfs.FS) []string {
	t.Helper()
	names, err := fs.List("data/records")
	require.NoError(t, err)
	var segs []string
	for _, n := range names {
		if strings.HasSuffix(n, ".seg") {
			segs = append(segs, n)
		}
	}
	return segs
}

// Expiry removes a segment file once none of its records is kept, and a
// function whose old record is kept long does not keep every later
// segment: the oldest segment, mostly expired, is copied forward and
// removed. The records kept read the same before and after, and after a
// restart.
func TestRecordSegmentsRemovedAndCompacted(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	fs := vfs.NewMem()
	st := openData(t, fs)
	big := make([]byte, 64<<10)
	seq := uint64(0)
	rec := func(fn string) store.Record {
		seq++
		return store.Record{Seq: seq, Function: fn, State: "complete", Finished: int64(seq), Data: append([]byte(fmt.Sprint(seq, ":")), big...)}
	}
	// One record of "slow", then about 48 MiB of "fast" in writes of 4 MiB:
	// at least three segments.
	slow := rec("slow")
	require.NoError(t, st.EndJobs(ctx, nil, []store.Record{slow}, nil))
	for range 12 {
		var recs []store.Record
		for range 64 {
			recs = append(recs, rec("fast"))
		}
		require.NoError(t, st.EndJobs(ctx, nil, recs, nil))
	}
	before := segmentFiles(t, fs)
	require.GreaterOrEqual(t, len(before), 3)

	// Keep the 10 newest of "fast" and every one of "slow".
	limits := func(fn string) (time.Duration, int) {
		if fn == "slow" {
			return time.Hour, 100
		}
		return time.Hour, 10
	}
	n, err := st.ExpireRecords(ctx, 0, limits)
	require.NoError(t, err)
	require.Equal(t, 12*64-10, n)
	after := segmentFiles(t, fs)
	require.Less(t, len(after), len(before), "segments without kept records are removed")
	require.NotEqual(t, before[0], after[0], "the oldest segment, with one record kept, was copied forward and removed")

	check := func(st *pebble.Store) {
		t.Helper()
		got, err := st.Record(ctx, slow.Seq)
		require.NoError(t, err)
		require.Equal(t, slow, got)
		all, err := st.Records(ctx, store.RecordQuery{Function: "fast", Limit: 100})
		require.NoError(t, err)
		require.Len(t, all, 10)
		for i, r := range all {
			require.Equal(t, seq-uint64(i), r.Seq)
			require.Equal(t, fmt.Sprint(r.Seq, ":"), string(r.Data[:len(fmt.Sprint(r.Seq, ":"))]))
		}
		counts, err := st.RecordCounts(ctx)
		require.NoError(t, err)
		require.Equal(t, map[string]map[string]int{"slow": {"complete": 1}, "fast": {"complete": 10}}, counts)
	}
	check(st)
	require.NoError(t, st.Close())
	st = openData(t, fs)
	defer st.Close()
	check(st)
}

// A segment that ends in a cut-short append (a crash in the middle of the
// write) opens with the records before it; the cut bytes are no damage.
func TestRecordSegmentTornTail(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	fs := vfs.NewMem()
	st := openData(t, fs)
	want := store.Record{Seq: 7, Function: "f", State: "failed", Finished: 70, Data: []byte("seven")}
	require.NoError(t, st.EndJobs(ctx, nil, []store.Record{want}, nil))
	require.NoError(t, st.Close())
	segs := segmentFiles(t, fs)
	require.Len(t, segs, 1)
	f, err := fs.OpenReadWrite("data/records/"+segs[0], vfs.WriteCategoryUnspecified)
	require.NoError(t, err)
	st2, err := f.Stat()
	require.NoError(t, err)
	// A frame header that promises more bytes than follow.
	_, err = f.WriteAt([]byte{1, 0, 0, 1, 0, 0, 0, 0, 0, 'x'}, st2.Size())
	require.NoError(t, err)
	require.NoError(t, f.Close())

	st = openData(t, fs)
	defer st.Close()
	got, err := st.Record(ctx, 7)
	require.NoError(t, err)
	require.Equal(t, want, got)
	// New records go to a new segment and read back.
	next := store.Record{Seq: 8, Function: "f", State: "complete", Finished: 80, Data: []byte("eight")}
	require.NoError(t, st.EndJobs(ctx, nil, []store.Record{next}, nil))
	got, err = st.Record(ctx, 8)
	require.NoError(t, err)
	require.Equal(t, next, got)
}
