package broker

import (
	"context"
	"log/slog"
	"sync"

	"github.com/gearwork/gearwork/internal/store"
)

// statusLookups gathers the status lookups of jobs this server does not
// hold (GET_STATUS of an unknown handle, GET_STATUS_UNIQUE of an unknown
// unique) into one store query at a time: while a query is under way, the
// lookups that arrive wait for the next, which takes them all (up to
// maxStatusLookups). However many clients ask, a server sends one such
// query at a time instead of one per request; a lookup is still answered
// by a query sent after it arrived, so a job submitted on another server
// before is found.
type statusLookups struct {
	find store.ManyFinder
	log  *slog.Logger
	// mu guards pending and running.
	mu sync.Mutex
	// pending are the lookups waiting for a query, in order of arrival.
	pending []*statusLookup
	// running: a query is under way. Its sender, when it is done, hands
	// the next query to the first pending lookup's goroutine (lead).
	running bool
}

// maxStatusLookups bounds the lookups of one query.
const maxStatusLookups = 1024

type statusLookup struct {
	seq    uint64
	unique string
	found  store.Found
	ok     bool
	// lead: this lookup's goroutine sends the next query (set before
	// done is closed).
	lead bool
	done chan struct{}
}

// lookup finds the job of seq, or of unique when it is not empty, as
// store.SharedStore.Find does; a store error is logged and answered as
// not found.
func (l *statusLookups) lookup(seq uint64, unique string) (store.Found, bool) {
	me := &statusLookup{seq: seq, unique: unique, done: make(chan struct{})}
	l.mu.Lock()
	l.pending = append(l.pending, me)
	if l.running {
		l.mu.Unlock()
		<-me.done
		if !me.lead {
			return me.found, me.ok
		}
		me.done = make(chan struct{})
		l.mu.Lock()
	}
	// me is the first pending lookup: the query takes it.
	l.running = true
	n := min(len(l.pending), maxStatusLookups)
	batch := l.pending[:n:n]
	l.pending = l.pending[n:]
	l.mu.Unlock()
	l.query(batch)
	l.mu.Lock()
	if len(l.pending) > 0 {
		next := l.pending[0]
		next.lead = true
		close(next.done)
	} else {
		l.running = false
		l.pending = nil
	}
	l.mu.Unlock()
	return me.found, me.ok
}

// query looks the jobs of batch up in one query and answers each.
func (l *statusLookups) query(batch []*statusLookup) {
	var seqs []uint64
	var uniques []string
	for _, s := range batch {
		if s.unique != "" {
			uniques = append(uniques, s.unique)
		} else {
			seqs = append(seqs, s.seq)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), sharedStatusTimeout)
	bySeq, byUnique, err := l.find.FindMany(ctx, seqs, uniques)
	cancel()
	if err != nil {
		l.log.Warn("broker: looking jobs up in the store failed", slog.Int("jobs", len(batch)), slog.String("error", err.Error()))
	}
	for _, s := range batch {
		if s.unique != "" {
			s.found, s.ok = byUnique[s.unique]
		} else {
			s.found, s.ok = bySeq[s.seq]
		}
		close(s.done)
	}
}
