package postgres

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/gearwork/gearwork/internal/store"
)

// Config configures a Store.
type Config struct {
	// URL is a PostgreSQL connection URL or keyword/value string as pgx
	// accepts it. Tables live in the current schema (search_path).
	URL string
	// Name identifies this server in gearwork_servers. Default
	// "<hostname>:<pid>".
	Name string
	// LeaseTTL is how long the jobs a server holds stay its own without
	// a renewal; a server that dies loses them after this long (or this
	// long after the server releasing them regained the database, or
	// started: see Store.Renew). Renewals happen every LeaseTTL/4.
	// Default 10s.
	LeaseTTL time.Duration
	// MaxConns bounds the connection pool. Default 8.
	MaxConns int32
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

var (
	_ store.SharedStore   = (*Store)(nil)
	_ store.PayloadReader = (*Store)(nil)
)

// Store is the PostgreSQL store, shared by several servers. It implements
// store.SharedStore (and with it store.Store, store.MetaStore and
// store.SharedLifecycle) and store.PayloadReader; all methods are safe for
// concurrent use.
type Store struct {
	cfg  Config
	log  *slog.Logger
	pool *pgxpool.Pool
	// apool commits asynchronously (synchronous_commit off): for claims,
	// which may be lost in a crash of PostgreSQL itself without harm (the
	// job is claimed again: at least once).
	apool *pgxpool.Pool
	// channel is the LISTEN/NOTIFY channel of this schema.
	channel string
	closed  atomic.Bool

	// numbers holds sequence numbers reserved for rounds of plain new
	// jobs (numberPool).
	numbers numberPool

	// trimmed is what the last trim by count of each function's records
	// saw (ExpireRecords); only the expiry sweep uses it.
	trimmedMu sync.Mutex
	trimmed   map[string]trimMark
	// trims counts the trims by count run, for tests.
	trims atomic.Int64

	// mu guards the membership fields below.
	mu       sync.Mutex
	serverID int64 // 0 until Join
	listener *listener
	// contact is how long this server has been in touch with the
	// database without a break, as its registration and renewals see it
	// (see steadyContact).
	contact contact
	// stmtBytes is maxStatementBytes, but for tests (export_test.go).
	stmtBytes int
}

// maxStatementBytes bounds the bytes of jobs (payloads, results, errors
// and the other texts, jobBytes) or records sent in one statement; larger
// batches and commit rounds are split over several statements in one
// transaction. PostgreSQL refuses a message or an array over 1 GB, which a
// round of many retained results (up to 64 MiB each) would reach: a round
// that can never be written, tried again and again.
const maxStatementBytes = 32 << 20

// maxStatementRows bounds the rows sent in one statement.
const maxStatementRows = 8192

// Open connects to the database, applies any missing migrations and
// returns the store. It fails if the database cannot be reached.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	if cfg.Name == "" {
		host, _ := os.Hostname()
		cfg.Name = host + ":" + strconv.Itoa(os.Getpid())
	}
	cfg.LeaseTTL = cmp.Or(cfg.LeaseTTL, 10*time.Second)
	cfg.MaxConns = cmp.Or(cfg.MaxConns, 8)
	pcfg, err := pgxpool.ParseConfig(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	pcfg.MaxConns = cfg.MaxConns
	if _, set := pcfg.ConnConfig.RuntimeParams["jit"]; !set {
		// Compiling a statement costs far more than running one of the
		// store's: a round's statements over a deep queue are estimated
		// costly enough for PostgreSQL to compile them (a second and
		// more, for a statement that runs in a millisecond) every time.
		pcfg.ConnConfig.RuntimeParams["jit"] = "off"
	}
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	acfg := pcfg.Copy()
	acfg.MaxConns = 2
	acfg.ConnConfig.RuntimeParams["synchronous_commit"] = "off"
	if _, set := acfg.ConnConfig.RuntimeParams["plan_cache_mode"]; !set {
		// The claims' statements take their functions and counts as
		// arrays, whose sizes only a custom plan knows: PostgreSQL
		// estimated the generic plan of the plain claim at twice a
		// custom one's cost and so planned the claim anew on every call
		// (0.3-0.4 ms of a claim of 500 that executes in 4-10 ms), for
		// the same plan. The generic plan is made once per connection.
		acfg.ConnConfig.RuntimeParams["plan_cache_mode"] = "force_generic_plan"
	}
	apool, err := pgxpool.NewWithConfig(ctx, acfg)
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("postgres: %w", err)
	}
	s := &Store{cfg: cfg, log: cmp.Or(cfg.Logger, slog.Default()), pool: pool, apool: apool, stmtBytes: maxStatementBytes}
	conn, err := pool.Acquire(ctx)
	if err != nil {
		pool.Close()
		apool.Close()
		return nil, fmt.Errorf("postgres: connect: %w", err)
	}
	applied, err := migrate(ctx, conn.Conn())
	if err == nil {
		var schema string
		err = conn.QueryRow(ctx, `SELECT current_schema()`).Scan(&schema)
		s.channel = channelName(schema)
	}
	conn.Release()
	if err != nil {
		pool.Close()
		apool.Close()
		return nil, err
	}
	if len(applied) > 0 {
		s.log.Info("postgres: migrated schema", slog.Any("versions", applied))
	}
	return s, nil
}

