package pebble

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	pebbledb "github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/gearwork/gearwork/internal/store"
)

// SyncMode says when a write reaches stable storage.
type SyncMode uint8

const (
	// SyncAlways makes Save return only after the write-ahead log is
	// fsynced: an acknowledged job survives a crash of the process, of the
	// operating system and a power cut. Concurrent saves share the fsync.
	SyncAlways SyncMode = iota
	// SyncInterval writes without waiting and fsyncs the write-ahead log
	// every Options.Interval: a crash of the operating system or a power cut
	// loses the jobs saved during the last interval.
	SyncInterval
	// SyncNone never fsyncs; the operating system writes the log back when
	// it likes (on Linux within about 30 s). A process crash loses at most
	// what Pebble had not yet handed to the kernel.
	SyncNone
)

// String returns "always", "interval" or "none".
func (m SyncMode) String() string {
	switch m {
	case SyncInterval:
		return "interval"
	case SyncNone:
		return "none"
	default:
		return "always"
	}
}

// Options configures Open. The zero value is the default: fsync every Save.
type Options struct {
	// Sync is the durability mode; the zero value is SyncAlways.
	Sync SyncMode
	// Interval is the period of the background fsync in SyncInterval mode.
	// Default 50ms.
	Interval time.Duration
	// Logger receives Pebble's messages and the store's failures. Default
	// slog.Default().
	Logger *slog.Logger
	// FS replaces the operating system's file system; tests wrap it to
	// inject faults. Nil means the OS.
	FS vfs.FS
	// CacheSize is the size of Pebble's block cache in bytes; it holds
	// recently read blocks of job records (payloads read back by tiering).
	// Default 64 MiB.
	CacheSize int64
	// MemTableSize is the size of one memtable in bytes. A job that finishes
	// while its record is still in the memtable never reaches an sstable.
	// Once one was written out, two stay resident (the one being filled
	// and a flushed one kept for reuse). Default 16 MiB: 32 MiB churned no
	// faster for twice the memory (docs/durability.md).
	MemTableSize uint64
	// ErrorLogPeriod is the shortest time between two log lines of the same
	// kind about a storage problem (Pebble's errors, background errors, slow
	// disk, stalls); the next line counts those suppressed. Default 10s.
	ErrorLogPeriod time.Duration
	// MaxOpenFiles bounds the files Pebble keeps open (its table cache
	// holds at most this many less ten, and at least 64); the server sets
	// it from the descriptors it keeps back for the store. 0 means Pebble's
	// default, 1,000.
	MaxOpenFiles int
}

// Store implements the local store contract and its optional capabilities.
var (
	_ store.Store         = (*Store)(nil)
	_ store.MetaStore     = (*Store)(nil)
	_ store.PayloadReader = (*Store)(nil)
	_ store.LendingLoader = (*Store)(nil)
)

// Store is the embedded durable store. It is safe for concurrent use.
type Store struct {
	db        *pebbledb.DB
	dir       string
	log       *slog.Logger
	mode      SyncMode
	saveOpts  *pebbledb.WriteOptions
	cache     *pebbledb.Cache
	interval  time.Duration
	stopSync  chan struct{}
	syncerWG  sync.WaitGroup
	closeOnce sync.Once

	// mu is held shared by every call that uses db and exclusively by Close,
	// so that db is never used after it is closed.
	mu     sync.RWMutex
	closed bool

	// failed holds the first write or sync failure; once set, every write
	// is refused.
	failed atomic.Pointer[error]
	// dirty is set by unsynced writes in SyncInterval mode.
	dirty atomic.Bool
	// fs is the file system the database is on.
	fs vfs.FS
	// lock is the directory's lock, held from before the database opens
	// until after Close recorded the clean stop.
	lock *pebbledb.Lock
	// limiter bounds the log lines about storage problems.
	limiter logLimiter
	// bgFailures counts consecutive failures of Pebble's background work.
	bgFailures atomic.Int64
	// openFailed receives a background failure that makes Open give up.
	openFailed chan error
	// idx finds the kept job records (recordIndex).
	idx recordIndex
}

