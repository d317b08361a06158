package postgres

import (
	"cmp"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/gearwork/gearwork/internal/store"
)

// ErrNotJoined is returned by the shared-mode methods (Claim, Renew, Release)
// before Join or after Leave.
var ErrNotJoined = errors.New("postgres: this server has not joined the shared store")

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
	old := s.listener
	s.listener = l
	s.mu.Unlock()
	if old != nil {
		old.stop()
	}
	l.start()
	return s.cfg.LeaseTTL / 4, nil
}

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
// whose lease has expired (waking the others to claim them). lost reports
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
	tag, err := s.pool.Exec(ctx, `UPDATE gearwork_servers SET lease_until = now() + $2::interval WHERE id = $1`,
		id, s.cfg.LeaseTTL)
	if err != nil {
		return false, fmt.Errorf("postgres: renew lease: %w", err)
	}
	if tag.RowsAffected() == 0 {
		nid, err := s.register(ctx)
		if err != nil {
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
	err = s.pool.QueryRow(ctx, `WITH dead AS (
			DELETE FROM gearwork_servers WHERE lease_until < now() RETURNING id)
		SELECT count(*) FROM dead`).Scan(&reaped)
	if err != nil {
		return lost, fmt.Errorf("postgres: release expired leases: %w", err)
	}
	if reaped > 0 {
		s.log.Info("postgres: released the jobs of servers whose lease expired", slog.Int("servers", reaped))
		if _, err := s.pool.Exec(ctx, `SELECT pg_notify($1, '')`, s.channel); err != nil {
			return lost, fmt.Errorf("postgres: notify: %w", err)
		}
	}
	return lost, nil
}

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

var insertSQL = `
WITH input AS (
	SELECT * FROM unnest($1::bytea[], $2::bytea[], $3::bytea[], $4::bytea[], $5::smallint[],
		$6::bigint[], $7::bigint[], $8::boolean[], ` + params(stateTypes, 11) + `, $23::bigint[])
		WITH ORDINALITY AS i(function, uniq, reducer, payload, priority, run_at, retries, claim, ` + stateNames + `, given, ord)
), numbered AS MATERIALIZED (
	SELECT CASE WHEN given <> 0 THEN given ELSE nextval('gearwork_job_seq') END AS seq, ord
	FROM (SELECT given, ord FROM input ORDER BY ord) o
), ins AS (
	INSERT INTO gearwork_jobs AS g (seq, handle, function, uniq, reducer, payload, priority, run_at, retries, owner, ` + stateNames + `)
	SELECT n.seq, $9::bytea || convert_to(n.seq::text, 'UTF8'), i.function, i.uniq, i.reducer, i.payload,
		i.priority, i.run_at, i.retries, CASE WHEN i.claim AND i.ordering_key = '' THEN $10::bigint END, ` + prefixed("i.", stateNames) + `
	FROM input i JOIN numbered n USING (ord)
	ON CONFLICT (uniq, function) WHERE uniq IS NOT NULL AND state <> 2
	DO UPDATE SET owner = EXCLUDED.owner, progress_num = 0, progress_den = 0
		WHERE g.owner IS NULL AND EXCLUDED.owner IS NOT NULL AND g.state IN (0, 1) AND g.ordering_key = ''
			AND g.run_at <= extract(epoch FROM now())::bigint
			AND g.not_before <= (extract(epoch FROM now()) * 1e9)::bigint
	RETURNING g.seq, g.function, g.uniq, (g.xmax = 0) AS created, g.owner
)
SELECT n.ord, ins.seq, ins.function, ins.uniq, ins.created, ins.owner FROM ins LEFT JOIN numbered n ON n.seq = ins.seq`

// prefixed turns "a, b" into "p.a, p.b".
func prefixed(p, names string) string {
	var parts []string
	for _, n := range strings.Split(names, ",") {
		parts = append(parts, p+strings.TrimSpace(n))
	}
	return strings.Join(parts, ", ")
}

type uniqKey struct{ function, unique string }

// Insert adds new background jobs, assigning each without one a sequence
// number from the database's sequence (unique across every server), and
// coalesces a
// job with a unique with the live job of the same function and unique:
// that job's sequence number is returned with Created false. Jobs asked to
// be claimed are held by this server, except jobs with an ordering key,
// which only Claim takes (as the head of their key); the others wake the
// servers listening. Durable when Insert returns. If this server's lease was
// lost, the jobs are inserted unclaimed.
func (s *Store) Insert(ctx context.Context, p store.InsertParams) ([]store.Inserted, error) {
	c, err := s.Commit(ctx, store.CommitParams{Insert: p})
	return c.Inserted, err
}

// Commit writes one round of the broker's group committer in one
// transaction, one round trip and one WAL flush: it deletes p.Delete
// (finished jobs), updates p.Update as Update does, and inserts
// p.Insert.Jobs as Insert does, returning one Inserted per job, and
// reserves p.Reserve sequence numbers from the database's sequence (the
// reservation is durable with the round). Durable when it returns.
func (s *Store) Commit(ctx context.Context, p store.CommitParams) (store.Committed, error) {
	if err := s.check(ctx); err != nil {
		return store.Committed{}, err
	}
	out := store.Committed{Inserted: make([]store.Inserted, len(p.Insert.Jobs))}
	if len(p.Insert.Jobs) == 0 && len(p.Update) == 0 && len(p.Delete) == 0 && len(p.Meta) == 0 &&
		len(p.Release) == 0 && len(p.Notify) == 0 && p.Reserve <= 0 && len(p.Progress) == 0 {
		return out, nil
	}
	id, _ := s.member()
	for attempt := 0; ; attempt++ {
		err := s.commit(ctx, p, &out, id)
		var pgErr *pgconn.PgError
		if attempt == 0 && errors.As(err, &pgErr) && pgErr.Code == "23503" && id != 0 {
			// foreign_key_violation: this server's row is gone (its lease
			// was lost); insert without claiming. Renew registers it again.
			id = 0
			continue
		}
		if err != nil {
			return store.Committed{}, fmt.Errorf("postgres: commit %d new, %d updated, %d finished jobs: %w",
				len(p.Insert.Jobs), len(p.Update), len(p.Delete), err)
		}
		return out, nil
	}
}

// reserveSQL takes sequence numbers for jobs a server numbers itself. The
// commit of the round that runs it flushes the sequence's WAL record, so
// a number is never given out twice, even after a crash.
const reserveSQL = `SELECT nextval('gearwork_job_seq') FROM generate_series(1, $1::integer)`

// progressSQL writes the progress of running jobs this server ($4) holds;
// rows gone or held by another server meanwhile are skipped.
const progressSQL = `UPDATE gearwork_jobs g SET progress_num = u.num, progress_den = u.den
	FROM unnest($1::bigint[], $2::bigint[], $3::bigint[]) AS u(seq, num, den)
	WHERE g.seq = u.seq AND g.owner = $4`

func (s *Store) commit(ctx context.Context, cp store.CommitParams, res *store.Committed, id int64) error {
	p := cp.Insert
	out := res.Inserted
	res.Reserved = res.Reserved[:0]
	claim := func(i int) bool { return id != 0 && p.Claim != nil && p.Claim[i] }
	// A batch may name one (function, unique) twice; only the first goes
	// to the database, the others share its outcome.
	first := make(map[uniqKey]int)
	dupOf := make([]int, len(p.Jobs))
	var sent []int // indexes into p.Jobs, in statement row order
	var notify []string
	notified := make(map[string]bool)
	now := time.Now().Unix()
	for i, j := range p.Jobs {
		dupOf[i] = -1
		if j.Unique != "" && j.State != store.StateDead { // dead letters are outside the unique index
			k := uniqKey{j.Function, j.Unique}
			if f, ok := first[k]; ok {
				dupOf[i] = f
				continue
			}
			first[k] = i
		}
		sent = append(sent, i)
		if !claim(i) && j.RunAt <= now && !notified[j.Function] {
			notified[j.Function] = true
			notify = append(notify, notifyPayload(j.Function))
		}
	}
	jobsSent := make([]store.Job, len(sent))
	for k, i := range sent {
		jobsSent[k] = p.Jobs[i]
	}
	parts := chunks(jobsSent)

	// One batch: one implicit transaction, one round trip.
	b := &pgx.Batch{}
	if len(cp.Delete) > 0 {
		b.Queue(`DELETE FROM gearwork_jobs WHERE seq = ANY($1)`, seqArgs(cp.Delete))
	}
	if len(cp.Update) > 0 {
		b.Queue(updateSQL, updateArgs(cp.Update)...)
	}
	for k, part := range parts {
		base := 0
		for _, prev := range parts[:k] {
			base += len(prev)
		}
		var cl []bool
		for r := range part {
			cl = append(cl, claim(sent[base+r]))
		}
		b.Queue(insertSQL, insertArgs(part, cl, p.HandlePrefix, id)...)
	}
	if len(cp.Progress) > 0 && id != 0 {
		seqs := make([]int64, len(cp.Progress))
		nums := make([]int64, len(cp.Progress))
		dens := make([]int64, len(cp.Progress))
		for i, pr := range cp.Progress {
			seqs[i], nums[i], dens[i] = seqArg(pr.Seq), int64(pr.Numerator), int64(pr.Denominator)
		}
		b.Queue(progressSQL, seqs, nums, dens, id)
	}
	if cp.Reserve > 0 {
		b.Queue(reserveSQL, cp.Reserve)
	}
	if len(cp.Release) > 0 && id != 0 {
		b.Queue(`UPDATE gearwork_jobs SET owner = NULL WHERE seq = ANY($1) AND owner = $2`, seqArgs(cp.Release), id)
		if len(cp.Notify) == 0 && len(notify) == 0 {
			notify = append(notify, "")
		}
	}
	for _, f := range cp.Notify {
		if !notified[f] {
			notified[f] = true
			notify = append(notify, notifyPayload(f))
		}
	}
	if len(notify) > 0 {
		b.Queue(`SELECT pg_notify($1, n) FROM unnest($2::text[]) n`, s.channel, notify)
	}
	s.queueMeta(b, cp.Meta)
	br := s.pool.SendBatch(ctx, b)
	if len(cp.Delete) > 0 {
		if _, err := br.Exec(); err != nil {
			_ = br.Close()
			return err
		}
	}
	if len(cp.Update) > 0 {
		if _, err := br.Exec(); err != nil {
			_ = br.Close()
			return err
		}
	}
	var missing []int // rows that coalesced with a job the statement did not return
	base := 0
	for _, part := range parts {
		rows, err := br.Query()
		if err != nil {
			_ = br.Close()
			return err
		}
		seen := make([]bool, len(part))
		for rows.Next() {
			var (
				ord      *int64
				seq      int64
				f, u     []byte
				created  bool
				owner    *int64
				rowIndex = -1
			)
			if err := rows.Scan(&ord, &seq, &f, &u, &created, &owner); err != nil {
				rows.Close()
				_ = br.Close()
				return err
			}
			if ord != nil {
				rowIndex = int(*ord) - 1
			} else if i, ok := first[uniqKey{string(f), string(u)}]; ok {
				rowIndex = slices.Index(sent[base:base+len(part)], i)
			}
			if rowIndex < 0 || rowIndex >= len(part) {
				continue
			}
			seen[rowIndex] = true
			out[sent[base+rowIndex]] = store.Inserted{Seq: uint64(seq), Created: created,
				Claimed: owner != nil && *owner == id && id != 0}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			_ = br.Close()
			return err
		}
		for k, ok := range seen {
			if !ok {
				missing = append(missing, sent[base+k])
			}
		}
		base += len(part)
	}
	if len(cp.Progress) > 0 && id != 0 {
		if _, err := br.Exec(); err != nil {
			_ = br.Close()
			return err
		}
	}
	if cp.Reserve > 0 {
		rows, err := br.Query()
		if err != nil {
			_ = br.Close()
			return err
		}
		for rows.Next() {
			var seq int64
			if err := rows.Scan(&seq); err != nil {
				rows.Close()
				_ = br.Close()
				return err
			}
			res.Reserved = append(res.Reserved, uint64(seq))
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			_ = br.Close()
			return err
		}
	}
	if err := br.Close(); err != nil {
		return err
	}
	// Jobs that coalesced with a job some server holds (the conditional
	// update did not fire, so the statement did not return the row).
	for _, i := range missing {
		r, err := s.resolveCoalesced(ctx, p, p.Jobs[i], id)
		if err != nil {
			return err
		}
		out[i] = r
	}
	for i, f := range dupOf {
		if f >= 0 {
			out[i] = store.Inserted{Seq: out[f].Seq}
		}
	}
	return nil
}

// resolveCoalesced finds the live job a new job coalesced with, or inserts
// the job after all when that one has finished meanwhile. The job found
// is reported unclaimed even when this server holds it: this insert did
// not claim it, and the server has it already (in memory, or arriving by
// its own claim, or finished there), so it must not be run a second time
// because of this insert.
func (s *Store) resolveCoalesced(ctx context.Context, p store.InsertParams, j store.Job, id int64) (store.Inserted, error) {
	for attempt := 0; ; attempt++ {
		var seq int64
		err := s.pool.QueryRow(ctx, `SELECT seq FROM gearwork_jobs WHERE uniq = $1 AND function = $2 AND state <> 2`,
			[]byte(j.Unique), []byte(j.Function)).Scan(&seq)
		if err == nil {
			return store.Inserted{Seq: uint64(seq)}, nil
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			return store.Inserted{}, err
		}
		// Finished and deleted in the meantime: a new job after all. One
		// numbered by this server is held here, as it was asked to be;
		// one numbered by the store goes to whichever server claims it.
		b := &pgx.Batch{}
		b.Queue(insertSQL, insertArgs([]store.Job{j}, []bool{j.Seq != 0}, p.HandlePrefix, id)...)
		b.Queue(`SELECT pg_notify($1, $2)`, s.channel, notifyPayload(j.Function))
		br := s.pool.SendBatch(ctx, b)
		var (
			ord           *int64
			f, u          []byte
			created       bool
			insertedOwner *int64
		)
		err = br.QueryRow().Scan(&ord, &seq, &f, &u, &created, &insertedOwner)
		cerr := br.Close()
		if err == nil && cerr == nil {
			return store.Inserted{Seq: uint64(seq), Created: true,
				Claimed: insertedOwner != nil && *insertedOwner == id && id != 0}, nil
		}
		if !errors.Is(err, pgx.ErrNoRows) || attempt > 5 {
			return store.Inserted{}, cmp.Or(err, cerr)
		}
		// Another server inserted it first: look again.
	}
}

// insertArgs returns the arguments of insertSQL for jobs, claimed by the
// server id where claim says so.
func insertArgs(jobs []store.Job, claim []bool, prefix string, id int64) []any {
	var c jobColumns
	for _, j := range jobs {
		c.addFields(j)
		c.seq = append(c.seq, seqArg(j.Seq))
	}
	args := append([]any{c.function, c.uniq, c.reducer, c.payload, c.priority, c.runAt, c.retries, claim,
		[]byte(prefix), id}, c.stateArgs()...)
	return append(args, c.seq)
}

func seqArgs(seqs []uint64) []int64 {
	out := make([]int64, len(seqs))
	for i, q := range seqs {
		out[i] = seqArg(q)
	}
	return out
}

var updateSQL = `UPDATE gearwork_jobs g SET retries = u.retries, run_at = u.run_at, priority = u.priority, ` +
	setFrom("u.", stateNames) + `
	FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::smallint[], ` + params(stateTypes, 5) + `)
		AS u(seq, retries, run_at, priority, ` + stateNames + `)
	WHERE g.seq = u.seq`

// setFrom turns "a, b" into "a = p.a, b = p.b".
func setFrom(p, names string) string {
	var parts []string
	for _, n := range strings.Split(names, ",") {
		n = strings.TrimSpace(n)
		parts = append(parts, n+" = "+p+n)
	}
	return strings.Join(parts, ", ")
}

func updateArgs(jobs []store.Job) []any {
	jobs = lastPerSeq(jobs)
	var c jobColumns
	seq := make([]int64, len(jobs))
	retries := make([]int64, len(jobs))
	runAt := make([]int64, len(jobs))
	pri := make([]int16, len(jobs))
	for i, j := range jobs {
		seq[i], retries[i], runAt[i], pri[i] = seqArg(j.Seq), int64(j.Retries), j.RunAt, int16(j.Priority)
		c.addState(j)
	}
	return append([]any{seq, retries, runAt, pri}, c.stateArgs()...)
}

// Update writes the retries, run-at time, priority and lifecycle state
// (Job.State and the fields after it) of jobs that are still stored. A job no longer stored (finished meanwhile, possibly by
// another server) is skipped, never stored again.
func (s *Store) Update(ctx context.Context, jobs []store.Job) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	if len(jobs) == 0 {
		return nil
	}
	if _, err := s.pool.Exec(ctx, updateSQL, updateArgs(jobs)...); err != nil {
		return fmt.Errorf("postgres: update %d jobs: %w", len(jobs), err)
	}
	return nil
}

