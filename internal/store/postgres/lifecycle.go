package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/gearwork/gearwork/internal/store"
)

// The methods in this file read and change the lifecycle rows of every
// server sharing the store (dead letters, retained results, jobs nobody
// holds), so that any server can list, retry, purge, read and expire them,
// also when the server that wrote them is gone.

// deadWhere returns the condition and arguments that select the dead
// letters sel names.
func deadWhere(sel store.DeadSelector) (string, []any) {
	switch {
	case sel.Seq != 0:
		return `state = 2 AND seq = $1`, []any{seqArg(sel.Seq)}
	case sel.Function != "":
		return `state = 2 AND function = $1`, []any{[]byte(sel.Function)}
	default:
		return `state = 2`, nil
	}
}

// DeadJobs returns the dead letters of function ("" for every function)
// that any server stored, by function name and then in the order they
// died, at most limit of them (limit ≤ 0: all).
func (s *Store) DeadJobs(ctx context.Context, function string, limit int) ([]store.Job, error) {
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	where, args := deadWhere(store.DeadSelector{Function: function})
	q := jobSelect + ` WHERE ` + where + ` ORDER BY function, finished_at, seq`
	if limit > 0 {
		q += fmt.Sprintf(` LIMIT %d`, limit)
	}
	jobs, err := s.queryJobs(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("postgres: list dead letters: %w", err)
	}
	return jobs, nil
}

func (s *Store) queryJobs(ctx context.Context, q string, args ...any) ([]store.Job, error) {
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	return scanJobs(rows, nil, false)
}

// storedJobSQL reads job $1 in state $2 with when it was submitted
// (jobScanner with submitted).
var storedJobSQL = `SELECT seq, handle, function, uniq, reducer, payload, priority, run_at, retries, ` + stateNames +
	`, (extract(epoch FROM created_at) * 1e9)::bigint FROM gearwork_jobs WHERE seq = $1 AND state = $2`

// StoredJob returns the stored job seq if it is in the given state (with
// Submitted), or an error wrapping store.ErrNotFound.
func (s *Store) StoredJob(ctx context.Context, seq uint64, state store.JobState) (store.Job, error) {
	if err := s.check(ctx); err != nil {
		return store.Job{}, err
	}
	rows, err := s.pool.Query(ctx, storedJobSQL, seqArg(seq), int16(state))
	var jobs []store.Job
	if err == nil {
		jobs, err = scanJobs(rows, nil, true)
	}
	if err != nil {
		return store.Job{}, fmt.Errorf("postgres: read job %d: %w", seq, err)
	}
	if len(jobs) == 0 {
		return store.Job{}, fmt.Errorf("postgres: job %d (%s): %w", seq, state, store.ErrNotFound)
	}
	return jobs[0], nil
}

// DoneByUnique returns the job in store.StateDone with this unique, of
// function or, when function is "", of the first function by name that
// has one; or an error wrapping store.ErrNotFound.
func (s *Store) DoneByUnique(ctx context.Context, function, unique string) (store.Job, error) {
	if err := s.check(ctx); err != nil {
		return store.Job{}, err
	}
	q, args := jobSelect+` WHERE uniq = $1 AND state = 3 ORDER BY function LIMIT 1`, []any{[]byte(unique)}
	if function != "" {
		q, args = jobSelect+` WHERE uniq = $1 AND function = $2 AND state = 3`, []any{[]byte(unique), []byte(function)}
	}
	jobs, err := s.queryJobs(ctx, q, args...)
	if err != nil {
		return store.Job{}, fmt.Errorf("postgres: read result by unique: %w", err)
	}
	if len(jobs) == 0 {
		return store.Job{}, fmt.Errorf("postgres: result of unique %q: %w", unique, store.ErrNotFound)
	}
	return jobs[0], nil
}