// Open opens (creating if needed) the store in dir. It fails with a
// message naming the problem when dir holds damaged or foreign data; it
// does not panic.
func Open(ctx context.Context, dir string, opts Options) (*Store, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s := &Store{
		dir:        dir,
		log:        cmp.Or(opts.Logger, slog.Default()),
		mode:       opts.Sync,
		interval:   cmp.Or(opts.Interval, 50*time.Millisecond),
		stopSync:   make(chan struct{}),
		openFailed: make(chan error, 1),
		limiter:    logLimiter{period: cmp.Or(opts.ErrorLogPeriod, 10*time.Second), now: time.Now},
	}
	s.saveOpts = pebbledb.Sync
	if s.mode != SyncAlways {
		s.saveOpts = pebbledb.NoSync
	}
	s.cache = pebbledb.NewCache(cmp.Or(opts.CacheSize, 64<<20))
	defer s.cache.Unref() // the DB holds its own reference
	po := &pebbledb.Options{
		FS:                 opts.FS,
		Cache:              s.cache,
		Logger:             pebbleLogger{s},
		MemTableSize:       cmp.Or(opts.MemTableSize, 16<<20),
		MaxOpenFiles:       opts.MaxOpenFiles,
		FormatMajorVersion: pebbledb.FormatNewest,
		EventListener: &pebbledb.EventListener{
			BackgroundError: s.backgroundError,
			FlushEnd:        func(info pebbledb.FlushInfo) { s.backgroundOK(info.Err) },
			CompactionEnd:   func(info pebbledb.CompactionInfo) { s.backgroundOK(info.Err) },
			DataCorruption: func(info pebbledb.DataCorruptionInfo) {
				s.logLimited(slog.LevelError, "corruption", "pebble store: data corruption", slog.String("path", info.Path),
					slog.String("error", fmt.Sprint(info.Details)))
			},
			DiskSlow: func(info pebbledb.DiskSlowInfo) {
				s.logLimited(slog.LevelWarn, "slow", "pebble store: slow disk", slog.String("info", info.String()))
			},
			WriteStallBegin: func(info pebbledb.WriteStallBeginInfo) {
				s.logLimited(slog.LevelWarn, "stall", "pebble store: writes stalled", slog.String("reason", info.Reason))
			},
		},
	}
	if po.FS == nil {
		po.FS = vfs.Default
	}
	po.FS = logGuardFS{FS: po.FS, failFunc: func(err error) { s.fail(err) }}
	s.fs = po.FS
	// The store is written far more than it is read: the queue is read
	// as a whole only at a restart, a payload only when its job was kept
	// on disk alone (--memory-budget) and is dispatched, a job record
	// when someone looks. Letting more flushed tables gather in level 0
	// before they are compacted, and not compacting a table early
	// because it holds many deletions (the ends of jobs), spares
	// compactions that copy the same queued jobs and records again and
	// again while a queue drains; a read looks through up to 8 tables of
	// level 0 instead of 4 (see BENCHMARKS.md, "Job records"). Writes
	// stall only well beyond that.
	po.L0CompactionThreshold, po.L0StopWritesThreshold = 8, 32
	po.Experimental.TombstoneDenseCompactionThreshold = -1
	po.EnsureDefaults()
	// Tables are read mostly from end to end: a replay reads every job,
	// and workers take queued jobs whose payload is on disk in about the
	// order they were written. Blocks of 32 KiB instead of Pebble's 4 KiB
	// cut the blocks read, checked and put in the cache eightfold (a
	// restart with 2M queued 1 KiB jobs took 2.0 s of CPU against 3.2 to
	// 3.6, see BENCHMARKS.md); a lookup of one record reads one block of
	// 32 KiB. Tables written before keep their blocks until compacted.
	for i := range po.Levels {
		po.Levels[i].BlockSize = 32 << 10
	}
	if err := checkManifests(po.FS, dir); err != nil {
		return nil, fmt.Errorf("pebble store %s: cannot open: %w", dir, err)
	}
	if err := checkSpace(po.FS, dir); err != nil {
		return nil, fmt.Errorf("pebble store %s: cannot open: %w", dir, err)
	}
	// The store takes Pebble's lock of the directory itself, before it
	// reads the record of a clean stop, and releases it only after Close
	// wrote the next one: another process never opens the directory
	// between Pebble's close and that record, which would then describe
	// logs the other process goes on to change.
	if err := po.FS.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("pebble store %s: cannot open: %w", dir, err)
	}
	lock, err := pebbledb.LockDirectory(dir, po.FS)
	if errors.Is(err, syscall.EAGAIN) {
		// The lock file is locked (fcntl) by another process. EACCES,
		// which some systems return for a held lock too, is not taken for
		// one: it also means files of the directory may not be opened.
		return nil, fmt.Errorf("pebble store %s is in use by another process (its lock file %s is held): %w",
			dir, po.FS.PathJoin(dir, "LOCK"), err)
	}
	if err != nil {
		return nil, fmt.Errorf("pebble store %s: cannot open: %w", dir, err)
	}
	po.Lock = lock
	if err := checkCleanStop(po.FS, dir); err != nil {
		_ = lock.Close()
		return nil, fmt.Errorf("pebble store %s: cannot open: %w", dir, err)
	}
	db, err := s.openDB(ctx, po, lock)
	if err != nil {
		return nil, fmt.Errorf("pebble store %s: cannot open: %w", dir, err)
	}
	s.db, s.lock = db, lock
	if err := s.Err(); err != nil {
		// Opening created a write-ahead log that it could not write.
		s.closeDB()
		return nil, fmt.Errorf("pebble store %s: cannot open: %w", dir, err)
	}
	if err := s.checkFormat(); err != nil {
		s.closeDB()
		return nil, err
	}
	if s.mode == SyncInterval {
		s.syncerWG.Add(1)
		go s.syncLoop()
	}
	return s, nil
}

