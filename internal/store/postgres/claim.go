package postgres

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"strconv"

	"github.com/jackc/pgx/v5"

	"github.com/gearwork/gearwork/internal/store"
)

// returning is the column list a claim returns (jobScanner's order).
// The last column is when the row was created, in Unix nanoseconds
// (store.Job.Submitted; jobScanner with submitted).
var returning = prefixed("g.", "seq, handle, function, uniq, reducer, payload, priority, run_at, retries, "+stateNames) +
	", (extract(epoch FROM g.created_at) * 1e9)::bigint AS submitted_ns"

// memberLockSQL locks this server's row ($1) until the end of the
// transaction, so that it is not deleted (which releases the server's
// jobs) while the transaction takes jobs for it, and tells whether the row
// is there. Every statement that sets a job's owner checks the row too
// (memberExists): a server whose row is gone takes nothing.
const memberLockSQL = `SELECT EXISTS (SELECT FROM gearwork_servers WHERE id = $1 FOR KEY SHARE)`

// memberExists is the condition, on the server id parameter $N, that a
// statement which sets jobs' owner to that server checks once (a
// one-time filter): its row is there, locked until the end of the
// transaction.
func memberExists(n int) string {
	return `EXISTS (SELECT FROM gearwork_servers WHERE id = $` + strconv.Itoa(n) + ` FOR KEY SHARE)`
}

