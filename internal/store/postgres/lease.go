package postgres

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// ErrNotJoined is returned by the shared-mode methods (Claim, Renew, Release)
// before Join or after Leave.
var ErrNotJoined = errors.New("postgres: this server has not joined the shared store")

// ErrLeaseLost is returned (wrapped) by Claim when this server's row in
// gearwork_servers is gone: its lease expired and another server released
// its jobs. The next Renew registers it again.
var ErrLeaseLost = errors.New("postgres: this server's lease was lost")

// member returns this server's id in gearwork_servers.
func (s *Store) member() (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.serverID == 0 {
		return 0, ErrNotJoined
	}
	return s.serverID, nil
}

// Join registers this server in gearwork_servers with a lease and starts
// listening for notifications: wake is called (from another goroutine,
// without blocking) with the name of a function whose jobs may have become
// claimable, or "" when any may have; meta likewise with a metadata key
// that some server wrote or deleted, or "" when any may have changed; and
// lost (when not nil) with the error when the listening connection breaks,
// a sign that the database may be gone. It returns how often Renew must be
// called to keep the lease.
func (s *Store) Join(ctx context.Context, wake, meta func(name string), lost func(error)) (time.Duration, error) {
	if err := s.check(ctx); err != nil {
		return 0, err
	}
	id, err := s.register(ctx)
	if err != nil {
		return 0, err
	}
	if meta == nil {
		meta = func(string) {}
	}
	if lost == nil {
		lost = func(error) {}
	}
	l := newListener(s.cfg.URL, s.channel, wake, meta, lost, s.log)
	s.mu.Lock()
	s.serverID = id
	s.contact = contact{warned: s.contact.warned}
	old := s.listener
	s.listener = l
	s.mu.Unlock()
	if old != nil {
		old.stop()
	}
	l.start()
	s.steadyContact(time.Now())
	return s.cfg.LeaseTTL / 4, nil
}

// contact follows this server's contact with the database: since is when
// the current stretch without a break began (zero: broken, or never
// begun), last when the last successful renewal (or registration) was
// answered, renewedAt the database's time (its now()) when it last
// renewed this server's lease, and warned when a slow renewal was last
// logged. since and last are this process's clock; renewedAt is the
// database's, the clock of the leases.
type contact struct {
	since, last time.Time
	renewedAt   time.Time
	warned      time.Time
}

// slowRenewalWarnEvery bounds how often a renewal answered half a lease
// or more after the previous one is logged.
const slowRenewalWarnEvery = time.Minute

// contactGap is the longest pause between the answers to two successive
// renewals that keeps this server's stretch of contact with the database
// (steadyContact): half a lease.
func (s *Store) contactGap() time.Duration { return s.cfg.LeaseTTL / 2 }

// steadyContact records a renewal (or registration) answered at done, and
// reports whether this server has been in touch with the database without
// a break for at least a lease: only then may it judge another server's
// expired lease to be that server's death, for every live server has had
// the time to renew its lease since the database came back. Until then an
// expired lease may be an outage's doing: the database was away from
// every server alike, or this one was away from it (a partition, a stall
// of this process), and a lease that expired meanwhile tells nothing.
//
// The stretch breaks when a renewal fails (contactLost; a renewal that
// hangs fails at its deadline, renewTimeout) and when half a lease or
// more passed between the answers to two successive renewals. It then
// begins again at done, when the database is known to answer. Why half a
// lease: a live server renews less than half a lease apart (every
// lease_ttl/4, late by less than as much again), so its lease expires only
// in a stall of more than half a lease, which no statement of this
// server's gets through: one sent before it is answered after it, and
// the answers around the stall come more than half a lease apart. A
// server that has just joined has no stretch behind it either: it
// releases the leases of dead servers a lease after it joined at the
// earliest, whatever it finds expired.
func (s *Store) steadyContact(done time.Time) bool {
	s.mu.Lock()
	c := &s.contact
	var gap time.Duration
	if !c.last.IsZero() {
		gap = done.Sub(c.last)
	}
	late := gap >= s.contactGap()
	if c.since.IsZero() || late {
		c.since = done
	}
	c.last = done
	steady := done.Sub(c.since) >= s.cfg.LeaseTTL
	warn := late && done.Sub(c.warned) >= slowRenewalWarnEvery
	if warn {
		c.warned = done
	}
	s.mu.Unlock()
	if warn {
		s.log.Warn("postgres: a lease renewal was answered half a lease or more after the previous one; "+
			"this server releases no expired lease until it has been in touch with the database for a lease again",
			slog.Duration("gap", gap), slog.Duration("lease_ttl", s.cfg.LeaseTTL))
	}
	return steady
}

