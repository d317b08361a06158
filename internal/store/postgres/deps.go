package postgres

import (
	"context"
	"hash/fnv"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/gearwork/gearwork/internal/store"
)

// Jobs that wait for other jobs (store.Job.After). A waiting job is a row
// in state 4 that names, in after_seqs, the jobs it still waits for; no
// server claims it. It becomes runnable (state 0) in the transaction that
// ends the last of them, and is deleted with a "cancelled" record when
// one ends without success (unless after_anyway), whichever server ends
// it: the commit round that writes an end runs depEndSQL.
//
// Two kinds of transactions meet here: one that links new waiting jobs
// to the jobs they name (depLinkSQL) and one that ends jobs (depEndSQL).
// The first must see every end committed before it looks, and the second
// every link committed before it looks; each takes the schema's
// dependency lock (depsLock) before it looks, the linking one exclusive
// and the ending ones shared, so ending rounds of every server run side
// by side and a link waits for those under way. The ending rounds take
// the row locks of the waiting jobs they change in seq order, in one
// statement, so that two servers ending jobs that the same waiting jobs
// name do not deadlock.

// stateUnlinked is the state a new waiting job is inserted in, until
// depLinkSQL, in the same transaction, checks the jobs it names.
const stateUnlinked = 5

// recordPreviewCap is the broker's PayloadPreviewCap: the payload bytes a
// record of a cancelled waiting job keeps.
const recordPreviewCap = 256

// depsLock is the advisory lock key of the schema's dependencies: lock
// keys are per database, so the schema's channel is part of it (and a
// byte no function name in claimLock's keys is followed by).
func (s *Store) depsLock() int64 {
	h := fnv.New64a()
	h.Write([]byte(s.channel))
	h.Write([]byte{1})
	h.Write([]byte("dependencies"))
	return int64(h.Sum64())
}

const (
	depLockSharedSQL = `SELECT pg_advisory_xact_lock_shared($1)`
	depLockSQL       = `SELECT pg_advisory_xact_lock($1)`
)

// depClosure finds, for the ended jobs $1 (final states $2, handles $3
// followed by the number), the waiting jobs to cancel with their reasons:
// those that wait for a job that ended without success, unless they run
// anyway, and then those that wait for one cancelled so, and so on. When
// no job waits at all (one probe of gearwork_jobs_waiting), it looks no
// further: the statements built on it cost a round that ends jobs next
// to nothing then.
const depClosure = `
WITH RECURSIVE e AS (
	SELECT * FROM unnest($1::bigint[], $2::text[]) AS e(seq, state)
	WHERE EXISTS (SELECT 1 FROM gearwork_jobs w WHERE w.state = 4)
), doomed(seq, reason) AS (
	SELECT g.seq, 'dependency ' || $3::text || e.seq || ' ' || e.state
	FROM e JOIN gearwork_jobs g ON g.state = 4 AND g.after_seqs @> ARRAY[e.seq] AND NOT g.after_anyway
	WHERE e.state <> 'complete'
	UNION
	SELECT g.seq, 'dependency ' || encode(dj.handle, 'escape') || ' cancelled'
	FROM doomed d JOIN gearwork_jobs dj ON dj.seq = d.seq
		JOIN gearwork_jobs g ON g.state = 4 AND g.after_seqs @> ARRAY[d.seq] AND NOT g.after_anyway
), gone AS (
	SELECT coalesce(array_agg(seq), '{}') AS seqs FROM (SELECT seq FROM e UNION SELECT seq FROM doomed) x
)`

// depLockRowsSQL locks the waiting jobs that depEndSQL changes, in seq
// order.
const depLockRowsSQL = depClosure + `
SELECT g.seq FROM gearwork_jobs g, gone
WHERE g.state = 4 AND g.after_seqs && gone.seqs
ORDER BY g.seq FOR UPDATE OF g`