// channelName returns the NOTIFY channel for a schema: channels are per
// database, so servers on different schemas of one database stay apart.
func channelName(schema string) string {
	c := "gearwork." + schema
	if len(c) > 63 {
		c = c[:63]
	}
	return c
}

func (s *Store) check(ctx context.Context) error {
	if s.closed.Load() {
		return store.ErrClosed
	}
	return ctx.Err()
}

// Close leaves the shared store if this server joined it (releasing every job
// this server holds) and closes the connections. Further calls return
// store.ErrClosed. Idempotent.
func (s *Store) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	s.mu.Lock()
	l := s.listener
	s.listener = nil
	s.mu.Unlock()
	if l != nil {
		l.stop()
	}
	s.pool.Close()
	s.apool.Close()
	return nil
}

// Ping reports whether the database answers.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	return s.pool.Ping(ctx)
}

// seqArg encodes a sequence number as PostgreSQL's signed bigint, keeping
// the bits: numbers from 2^63 up are stored as negative values.
func seqArg(seq uint64) int64 { return int64(seq) }

// jobColumns holds one batch of jobs as column arrays, for unnest.
type jobColumns struct {
	seq                                      []int64
	handle, function, uniq, reducer, payload [][]byte
	priority                                 []int16
	runAt, retries                           []int64
	state                                    []int16
	attempts, notBefore                      []int64
	lastError, history, result               [][]byte
	finishedAt                               []int64
	orderingKey                              [][]byte
	maxAttempts                              []int32
	timeout                                  []int64
	schedule                                 [][]byte
	tick                                     []int64
	batch                                    []int64
}

func (c *jobColumns) add(j store.Job) {
	c.seq = append(c.seq, seqArg(j.Seq))
	c.handle = append(c.handle, nonNil([]byte(j.Handle)))
	c.addFields(j)
}

// addFields adds every column but seq and handle.
func (c *jobColumns) addFields(j store.Job) {
	c.function = append(c.function, nonNil([]byte(j.Function)))
	var u []byte // NULL: no unique
	if j.Unique != "" {
		u = []byte(j.Unique)
	}
	c.uniq = append(c.uniq, u)
	c.reducer = append(c.reducer, nonNil([]byte(j.Reducer)))
	c.payload = append(c.payload, nonNil(j.Payload))
	c.priority = append(c.priority, int16(j.Priority))
	c.runAt = append(c.runAt, j.RunAt)
	c.retries = append(c.retries, int64(j.Retries))
	c.addState(j)
}