// returning is the column list a claim returns (scanJob's order).
var returning = prefixed("g.", "seq, handle, function, uniq, reducer, payload, priority, run_at, retries, "+stateNames)

// claimSQL is the plain claim: runnable jobs without an ordering key of
// functions without a concurrency limit, any number of servers at once
// (SKIP LOCKED).
var claimSQL = `
WITH want AS (
	SELECT * FROM unnest($1::bytea[], $2::integer[]) AS w(function, n)
), picked AS (
	SELECT j.seq FROM want CROSS JOIN LATERAL (
		SELECT seq FROM gearwork_jobs
		WHERE function = want.function AND owner IS NULL AND state IN (0, 1) AND ordering_key = ''
			AND run_at <= extract(epoch FROM now())::bigint
			AND not_before <= (extract(epoch FROM now()) * 1e9)::bigint
		ORDER BY priority, seq
		LIMIT want.n
		FOR UPDATE SKIP LOCKED) j
)
UPDATE gearwork_jobs g SET owner = $3, progress_num = 0, progress_den = 0
FROM picked WHERE g.seq = picked.seq
RETURNING ` + returning

// orderedProbeSQL names the functions of $1 that have runnable jobs with
// an ordering key no server holds: they need the serialized claim.
const orderedProbeSQL = `
SELECT w.function FROM unnest($1::bytea[]) AS w(function)
WHERE EXISTS (SELECT 1 FROM gearwork_jobs r
	WHERE r.function = w.function AND r.ordering_key <> '' AND r.state IN (0, 1) AND r.owner IS NULL
		AND r.run_at <= extract(epoch FROM now())::bigint
		AND r.not_before <= (extract(epoch FROM now()) * 1e9)::bigint)`