// checkFormat refuses a store written in a layout this version does not
// know, and marks a new store with the current layout.
func (s *Store) checkFormat() error {
	var v []byte
	err := guard(func() error {
		val, closer, err := s.db.Get(formatKey)
		if err != nil {
			return err
		}
		v = append(v, val...)
		return closer.Close()
	})
	switch {
	case errors.Is(err, pebbledb.ErrNotFound):
		empty, err := s.hasNoJobs()
		if err != nil {
			return err
		}
		if !empty {
			return fmt.Errorf("pebble store %s: holds job records but no format marker: %w", s.dir, store.ErrCorrupt)
		}
		if err := s.commit(func(b *pebbledb.Batch) error { return b.Set(formatKey, formatValue, nil) }, pebbledb.Sync); err != nil {
			return fmt.Errorf("pebble store %s: cannot initialise: %w", s.dir, err)
		}
		return nil
	case err != nil:
		return fmt.Errorf("pebble store %s: cannot read the format marker: %w", s.dir, err)
	case string(v) == string(formatValueV1):
		if err := s.commit(func(b *pebbledb.Batch) error { return b.Set(formatKey, formatValue, nil) }, pebbledb.Sync); err != nil {
			return fmt.Errorf("pebble store %s: cannot mark the layout %q: %w", s.dir, formatValue, err)
		}
	case string(v) != string(formatValue):
		return fmt.Errorf("pebble store %s: unknown format %q (this server writes %q): %w", s.dir, v, formatValue, store.ErrCorrupt)
	}
	return nil
}

func (s *Store) hasNoJobs() (bool, error) {
	var empty bool
	err := guard(func() error {
		it, err := s.db.NewIter(&pebbledb.IterOptions{LowerBound: jobLower, UpperBound: jobUpper})
		if err != nil {
			return err
		}
		empty = !it.First()
		return errors.Join(it.Error(), it.Close())
	})
	if err != nil {
		return false, fmt.Errorf("pebble store %s: cannot read: %w", s.dir, err)
	}
	return empty, nil
}

// Dir returns the directory the store was opened in.
func (s *Store) Dir() string { return s.dir }

// Mode returns the store's sync mode.
func (s *Store) Mode() SyncMode { return s.mode }

// begin checks that a call may use the store and takes the shared lock,
// which the caller must release.
func (s *Store) begin(ctx context.Context, write bool) error {
	s.mu.RLock()
	switch {
	case s.closed:
		s.mu.RUnlock()
		return store.ErrClosed
	case ctx.Err() != nil:
		s.mu.RUnlock()
		return ctx.Err()
	}
	if write {
		if p := s.failed.Load(); p != nil {
			s.mu.RUnlock()
			return fmt.Errorf("pebble store %s: %w (first failure: %v)", s.dir, store.ErrFailed, *p)
		}
	}
	return nil
}

