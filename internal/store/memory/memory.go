// Package memory is a Store that keeps background jobs in a map. Nothing
// survives the process: it is the second implementation that keeps the
// conformance suite honest, and a fast store for broker tests.
//
// API is not stable: this package is internal to Gearwork.
package memory

import (
	"context"
	"slices"
	"sync"

	"github.com/gearwork/gearwork/internal/store"
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

// Len returns the number of stored jobs.
func (s *Store) Len() int {
	s.d.mu.Lock()
	defer s.d.mu.Unlock()
	return len(s.d.jobs)
}

func (s *Store) check(ctx context.Context) error {
	if s.closed {
		return store.ErrClosed
	}
	return ctx.Err()
}

// Save stores copies of jobs, replacing any with the same Seq.
func (s *Store) Save(ctx context.Context, jobs []store.Job) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if err := s.check(ctx); err != nil {
		return err
	}
	s.d.mu.Lock()
	defer s.d.mu.Unlock()
	for _, j := range jobs {
		j.Payload = slices.Clone(j.Payload)
		j.Result = slices.Clone(j.Result)
		j.History = slices.Clone(j.History)
		s.d.jobs[j.Seq] = j
	}
	return nil
}

// Delete removes the jobs; unknown ones are ignored.
func (s *Store) Delete(ctx context.Context, seqs []uint64) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if err := s.check(ctx); err != nil {
		return err
	}
	s.d.mu.Lock()
	defer s.d.mu.Unlock()
	for _, q := range seqs {
		delete(s.d.jobs, q)
	}
	return nil
}

// Load calls each for every job in ascending Seq order, from a snapshot
// taken when Load starts, and stops at the first error each returns.
func (s *Store) Load(ctx context.Context, each func(store.Job) error) error {
	s.mu.RLock()
	if err := s.check(ctx); err != nil {
		s.mu.RUnlock()
		return err
	}
	s.d.mu.Lock()
	snap := make([]store.Job, 0, len(s.d.jobs))
	for _, j := range s.d.jobs {
		snap = append(snap, j)
	}
	s.d.mu.Unlock()
	s.mu.RUnlock()
	slices.SortFunc(snap, func(a, b store.Job) int {
		switch {
		case a.Seq < b.Seq:
			return -1
		case a.Seq > b.Seq:
			return 1
		}
		return 0
	})
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
	s.mu.RLock()
	defer s.mu.RUnlock()
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	s.d.mu.Lock()
	defer s.d.mu.Unlock()
	j, ok := s.d.jobs[seq]
	if !ok {
		return nil, store.ErrNotFound
	}
	return slices.Clone(j.Payload), nil
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
	s.mu.RLock()
	defer s.mu.RUnlock()
	if err := s.check(ctx); err != nil {
		return err
	}
	s.d.mu.Lock()
	defer s.d.mu.Unlock()
	for _, e := range entries {
		if e.Value == nil {
			delete(s.d.meta, e.Key)
		} else {
			s.d.meta[e.Key] = slices.Clone(e.Value)
		}
	}
	return nil
}

// LoadMeta calls each for every metadata entry.
func (s *Store) LoadMeta(ctx context.Context, each func(store.Meta) error) error {
	s.mu.RLock()
	if err := s.check(ctx); err != nil {
		s.mu.RUnlock()
		return err
	}
	s.d.mu.Lock()
	snap := make([]store.Meta, 0, len(s.d.meta))
	for k, v := range s.d.meta {
		snap = append(snap, store.Meta{Key: k, Value: slices.Clone(v)})
	}
	s.d.mu.Unlock()
	s.mu.RUnlock()
	for _, m := range snap {
		if err := each(m); err != nil {
			return err
		}
	}
	return nil
}