// historyJSON encodes a job's attempts for the jsonb column history.
// JSON carries only UTF-8 (encoding/json writes U+FFFD for other bytes),
// and jsonb refuses U+0000, which a worker's exception text may hold: it
// failed the whole write, and every retry of it. NUL bytes are written as
// U+FFFD too. The job's last error (a bytea) keeps every byte.
func historyJSON(h []store.Attempt) []byte {
	noNUL := func(s string) string { return strings.ReplaceAll(s, "\x00", "\uFFFD") }
	for i, a := range h {
		if strings.Contains(a.Outcome, "\x00") || strings.Contains(a.Error, "\x00") || strings.Contains(a.Worker, "\x00") {
			h = slices.Clone(h) // the caller's attempts stay as they are
			for k := i; k < len(h); k++ {
				h[k].Outcome, h[k].Error, h[k].Worker = noNUL(h[k].Outcome), noNUL(h[k].Error), noNUL(h[k].Worker)
			}
			break
		}
	}
	b, _ := json.Marshal(h)
	return b
}

// addState adds the lifecycle columns.
func (c *jobColumns) addState(j store.Job) {
	c.state = append(c.state, int16(j.State))
	c.attempts = append(c.attempts, int64(j.Attempts))
	c.notBefore = append(c.notBefore, j.NotBefore)
	c.lastError = append(c.lastError, nonNil([]byte(j.LastError)))
	var h []byte // NULL: no history
	if len(j.History) > 0 {
		h = historyJSON(j.History)
	}
	c.history = append(c.history, h)
	c.result = append(c.result, j.Result)
	c.finishedAt = append(c.finishedAt, j.FinishedAt)
	c.orderingKey = append(c.orderingKey, nonNil([]byte(j.OrderingKey)))
	c.maxAttempts = append(c.maxAttempts, j.MaxAttempts)
	c.timeout = append(c.timeout, j.Timeout)
	c.schedule = append(c.schedule, nonNil([]byte(j.Schedule)))
	c.tick = append(c.tick, j.Tick)
	c.batch = append(c.batch, seqArg(j.Batch))
}

// stateArgs returns the lifecycle columns as statement arguments.
func (c *jobColumns) stateArgs() []any {
	return []any{c.state, c.attempts, c.notBefore, c.lastError, c.history, c.result, c.finishedAt,
		c.orderingKey, c.maxAttempts, c.timeout, c.schedule, c.tick, c.batch}
}

// stateTypes are the array types of the lifecycle columns in stateArgs
// order, for unnest; stateNames their column names.
const (
	stateTypes = `$%d::smallint[], $%d::bigint[], $%d::bigint[], $%d::bytea[], $%d::jsonb[], $%d::bytea[], $%d::bigint[],
		$%d::bytea[], $%d::integer[], $%d::bigint[], $%d::bytea[], $%d::bigint[], $%d::bigint[]`
	stateNames = `state, attempts, not_before, last_error, history, result, finished_at, ordering_key, max_attempts, timeout, schedule, tick, batch`
)

// params numbers the placeholders of a stateTypes-style list from first.
func params(format string, first int) string {
	n := strings.Count(format, "%d")
	args := make([]any, n)
	for i := range args {
		args[i] = first + i
	}
	return fmt.Sprintf(format, args...)
}

func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

// chunks splits jobs into statement-sized pieces of at most limit bytes
// (jobBytes) each, but for a job larger alone.
func chunks(jobs []store.Job, limit int) [][]store.Job {
	var out [][]store.Job
	for _, n := range chunkSizes(len(jobs), limit, func(i int) int { return jobBytes(&jobs[i]) }) {
		out = append(out, jobs[:n])
		jobs = jobs[n:]
	}
	return out
}

// jobBytes is about how many bytes j takes in a statement's arguments.
func jobBytes(j *store.Job) int {
	n := 64 + len(j.Payload) + len(j.Result) + len(j.LastError) + len(j.Function) + len(j.Unique) +
		len(j.Handle) + len(j.Reducer) + len(j.OrderingKey) + len(j.Schedule)
	for _, a := range j.History {
		n += 96 + len(a.Outcome) + 6*len(a.Error) + len(a.Worker) // JSON may escape each byte as \u00XX
	}
	return n
}

