package postgres

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/gearwork/gearwork/internal/store"
)

var (
	_ store.RecordStore      = (*Store)(nil)
	_ store.BatchRecordStore = (*Store)(nil)
)

// recordsSQL writes records of ended jobs. A job's record is written
// once (store.RecordStore.EndJobs), so a round inserts them plainly: an
// INSERT … ON CONFLICT writes every row speculatively, a WAL record and
// a quarter of the statement's time more per record.
const recordsSQL = `INSERT INTO gearwork_records (seq, function, state, finished, data, batch)
	SELECT * FROM unnest($1::bigint[], $2::bytea[], $3::text[], $4::bigint[], $5::bytea[], $6::bigint[])`

// recordsReplaceSQL writes records of ended jobs, a record replacing one
// of the same seq: for a round refused because a record of one of its
// jobs is stored already (recordStored), as after a round whose commit
// was not acknowledged was written again, or when two servers ended the
// same job (one that ran again after its server lost its lease).
const recordsReplaceSQL = recordsSQL + `
	ON CONFLICT (seq) DO UPDATE SET function = EXCLUDED.function, state = EXCLUDED.state,
		finished = EXCLUDED.finished, data = EXCLUDED.data, batch = EXCLUDED.batch`

// recordStored reports whether err is PostgreSQL refusing a record
// because the record of one of its jobs is stored already.
func recordStored(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "23505" && pgErr.ConstraintName == "gearwork_records_pkey"
}

func recordArgs(recs []store.Record) []any {
	seqs := make([]int64, len(recs))
	fns := make([][]byte, len(recs))
	states := make([]string, len(recs))
	fins := make([]int64, len(recs))
	data := make([][]byte, len(recs))
	batches := make([]int64, len(recs))
	for i, r := range recs {
		seqs[i], fns[i], states[i], fins[i], data[i] = seqArg(r.Seq), []byte(r.Function), r.State, r.Finished, r.Data
		batches[i] = seqArg(r.Batch)
		if data[i] == nil {
			data[i] = []byte{}
		}
	}
	return []any{seqs, fns, states, fins, data, batches}
}

// EndJobs deletes dels, forgets and writes records in one transaction
// (one commit round without new jobs).
func (s *Store) EndJobs(ctx context.Context, dels []uint64, recs []store.Record, forget []uint64) error {
	_, err := s.Commit(ctx, store.CommitParams{Delete: dels, Records: recs, ForgetRecords: forget})
	return err
}

// Record returns the record of job seq, whichever server wrote it.
func (s *Store) Record(ctx context.Context, seq uint64) (store.Record, error) {
	if err := s.check(ctx); err != nil {
		return store.Record{}, err
	}
	r := store.Record{Seq: seq}
	var fn []byte
	var batch int64
	err := s.pool.QueryRow(ctx, `SELECT function, state, finished, data, batch FROM gearwork_records WHERE seq = $1`,
		seqArg(seq)).Scan(&fn, &r.State, &r.Finished, &r.Data, &batch)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return store.Record{}, fmt.Errorf("postgres: job record %d: %w", seq, store.ErrNotFound)
	case err != nil:
		return store.Record{}, fmt.Errorf("postgres: reading job record %d: %w", seq, err)
	}
	r.Function, r.Batch = string(fn), uint64(batch)
	return r, nil
}

// Records lists records newest first, by keyset on (finished, seq).
func (s *Store) Records(ctx context.Context, q store.RecordQuery) ([]store.Record, error) {
	return s.records(ctx, 0, q)
}

// BatchRecords lists the records of batch newest first, by keyset on
// (finished, seq), through the records' batch index.
func (s *Store) BatchRecords(ctx context.Context, batch uint64, q store.RecordQuery) ([]store.Record, error) {
	return s.records(ctx, batch, q)
}

// records lists the records of q, of batch when it is not 0.
func (s *Store) records(ctx context.Context, batch uint64, q store.RecordQuery) ([]store.Record, error) {
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	if q.Limit <= 0 {
		return nil, nil
	}
	var where []string
	var args []any
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	if q.Function != "" {
		where = append(where, "function = "+arg([]byte(q.Function)))
	}
	if q.State != "" {
		where = append(where, "state = "+arg(q.State))
	}
	if batch != 0 {
		where = append(where, "batch = "+arg(seqArg(batch)))
	}
	if q.After != (store.RecordPos{}) {
		where = append(where, "(finished, seq) < ("+arg(q.After.Finished)+", "+arg(seqArg(q.After.Seq))+")")
	}
	sql := `SELECT seq, function, state, finished, data, batch FROM gearwork_records`
	if len(where) > 0 {
		sql += " WHERE " + strings.Join(where, " AND ")
	}
	sql += " ORDER BY finished DESC, seq DESC LIMIT " + arg(q.Limit)
	rows, err := s.pool.Query(ctx, sql, args...)
	if err != nil {
		return nil, fmt.Errorf("postgres: listing job records: %w", err)
	}
	var out []store.Record
	for rows.Next() {
		var r store.Record
		var seq, b int64
		var fn []byte
		if err := rows.Scan(&seq, &fn, &r.State, &r.Finished, &r.Data, &b); err != nil {
			rows.Close()
			return nil, fmt.Errorf("postgres: listing job records: %w", err)
		}
		r.Seq, r.Function, r.Batch = uint64(seq), string(fn), uint64(b)
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("postgres: listing job records: %w", err)
	}
	return out, nil
}

