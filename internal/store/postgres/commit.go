package postgres

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/gearwork/gearwork/internal/store"
)

// insertRowsSQL inserts the rows of insertSQL's input, numbered, that its
// WHERE clause, which follows, selects. The numbers travel with the rows:
// joined by ordinal, the planner, which guesses that a condition such as
// "uniq IS NULL" keeps one row, joined each row with every other. A job
// asked to be claimed is held by the server $10 only while that server's
// row is there (memberExists); otherwise it is inserted unclaimed.
var insertRowsSQL = `INSERT INTO gearwork_jobs AS g (seq, handle, function, uniq, reducer, payload, priority, run_at, retries, owner, ` + stateNames + `)
	SELECT i.seq, $9::bytea || convert_to(i.seq::text, 'UTF8'), i.function, i.uniq, i.reducer, i.payload,
		i.priority, i.run_at, i.retries, CASE WHEN i.claim AND i.ordering_key = '' AND ` + memberExists(10) + ` THEN $10::bigint END, ` + prefixed("i.", stateNames) + `
	FROM numbered i`

// insertSQL inserts new jobs, numbering those without a number. Jobs
// without a unique are inserted plainly, since an INSERT … ON CONFLICT
// writes each row speculatively (an extra WAL record and index probes per
// row, even for rows outside the unique index); jobs with a unique
// coalesce with the live job of their function and unique.
var insertSQL = `
WITH input AS (
	SELECT * FROM unnest($1::bytea[], $2::bytea[], $3::bytea[], $4::bytea[], $5::smallint[],
		$6::bigint[], $7::bigint[], $8::boolean[], ` + params(stateTypes, 11) + `, $` + strconv.Itoa(11+strings.Count(stateTypes, "%d")) + `::bigint[])
		WITH ORDINALITY AS i(function, uniq, reducer, payload, priority, run_at, retries, claim, ` + stateNames + `, given, ord)
), numbered AS MATERIALIZED (
	SELECT o.*, CASE WHEN given <> 0 THEN given ELSE nextval('gearwork_job_seq') END AS seq
	FROM (SELECT * FROM input ORDER BY ord) o
), plain AS (
	` + insertRowsSQL + `
	WHERE i.uniq IS NULL AND ` + openBatchJob + `
	RETURNING g.seq, g.function, g.uniq, true AS created, g.owner, g.batch
), coalesced AS (
	` + insertRowsSQL + `
	WHERE i.uniq IS NOT NULL AND ` + openBatchJob + `
	ON CONFLICT (uniq, function) WHERE uniq IS NOT NULL AND state <> 2
	DO UPDATE SET owner = EXCLUDED.owner, progress_num = 0, progress_den = 0, running = false
		WHERE g.owner IS NULL AND EXCLUDED.owner IS NOT NULL AND g.state IN (0, 1) AND g.ordering_key = ''
			AND g.run_at <= extract(epoch FROM now())::bigint
			AND g.not_before <= (extract(epoch FROM now()) * 1e9)::bigint
	RETURNING g.seq, g.function, g.uniq, (g.xmax = 0) AS created, g.owner, g.batch
), ins AS (
	SELECT * FROM plain UNION ALL SELECT * FROM coalesced
), counted AS (
	-- A new job of a batch counts in its total (a coalesced one does not);
	-- the round locked the batch rows first (batchLockSQL).
	UPDATE gearwork_batches b SET total = b.total + c.n
	FROM (SELECT batch, count(*) AS n FROM ins WHERE created AND batch <> 0 GROUP BY batch) c
	WHERE b.id = c.batch
)
SELECT n.ord, ins.seq, ins.function, ins.uniq, ins.created, ins.owner FROM ins LEFT JOIN numbered n ON n.seq = ins.seq`