// chunkSizes splits n rows, row i being size(i) bytes, into
// statement-sized pieces (at most limit bytes and maxStatementRows rows,
// but for a row larger alone), and returns their lengths in order.
func chunkSizes(n, limit int, size func(i int) int) []int {
	var out []int
	start, bytes := 0, 0
	for i := range n {
		if i > start && (bytes+size(i) > limit || i-start >= maxStatementRows) {
			out = append(out, i-start)
			start, bytes = i, 0
		}
		bytes += size(i)
	}
	if start < n {
		out = append(out, n-start)
	}
	return out
}

// inTx runs fn in a transaction when the work needs several statements,
// and directly (each statement its own transaction) when it needs one.
func (s *Store) inTx(ctx context.Context, statements int, fn func(q querier) error) error {
	if statements <= 1 {
		return fn(s.pool)
	}
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error { return fn(tx) })
}

// querier is what pgxpool.Pool and pgx.Tx have in common.
type querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

var saveSQL = `
INSERT INTO gearwork_jobs (seq, handle, function, uniq, reducer, payload, priority, run_at, retries, ` + stateNames + `)
SELECT * FROM unnest($1::bigint[], $2::bytea[], $3::bytea[], $4::bytea[], $5::bytea[], $6::bytea[],
	$7::smallint[], $8::bigint[], $9::bigint[], ` + params(stateTypes, 10) + `)
ON CONFLICT (seq) DO UPDATE SET
	handle = EXCLUDED.handle, function = EXCLUDED.function, uniq = EXCLUDED.uniq,
	reducer = EXCLUDED.reducer, payload = EXCLUDED.payload, priority = EXCLUDED.priority,
	run_at = EXCLUDED.run_at, retries = EXCLUDED.retries, ` + setExcluded(stateNames)

// setExcluded turns "a, b" into "a = EXCLUDED.a, b = EXCLUDED.b".
func setExcluded(names string) string {
	var parts []string
	for _, n := range strings.Split(names, ",") {
		n = strings.TrimSpace(n)
		parts = append(parts, n+" = EXCLUDED."+n)
	}
	return strings.Join(parts, ", ")
}

// Save inserts jobs or replaces the stored jobs with the same Seq (a job
// that a server holds stays held). It is durable when it returns, as the
// database's synchronous_commit defines; a batch is written atomically.
// When a batch names one Seq twice, the later record wins.
func (s *Store) Save(ctx context.Context, jobs []store.Job) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	if len(jobs) == 0 {
		return nil
	}
	jobs = lastPerSeq(jobs)
	parts := chunks(jobs, s.stmtBytes)
	err := s.inTx(ctx, len(parts), func(q querier) error {
		for _, part := range parts {
			var c jobColumns
			for _, j := range part {
				c.add(j)
			}
			args := append([]any{c.seq, c.handle, c.function, c.uniq, c.reducer,
				c.payload, c.priority, c.runAt, c.retries}, c.stateArgs()...)
			if _, err := q.Exec(ctx, saveSQL, args...); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("postgres: save %d jobs: %w", len(jobs), err)
	}
	return nil
}

// lastPerSeq drops every record that a later record with the same Seq
// replaces, keeping the order otherwise.
func lastPerSeq(jobs []store.Job) []store.Job {
	seen := make(map[uint64]int, len(jobs))
	dup := false
	for i, j := range jobs {
		if _, ok := seen[j.Seq]; ok {
			dup = true
		}
		seen[j.Seq] = i
	}
	if !dup {
		return jobs
	}
	out := make([]store.Job, 0, len(seen))
	for i, j := range jobs {
		if seen[j.Seq] == i {
			out = append(out, j)
		}
	}
	return out
}

// Delete removes jobs by Seq. Unknown ones are ignored, so it is
// idempotent.
func (s *Store) Delete(ctx context.Context, seqs []uint64) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	if len(seqs) == 0 {
		return nil
	}
	args := make([]int64, len(seqs))
	for i, q := range seqs {
		args[i] = seqArg(q)
	}
	if _, err := s.pool.Exec(ctx, `DELETE FROM gearwork_jobs WHERE seq = ANY($1)`, args); err != nil {
		return fmt.Errorf("postgres: delete %d jobs: %w", len(seqs), err)
	}
	return nil
}

