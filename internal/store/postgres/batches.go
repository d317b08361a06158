package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5"

	"github.com/gearwork/gearwork/internal/store"
)

var _ store.BatchStore = (*Store)(nil)

// maxBatchFailures bounds the handles of failed jobs a batch row keeps
// (the broker's limit).
const maxBatchFailures = 100

// batchEndSQL counts the ends of jobs of batches ($1 seqs, $2 outcomes):
// each job whose row names a batch and whose end was not counted yet is
// marked counted and adds to its batch's counters. A commit round runs it
// before its deletes (rows that exist) and again after its inserts (jobs
// that ended before their first write); the mark makes the second run,
// and a round written again, count nothing twice. The transaction locks
// the batch rows first (batchLockSQL).
var batchEndSQL = `
WITH e AS (SELECT * FROM unnest($1::bigint[], $2::smallint[]) AS e(seq, outcome)),
ended AS (
	UPDATE gearwork_jobs g SET batch_done = true FROM e
	WHERE g.seq = e.seq AND g.batch <> 0 AND NOT g.batch_done
	RETURNING g.batch, g.seq, e.outcome, encode(g.handle, 'escape') AS handle
), c AS (
	SELECT batch, count(*) FILTER (WHERE outcome = 0) AS s, count(*) FILTER (WHERE outcome = 1) AS f,
		count(*) FILTER (WHERE outcome = 2) AS d,
		coalesce(array_agg(handle ORDER BY seq) FILTER (WHERE outcome <> 0), '{}') AS h
	FROM ended GROUP BY batch
)
` + batchCountSQL

// batchCountSQL adds the ends counted in c (per batch: s succeeded, f
// failed, d dead, h the handles of the failed and dead jobs) to their
// batches.
var batchCountSQL = fmt.Sprintf(`UPDATE gearwork_batches b SET succeeded = b.succeeded + c.s,
	failed = b.failed + c.f, dead = b.dead + c.d,
	failures = (b.failures || c.h)[1:%[1]d],
	truncated = b.truncated OR cardinality(b.failures) + cardinality(c.h) > %[1]d
FROM c WHERE b.id = c.batch`, maxBatchFailures)

// batchLockSQL locks the batch rows $1 in id order. A transaction that
// changes batch rows (counts new jobs in them, counts ends, completes
// them) runs it before its first statement that locks a row of a batch or
// of a job, with every batch it is going to change: then transactions of
// different servers take the batch rows they share in the same order and
// cannot deadlock on them (a round that ended a job of batch A and added
// one to batch B, beside one that did the opposite, did).
const batchLockSQL = `SELECT id FROM gearwork_batches WHERE id = ANY($1) ORDER BY id FOR UPDATE`

// batchStateSQL reads which of the batches $1 are stored and whether
// each has completed. A commit round runs it after it locked them
// (lockRoundBatches), so what it reads holds until the round ends:
// insertSQL takes no job of a batch that is not stored or has completed
// (openBatchJob), and batchRefusal says why.
const batchStateSQL = `SELECT id, completed <> 0 FROM gearwork_batches WHERE id = ANY($1)`

// openBatchJob is insertSQL's condition on a new job i: it names no
// batch, or one that is stored and has not completed.
const openBatchJob = `(i.batch = 0 OR EXISTS (SELECT FROM gearwork_batches b WHERE b.id = i.batch AND b.completed = 0))`

// readBatchStates reads batchStateSQL's rows into states: per stored
// batch, whether it has completed.
func readBatchStates(br pgx.BatchResults, states map[uint64]bool) error {
	return eachRow(br, func(rows pgx.Rows) error {
		var (
			id        int64
			completed bool
		)
		err := rows.Scan(&id, &completed)
		states[uint64(id)] = completed
		return err
	})
}

// batchRefusal returns why j cannot join its batch, given the states
// batchStateSQL read, or nil.
func batchRefusal(j store.Job, states map[uint64]bool) *store.BatchRefused {
	if j.Batch == 0 {
		return nil
	}
	completed, ok := states[j.Batch]
	if ok && !completed {
		return nil
	}
	return &store.BatchRefused{Batch: j.Batch, Unknown: !ok}
}