// claimLockSQL takes the claim lock of each function (keys sorted, so
// that servers never wait for each other in a cycle) until the end of the
// transaction.
const claimLockSQL = `SELECT pg_advisory_xact_lock(k) FROM unnest($1::bigint[]) AS k`

// serialClaimSQL is the claim of functions with a concurrency or rate
// limit or with ordered jobs, run holding their claim locks, in a
// statement of its own so that it sees every claim committed before the
// locks were granted.
//
// For each function it takes up to n jobs ($2), cut to the limit $3 minus
// the jobs servers hold when $3 is positive, and to the tokens in the
// function's bucket (rate $4 per second, burst $5) when $4 is positive:
// the head of every ordering key that can run now and, for functions
// with a limit ($6), jobs without a key (those of other functions were
// taken by the plain claim), by priority then sequence. The head of a
// key is its row that blocks the key (held by a server, or waiting for
// its retry), else its oldest runnable row: so two jobs of one key never
// run at once, and they run in submit order. The bucket is charged one
// token per job taken.
var serialClaimSQL = `
WITH want AS (
	SELECT * FROM unnest($1::bytea[], $2::integer[], $3::integer[], $4::float8[], $5::float8[], $6::boolean[])
		AS w(function, n, lim, rate, burst, plain)
), clock AS (
	SELECT extract(epoch FROM now())::bigint AS s, (extract(epoch FROM now()) * 1e9)::bigint AS ns
), bucket AS (
	SELECT w.function, CASE WHEN w.rate > 0 THEN least(w.burst,
		coalesce(r.tokens + w.rate * extract(epoch FROM now() - r.at), w.burst)) END AS avail
	FROM want w LEFT JOIN gearwork_rates r ON r.function = w.function
), quota AS (
	SELECT w.function, w.plain, w.rate, b.avail, least(w.n,
		CASE WHEN w.lim > 0 THEN w.lim - (
			SELECT count(*) FROM gearwork_jobs h
			WHERE h.owner IS NOT NULL AND h.state = 0 AND h.function = w.function)::integer END,
		floor(b.avail)::integer) AS n
	FROM want w JOIN bucket b ON b.function = w.function
), heads AS (
	SELECT DISTINCT ON (r.function, r.ordering_key) r.seq, r.function, r.priority, r.owner, r.not_before
	FROM quota q JOIN gearwork_jobs r ON r.function = q.function
	WHERE q.n > 0 AND r.ordering_key <> '' AND r.state IN (0, 1)
		AND (r.owner IS NOT NULL OR r.state = 1 OR r.run_at <= (SELECT s FROM clock))
	ORDER BY r.function, r.ordering_key, r.owner IS NULL, r.state = 0, r.seq
), cand AS (
	SELECT h.seq, h.function, h.priority FROM heads h
	WHERE h.owner IS NULL AND h.not_before <= (SELECT ns FROM clock)
	UNION ALL
	SELECT p.seq, p.function, p.priority FROM quota q CROSS JOIN LATERAL (
		SELECT seq, function, priority FROM gearwork_jobs
		WHERE function = q.function AND owner IS NULL AND state IN (0, 1) AND ordering_key = ''
			AND run_at <= (SELECT s FROM clock) AND not_before <= (SELECT ns FROM clock)
		ORDER BY priority, seq
		LIMIT greatest(q.n, 0)) p
	WHERE q.plain AND q.n > 0
), ranked AS (
	SELECT c.seq, row_number() OVER (PARTITION BY c.function ORDER BY c.priority, c.seq) AS rn, q.n
	FROM cand c JOIN quota q ON q.function = c.function
), picked AS (
	SELECT g.seq FROM gearwork_jobs g JOIN ranked k ON g.seq = k.seq
	WHERE k.rn <= k.n AND g.owner IS NULL
	FOR UPDATE OF g SKIP LOCKED
), claimed AS (
	UPDATE gearwork_jobs g SET owner = $7, progress_num = 0, progress_den = 0
	FROM picked WHERE g.seq = picked.seq
	RETURNING ` + returning + `
), spent AS (
	INSERT INTO gearwork_rates AS r (function, tokens, at)
	SELECT q.function, q.avail - (SELECT count(*) FROM claimed c WHERE c.function = q.function), now()
	FROM quota q WHERE q.rate > 0
	ON CONFLICT (function) DO UPDATE SET tokens = EXCLUDED.tokens, at = EXCLUDED.at
)
SELECT * FROM claimed`

