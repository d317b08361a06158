// Package memory is a Store that keeps background jobs in a map. Nothing
// survives the process: it is the second implementation that keeps the
// conformance suite honest, and a fast store for broker tests.
//
// API is not stable: this package is internal to Gearwork.
package memory

import (
	"cmp"
	"context"
	"maps"
	"slices"
	"sync"

	"github.com/gearwork/gearwork/internal/store"
)

// Store implements the local store contract and both optional capabilities.
var (
	_ store.Store         = (*Store)(nil)
	_ store.MetaStore     = (*Store)(nil)
	_ store.PayloadReader = (*Store)(nil)
)

// Store keeps jobs in memory. It is safe for concurrent use. Saved payloads
// are copied, so callers may reuse their buffers.
type Store struct {
	d *data
	// mu guards closed.
	mu     sync.RWMutex
	closed bool
}

// data is what Reopen shares between handles.
type data struct {
	// mu guards jobs and meta.
	mu   sync.Mutex
	jobs map[uint64]store.Job
	meta map[string][]byte
}

// New returns an empty store.
func New() *Store {
	return &Store{d: &data{jobs: make(map[uint64]store.Job), meta: make(map[string][]byte)}}
}

// Reopen returns a new open handle on the same jobs, as opening a durable
// store again after a restart would. Tests use it to exercise replay.
func (s *Store) Reopen() *Store {
	return &Store{d: s.d}
}

// Snapshot returns a new store holding a copy of the jobs and metadata as
// they are now, as a copy of a durable store's files taken at this moment
// would: tests use it as the image a crash leaves.
func (s *Store) Snapshot() *Store {
	s.d.mu.Lock()
	defer s.d.mu.Unlock()
	c := New()
	maps.Copy(c.d.jobs, s.d.jobs)
	maps.Copy(c.d.meta, s.d.meta)
	return c
}

// Len returns the number of stored jobs.
func (s *Store) Len() int {
	s.d.mu.Lock()
	defer s.d.mu.Unlock()
	return len(s.d.jobs)
}

// locked runs fn with the handle open and the shared data locked. It
// returns store.ErrClosed after Close, or ctx.Err() once ctx has ended,
// without running fn.
func (s *Store) locked(ctx context.Context, fn func(d *data) error) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return store.ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	s.d.mu.Lock()
	defer s.d.mu.Unlock()
	return fn(s.d)
}

// Save stores copies of jobs, replacing any with the same Seq.
func (s *Store) Save(ctx context.Context, jobs []store.Job) error {
	return s.Write(ctx, store.Write{Save: jobs})
}

// Delete removes the jobs; unknown ones are ignored.
func (s *Store) Delete(ctx context.Context, seqs []uint64) error {
	return s.Write(ctx, store.Write{Delete: seqs})
}

// Load calls each for every job in ascending Seq order, from a snapshot
// taken when Load starts, and stops at the first error each returns.
func (s *Store) Load(ctx context.Context, each func(store.Job) error) error {
	var snap []store.Job
	err := s.locked(ctx, func(d *data) error {
		snap = slices.Collect(maps.Values(d.jobs))
		return nil
	})
	if err != nil {
		return err
	}
	slices.SortFunc(snap, func(a, b store.Job) int { return cmp.Compare(a.Seq, b.Seq) })
	for _, j := range snap {
		if err := ctx.Err(); err != nil {
			return err
		}
		j.Payload = slices.Clone(j.Payload)
		if err := each(j); err != nil {
			return err
		}
	}
	return nil
}

// ReadPayload returns a copy of the payload of job seq, or an error
// wrapping store.ErrNotFound.
func (s *Store) ReadPayload(ctx context.Context, seq uint64) ([]byte, error) {
	var payload []byte
	err := s.locked(ctx, func(d *data) error {
		j, ok := d.jobs[seq]
		if !ok {
			return store.ErrNotFound
		}
		payload = slices.Clone(j.Payload)
		return nil
	})
	return payload, err
}

// Close closes this handle; the jobs stay available to Reopen. Idempotent.
func (s *Store) Close() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	return nil
}

// PutMeta writes metadata entries in order; a nil Value deletes the key.
func (s *Store) PutMeta(ctx context.Context, entries []store.Meta) error {
	return s.Write(ctx, store.Write{Meta: entries})
}

// Write applies w under one hold of the lock, so that a Snapshot sees all
// of it or none. The memory store keeps no records: w's records are
// ignored.
func (s *Store) Write(ctx context.Context, w store.Write) error {
	return s.locked(ctx, func(d *data) error {
		for _, j := range w.Save {
			j.Payload = slices.Clone(j.Payload)
			j.Result = slices.Clone(j.Result)
			j.History = slices.Clone(j.History)
			j.After = slices.Clone(j.After)
			d.jobs[j.Seq] = j
		}
		for _, e := range w.Meta {
			if e.Value == nil {
				delete(d.meta, e.Key)
			} else {
				d.meta[e.Key] = slices.Clone(e.Value)
			}
		}
		for _, q := range w.Delete {
			delete(d.jobs, q)
		}
		return nil
	})
}

// LoadMeta calls each for every metadata entry.
func (s *Store) LoadMeta(ctx context.Context, each func(store.Meta) error) error {
	var snap []store.Meta
	err := s.locked(ctx, func(d *data) error {
		snap = make([]store.Meta, 0, len(d.meta))
		for k, v := range d.meta {
			snap = append(snap, store.Meta{Key: k, Value: slices.Clone(v)})
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, m := range snap {
		if err := each(m); err != nil {
			return err
		}
	}
	return nil
}