// plainInsertSQL inserts new jobs that set no column but their function,
// payload, priority and run-at time (plainJob), numbering those without
// a number, as insertSQL does for any job: the other columns keep their
// defaults, so a round of such jobs sends six arrays instead of
// twenty-four and PostgreSQL builds each row from six values. Its rows
// are read as insertSQL's.
var plainInsertSQL = `
WITH numbered AS MATERIALIZED (
	SELECT o.*, CASE WHEN given <> 0 THEN given ELSE nextval('gearwork_job_seq') END AS seq
	FROM (SELECT * FROM unnest($1::bytea[], $2::bytea[], $3::smallint[], $4::bigint[], $5::boolean[], $6::bigint[])
		WITH ORDINALITY AS i(function, payload, priority, run_at, claim, given, ord) ORDER BY ord) o
), ins AS (
	INSERT INTO gearwork_jobs AS g (seq, handle, function, payload, priority, run_at, owner)
	SELECT i.seq, $7::bytea || convert_to(i.seq::text, 'UTF8'), i.function, i.payload, i.priority, i.run_at,
		CASE WHEN i.claim AND ` + memberExists(8) + ` THEN $8::bigint END
	FROM numbered i
	RETURNING g.seq, g.owner
)
SELECT n.ord, ins.seq, NULL::bytea, NULL::bytea, true, ins.owner FROM ins JOIN numbered n ON n.seq = ins.seq`

// plainJob reports whether j sets no column but those plainInsertSQL
// writes: no unique, reducer, retries, lifecycle state, batch or jobs to
// wait for.
func plainJob(j store.Job) bool {
	return j.Unique == "" && j.Reducer == "" && j.Retries == 0 && j.State == store.StateQueued &&
		j.Attempts == 0 && j.NotBefore == 0 && j.LastError == "" && len(j.History) == 0 && j.Result == nil &&
		j.FinishedAt == 0 && j.OrderingKey == "" && j.MaxAttempts == 0 && j.Timeout == 0 && j.Schedule == "" &&
		j.Tick == 0 && j.Batch == 0 && len(j.After) == 0 && !j.AfterAnyway
}

// plainInsertArgs returns the arguments of plainInsertSQL for the jobs
// rows of jobs, claimed by the server id where claim says so.
func plainInsertArgs(jobs []store.Job, rows []int, claim []bool, prefix string, id int64) []any {
	function := make([][]byte, len(rows))
	payload := make([][]byte, len(rows))
	priority := make([]int16, len(rows))
	runAt := make([]int64, len(rows))
	given := make([]int64, len(rows))
	for k, i := range rows {
		j := &jobs[i]
		function[k], payload[k] = nonNil([]byte(j.Function)), nonNil(j.Payload)
		priority[k], runAt[k], given[k] = int16(j.Priority), j.RunAt, seqArg(j.Seq)
	}
	return []any{function, payload, priority, runAt, claim, given, []byte(prefix), id}
}

// notifySQL notifies the servers listening on channel $1 with each
// payload of $2.
const notifySQL = `SELECT pg_notify($1, n) FROM unnest($2::text[]) n`

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
		len(p.Release) == 0 && len(p.Notify) == 0 && p.Reserve <= 0 && len(p.Progress) == 0 &&
		len(p.Records) == 0 && len(p.ForgetRecords) == 0 && len(p.BatchEnds) == 0 && len(p.DepEnds) == 0 {
		return out, nil
	}
	if err := s.numberWaiting(ctx, &p.Insert); err != nil {
		return store.Committed{}, fmt.Errorf("postgres: commit: number waiting jobs: %w", err)
	}
	id, _ := s.member()
	if err := s.commit(ctx, p, &out, id); err != nil {
		return store.Committed{}, fmt.Errorf("postgres: commit %d new, %d updated, %d finished jobs: %w",
			len(p.Insert.Jobs), len(p.Update), len(p.Delete), err)
	}
	return out, nil
}

// reserveSQL takes sequence numbers for jobs a server numbers itself. The
// commit of the round that runs it flushes the sequence's WAL record, so
// a number is never given out twice, even after a crash.
const reserveSQL = `SELECT nextval('gearwork_job_seq') FROM generate_series(1, $1::integer)`

// progressSQL writes the progress of jobs this server ($5) holds, and
// whether a worker runs them; rows gone or held by another server
// meanwhile are skipped.
const progressSQL = `UPDATE gearwork_jobs g SET progress_num = u.num, progress_den = u.den, running = u.running
	FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::boolean[]) AS u(seq, num, den, running)
	WHERE g.seq = u.seq AND g.owner = $5`