// claimLock is the advisory lock key of a function's serialized claim:
// advisory locks are per database, so the schema's channel is part of it.
func (s *Store) claimLock(function string) int64 {
	h := fnv.New64a()
	h.Write([]byte(s.channel))
	h.Write([]byte{0})
	h.Write([]byte(function))
	return int64(h.Sum64())
}

// Claim takes up to Max runnable, unclaimed jobs of each requested function
// for this server (skipping rows other servers are claiming at the same
// moment) and returns them by priority, then sequence. The jobs stay this
// server's while its lease lasts.
//
// Jobs with an ordering key are claimed only as the head of their key
// (see serialClaimSQL), a function with a Limit only up to it across
// every server, and a function with a Rate only as its token bucket
// allows: those claims hold a per-function lock, taken only for
// functions that have such jobs or a limit, so the common claim never
// waits for another server's.
func (s *Store) Claim(ctx context.Context, req []store.ClaimRequest) ([]store.Job, error) {
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	id, err := s.member()
	if err != nil {
		return nil, err
	}
	var fns [][]byte
	var ns []int32
	limited := make(map[string]store.ClaimRequest)
	for _, r := range req {
		if r.Max <= 0 {
			continue
		}
		if r.Limit > 0 || r.Rate > 0 {
			limited[r.Function] = r
			continue
		}
		fns = append(fns, nonNil([]byte(r.Function)))
		ns = append(ns, int32(min(r.Max, 1<<20)))
	}
	var out []store.Job
	got := make(map[string]int)
	var ordered []string
	if len(fns) > 0 {
		b := &pgx.Batch{}
		b.Queue(claimSQL, fns, ns, id)
		b.Queue(orderedProbeSQL, fns)
		br := s.apool.SendBatch(ctx, b)
		rows, err := br.Query()
		if err == nil {
			out, err = scanJobs(rows, out)
		}
		if err == nil {
			rows, err = br.Query()
			if err == nil {
				for rows.Next() {
					var f []byte
					if err = rows.Scan(&f); err != nil {
						break
					}
					ordered = append(ordered, string(f))
				}
				rows.Close()
				err = cmp.Or(err, rows.Err())
			}
		}
		if cerr := br.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return nil, fmt.Errorf("postgres: claim: %w", err)
		}
		for _, j := range out {
			got[j.Function]++
		}
	}
	// The serialized claim: functions with a limit, and those with ordered
	// jobs waiting that still want more (their plain jobs are claimed).
	var serial []store.ClaimRequest
	for _, r := range limited {
		serial = append(serial, r)
	}
	for _, f := range ordered {
		for _, r := range req {
			if r.Function == f && r.Limit <= 0 && r.Rate <= 0 && r.Max > got[f] {
				serial = append(serial, store.ClaimRequest{Function: f, Max: r.Max - got[f]})
				break
			}
		}
	}
	if len(serial) > 0 {
		more, err := s.claimSerial(ctx, serial, id)
		if err != nil {
			return nil, err
		}
		out = append(out, more...)
	}
	slices.SortFunc(out, func(a, b store.Job) int {
		return cmp.Or(cmp.Compare(a.Priority, b.Priority), cmp.Compare(a.Seq, b.Seq))
	})
	return out, nil
}