// RecordCounts counts the records per function and state.
func (s *Store) RecordCounts(ctx context.Context) (map[string]map[string]int, error) {
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	rows, err := s.pool.Query(ctx, `SELECT function, state, count(*) FROM gearwork_records GROUP BY function, state`)
	if err != nil {
		return nil, fmt.Errorf("postgres: counting job records: %w", err)
	}
	out := make(map[string]map[string]int)
	for rows.Next() {
		var fn []byte
		var st string
		var n int64
		if err := rows.Scan(&fn, &st, &n); err != nil {
			rows.Close()
			return nil, fmt.Errorf("postgres: counting job records: %w", err)
		}
		m := out[string(fn)]
		if m == nil {
			m = make(map[string]int)
			out[string(fn)] = m
		}
		m[st] = int(n)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("postgres: counting job records: %w", err)
	}
	return out, nil
}

// recordFunctionsSQL lists the functions that have records, one probe
// of the records' function index per function: counting the records
// instead (RecordCounts) read the whole table at every expiry. The index
// keeps each function's records newest first, so a skip from the first
// function up lands on a function's newest records: its oldest, at the
// other end of its range, are those the last trim deleted, whose index
// entries stay until vacuum and would be walked over one by one.
const recordFunctionsSQL = `WITH RECURSIVE f AS (
	(SELECT function FROM gearwork_records ORDER BY function LIMIT 1)
	UNION ALL
	SELECT (SELECT r.function FROM gearwork_records r WHERE r.function > f.function ORDER BY r.function LIMIT 1)
	FROM f WHERE f.function IS NOT NULL
)
SELECT function FROM f WHERE function IS NOT NULL`

// ExpireRecords deletes, per function, the records older than its age
// limit and those beyond its count, whichever server wrote them;
// idempotent, so every server may run it.
func (s *Store) ExpireRecords(ctx context.Context, now int64, limits func(string) (time.Duration, int)) (int, error) {
	if err := s.check(ctx); err != nil {
		return 0, err
	}
	rows, err := s.pool.Query(ctx, recordFunctionsSQL)
	if err != nil {
		return 0, fmt.Errorf("postgres: listing the functions of job records: %w", err)
	}
	fns, err := pgx.CollectRows(rows, pgx.RowTo[[]byte])
	if err != nil {
		return 0, fmt.Errorf("postgres: listing the functions of job records: %w", err)
	}
	s.forgetTrimsExcept(fns)
	total := 0
	for _, fn := range fns {
		age, max := limits(string(fn))
		if age <= 0 || max <= 0 {
			n, err := s.expireRecords(ctx, `DELETE FROM gearwork_records WHERE function = $1`, fn)
			total += n
			if err != nil {
				return total, err
			}
			continue
		}
		n, err := s.expireRecords(ctx, `DELETE FROM gearwork_records WHERE function = $1 AND finished < $2`, fn, now-int64(age))
		total += n
		if err != nil {
			return total, err
		}
		n, err = s.trimRecords(ctx, fn, max)
		total += n
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

// trimMark is a function's newest record and its count limit when its
// records were last trimmed by count.
type trimMark struct {
	finished int64
	seq      int64
	max      int
}

// forgetTrimsExcept drops what the last trims saw of functions that no
// longer have records.
func (s *Store) forgetTrimsExcept(fns [][]byte) {
	s.trimmedMu.Lock()
	defer s.trimmedMu.Unlock()
	if len(s.trimmed) <= len(fns) {
		return
	}
	keep := make(map[string]trimMark, len(fns))
	for _, fn := range fns {
		if m, ok := s.trimmed[string(fn)]; ok {
			keep[string(fn)] = m
		}
	}
	s.trimmed = keep
}

// trimRecords deletes the records of fn beyond the newest max and
// returns how many it deleted. The trim walks max index entries (and
// those of records deleted since the last vacuum), so it is skipped
// while the function's newest record and its limit are what the last
// trim saw: nothing was recorded since, and what that trim kept is
// within the limit. A record another server wrote with an older finish
// time than the newest is trimmed with the next new one.
func (s *Store) trimRecords(ctx context.Context, fn []byte, max int) (int, error) {
	var mark trimMark
	err := s.pool.QueryRow(ctx, `SELECT finished, seq FROM gearwork_records WHERE function = $1
		ORDER BY finished DESC, seq DESC LIMIT 1`, fn).Scan(&mark.finished, &mark.seq)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("postgres: reading the newest job record of %q: %w", fn, err)
	}
	mark.max = max
	s.trimmedMu.Lock()
	last, seen := s.trimmed[string(fn)]
	s.trimmedMu.Unlock()
	if seen && last == mark {
		return 0, nil
	}
	s.trims.Add(1)
	// Everything from the newest record beyond the count on: one range
	// of the function's index, where a semi-join with the records to
	// keep hashed them all. The walk to it stops at the function's
	// oldest record when it has fewer.
	n, err := s.expireRecords(ctx, `DELETE FROM gearwork_records WHERE function = $1 AND (finished, seq) <= (
		SELECT finished, seq FROM gearwork_records WHERE function = $1
		ORDER BY finished DESC, seq DESC OFFSET $2 LIMIT 1)`, fn, max)
	if err != nil {
		return n, err
	}
	s.trimmedMu.Lock()
	if s.trimmed == nil {
		s.trimmed = make(map[string]trimMark)
	}
	s.trimmed[string(fn)] = mark
	s.trimmedMu.Unlock()
	return n, nil
}

// expireRecords runs one of ExpireRecords' deletes of the records of fn
// ($1) and returns how many it deleted.
func (s *Store) expireRecords(ctx context.Context, sql string, fn []byte, args ...any) (int, error) {
	ct, err := s.pool.Exec(ctx, sql, append([]any{fn}, args...)...)
	if err != nil {
		return 0, fmt.Errorf("postgres: expiring job records of %q: %w", fn, err)
	}
	return int(ct.RowsAffected()), nil
}