// commit writes one round. A job that coalesced with a job the round
// could not return, and that then could not be resolved, has its
// Inserted.Err set.
func (s *Store) commit(ctx context.Context, cp store.CommitParams, res *store.Committed, id int64) error {
	p := cp.Insert
	out := res.Inserted
	res.Reserved = res.Reserved[:0]
	plan := planInsert(p, id)
	plan.limit = s.stmtBytes
	pool := s.planPool(p.Jobs, plan.sent)
	var missing []int // rows that coalesced with a job the statement did not return

	// One batch: one implicit transaction, one round trip. Each step is
	// queued, and its result read, in the order of this list.
	var steps []batchStep
	add := func(read func(pgx.BatchResults) error, sql string, args ...any) {
		steps = append(steps, batchStep{sql: sql, args: args, read: read})
	}
	// The dependency lock (depsLock): exclusive to link new waiting
	// jobs, shared to end jobs others may wait for.
	linking := len(waiting(p.Jobs)) > 0
	switch {
	case linking:
		add(nil, depLockSQL, s.depsLock())
	case len(cp.DepEnds) > 0:
		add(nil, depLockSharedSQL, s.depsLock())
	}
	lockRoundBatches(func(sql string, args ...any) { add(nil, sql, args...) }, roundBatches(cp), cp.DepEnds, p.HandlePrefix)
	// batchStates and refused are made only by rounds that read them.
	var batchStates map[uint64]bool
	if joined := jobBatches(p.Jobs); len(joined) > 0 {
		batchStates = make(map[uint64]bool, len(joined))
		add(func(br pgx.BatchResults) error { return readBatchStates(br, batchStates) }, batchStateSQL, joined)
	}
	var endArgs []any
	var endBatches []int64
	if len(cp.BatchEnds) > 0 {
		// Counted before the deletes, again after the inserts (batchEndSQL).
		endArgs, endBatches = batchEndArgs(cp.BatchEnds)
		add(nil, batchEndSQL, endArgs...)
	}
	if len(cp.Delete) > 0 {
		add(nil, `DELETE FROM gearwork_jobs WHERE seq = ANY($1)`, seqArgs(cp.Delete))
	}
	if len(cp.ForgetRecords) > 0 {
		add(nil, `DELETE FROM gearwork_records WHERE seq = ANY($1)`, seqArgs(cp.ForgetRecords))
	}
	// Every statement, of records and of updates too, holds at most
	// s.stmtBytes (maxStatementBytes): a round of retained results would
	// otherwise pass PostgreSQL's limit of 1 GB for one message.
	var records []int // the steps that write cp.Records
	recs := cp.Records
	for _, n := range chunkSizes(len(recs), s.stmtBytes, func(i int) int { return 64 + len(recs[i].Function) + len(recs[i].Data) }) {
		records = append(records, len(steps))
		add(nil, recordsSQL, recordArgs(recs[:n])...)
		recs = recs[n:]
	}
	if len(cp.Update) > 0 {
		for _, part := range chunks(lastPerSeq(cp.Update), s.stmtBytes) {
			add(nil, updateSQL, updateArgs(part)...)
		}
	}
	if len(cp.DepEnds) > 0 {
		s.queueDepEnds(func(sql string, args ...any) { add(nil, sql, args...) }, cp.DepEnds, p.HandlePrefix)
	}
	numbered := 0 // the jobs numbered from pool.seqs so far
	for _, part := range plan.parts() {
		rows := part.rows
		cl := make([]bool, len(rows))
		for k, i := range rows {
			cl[k] = plan.claim(i)
		}
		read := func(br pgx.BatchResults) error {
			m, err := readInserted(br, rows, plan.first, out, id)
			missing = append(missing, m...)
			return err
		}
		if part.plain && pool.seqs != nil {
			seqs := pool.seqs[numbered : numbered+len(rows)]
			numbered += len(rows)
			if !slices.Contains(cl, true) {
				steps = append(steps, unclaimedInsertStep(p.Jobs, rows, seqs, p.HandlePrefix, out))
				continue
			}
			args := plainInsertArgs(p.Jobs, rows, cl, p.HandlePrefix, id)
			copy(args[5].([]int64), seqs)
			add(func(br pgx.BatchResults) error {
				m, err := readNumberedInserted(br, rows, seqs, out, id)
				missing = append(missing, m...)
				return err
			}, plainNumberedInsertSQL, args...)
			continue
		}
		if part.plain {
			add(read, plainInsertSQL, plainInsertArgs(p.Jobs, rows, cl, p.HandlePrefix, id)...)
			continue
		}
		jobs := make([]store.Job, len(rows))
		for k, i := range rows {
			jobs[k] = p.Jobs[i]
		}
		add(read, insertSQL, insertArgs(jobs, cl, p.HandlePrefix, id)...)
	}
	var refused map[uint64]store.DependencyRefused
	if linking {
		refused = make(map[uint64]store.DependencyRefused)
		add(func(br pgx.BatchResults) error { return readRefused(br, refused) }, depLinkSQL, depLinkArgs(p.Jobs)...)
	}
	if len(cp.BatchEnds) > 0 {
		add(nil, batchEndSQL, endArgs...)
	}
	if len(cp.BatchEnds) > 0 || cancelling(cp.DepEnds) {
		// Also the batches of waiting jobs depEndSQL cancelled.
		add(nil, batchFireSQL, endBatches, []byte(p.HandlePrefix), s.channel)
	}
	if len(cp.Progress) > 0 && id != 0 {
		seqs := make([]int64, len(cp.Progress))
		nums := make([]int64, len(cp.Progress))
		dens := make([]int64, len(cp.Progress))
		running := make([]bool, len(cp.Progress))
		for i, pr := range cp.Progress {
			seqs[i], nums[i], dens[i], running[i] = seqArg(pr.Seq), int64(pr.Numerator), int64(pr.Denominator), pr.Running
		}
		add(nil, progressSQL, seqs, nums, dens, running, id)
	}
	if pool.reserve > 0 {
		// After the inserts: the numbers are above every one they took.
		add(readReservedInto(&pool.reserved), reserveSQL, pool.reserve)
	}
	if cp.Reserve > 0 {
		add(readReservedInto(&res.Reserved), reserveSQL, cp.Reserve)
	}
	notify := plan.notify
	if len(cp.Release) > 0 && id != 0 {
		add(nil, `UPDATE gearwork_jobs SET owner = NULL WHERE seq = ANY($1) AND owner = $2`, seqArgs(cp.Release), id)
		if len(cp.Notify) == 0 && len(notify) == 0 {
			notify = append(notify, "")
		}
	}
	for _, f := range cp.Notify {
		if !plan.notified[f] {
			plan.notified[f] = true
			notify = append(notify, notifyPayload(f))
		}
	}
	if len(notify) > 0 {
		add(nil, notifySQL, s.channel, notify)
	}

	err := s.againOnConflict(ctx, "a commit round", func() error {
		for {
			// What the reads of an aborted attempt gathered is read again.
			missing = missing[:0]
			clear(refused)
			clear(batchStates)
			res.Reserved = res.Reserved[:0]
			pool.reserved = pool.reserved[:0]
			err := s.sendRound(ctx, steps, cp.Meta)
			if len(records) > 0 && steps[records[0]].sql == recordsSQL && recordStored(err) {
				// Refused whole: written again, its records replacing
				// those stored.
				for _, k := range records {
					steps[k].sql = recordsReplaceSQL
				}
				continue
			}
			return err
		}
	})
	if err != nil {
		return err
	}
	s.settlePool(pool, pool.seqs == nil && len(plan.sent) > 0)
	// Jobs that coalesced with a job some server holds (the conditional
	// update did not fire, so the statement did not return the row).
	// Jobs of a batch that is unknown or has completed were not inserted.
	for _, i := range missing {
		if r := batchRefusal(p.Jobs[i], batchStates); r != nil {
			out[i] = store.Inserted{BatchRefused: r}
			continue
		}
		r, err := s.resolveCoalesced(ctx, p, p.Jobs[i], id)
		if err != nil {
			// The round is written: this job alone is not stored.
			s.log.Warn("postgres: a job that coalesced with a job the round could not return was not stored",
				slog.String("function", p.Jobs[i].Function), slog.String("error", err.Error()))
			r = store.Inserted{Err: fmt.Errorf("job %q of %q coalesced with a live job: %w", p.Jobs[i].Unique, p.Jobs[i].Function, err)}
		}
		out[i] = r
	}
	markRefused(p.Jobs, out, refused)
	for i, f := range plan.dupOf {
		if f >= 0 {
			out[i] = store.Inserted{Seq: out[f].Seq, Refused: out[f].Refused, BatchRefused: out[f].BatchRefused, Err: out[f].Err}
		}
	}
	return nil
}