// Save writes the jobs in one batch, replacing any with the same Seq. In
// SyncAlways mode it returns after the batch is fsynced. After any failed
// write it returns an error wrapping store.ErrFailed without writing.
func (s *Store) Save(ctx context.Context, jobs []store.Job) error {
	return s.write(ctx, "saving %d jobs", len(jobs), true, func(b *pebbledb.Batch) error { return fillSave(b, jobs) })
}

// fillSave adds the writes of jobs to b.
func fillSave(b *pebbledb.Batch, jobs []store.Job) error {
	for i := range jobs {
		j := &jobs[i]
		op := b.SetDeferred(jobKeyLen, recordLen(j))
		putJobKey(op.Key, j.Seq)
		putRecord(op.Value, j)
		if err := op.Finish(); err != nil {
			return err
		}
	}
	return nil
}

// Delete removes the jobs in one batch; unknown ones are ignored. It never
// waits for an fsync: a delete lost in a crash only makes a finished job
// run again, which the at-least-once contract allows, and the next synced
// write makes it durable anyway.
func (s *Store) Delete(ctx context.Context, seqs []uint64) error {
	return s.write(ctx, "deleting %d jobs", len(seqs), false, func(b *pebbledb.Batch) error {
		for _, q := range seqs {
			op := b.DeleteDeferred(jobKeyLen)
			putJobKey(op.Key, q)
			if err := op.Finish(); err != nil {
				return err
			}
		}
		return nil
	})
}

// write is the frame of Save, Delete and PutMeta: it begins a write (see
// begin) and commits the batch that fill builds, unless there are no
// items (n) to write. A durable write commits as Save promises (saveOpts;
// in SyncInterval mode it leaves the fsync to syncLoop); any other never
// waits for an fsync. begin's error is returned as it is; a failed
// commit's is wrapped with what (a format of n) and the directory.
func (s *Store) write(ctx context.Context, what string, n int, durable bool, fill func(*pebbledb.Batch) error) error {
	if err := s.begin(ctx, true); err != nil {
		return err
	}
	defer s.mu.RUnlock()
	if n == 0 {
		return nil
	}
	opts := pebbledb.NoSync
	if durable {
		opts = s.saveOpts
	}
	if err := s.commit(fill, opts); err != nil {
		return fmt.Errorf("pebble store %s: "+what+": %w", s.dir, n, err)
	}
	if durable && s.mode == SyncInterval {
		s.dirty.Store(true)
	}
	return nil
}

// commit builds a batch with fill and commits it. Any failure, including a
// panic inside Pebble (it panics or calls Logger.Fatalf on WAL write and
// sync errors), marks the store failed.
func (s *Store) commit(fill func(*pebbledb.Batch) error, wo *pebbledb.WriteOptions) error {
	b := s.db.NewBatch()
	if err := fill(b); err != nil {
		_ = b.Close()
		return err
	}
	err := guard(func() error { return b.Commit(wo) })
	if err != nil {
		s.fail(err)
		return err
	}
	return b.Close()
}

// fail records and logs the first write failure. It reports whether err
// was the first.
func (s *Store) fail(err error) bool {
	if !s.failed.CompareAndSwap(nil, &err) {
		return false
	}
	s.log.Error("pebble store: write failed; refusing every further write until the server restarts",
		slog.String("dir", s.dir), slog.String("error", err.Error()))
	return true
}

// Err returns the first write failure, or nil.
func (s *Store) Err() error {
	if p := s.failed.Load(); p != nil {
		return *p
	}
	return nil
}

// Load calls each for every job in ascending Seq order and stops at the
// first error each returns. A record that cannot be decoded stops Load with
// an error wrapping store.ErrCorrupt that names its Seq.
func (s *Store) Load(ctx context.Context, each func(store.Job) error) error {
	return s.load(ctx, false, each)
}

// LoadLending is Load with each job's Payload lent from the store's read
// buffer, valid only until each returns (store.LendingLoader).
func (s *Store) LoadLending(ctx context.Context, each func(store.Job) error) error {
	return s.load(ctx, true, each)
}