const jobSelect = `SELECT seq, handle, function, uniq, reducer, payload, priority, run_at, retries, ` +
	stateNames + ` FROM gearwork_jobs`

// Load calls each for every stored job in ascending Seq order, held or
// not, and stops at the first error each returns. Payloads given to each
// are its own.
func (s *Store) Load(ctx context.Context, each func(store.Job) error) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	// Sequence numbers from 2^63 up are stored as negative bigints: they
	// come after all the others.
	for _, where := range []string{` WHERE seq >= 0 ORDER BY seq`, ` WHERE seq < 0 ORDER BY seq`} {
		rows, err := s.pool.Query(ctx, jobSelect+where)
		if err != nil {
			return fmt.Errorf("postgres: load: %w", err)
		}
		sc := newJobScanner(false)
		for rows.Next() {
			j, err := sc.scan(rows)
			if err != nil {
				rows.Close()
				return fmt.Errorf("postgres: load: %w", err)
			}
			if err := each(j); err != nil {
				rows.Close()
				return err
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("postgres: load: %w", err)
		}
	}
	return nil
}

// jobScanner reads rows of jobSelect's columns, and with submitted one
// more: a claim's submitted_ns (store.Job.Submitted). It scans every row
// into the same variables, so that a claim of many rows does not
// allocate them again for each; the byte slices a job keeps (payload,
// result) are new for every row, as pgx allocates each it scans. Not for
// concurrent use.
type jobScanner struct {
	seq, runAt, retries, attempts, notBefore          int64
	finishedAt, timeout, tick, created, batch         int64
	handle, fn, uniq, reducer, pay                    []byte
	lastError, history, result, orderingKey, schedule []byte
	priority, state                                   int16
	maxAttempts                                       int32
	dest                                              []any
}

func newJobScanner(submitted bool) *jobScanner {
	s := &jobScanner{}
	s.dest = []any{&s.seq, &s.handle, &s.fn, &s.uniq, &s.reducer, &s.pay, &s.priority, &s.runAt, &s.retries,
		&s.state, &s.attempts, &s.notBefore, &s.lastError, &s.history, &s.result, &s.finishedAt,
		&s.orderingKey, &s.maxAttempts, &s.timeout, &s.schedule, &s.tick, &s.batch}
	if submitted {
		s.dest = append(s.dest, &s.created)
	}
	return s
}

// scan reads the job of row.
func (s *jobScanner) scan(row pgx.Row) (store.Job, error) {
	var j store.Job
	if err := row.Scan(s.dest...); err != nil {
		return j, err
	}
	j.Seq = uint64(s.seq)
	j.Handle = string(s.handle)
	j.Function = string(s.fn)
	j.Unique = string(s.uniq)
	j.Reducer = string(s.reducer)
	j.Payload = s.pay
	j.Priority = uint8(s.priority)
	j.RunAt = s.runAt
	j.Retries = uint32(s.retries)
	j.State = store.JobState(s.state)
	j.Attempts = uint32(s.attempts)
	j.NotBefore = s.notBefore
	j.LastError = string(s.lastError)
	if len(s.history) > 0 {
		if err := json.Unmarshal(s.history, &j.History); err != nil {
			return j, fmt.Errorf("job %d: history: %w", j.Seq, err)
		}
	}
	j.Result = s.result
	j.FinishedAt = s.finishedAt
	j.OrderingKey = string(s.orderingKey)
	j.MaxAttempts = s.maxAttempts
	j.Timeout = s.timeout
	j.Schedule = string(s.schedule)
	j.Tick = s.tick
	j.Batch = uint64(s.batch)
	j.Submitted = s.created
	return j, nil
}

// ReadPayload returns the payload of a stored job, or an error wrapping
// store.ErrNotFound.
func (s *Store) ReadPayload(ctx context.Context, seq uint64) ([]byte, error) {
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	var p []byte
	err := s.pool.QueryRow(ctx, `SELECT payload FROM gearwork_jobs WHERE seq = $1`, seqArg(seq)).Scan(&p)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("postgres: job %d: %w", seq, store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("postgres: read payload of job %d: %w", seq, err)
	}
	return p, nil
}