// maxConflictAttempts bounds how often a transaction aborted by a
// conflict with another transaction (abortedByConflict) is written.
const maxConflictAttempts = 5

// againOnConflict runs tx, which writes one transaction, and runs it
// again when PostgreSQL aborted it to resolve a conflict with another
// transaction, at most maxConflictAttempts times in all. what names the
// transaction in the log. tx must start from scratch each time: what the
// aborted attempt read is not to be kept.
//
// Two transactions need no such retry, as they cannot close a cycle of
// waits (and the store runs them at PostgreSQL's default READ COMMITTED,
// which has no serialization failures). A claim (Claim) skips the job
// rows others lock, takes its server's row (memberLockSQL) and then its
// claim locks in key order before any job row, and otherwise waits for
// nothing; a deleter of a server's row waits only for rows that server
// already owns (the release trigger of migration 13). A
// batch's close (CloseBatch) waits only for the batch's row, before it
// holds anything.
func (s *Store) againOnConflict(ctx context.Context, what string, tx func() error) error {
	for attempt := 1; ; attempt++ {
		err := tx()
		if err == nil || attempt >= maxConflictAttempts || !abortedByConflict(err) || ctx.Err() != nil {
			return err
		}
		s.log.Warn("postgres: "+what+" was aborted by a conflict with another transaction; writing it again",
			slog.Int("attempt", attempt), slog.String("error", err.Error()))
	}
}