// expiredBefore returns the database time before which an expired lease
// is its server's death for this server, or false when it may take no
// expired lease for that: it must have been in touch with the database for
// a lease (steadyContact), its last renewal answered less than half a
// lease ago. The time is the database's when it last renewed this
// server's lease, as Renew releases only the leases expired by then: a
// lease that expired later may have expired in a stall of the database
// that this server's renewals have not seen yet.
func (s *Store) expiredBefore() (time.Time, bool) {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.contact
	ok := !c.since.IsZero() && now.Sub(c.since) >= s.cfg.LeaseTTL && now.Sub(c.last) < s.contactGap() &&
		!c.renewedAt.IsZero()
	return c.renewedAt, ok
}

// contactLost breaks this server's stretch of contact with the database
// (see steadyContact).
func (s *Store) contactLost() {
	s.mu.Lock()
	s.contact = contact{warned: s.contact.warned}
	s.mu.Unlock()
}

// renewTimeout bounds a renewal's statement: one that hangs fails, which
// breaks this server's stretch of contact (steadyContact), well before
// half a lease goes by.
func (s *Store) renewTimeout() time.Duration { return s.cfg.LeaseTTL / 4 }

func (s *Store) register(ctx context.Context) (int64, error) {
	var id int64
	err := s.pool.QueryRow(ctx, `INSERT INTO gearwork_servers (name, lease_until)
		VALUES ($1, now() + $2::interval) RETURNING id`, s.cfg.Name, s.cfg.LeaseTTL).Scan(&id)
	if err != nil {
		return 0, fmt.Errorf("postgres: register server: %w", err)
	}
	return id, nil
}

// Renew extends this server's lease and releases the jobs of servers
// whose lease has expired, once this server has been in touch with the
// database for a lease without a break (steadyContact; the renewal's
// statement fails after renewTimeout rather than hang), and any job
// still held under the id of a server whose row is gone
// (releaseOrphansSQL), waking the others to claim them. lost reports
// that this server's own lease had expired and another server released
// its jobs: the server has been registered again under a new id, and the
// jobs it held before must be considered taken from it.
func (s *Store) Renew(ctx context.Context) (lost bool, err error) {
	if err := s.check(ctx); err != nil {
		return false, err
	}
	id, err := s.member()
	if err != nil {
		return false, err
	}
	// at is the database's time when it renewed the lease: only leases
	// expired by then are released below, so that a stall of the database
	// after the renewal's answer (one the steadiness found below has not
	// seen) expires no live server's lease in time to be released.
	var at time.Time
	rctx, cancel := context.WithTimeout(ctx, s.renewTimeout())
	err = s.pool.QueryRow(rctx, `UPDATE gearwork_servers SET lease_until = now() + $2::interval WHERE id = $1
		RETURNING now()`, id, s.cfg.LeaseTTL).Scan(&at)
	cancel()
	renewed := err == nil
	if errors.Is(err, pgx.ErrNoRows) {
		err = nil
	}
	if err != nil {
		s.contactLost()
		return false, fmt.Errorf("postgres: renew lease: %w", err)
	}
	steady := s.steadyContact(time.Now())
	if renewed {
		s.mu.Lock()
		s.contact.renewedAt = at
		s.mu.Unlock()
	}
	if !renewed {
		nid, err := s.register(ctx)
		if err != nil {
			s.contactLost()
			return false, err
		}
		s.mu.Lock()
		if s.serverID == id {
			s.serverID = nid
		}
		s.mu.Unlock()
		s.log.Warn("postgres: this server's lease had expired; its jobs went to other servers",
			slog.Int64("old_id", id), slog.Int64("new_id", nid))
		lost = true
	}
	var reaped int
	if steady && renewed {
		err = s.pool.QueryRow(ctx, `WITH dead AS (
				DELETE FROM gearwork_servers WHERE lease_until < $1 RETURNING id)
			SELECT count(*) FROM dead`, at).Scan(&reaped)
		if err != nil {
			s.contactLost()
			return lost, fmt.Errorf("postgres: release expired leases: %w", err)
		}
	}
	tag, err := s.pool.Exec(ctx, releaseOrphansSQL)
	if err != nil {
		s.contactLost()
		return lost, fmt.Errorf("postgres: release jobs of servers that are gone: %w", err)
	}
	if reaped > 0 || tag.RowsAffected() > 0 {
		s.log.Info("postgres: released the jobs of servers whose lease expired", slog.Int("servers", reaped))
		if _, err := s.pool.Exec(ctx, `SELECT pg_notify($1, '')`, s.channel); err != nil {
			return lost, fmt.Errorf("postgres: notify: %w", err)
		}
	}
	return lost, nil
}