// claimSerial runs serialClaimSQL for req holding the functions' claim
// locks, in one transaction and one round trip.
func (s *Store) claimSerial(ctx context.Context, req []store.ClaimRequest, id int64) ([]store.Job, error) {
	slices.SortFunc(req, func(a, b store.ClaimRequest) int {
		return cmp.Compare(s.claimLock(a.Function), s.claimLock(b.Function))
	})
	keys := make([]int64, len(req))
	fns := make([][]byte, len(req))
	ns := make([]int32, len(req))
	lims := make([]int32, len(req))
	rates := make([]float64, len(req))
	bursts := make([]float64, len(req))
	plain := make([]bool, len(req))
	for i, r := range req {
		keys[i] = s.claimLock(r.Function)
		fns[i] = nonNil([]byte(r.Function))
		ns[i] = int32(min(r.Max, 1<<20))
		lims[i] = int32(min(max(r.Limit, 0), 1<<30))
		rates[i] = max(r.Rate, 0)
		bursts[i] = max(r.Burst, 1)
		plain[i] = r.Limit > 0 || r.Rate > 0
	}
	b := &pgx.Batch{}
	b.Queue(claimLockSQL, keys)
	b.Queue(serialClaimSQL, fns, ns, lims, rates, bursts, plain, id)
	br := s.apool.SendBatch(ctx, b)
	_, err := br.Exec()
	var out []store.Job
	if err == nil {
		var rows pgx.Rows
		rows, err = br.Query()
		if err == nil {
			out, err = scanJobs(rows, nil)
		}
	}
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("postgres: claim ordered or limited jobs: %w", err)
	}
	return out, nil
}