// abortedByConflict reports whether err is PostgreSQL aborting a
// transaction to resolve a conflict with another one: a deadlock (two
// servers' rounds can wait for each other's rows, e.g. one that holds a
// waiting job's row and inserts the unique of a job the other has just
// deleted, while the other waits for that row) or a serialization
// failure. Nothing of the transaction was written, and writing it again
// succeeds once the other has ended.
func abortedByConflict(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && (pgErr.Code == "40P01" || pgErr.Code == "40001")
}

// sendRound sends steps, and the metadata entries meta, as one batch (one
// implicit transaction) and reads each step's results in turn.
func (s *Store) sendRound(ctx context.Context, steps []batchStep, meta []store.Meta) error {
	b := &pgx.Batch{}
	for _, st := range steps {
		b.Queue(st.sql, st.args...)
	}
	s.queueMeta(b, meta) // read by Close
	br := s.pool.SendBatch(ctx, b)
	for _, st := range steps {
		var err error
		if st.read == nil {
			_, err = br.Exec()
		} else {
			err = st.read(br)
		}
		if err != nil {
			_ = br.Close()
			return err
		}
	}
	return br.Close()
}

// batchStep is one statement of a commit round: queued into the batch and
// then read from its results, in the same place of the round's list of
// steps. read nil means Exec.
type batchStep struct {
	sql  string
	args []any
	read func(pgx.BatchResults) error
}

// insertPlan is what a commit round sends of its new jobs.
type insertPlan struct {
	p  store.InsertParams
	id int64
	// first maps each (function, unique) to the first job that has it: a
	// batch may name one twice, and only the first goes to the database,
	// the others share its outcome (dupOf, -1 for a first).
	first map[uniqKey]int
	dupOf []int
	// sent indexes p.Jobs in statement row order.
	sent []int
	// notify holds the notification payloads for the functions whose new
	// jobs other servers may claim now (notified, by function).
	notify   []string
	notified map[string]bool
	// limit bounds the bytes of one insert statement (chunkSizes).
	limit int
}

func planInsert(p store.InsertParams, id int64) *insertPlan {
	pl := &insertPlan{p: p, id: id, first: make(map[uniqKey]int), dupOf: make([]int, len(p.Jobs)),
		notified: make(map[string]bool)}
	now := time.Now().Unix()
	for i, j := range p.Jobs {
		pl.dupOf[i] = -1
		if j.Unique != "" && j.State != store.StateDead { // dead letters are outside the unique index
			k := uniqKey{j.Function, j.Unique}
			if f, ok := pl.first[k]; ok {
				pl.dupOf[i] = f
				continue
			}
			pl.first[k] = i
		}
		pl.sent = append(pl.sent, i)
		if !pl.claim(i) && j.RunAt <= now && !pl.notified[j.Function] {
			pl.notified[j.Function] = true
			pl.notify = append(pl.notify, notifyPayload(j.Function))
		}
	}
	return pl
}