// releaseOrphansSQL releases the jobs held under the id of a server whose
// row is gone, which no statement of this version leaves behind (the
// deletion's trigger releases them, and a claim or insert takes nothing
// for a server whose row is gone) but a server of a version before
// migration 13 still running beside it could, claiming under an id its
// lost lease took from it. Ids are never given out again, so an id found
// gone stays gone: the jobs are matched by the ids found, not by looking
// for their servers again. The holders are found by one probe of the
// owner index each (a recursive skip from one holder to the next): a
// DISTINCT over the index read an entry for every held job, and every
// claimed job's old versions until vacuum, at every renewal. The skip
// goes from the highest id down, so that each probe lands on the entries
// of a holder's latest rows: the entries of the rows it ended and
// deleted, which stay until vacuum, lie at the other end of its range.
const releaseOrphansSQL = `WITH RECURSIVE o AS (
	(SELECT owner FROM gearwork_jobs WHERE owner IS NOT NULL ORDER BY owner DESC LIMIT 1)
	UNION ALL
	SELECT (SELECT j.owner FROM gearwork_jobs j WHERE j.owner < o.owner ORDER BY j.owner DESC LIMIT 1)
	FROM o WHERE o.owner IS NOT NULL
)
UPDATE gearwork_jobs SET owner = NULL WHERE owner = ANY (ARRAY(
	SELECT o.owner FROM o
	WHERE o.owner IS NOT NULL AND NOT EXISTS (SELECT FROM gearwork_servers s WHERE s.id = o.owner)))`

// Leave unregisters this server, which releases every job it holds to the
// other servers (and wakes them), and stops listening. Idempotent.
func (s *Store) Leave(ctx context.Context) error {
	s.mu.Lock()
	id := s.serverID
	s.serverID = 0
	l := s.listener
	s.listener = nil
	s.mu.Unlock()
	if l != nil {
		l.stop()
	}
	if id == 0 || s.closed.Load() {
		return nil
	}
	b := &pgx.Batch{}
	b.Queue(`DELETE FROM gearwork_servers WHERE id = $1`, id)
	b.Queue(`SELECT pg_notify($1, '')`, s.channel)
	if err := s.pool.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("postgres: leave: %w", err)
	}
	return nil
}

// notifyPayload names a function in a notification: hex, because function
// names are bytes and payloads are text; "" (everyone) when too long.
func notifyPayload(function string) string {
	if len(function) > 3000 {
		return ""
	}
	return hex.EncodeToString([]byte(function))
}

// metaPrefix starts the payload of a notification that a metadata key
// changed ("m:" and the key in hex, or "m:" alone for any key). A
// function's payload is plain hex, which never holds a ':'.
const metaPrefix = "m:"

// metaPayload names a metadata key in a notification; "m:" (any key)
// when too long.
func metaPayload(key string) string {
	if len(key) > 3000 {
		return metaPrefix
	}
	return metaPrefix + hex.EncodeToString([]byte(key))
}

// decodePayload reads a notification: a function whose jobs may be
// claimable (function, "" for any), or a metadata key that changed
// (isMeta, key "" for any).
func decodePayload(p string) (name string, isMeta bool) {
	if rest, ok := strings.CutPrefix(p, metaPrefix); ok {
		b, err := hex.DecodeString(rest)
		if err != nil {
			return "", true
		}
		return string(b), true
	}
	b, err := hex.DecodeString(p)
	if err != nil {
		return "", false
	}
	return string(b), false
}

// Release gives jobs this server holds back to the others and wakes them.
// Jobs it does not hold are left alone.
func (s *Store) Release(ctx context.Context, seqs []uint64) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	if len(seqs) == 0 {
		return nil
	}
	id, err := s.member()
	if err != nil {
		return err
	}
	args := make([]int64, len(seqs))
	for i, q := range seqs {
		args[i] = seqArg(q)
	}
	b := &pgx.Batch{}
	b.Queue(`UPDATE gearwork_jobs SET owner = NULL WHERE seq = ANY($1) AND owner = $2`, args, id)
	b.Queue(`SELECT pg_notify($1, '')`, s.channel)
	if err := s.pool.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("postgres: release %d jobs: %w", len(seqs), err)
	}
	return nil
}