// jobBatches returns the batches jobs name, in id order.
func jobBatches(jobs []store.Job) []int64 {
	var ids []int64
	for _, j := range jobs {
		if j.Batch != 0 {
			ids = append(ids, seqArg(j.Batch))
		}
	}
	slices.Sort(ids)
	return slices.Compact(ids)
}

// depBatchesSetting names the transaction's setting that holds the
// batches of the waiting jobs its ends may cancel (depBatchLockSQL), for
// batchFireSQL: depEndSQL counts those jobs in their batches, which may
// complete.
const depBatchesSetting = "gearwork.dep_batches"

// depBatchLockSQL is batchLockSQL ($4 the batches) for a transaction that
// also ends jobs others may wait for (depClosure's $1–$3): it locks, in
// the same id order, the batches of the waiting jobs those ends may
// cancel, and keeps their ids in depBatchesSetting until the transaction
// ends. It runs under the dependency lock, which no transaction that
// links new waiting jobs holds meanwhile: the jobs depEndSQL cancels
// later in the transaction are among those it found (lists of waiting
// jobs only shrink under the shared lock).
var depBatchLockSQL = depClosure + `, lb AS (
	SELECT id FROM gearwork_batches WHERE id IN (
		SELECT unnest($4::bigint[])
		UNION SELECT g.batch FROM doomed d JOIN gearwork_jobs g ON g.seq = d.seq WHERE g.batch <> 0)
	ORDER BY id FOR UPDATE
)
SELECT set_config('` + depBatchesSetting + `', coalesce((SELECT array_agg(id)::text FROM lb), '{}'), true)`

// firedBatches is the batches batchFireSQL looks at: $1 and the batches
// of depBatchesSetting.
const firedBatches = `$1::bigint[] || coalesce(nullif(current_setting('` + depBatchesSetting + `', true), ''), '{}')::bigint[]`

// lockRoundBatches queues the lock of the batch rows a transaction
// changes (batchLockSQL), or depBatchLockSQL for one whose ends (of jobs
// with handles of prefix) may cancel jobs waiting for them.
func lockRoundBatches(add func(sql string, args ...any), batches []int64, ends []store.DepEnd, prefix string) {
	switch {
	case cancelling(ends):
		add(depBatchLockSQL, append(depEndArgs(ends, prefix), batches)...)
	case len(batches) > 0:
		add(batchLockSQL, batches)
	}
}

// roundBatches returns the batches a commit round changes, in id order:
// those of its new jobs (insertSQL counts them) and of its ended jobs.
func roundBatches(cp store.CommitParams) []int64 {
	ids := jobBatches(cp.Insert.Jobs)
	for _, e := range cp.BatchEnds {
		ids = append(ids, seqArg(e.Batch))
	}
	slices.Sort(ids)
	return slices.Compact(ids)
}

// batchDue is the callbacks (1 on_success, 2 on_complete) a complete
// batch row b submits.
const batchDue = `(CASE WHEN b.success_fn IS NOT NULL AND b.failed = 0 AND b.dead = 0 THEN 1 ELSE 0 END |
	CASE WHEN b.complete_fn IS NOT NULL THEN 2 ELSE 0 END)`