// scanJobs appends the jobs rows returns to out and closes rows.
func scanJobs(rows pgx.Rows, out []store.Job) ([]store.Job, error) {
	defer rows.Close()
	for rows.Next() {
		j, err := scanJob(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, j)
	}
	return out, rows.Err()
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

// Find looks a live job up by unique (of any function) when unique is not
// empty, else by sequence number. ok is false when there is none.
func (s *Store) Find(ctx context.Context, seq uint64, unique string) (f store.Found, ok bool, err error) {
	if err := s.check(ctx); err != nil {
		return f, false, err
	}
	var (
		row      pgx.Row
		q        int64
		claimed  bool
		num, den int64
	)
	const cols = `SELECT seq, owner IS NOT NULL, CASE WHEN owner IS NULL THEN 0 ELSE progress_num END,
		CASE WHEN owner IS NULL THEN 0 ELSE progress_den END FROM gearwork_jobs `
	if unique != "" {
		row = s.pool.QueryRow(ctx, cols+`WHERE uniq = $1 AND state IN (0, 1) ORDER BY seq LIMIT 1`, []byte(unique))
	} else {
		row = s.pool.QueryRow(ctx, cols+`WHERE seq = $1 AND state IN (0, 1)`, seqArg(seq))
	}
	switch err := row.Scan(&q, &claimed, &num, &den); {
	case errors.Is(err, pgx.ErrNoRows):
		return f, false, nil
	case err != nil:
		return f, false, fmt.Errorf("postgres: find job: %w", err)
	}
	return store.Found{Seq: uint64(q), Claimed: claimed, Numerator: uint32(num), Denominator: uint32(den)}, true, nil
}