// claim reports whether job i is to be inserted claimed by this server;
// a job that waits for others never is.
func (pl *insertPlan) claim(i int) bool {
	return pl.id != 0 && pl.p.Claim != nil && pl.p.Claim[i] && len(pl.p.Jobs[i].After) == 0
}

// insertPart is one insert statement of a round: rows index the jobs
// (InsertParams.Jobs) in the statement's row order, and plain says that
// every one of them is a plainJob, written by plainInsertSQL.
type insertPart struct {
	rows  []int
	plain bool
}

// parts splits the jobs sent into the insert statements of the round, in
// the order sent (so that the jobs the store numbers are numbered in that
// order): each run of plain jobs, and each run of others, in chunks.
func (pl *insertPlan) parts() []insertPart {
	var out []insertPart
	for start := 0; start < len(pl.sent); {
		plain := plainJob(pl.p.Jobs[pl.sent[start]])
		end := start + 1
		for end < len(pl.sent) && plainJob(pl.p.Jobs[pl.sent[end]]) == plain {
			end++
		}
		run := pl.sent[start:end]
		for _, n := range chunkSizes(len(run), pl.limit, func(k int) int { return jobBytes(&pl.p.Jobs[run[k]]) }) {
			out = append(out, insertPart{rows: run[:n], plain: plain})
			run = run[n:]
		}
		start = end
	}
	return out
}

// readInserted reads one insert statement's rows into out (indexed by
// job; rows maps the statement's row order to jobs) and returns the jobs
// that coalesced with a job the statement did not return.
func readInserted(br pgx.BatchResults, rows []int, first map[uniqKey]int, out []store.Inserted, id int64) ([]int, error) {
	// One set of variables for every row: scanning into pointers
	// allocated two integers a row.
	var (
		ord, owner pgtype.Int8
		seq        int64
		f, u       []byte
		created    bool
	)
	return eachInserted(br, rows, func(res pgx.Rows) (int, error) {
		if err := res.Scan(&ord, &seq, &f, &u, &created, &owner); err != nil {
			return -1, err
		}
		rowIndex := -1
		if ord.Valid {
			rowIndex = int(ord.Int64) - 1
		} else if i, ok := first[uniqKey{string(f), string(u)}]; ok {
			rowIndex = slices.Index(rows, i)
		}
		if rowIndex >= 0 && rowIndex < len(rows) {
			out[rows[rowIndex]] = store.Inserted{Seq: uint64(seq), Created: created,
				Claimed: owner.Valid && owner.Int64 == id && id != 0}
		}
		return rowIndex, nil
	})
}

// eachInserted reads one insert statement's rows with row, which scans
// one and returns its place in rows (out of range: none), and returns the
// jobs of rows that no row was read for.
func eachInserted(br pgx.BatchResults, rows []int, row func(pgx.Rows) (int, error)) ([]int, error) {
	res, err := br.Query()
	if err != nil {
		return nil, err
	}
	defer res.Close()
	seen := make([]bool, len(rows))
	for res.Next() {
		k, err := row(res)
		if err != nil {
			return nil, err
		}
		if k >= 0 && k < len(rows) {
			seen[k] = true
		}
	}
	res.Close()
	if err := res.Err(); err != nil {
		return nil, err
	}
	return unseen(seen, rows), nil
}

// unseen returns the jobs rows[k] whose seen[k] is false.
func unseen(seen []bool, rows []int) []int {
	var missing []int
	for k, ok := range seen {
		if !ok {
			missing = append(missing, rows[k])
		}
	}
	return missing
}

// readReservedInto returns a step's read that appends the reserved
// sequence numbers to *dst.
func readReservedInto(dst *[]uint64) func(pgx.BatchResults) error {
	return func(br pgx.BatchResults) error {
		var err error
		*dst, err = readReserved(br, *dst)
		return err
	}
}

// readReserved appends the reserved sequence numbers to dst.
func readReserved(br pgx.BatchResults, dst []uint64) ([]uint64, error) {
	rows, err := br.Query()
	if err != nil {
		return dst, err
	}
	return readReservedRows(rows, dst)
}