// retryDeadSQL queues the selected dead letters again for any server to
// claim, with a fresh count of attempts (history and last error kept),
// deletes their job records (they live again, and get new ones when they
// end) and wakes the servers. A dead letter whose unique is taken
// meanwhile by a live job or a retained result (or by another dead letter
// retried with it) loses its unique: it runs without coalescing. A dead
// letter of a batch is no longer counted dead there (its end is to be
// counted again, batch_done): the transaction locked the rows of those
// batches first (deadBatchesSQL, batchLockSQL), and takes only the dead
// letters of the batches it locked ($2), so that one of a batch that
// died meanwhile waits for the next retry.
const retryDeadSQL = `
WITH picked AS (
	SELECT seq, function, uniq, batch, batch_done FROM gearwork_jobs WHERE %s AND (batch = 0 OR batch = ANY(%s))
	ORDER BY seq FOR UPDATE
), revived AS (
	UPDATE gearwork_batches b SET dead = greatest(b.dead - c.n, 0)
	FROM (SELECT batch, count(*) AS n FROM picked WHERE batch <> 0 AND batch_done GROUP BY batch) c
	WHERE b.id = c.batch
), upd AS (
	UPDATE gearwork_jobs g SET state = 0, attempts = 0, finished_at = 0, not_before = 0, owner = NULL,
		batch_done = false,
		uniq = CASE WHEN g.uniq IS NOT NULL AND (
			EXISTS (SELECT 1 FROM gearwork_jobs o WHERE o.uniq = g.uniq AND o.function = g.function AND o.state <> 2)
			OR EXISTS (SELECT 1 FROM picked p WHERE p.uniq = g.uniq AND p.function = g.function AND p.seq < g.seq))
			THEN NULL ELSE g.uniq END
	FROM picked WHERE g.seq = picked.seq
	RETURNING g.seq, g.function
), forgot AS (
	DELETE FROM gearwork_records r USING upd WHERE r.seq = upd.seq
), woken AS (
	SELECT pg_notify(%s, CASE WHEN length(f.function) > 3000 THEN '' ELSE encode(f.function, 'hex') END)
	FROM (SELECT DISTINCT function FROM upd) f
)
SELECT (SELECT count(*) FROM upd), (SELECT count(*) FROM woken)`

// RetryDead queues the dead letters sel names again, for whichever server
// has workers for them, and returns how many. Idempotent: a job that is no
// longer a dead letter is left alone. A dead letter of a batch counts as
// pending in its batch again, and its next end is counted.
func (s *Store) RetryDead(ctx context.Context, sel store.DeadSelector) (int, error) {
	if err := s.check(ctx); err != nil {
		return 0, err
	}
	where, args := deadWhere(sel)
	q := fmt.Sprintf(retryDeadSQL, where, fmt.Sprintf("$%d::bigint[]", len(args)+1), fmt.Sprintf("$%d::text", len(args)+2))
	for attempt := 0; ; attempt++ {
		var n int64
		err := s.againOnConflict(ctx, "a retry of dead letters", func() error {
			return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
				// The batch rows before the jobs' (batchLockSQL).
				rows, err := tx.Query(ctx, `SELECT DISTINCT batch FROM gearwork_jobs WHERE `+where+` AND batch <> 0`, args...)
				if err != nil {
					return err
				}
				batches, err := pgx.CollectRows(rows, pgx.RowTo[int64])
				if err != nil {
					return err
				}
				if len(batches) > 0 {
					if _, err := tx.Exec(ctx, batchLockSQL, batches); err != nil {
						return err
					}
				}
				var woken int64
				return tx.QueryRow(ctx, q, append(slices.Clone(args), batches, s.channel)...).Scan(&n, &woken)
			})
		})
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "23505" && attempt < 5 {
			// unique_violation: a job with the same unique was inserted
			// at the same moment; the next attempt sees it.
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("postgres: retry dead letters: %w", err)
		}
		return int(n), nil
	}
}