// load is Load, with payloads lent (lend) or copied.
func (s *Store) load(ctx context.Context, lend bool, each func(store.Job) error) (err error) {
	if err := s.begin(ctx, false); err != nil {
		return err
	}
	defer s.mu.RUnlock()
	// Pebble may panic on damaged data; a panic in each is not ours to
	// handle and goes on.
	inEach := false
	defer func() {
		if r := recover(); r != nil {
			if inEach {
				panic(r)
			}
			err = fmt.Errorf("pebble store %s: reading job records: %w", s.dir, panicError(r))
		}
	}()
	it, err := s.db.NewIter(&pebbledb.IterOptions{LowerBound: jobLower, UpperBound: jobUpper})
	if err != nil {
		return fmt.Errorf("pebble store %s: cannot read: %w", s.dir, classify(err))
	}
	defer func() {
		if cerr := it.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("pebble store %s: reading job records: %w", s.dir, classify(cerr))
		}
	}()
	var dec recordDecoder
	n := 0
	for valid := it.First(); valid; valid = it.Next() {
		if n++; n%4096 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		seq, ok := parseJobKey(it.Key())
		if !ok {
			return fmt.Errorf("pebble store %s: unexpected key %q: %w", s.dir, it.Key(), store.ErrCorrupt)
		}
		v, err := it.ValueAndErr()
		if err != nil {
			return fmt.Errorf("pebble store %s: reading job %d: %w", s.dir, seq, classify(err))
		}
		j, err := dec.decode(seq, v, lend)
		if err != nil {
			return fmt.Errorf("pebble store %s: %w", s.dir, err)
		}
		inEach = true
		err = each(j)
		inEach = false
		if err != nil {
			return err
		}
	}
	if err := it.Error(); err != nil {
		return fmt.Errorf("pebble store %s: reading job records: %w", s.dir, classify(err))
	}
	return nil
}

// ReadPayload returns the payload of job seq, read from disk (or Pebble's
// cache). It returns an error wrapping store.ErrNotFound for an unknown
// job. It does not wait for writes in progress.
func (s *Store) ReadPayload(ctx context.Context, seq uint64) ([]byte, error) {
	if err := s.begin(ctx, false); err != nil {
		return nil, err
	}
	defer s.mu.RUnlock()
	var key [jobKeyLen]byte
	putJobKey(key[:], seq)
	var payload []byte
	err := guard(func() error {
		v, closer, err := s.db.Get(key[:])
		if err != nil {
			return err
		}
		defer closer.Close()
		p, err := recordPayload(seq, v)
		if err != nil {
			return err
		}
		payload = append(make([]byte, 0, len(p)), p...)
		return nil
	})
	switch {
	case errors.Is(err, pebbledb.ErrNotFound):
		return nil, fmt.Errorf("pebble store %s: job %d: %w", s.dir, seq, store.ErrNotFound)
	case err != nil:
		return nil, fmt.Errorf("pebble store %s: reading job %d: %w", s.dir, seq, err)
	}
	return payload, nil
}

// syncLoop fsyncs the write-ahead log every interval while there are
// unsynced writes (SyncInterval mode).
func (s *Store) syncLoop() {
	defer s.syncerWG.Done()
	t := time.NewTicker(s.interval)
	defer t.Stop()
	for {
		select {
		case <-s.stopSync:
			return
		case <-t.C:
		}
		if !s.dirty.Swap(false) {
			continue
		}
		if err := s.begin(context.Background(), true); err != nil {
			continue
		}
		_ = s.syncWAL()
		s.mu.RUnlock()
	}
}

// Sync makes every earlier write as durable as Save makes its jobs: in
// SyncAlways mode it fsyncs the write-ahead log (which Delete does not
// wait for); in the other modes it does nothing, as Save does not wait
// either. After a failed write it returns an error wrapping
// store.ErrFailed.
func (s *Store) Sync(ctx context.Context) error {
	if err := s.begin(ctx, true); err != nil {
		return err
	}
	defer s.mu.RUnlock()
	if s.mode != SyncAlways {
		return nil
	}
	if err := s.syncWAL(); err != nil {
		return fmt.Errorf("pebble store %s: syncing: %w", s.dir, err)
	}
	return nil
}