// readReservedRows appends the sequence numbers rows returns to dst and
// closes rows.
func readReservedRows(rows pgx.Rows, dst []uint64) ([]uint64, error) {
	defer rows.Close()
	for rows.Next() {
		var seq int64
		if err := rows.Scan(&seq); err != nil {
			return dst, err
		}
		dst = append(dst, uint64(seq))
	}
	rows.Close()
	return dst, rows.Err()
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
		// Finished and deleted in the meantime: a new job after all.
		// Unclaimed when this server's lease was lost since the round
		// (insertRowsSQL).
		r, inserted, err := s.insertAfterAll(ctx, p, j, id)
		if err != nil || inserted {
			return r, err
		}
		if attempt >= 5 {
			return store.Inserted{}, fmt.Errorf("job %q of %q coalesced with a job that could not be found", j.Unique, j.Function)
		}
		// Another server inserted it first: look again.
	}
}

// insertAfterAll inserts j, which coalesced with a job that has finished
// meanwhile, in a transaction of its own; inserted is false when it
// coalesced again. One numbered by this server is held here, as it was
// asked to be; one numbered by the store goes to whichever server claims
// it. A job that waits for others is never held by the server that
// inserts it; it is checked against them, and a job of a batch against
// its batch, as Commit does.
func (s *Store) insertAfterAll(ctx context.Context, p store.InsertParams, j store.Job, id int64) (r store.Inserted, inserted bool, err error) {
	s.numbers.reset() // numbered now, above the pool's numbers
	var steps []batchStep
	add := func(read func(pgx.BatchResults) error, sql string, args ...any) {
		steps = append(steps, batchStep{sql: sql, args: args, read: read})
	}
	linking := len(j.After) > 0
	if linking {
		add(nil, depLockSQL, s.depsLock())
	}
	var batchStates map[uint64]bool
	if j.Batch != 0 {
		batchStates = make(map[uint64]bool, 1)
		add(nil, batchLockSQL, []int64{seqArg(j.Batch)})
		add(func(br pgx.BatchResults) error { return readBatchStates(br, batchStates) }, batchStateSQL, []int64{seqArg(j.Batch)})
	}
	out := make([]store.Inserted, 1)
	var missing []int
	add(func(br pgx.BatchResults) error {
		var err error
		missing, err = readInserted(br, []int{0}, map[uniqKey]int{{j.Function, j.Unique}: 0}, out, id)
		return err
	}, insertSQL, insertArgs([]store.Job{j}, []bool{id != 0 && j.Seq != 0 && !linking}, p.HandlePrefix, id)...)
	var refused map[uint64]store.DependencyRefused
	if linking {
		refused = make(map[uint64]store.DependencyRefused)
		add(func(br pgx.BatchResults) error { return readRefused(br, refused) }, depLinkSQL, depLinkArgs([]store.Job{j})...)
	}
	add(nil, `SELECT pg_notify($1, $2)`, s.channel, notifyPayload(j.Function))
	err = s.againOnConflict(ctx, "an insert of a job whose coalesced job finished", func() error {
		missing = nil
		clear(batchStates)
		clear(refused)
		return s.sendRound(ctx, steps, nil)
	})
	if err != nil {
		return store.Inserted{}, false, err
	}
	if br := batchRefusal(j, batchStates); br != nil {
		return store.Inserted{BatchRefused: br}, true, nil
	}
	if len(missing) > 0 {
		return store.Inserted{}, false, nil
	}
	if rf, ok := refused[out[0].Seq]; ok {
		return store.Inserted{Refused: &rf}, true, nil
	}
	return out[0], true, nil
}

// insertArgs returns the arguments of insertSQL for jobs, claimed by the
// server id where claim says so.
func insertArgs(jobs []store.Job, claim []bool, prefix string, id int64) []any {
	var c jobColumns
	for _, j := range jobs {
		c.addFields(j)
		c.seq = append(c.seq, seqArg(j.Seq))
		if len(j.After) > 0 {
			c.state[len(c.state)-1] = stateUnlinked // until depLinkSQL
		}
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
	parts := chunks(lastPerSeq(jobs), s.stmtBytes)
	err := s.inTx(ctx, len(parts), func(q querier) error {
		for _, part := range parts {
			if _, err := q.Exec(ctx, updateSQL, updateArgs(part)...); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("postgres: update %d jobs: %w", len(jobs), err)
	}
	return nil
}