// depEndSQL cancels the waiting jobs depClosure finds, writing each a
// record in state "cancelled" with the reason, and takes every ended job
// out of the lists of the others; those left waiting for nothing become
// runnable, and the servers are woken for their functions ($4 the
// channel). A cancelled job of a batch counts as failed in its batch,
// whose row the transaction locked first (depBatchLockSQL); batchFireSQL
// completes the batch afterwards when it was its last job. The records
// are cancelledRecordsSQL's.
var depEndSQL = depClosure + `, why AS (
	SELECT DISTINCT ON (seq) seq, reason FROM doomed ORDER BY seq, reason
), del AS (
	DELETE FROM gearwork_jobs g USING why WHERE g.seq = why.seq AND g.state = 4
	RETURNING g.*, why.reason, encode(g.handle, 'escape') AS handle_text
), c AS (
	SELECT batch, 0 AS s, count(*) AS f, 0 AS d, array_agg(handle_text ORDER BY seq) AS h
	FROM del WHERE batch <> 0 AND NOT batch_done GROUP BY batch
), counted AS (
	` + batchCountSQL + `
), rec AS (
	` + cancelledRecordsSQL("reason") + `
), rel AS (
	UPDATE gearwork_jobs g SET
		after_seqs = array(SELECT a FROM unnest(g.after_seqs) a WHERE a <> ALL(gone.seqs) ORDER BY a),
		state = CASE WHEN g.after_seqs <@ gone.seqs THEN 0 ELSE 4 END
	FROM gone
	WHERE g.state = 4 AND g.after_seqs && gone.seqs AND NOT EXISTS (SELECT 1 FROM why WHERE why.seq = g.seq)
	RETURNING g.function, g.state
)
SELECT pg_notify($4, CASE WHEN length(function) > 3000 THEN '' ELSE encode(function, 'hex') END)
FROM (SELECT DISTINCT function FROM rel WHERE state = 0) r`

// depLinkSQL checks the new waiting jobs $1 (inserted in stateUnlinked in
// this transaction, which holds the dependency lock) against the jobs
// they name ($2, as array literals; $3 run anyway): a job named that is
// live stays in the list; one that completed (a retained result, or a
// record in state "complete") is done with; one that is neither live nor
// recorded, or that ended without success while the new job does not run
// anyway, refuses the new job, which is deleted again (and taken out of
// its batch's total, which insertSQL counted it in). The others wait
// (state 4), or are runnable at once when nothing is left to wait for.
// It returns the refused jobs, the job that refused each, and whether
// that one is unknown.
const depLinkSQL = `
WITH x AS (
	SELECT u.seq, u.after::bigint[] AS after, u.anyway
	FROM unnest($1::bigint[], $2::text[], $3::boolean[]) AS u(seq, after, anyway)
	JOIN gearwork_jobs n ON n.seq = u.seq AND n.state = 5
), d AS (
	SELECT x.seq, x.anyway, a.dep, g.state AS st, r.state AS rst
	FROM x CROSS JOIN LATERAL unnest(x.after) AS a(dep)
	LEFT JOIN gearwork_jobs g ON g.seq = a.dep
	LEFT JOIN gearwork_records r ON r.seq = a.dep
), v AS (
	SELECT seq, bool_or(anyway) AS anyway,
		min(dep) FILTER (WHERE st IS NULL AND rst IS NULL) AS unknown,
		min(dep) FILTER (WHERE NOT anyway AND (st = 2 OR (st IS NULL AND rst <> 'complete'))) AS failed,
		coalesce(array_agg(DISTINCT dep ORDER BY dep) FILTER (WHERE st IN (0, 1, 4, 5)), '{}') AS live
	FROM d GROUP BY seq
), del AS (
	DELETE FROM gearwork_jobs g USING v WHERE g.seq = v.seq AND (v.unknown IS NOT NULL OR v.failed IS NOT NULL)
	RETURNING g.batch
), uncounted AS (
	UPDATE gearwork_batches b SET total = b.total - c.n
	FROM (SELECT batch, count(*) AS n FROM del WHERE batch <> 0 GROUP BY batch) c WHERE b.id = c.batch
), upd AS (
	UPDATE gearwork_jobs g SET after_seqs = v.live, after_anyway = v.anyway,
		state = CASE WHEN cardinality(v.live) = 0 THEN 0 ELSE 4 END
	FROM v WHERE g.seq = v.seq AND v.unknown IS NULL AND v.failed IS NULL
)
SELECT seq, coalesce(unknown, failed), unknown IS NOT NULL FROM v WHERE unknown IS NOT NULL OR failed IS NOT NULL`