// batchFireSQL completes the batches $1 (and those of
// depBatchesSetting) that are closed and whose jobs
// have all ended: it marks them complete and their due callbacks
// submitted, and inserts those callbacks ($2 the handle prefix) and wakes
// the servers ($3 the channel). The callbacks submitted are those due and
// not marked before, under the batch's row lock: of two transactions that
// end the last jobs of a batch at the same moment, the second waits for
// the first and sees its counts, so only one of them inserts each
// callback.
const batchFireSQL = `
WITH f AS (
	UPDATE gearwork_batches b SET fire_now = ` + batchDue + ` & ~b.fired,
		fired = b.fired | ` + batchDue + `,
		completed = CASE WHEN b.completed = 0 THEN (extract(epoch FROM clock_timestamp()) * 1e9)::bigint
			ELSE b.completed END
	WHERE b.id = ANY(` + firedBatches + `) AND b.closed AND b.succeeded + b.failed + b.dead >= b.total
		AND (b.completed = 0 OR ` + batchDue + ` & ~b.fired <> 0)
	RETURNING b.*
), cb AS MATERIALIZED (
	SELECT nextval('gearwork_job_seq') AS seq, f.id, f.total, f.succeeded, f.failed, f.dead, f.failures,
		f.truncated, v.kind, v.fn, v.pl
	FROM f, LATERAL (VALUES (1, 'on_success', f.success_fn, f.success_payload),
		(2, 'on_complete', f.complete_fn, f.complete_payload)) AS v(bit, kind, fn, pl)
	WHERE f.fire_now & v.bit <> 0
), ins AS (
	INSERT INTO gearwork_jobs (seq, handle, function, payload, priority)
	SELECT cb.seq, $2::bytea || convert_to(cb.seq::text, 'UTF8'), cb.fn,
		convert_to('{"batch":"' || cb.id || '","callback":"' || cb.kind || '","total":' || cb.total ||
			',"succeeded":' || cb.succeeded || ',"failed":' || cb.failed || ',"dead":' || cb.dead ||
			',"failures":' || array_to_json(cb.failures)::text ||
			CASE WHEN cb.truncated THEN ',"failures_truncated":true' ELSE '' END, 'UTF8') ||
		CASE WHEN cb.pl IS NULL THEN ''::bytea ELSE convert_to(',"payload":', 'UTF8') || cb.pl END ||
		convert_to('}', 'UTF8'),
		1
	FROM cb
	RETURNING function
)
SELECT pg_notify($3, CASE WHEN length(function) > 3000 THEN '' ELSE encode(function, 'hex') END) FROM ins`

// batchEndArgs returns the arguments of batchEndSQL and the batches
// ended jobs belong to (batchFireSQL's $1).
func batchEndArgs(ends []store.BatchEnd) (args []any, batches []int64) {
	seqs := make([]int64, len(ends))
	outcomes := make([]int16, len(ends))
	seen := make(map[uint64]bool)
	for i, e := range ends {
		seqs[i], outcomes[i] = seqArg(e.Seq), int16(e.Outcome)
		if !seen[e.Batch] {
			seen[e.Batch] = true
			batches = append(batches, seqArg(e.Batch))
		}
	}
	return []any{seqs, outcomes}, batches
}

func callbackArgs(cb store.BatchCallback) (fn, payload []byte) {
	if cb.Function == "" {
		return nil, nil
	}
	fn = []byte(cb.Function)
	if len(cb.PayloadJSON) > 0 {
		payload = cb.PayloadJSON
	}
	return fn, payload
}

// CreateBatch stores a new open batch numbered from the job sequence.
// Durable when it returns.
func (s *Store) CreateBatch(ctx context.Context, p store.NewBatch) (uint64, error) {
	if err := s.check(ctx); err != nil {
		return 0, err
	}
	sfn, spl := callbackArgs(p.OnSuccess)
	cfn, cpl := callbackArgs(p.OnComplete)
	var id int64
	err := s.pool.QueryRow(ctx, `INSERT INTO gearwork_batches
		(id, success_fn, success_payload, complete_fn, complete_payload, created)
		VALUES (nextval('gearwork_job_seq'), $1, $2, $3, $4, $5) RETURNING id`,
		sfn, spl, cfn, cpl, p.Created).Scan(&id)
	if err != nil {
		return 0, fmt.Errorf("postgres: create batch: %w", err)
	}
	return uint64(id), nil
}

// CloseBatch closes batch id and, in the same transaction, completes it
// when its jobs have all ended (batchFireSQL).
func (s *Store) CloseBatch(ctx context.Context, id uint64, handlePrefix string) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	b := &pgx.Batch{}
	b.Queue(`UPDATE gearwork_batches SET closed = true WHERE id = $1`, seqArg(id))
	b.Queue(batchFireSQL, []int64{seqArg(id)}, []byte(handlePrefix), s.channel)
	br := s.pool.SendBatch(ctx, b)
	tag, err := br.Exec()
	if err == nil {
		_, err = br.Exec()
	}
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("postgres: close batch %d: %w", id, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("postgres: close batch %d: %w", id, store.ErrNotFound)
	}
	return nil
}