// claimSQL is the plain claim: runnable jobs without an ordering key of
// functions without a concurrency limit, any number of servers at once
// (SKIP LOCKED). The rows picked are updated through the primary key
// (seq = ANY of their array): joined with the table instead, the planner,
// which cannot know how many rows the LIMIT of each function takes,
// hashed the whole table for every claim, a cost that grew with the
// queue.
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
	WHERE ` + memberExists(3) + `
)
UPDATE gearwork_jobs g SET owner = $3, progress_num = 0, progress_den = 0, running = false
WHERE g.seq = ANY (ARRAY(SELECT seq FROM picked))
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
	WHERE k.rn <= k.n AND g.owner IS NULL AND ` + memberExists(7) + `
	FOR UPDATE OF g SKIP LOCKED
), claimed AS (
	UPDATE gearwork_jobs g SET owner = $7, progress_num = 0, progress_den = 0, running = false
	WHERE g.seq = ANY (ARRAY(SELECT seq FROM picked))
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
// waits for another server's. When this server's row is gone (its lease
// was lost) it takes nothing and returns ErrLeaseLost.
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
		b.Queue(memberLockSQL, id)
		b.Queue(claimSQL, fns, ns, id)
		b.Queue(orderedProbeSQL, fns)
		br := s.apool.SendBatch(ctx, b)
		err := readMember(br)
		var rows pgx.Rows
		if err == nil {
			rows, err = br.Query()
		}
		if err == nil {
			out, err = scanJobs(rows, out, true)
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
	b.Queue(memberLockSQL, id)
	b.Queue(claimLockSQL, keys)
	b.Queue(serialClaimSQL, fns, ns, lims, rates, bursts, plain, id)
	br := s.apool.SendBatch(ctx, b)
	err := readMember(br)
	if err == nil {
		_, err = br.Exec()
	}
	var out []store.Job
	if err == nil {
		var rows pgx.Rows
		rows, err = br.Query()
		if err == nil {
			out, err = scanJobs(rows, nil, true)
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

// readMember reads memberLockSQL's answer: ErrLeaseLost when this
// server's row is gone.
func readMember(br pgx.BatchResults) error {
	var ok bool
	if err := br.QueryRow().Scan(&ok); err != nil {
		return err
	}
	if !ok {
		return ErrLeaseLost
	}
	return nil
}

// scanJobs appends the jobs rows returns to out and closes rows; with
// submitted the rows end with a claim's submitted_ns (jobScanner).
func scanJobs(rows pgx.Rows, out []store.Job, submitted bool) ([]store.Job, error) {
	defer rows.Close()
	sc := newJobScanner(submitted)
	for rows.Next() {
		j, err := sc.scan(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, j)
	}
	return out, rows.Err()
}

// FindUnique returns the live job of function with unique.
func (s *Store) FindUnique(ctx context.Context, function, unique string) (uint64, bool, error) {
	if err := s.check(ctx); err != nil {
		return 0, false, err
	}
	var seq int64
	err := s.pool.QueryRow(ctx, `SELECT seq FROM gearwork_jobs WHERE uniq = $1 AND function = $2 AND state IN (0, 1, 4)`,
		[]byte(unique), []byte(function)).Scan(&seq)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return 0, false, nil
	case err != nil:
		return 0, false, fmt.Errorf("postgres: find job by unique: %w", err)
	}
	return uint64(seq), true, nil
}

var _ store.ManyFinder = (*Store)(nil)

// findCols are the columns of store.Found, after seq.
const findCols = `owner IS NOT NULL, CASE WHEN owner IS NULL THEN 0 ELSE progress_num END,
		CASE WHEN owner IS NULL THEN 0 ELSE progress_den END, CASE WHEN state = 1 THEN not_before ELSE 0 END`

// FindMany is Find of many jobs, in one round trip: one statement by
// number, one by unique.
func (s *Store) FindMany(ctx context.Context, seqs []uint64, uniques []string) (map[uint64]store.Found, map[string]store.Found, error) {
	if err := s.check(ctx); err != nil {
		return nil, nil, err
	}
	bySeq := make(map[uint64]store.Found, len(seqs))
	byUnique := make(map[string]store.Found, len(uniques))
	b := &pgx.Batch{}
	var (
		q, num, den, retryAt int64
		claimed              bool
		u                    []byte
	)
	found := func() store.Found {
		return store.Found{Seq: uint64(q), Claimed: claimed, Numerator: uint32(num), Denominator: uint32(den), RetryAt: retryAt}
	}
	if len(seqs) > 0 {
		b.Queue(`SELECT seq, `+findCols+` FROM gearwork_jobs WHERE seq = ANY($1) AND state IN (0, 1, 4)`,
			seqArgs(seqs)).Query(func(rows pgx.Rows) error {
			_, err := pgx.ForEachRow(rows, []any{&q, &claimed, &num, &den, &retryAt}, func() error {
				bySeq[uint64(q)] = found()
				return nil
			})
			return err
		})
	}
	if len(uniques) > 0 {
		us := make([][]byte, len(uniques))
		for i, x := range uniques {
			us[i] = []byte(x)
		}
		b.Queue(`SELECT DISTINCT ON (uniq) uniq, seq, `+findCols+` FROM gearwork_jobs
			WHERE uniq = ANY($1) AND state IN (0, 1, 4) ORDER BY uniq, seq`, us).Query(func(rows pgx.Rows) error {
			_, err := pgx.ForEachRow(rows, []any{&u, &q, &claimed, &num, &den, &retryAt}, func() error {
				byUnique[string(u)] = found()
				return nil
			})
			return err
		})
	}
	if b.Len() > 0 {
		if err := s.pool.SendBatch(ctx, b).Close(); err != nil {
			return nil, nil, fmt.Errorf("postgres: find %d jobs: %w", len(seqs)+len(uniques), err)
		}
	}
	return bySeq, byUnique, nil
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
		retryAt  int64
	)
	const cols = `SELECT seq, owner IS NOT NULL, CASE WHEN owner IS NULL THEN 0 ELSE progress_num END,
		CASE WHEN owner IS NULL THEN 0 ELSE progress_den END, CASE WHEN state = 1 THEN not_before ELSE 0 END
		FROM gearwork_jobs `
	if unique != "" {
		row = s.pool.QueryRow(ctx, cols+`WHERE uniq = $1 AND state IN (0, 1, 4) ORDER BY seq LIMIT 1`, []byte(unique))
	} else {
		row = s.pool.QueryRow(ctx, cols+`WHERE seq = $1 AND state IN (0, 1, 4)`, seqArg(seq))
	}
	switch err := row.Scan(&q, &claimed, &num, &den, &retryAt); {
	case errors.Is(err, pgx.ErrNoRows):
		return f, false, nil
	case err != nil:
		return f, false, fmt.Errorf("postgres: find job: %w", err)
	}
	return store.Found{Seq: uint64(q), Claimed: claimed, Numerator: uint32(num), Denominator: uint32(den),
		RetryAt: retryAt}, true, nil
}