// syncWAL fsyncs everything written so far. The caller holds mu shared.
func (s *Store) syncWAL() error {
	err := guard(func() error { return s.db.LogData(nil, pebbledb.Sync) })
	if err != nil {
		s.fail(err)
	}
	return err
}

// Close syncs what SyncInterval or SyncNone left unsynced (unless a write
// failed), closes the database and releases the directory lock. Later
// calls return store.ErrClosed. Close is idempotent.
func (s *Store) Close() error {
	var err error
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		close(s.stopSync)
		s.syncerWG.Wait()
		if s.mode != SyncAlways && s.failed.Load() == nil {
			err = s.syncWAL()
		}
		cerr := guard(s.db.Close)
		defer s.lock.Close() // after the record of the clean stop
		s.idx.mu.Lock()
		s.idx.reset() // its memory is not the collector's
		s.idx.mu.Unlock()
		if cerr != nil && s.failed.Load() == nil {
			err = errors.Join(err, cerr)
		}
		if err == nil && cerr == nil && s.failed.Load() == nil {
			err = writeCleanStop(s.fs, s.dir)
		}
		if err != nil {
			err = fmt.Errorf("pebble store %s: closing: %w", s.dir, err)
		}
	})
	return err
}

// closeDB closes the database and releases the directory's lock, for an
// Open that fails once the database is open.
func (s *Store) closeDB() {
	_ = guard(s.db.Close)
	_ = s.lock.Close()
}

// guard runs fn and turns a panic into an error: Pebble panics (or calls
// Logger.Fatalf, which panics here) on I/O errors it cannot handle and on
// some kinds of damaged data, and the server must report those, not crash.
func guard(fn func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = panicError(r)
		}
	}()
	return classify(fn())
}

// panicError turns a recovered panic value into an error.
func panicError(r any) error {
	switch v := r.(type) {
	case *fatalError:
		return v
	case error:
		return classify(fmt.Errorf("pebble panicked: %w", v))
	default:
		return fmt.Errorf("pebble panicked: %v", v)
	}
}

// classify marks Pebble's corruption errors with store.ErrCorrupt.
func classify(err error) error {
	if err != nil && pebbledb.IsCorruptionError(err) && !errors.Is(err, store.ErrCorrupt) {
		return fmt.Errorf("%w: %w", store.ErrCorrupt, err)
	}
	return err
}

// PutMeta writes broker metadata entries in one batch, durably as Save is;
// an entry with a nil Value deletes its key.
func (s *Store) PutMeta(ctx context.Context, entries []store.Meta) error {
	return s.write(ctx, "writing %d metadata entries", len(entries), true, func(b *pebbledb.Batch) error {
		return fillMeta(b, entries)
	})
}

// fillMeta adds the writes of metadata entries to b.
func fillMeta(b *pebbledb.Batch, entries []store.Meta) error {
	for _, e := range entries {
		k := append([]byte{metaPrefix}, e.Key...)
		if e.Value == nil {
			if err := b.Delete(k, nil); err != nil {
				return err
			}
		} else if err := b.Set(k, e.Value, nil); err != nil {
			return err
		}
	}
	return nil
}

// LoadMeta calls each for every metadata entry, in key order.
func (s *Store) LoadMeta(ctx context.Context, each func(store.Meta) error) error {
	if err := s.begin(ctx, false); err != nil {
		return err
	}
	defer s.mu.RUnlock()
	var entries []store.Meta
	err := guard(func() error {
		it, err := s.db.NewIter(&pebbledb.IterOptions{LowerBound: []byte{metaPrefix}, UpperBound: []byte{metaPrefix + 1}})
		if err != nil {
			return err
		}
		for valid := it.First(); valid; valid = it.Next() {
			entries = append(entries, store.Meta{Key: string(it.Key()[1:]), Value: append([]byte{}, it.Value()...)})
		}
		return errors.Join(it.Error(), it.Close())
	})
	if err != nil {
		return fmt.Errorf("pebble store %s: reading metadata: %w", s.dir, err)
	}
	for _, m := range entries {
		if err := each(m); err != nil {
			return err
		}
	}
	return nil
}