// batchColumns reads batches, with the jobs of each open one that a
// worker of the server holding it runs (gearwork_jobs_batch_held).
const batchColumns = `SELECT id, success_fn, success_payload, complete_fn, complete_payload, closed,
	total, succeeded, failed, dead, fired, failures, truncated, created, completed,
	CASE WHEN completed <> 0 THEN 0 ELSE (SELECT count(*) FROM gearwork_jobs g WHERE g.batch = gearwork_batches.id
		AND g.owner IS NOT NULL AND g.running AND g.state IN (0, 1) AND NOT g.batch_done) END
	FROM gearwork_batches`

func scanBatch(row pgx.Row) (store.Batch, error) {
	var (
		bt                            store.Batch
		id, total, succ, failed, dead int64
		created, completed, running   int64
		fired                         int16
		sfn, spl, cfn, cpl            []byte
	)
	err := row.Scan(&id, &sfn, &spl, &cfn, &cpl, &bt.Closed, &total, &succ, &failed, &dead, &fired,
		&bt.Failures, &bt.Truncated, &created, &completed, &running)
	if err != nil {
		return bt, err
	}
	bt.ID, bt.Total, bt.Succeeded, bt.Failed, bt.Dead = uint64(id), uint64(total), uint64(succ), uint64(failed), uint64(dead)
	bt.OnSuccess = store.BatchCallback{Function: string(sfn), PayloadJSON: spl}
	bt.OnComplete = store.BatchCallback{Function: string(cfn), PayloadJSON: cpl}
	bt.SuccessFired, bt.CompleteFired = fired&1 != 0, fired&2 != 0
	bt.Created, bt.Completed, bt.Running = created, completed, uint64(running)
	return bt, nil
}

// Batch reads batch id.
func (s *Store) Batch(ctx context.Context, id uint64) (store.Batch, error) {
	if err := s.check(ctx); err != nil {
		return store.Batch{}, err
	}
	bt, err := scanBatch(s.pool.QueryRow(ctx, batchColumns+` WHERE id = $1`, seqArg(id)))
	if errors.Is(err, pgx.ErrNoRows) {
		return bt, fmt.Errorf("postgres: batch %d: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return bt, fmt.Errorf("postgres: batch %d: %w", id, err)
	}
	return bt, nil
}

// Batches lists the batches, the newest first, at most limit (≤ 0: all).
func (s *Store) Batches(ctx context.Context, limit int) ([]store.Batch, error) {
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	q := batchColumns + ` ORDER BY id DESC`
	args := []any{}
	if limit > 0 {
		q += ` LIMIT $1`
		args = append(args, limit)
	}
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("postgres: list batches: %w", err)
	}
	defer rows.Close()
	var out []store.Batch
	for rows.Next() {
		bt, err := scanBatch(rows)
		if err != nil {
			return nil, fmt.Errorf("postgres: list batches: %w", err)
		}
		out = append(out, bt)
	}
	return out, rows.Err()
}

// ExpireBatches deletes at most max batches that completed before
// completedBefore, the oldest first.
func (s *Store) ExpireBatches(ctx context.Context, completedBefore int64, max int) (int, error) {
	if err := s.check(ctx); err != nil {
		return 0, err
	}
	tag, err := s.pool.Exec(ctx, `DELETE FROM gearwork_batches WHERE id IN (SELECT id FROM gearwork_batches
		WHERE completed <> 0 AND completed < $1 ORDER BY completed LIMIT $2)`, completedBefore, max)
	if err != nil {
		return 0, fmt.Errorf("postgres: expire batches: %w", err)
	}
	return int(tag.RowsAffected()), nil
}

// batchIDs returns batch as a list of batches: none when it is 0.
func batchIDs(batch int64) []int64 {
	if batch == 0 {
		return []int64{}
	}
	return []int64{batch}
}

// cancelling reports whether ends may cancel jobs waiting for them: one
// of them is not a success (depClosure).
func cancelling(ends []store.DepEnd) bool {
	for _, e := range ends {
		if e.State != "complete" {
			return true
		}
	}
	return false
}