// depEndArgs returns the arguments of depClosure for ends of jobs with
// handles of prefix.
func depEndArgs(ends []store.DepEnd, prefix string) []any {
	seqs := make([]int64, len(ends))
	states := make([]string, len(ends))
	for i, e := range ends {
		seqs[i], states[i] = seqArg(e.Seq), e.State
	}
	return []any{seqs, states, prefix}
}

// queueDepEnds queues the statements that handle the jobs waiting for
// ends (of jobs with handles of prefix) into a round that holds the
// shared dependency lock.
func (s *Store) queueDepEnds(add func(sql string, args ...any), ends []store.DepEnd, prefix string) {
	args := depEndArgs(ends, prefix)
	add(depLockRowsSQL, args...)
	add(depEndSQL, append(args, s.channel)...)
}

// waiting returns the indexes of the jobs that wait for others.
func waiting(jobs []store.Job) []int {
	var out []int
	for i, j := range jobs {
		if len(j.After) > 0 {
			out = append(out, i)
		}
	}
	return out
}

// numberWaiting gives the new waiting jobs of p sequence numbers from the
// database's sequence (depLinkSQL finds them by it), in a copy of
// p.Jobs.
func (s *Store) numberWaiting(ctx context.Context, p *store.InsertParams) error {
	var idx []int
	for _, i := range waiting(p.Jobs) {
		if p.Jobs[i].Seq == 0 {
			idx = append(idx, i)
		}
	}
	if len(idx) == 0 {
		return nil
	}
	rows, err := s.pool.Query(ctx, reserveSQL, len(idx))
	if err != nil {
		return err
	}
	seqs, err := readReservedRows(rows, nil)
	if err != nil {
		return err
	}
	p.Jobs = append([]store.Job(nil), p.Jobs...)
	for k, i := range idx {
		p.Jobs[i].Seq = seqs[k]
	}
	return nil
}

// depLinkArgs returns the arguments of depLinkSQL for jobs.
func depLinkArgs(jobs []store.Job) []any {
	var (
		seqs   []int64
		afters []string
		anyway []bool
	)
	for _, j := range jobs {
		if len(j.After) == 0 {
			continue
		}
		var b strings.Builder
		b.WriteByte('{')
		for k, q := range j.After {
			if k > 0 {
				b.WriteByte(',')
			}
			b.WriteString(strconv.FormatInt(seqArg(q), 10))
		}
		b.WriteByte('}')
		seqs, afters, anyway = append(seqs, seqArg(j.Seq)), append(afters, b.String()), append(anyway, j.AfterAnyway)
	}
	return []any{seqs, afters, anyway}
}

// readRefused reads depLinkSQL's rows: the refused jobs by seq.
func readRefused(br pgx.BatchResults, into map[uint64]store.DependencyRefused) error {
	return eachRow(br, func(rows pgx.Rows) error {
		var (
			seq, dep int64
			unknown  bool
		)
		err := rows.Scan(&seq, &dep, &unknown)
		into[uint64(seq)] = store.DependencyRefused{Dep: uint64(dep), Unknown: unknown}
		return err
	})
}

// eachRow reads the rows of the next statement of br with scan, which
// is called once per row and stops the reading with an error.
func eachRow(br pgx.BatchResults, scan func(pgx.Rows) error) error {
	rows, err := br.Query()
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		if err := scan(rows); err != nil {
			return err
		}
	}
	return rows.Err()
}

// markRefused reports the refused jobs of a round in out.
func markRefused(jobs []store.Job, out []store.Inserted, refused map[uint64]store.DependencyRefused) {
	if len(refused) == 0 {
		return
	}
	for i, j := range jobs {
		if r, ok := refused[j.Seq]; ok && len(j.After) > 0 && out[i].Seq == j.Seq {
			out[i] = store.Inserted{Refused: &r}
		}
	}
}