// PurgeDead deletes the dead letters sel names and returns how many.
// Idempotent. Its delete locks the rows in the order it finds them, which
// a concurrent retry of dead letters, expiry or purge may lock in another:
// when PostgreSQL aborts it to resolve that deadlock, it is run again.
func (s *Store) PurgeDead(ctx context.Context, sel store.DeadSelector) (int, error) {
	if err := s.check(ctx); err != nil {
		return 0, err
	}
	where, args := deadWhere(sel)
	var n int64
	err := s.againOnConflict(ctx, "a purge of dead letters", func() error {
		tag, err := s.pool.Exec(ctx, `DELETE FROM gearwork_jobs WHERE `+where, args...)
		n = tag.RowsAffected()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("postgres: purge dead letters: %w", err)
	}
	return int(n), nil
}

const (
	expireDoneSQL = `DELETE FROM gearwork_jobs WHERE state = 3 AND not_before > 0 AND not_before <= $1`
	// expireUntimedSQL expires retained results stored without their
	// expiry time, by the retention of their function: finished_at +
	// retention <= now, written as retention <= now - finished_at, which
	// cannot leave bigint (both are Unix nanoseconds, not negative). An
	// expiry past the last Unix nanosecond (2262) is never, as the
	// broker's deadlines (nanosAfter); the sum overflowed into an error at
	// every pass.
	expireUntimedSQL = `DELETE FROM gearwork_jobs g WHERE g.state = 3 AND g.not_before = 0
		AND g.finished_at <= $1 AND coalesce(
			(SELECT r.retention FROM unnest($2::bytea[], $3::bigint[]) AS r(function, retention) WHERE r.function = g.function),
			$4) <= $1 - g.finished_at`
	trimDeadSQL = `DELETE FROM gearwork_jobs WHERE seq IN (
		SELECT seq FROM (
			SELECT g.seq, k.keep, row_number() OVER (PARTITION BY g.function ORDER BY g.finished_at DESC, g.seq DESC) AS rn
			FROM unnest($1::bytea[], $2::integer[]) AS k(function, keep)
			JOIN gearwork_jobs g ON g.function = k.function AND g.state = 2) d
		WHERE d.rn > d.keep)`
)

// Expire deletes, whichever server stored them, the retained results whose
// expiry has passed and the dead letters beyond their function's limit,
// in one transaction, and returns how many rows it deleted. Idempotent.
func (s *Store) Expire(ctx context.Context, p store.ExpireParams) (int, error) {
	if err := s.check(ctx); err != nil {
		return 0, err
	}
	fns := make([][]byte, 0, len(p.Retention))
	rets := make([]int64, 0, len(p.Retention))
	for f, r := range p.Retention {
		fns = append(fns, nonNil([]byte(f)))
		rets = append(rets, r)
	}
	b := &pgx.Batch{}
	b.Queue(expireDoneSQL, p.Now)
	b.Queue(expireUntimedSQL, p.Now, fns, rets, p.DefaultRetention)
	if len(p.KeepDead) > 0 {
		kf := make([][]byte, len(p.KeepDead))
		keep := make([]int32, len(p.KeepDead))
		for i, k := range p.KeepDead {
			kf[i], keep[i] = nonNil([]byte(k.Function)), int32(min(max(k.Keep, 0), 1<<30))
		}
		b.Queue(trimDeadSQL, kf, keep)
	}
	br := s.pool.SendBatch(ctx, b)
	n := 0
	for range b.Len() {
		tag, err := br.Exec()
		if err != nil {
			_ = br.Close()
			return 0, fmt.Errorf("postgres: expire: %w", err)
		}
		n += int(tag.RowsAffected())
	}
	if err := br.Close(); err != nil {
		return 0, fmt.Errorf("postgres: expire: %w", err)
	}
	return n, nil
}

// countsSQL counts, per function, the jobs no server holds (runnable now
// by priority, and not yet runnable or waiting for other jobs) and the dead letters, in one
// statement over the claiming and dead-letter indexes.
const countsSQL = `
SELECT function, priority,
	count(*) FILTER (WHERE state <> 4 AND run_at <= extract(epoch FROM now())::bigint
		AND not_before <= (extract(epoch FROM now()) * 1e9)::bigint),
	count(*) FILTER (WHERE state = 4 OR run_at > extract(epoch FROM now())::bigint
		OR not_before > (extract(epoch FROM now()) * 1e9)::bigint),
	0::bigint
FROM gearwork_jobs WHERE owner IS NULL AND state IN (0, 1, 4) GROUP BY function, priority
UNION ALL
SELECT function, 0::smallint, 0::bigint, 0::bigint, count(*) FROM gearwork_jobs WHERE state = 2 GROUP BY function`

// Counts returns, per function, what the database holds beyond the jobs
// servers hold: jobs nobody holds and dead letters, ordered by function.
func (s *Store) Counts(ctx context.Context) ([]store.FunctionCount, error) {
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	rows, err := s.pool.Query(ctx, countsSQL)
	if err != nil {
		return nil, fmt.Errorf("postgres: count jobs: %w", err)
	}
	defer rows.Close()
	byName := map[string]*store.FunctionCount{}
	var names []string
	for rows.Next() {
		var (
			fn                   []byte
			pri                  int16
			runnable, wait, dead int64
		)
		if err := rows.Scan(&fn, &pri, &runnable, &wait, &dead); err != nil {
			return nil, fmt.Errorf("postgres: count jobs: %w", err)
		}
		c := byName[string(fn)]
		if c == nil {
			c = &store.FunctionCount{Function: string(fn)}
			byName[c.Function] = c
			names = append(names, c.Function)
		}
		c.Queued[min(max(pri, 0), 2)] += int(runnable)
		c.Waiting += int(wait)
		c.Dead += int(dead)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("postgres: count jobs: %w", err)
	}
	slices.Sort(names)
	out := make([]store.FunctionCount, 0, len(names))
	for _, n := range names {
		out = append(out, *byName[n])
	}
	return out, nil
}

// UnheldJobs returns up to limit sequence numbers, greater than after, of
// function's live jobs (its name matched exactly, as "drop function"
// matches names) that no live server holds (state queued, retry-wait or
// waiting), in order: unclaimed, or held under a lease that CancelQueued
// takes for its server's death (expiredBefore).
func (s *Store) UnheldJobs(ctx context.Context, function string, after uint64, limit int) ([]uint64, error) {
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	// Held under an expired lease is nobody's as CancelQueued judges it.
	var before any
	if at, ok := s.expiredBefore(); ok {
		before = at
	}
	rows, err := s.pool.Query(ctx, `SELECT seq FROM gearwork_jobs
		WHERE function = $1::bytea AND seq > $2
		AND state IN (0, 1, 4)
		AND (owner IS NULL OR owner IN (SELECT id FROM gearwork_servers WHERE lease_until < $4::timestamptz))
		ORDER BY seq LIMIT $3`, []byte(function), seqArg(after), limit, before)
	if err != nil {
		return nil, fmt.Errorf("postgres: list the unheld jobs of %s: %w", function, err)
	}
	seqs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (uint64, error) {
		var seq int64
		err := r.Scan(&seq)
		return uint64(seq), err
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: list the unheld jobs of %s: %w", function, err)
	}
	return seqs, nil
}

// cancelQueuedSQL deletes job $1 and writes its record in state
// "cancelled" by $2 (cancelledRecordsSQL, as depEndSQL does for the jobs
// it cancels), so that the job's record answers after its cancel, as it
// does for a job cancelled on the server that holds it.
var cancelQueuedSQL = `WITH del AS (
	DELETE FROM gearwork_jobs WHERE seq = $1 RETURNING *
)
` + cancelledRecordsSQL("$2::text")

// CancelQueued deletes the queued (or retry-waiting, or waiting) job seq
// when no live server holds it: nobody claimed it, or the server that did
// let its lease expire before this server's last renewal (expiredBefore),
// and writes its record, cancelled by by
// (cancelQueuedSQL). It
// reports whether it deleted the job. A job
// some live server holds is left alone: that server must cancel it. A job
// of a batch counts as failed in its batch, in the same transaction,
// which completes the batch when it was the last (batchFireSQL; the
// callbacks get the handle prefix of the cancelled job). The jobs that
// waited for it are cancelled in the same transaction (depEndSQL), and
// counted so in their batches.
func (s *Store) CancelQueued(ctx context.Context, seq uint64, by string) (bool, error) {
	if err := s.check(ctx); err != nil {
		return false, err
	}
	var deleted bool
	err := s.againOnConflict(ctx, "a cancel", func() error {
		deleted = false
		return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
			var (
				batch  int64
				handle []byte
			)
			// The dependency lock first, as a commit round takes it.
			if _, err := tx.Exec(ctx, depLockSharedSQL, s.depsLock()); err != nil {
				return err
			}
			// The batch rows are locked before the job's (batchLockSQL): its
			// batch (a job's batch never changes) and those of the jobs
			// waiting for it, which its cancel may cancel in turn.
			err := tx.QueryRow(ctx, `SELECT batch FROM gearwork_jobs WHERE seq = $1`, seqArg(seq)).Scan(&batch)
			if errors.Is(err, pgx.ErrNoRows) {
				return nil
			}
			if err != nil {
				return err
			}
			var lockErr error
			lockRoundBatches(func(sql string, args ...any) {
				_, lockErr = tx.Exec(ctx, sql, args...)
			}, batchIDs(batch), []store.DepEnd{{Seq: seq, State: "cancelled"}}, "")
			if lockErr != nil {
				return lockErr
			}
			// A job held under an expired lease is nobody's only when this
			// server may judge leases, and only when the lease had expired
			// by the database's time at this server's last renewal
			// (expiredBefore; NULL: none), as Renew releases them.
			var before any
			if at, ok := s.expiredBefore(); ok {
				before = at
			}
			err = tx.QueryRow(ctx, `SELECT batch, handle FROM gearwork_jobs WHERE seq = $1 AND state IN (0, 1, 4)
			AND (owner IS NULL OR owner IN (SELECT id FROM gearwork_servers WHERE lease_until < $2::timestamptz))
			FOR UPDATE`, seqArg(seq), before).Scan(&batch, &handle)
			if errors.Is(err, pgx.ErrNoRows) {
				return nil
			}
			if err != nil {
				return err
			}
			if batch != 0 {
				args, _ := batchEndArgs([]store.BatchEnd{{Seq: seq, Batch: uint64(batch), Outcome: store.BatchFailed}})
				if _, err := tx.Exec(ctx, batchEndSQL, args...); err != nil {
					return err
				}
			}
			if _, err := tx.Exec(ctx, cancelQueuedSQL, seqArg(seq), by); err != nil {
				return err
			}
			deleted = true
			prefix := strings.TrimSuffix(string(handle), strconv.FormatUint(seq, 10))
			var depErr error
			s.queueDepEnds(func(sql string, args ...any) {
				if depErr == nil {
					_, depErr = tx.Exec(ctx, sql, args...)
				}
			}, []store.DepEnd{{Seq: seq, State: "cancelled"}}, prefix)
			if depErr != nil {
				return depErr
			}
			// Its batch, and those of the jobs that waited for it.
			_, err = tx.Exec(ctx, batchFireSQL, batchIDs(batch), []byte(prefix), s.channel)
			return err
		})
	})
	if err != nil {
		return false, fmt.Errorf("postgres: cancel job %d: %w", seq, err)
	}
	return deleted, nil
}

// Signal notifies every server listening of key, as a change of a
// metadata key would, without storing anything.
func (s *Store) Signal(ctx context.Context, key string) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	if _, err := s.pool.Exec(ctx, `SELECT pg_notify($1, $2)`, s.channel, metaPayload(key)); err != nil {
		return fmt.Errorf("postgres: signal %q: %w", key, err)
	}
	return nil
}
