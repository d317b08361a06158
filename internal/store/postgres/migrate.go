package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// migration is one versioned change of the schema. Migrations are applied
// in order, each exactly once per schema, and are never edited once
// released: a change is a new migration.
type migration struct {
	version int
	name    string
	sql     string
}

// migrations are the schema's history. Tables are created in the
// connection's current schema (the first existing schema of search_path).
var migrations = []migration{
	{1, "jobs, servers and the job sequence", `
CREATE SEQUENCE gearwork_job_seq MINVALUE 1 MAXVALUE 4611686018427387903;

CREATE TABLE gearwork_servers (
	id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	name        text NOT NULL,
	started_at  timestamptz NOT NULL DEFAULT now(),
	lease_until timestamptz NOT NULL
);

CREATE TABLE gearwork_jobs (
	seq        bigint PRIMARY KEY,
	handle     bytea NOT NULL,
	function   bytea NOT NULL,
	uniq       bytea,
	reducer    bytea NOT NULL DEFAULT '',
	payload    bytea NOT NULL,
	priority   smallint NOT NULL,
	run_at     bigint NOT NULL DEFAULT 0,
	retries    bigint NOT NULL DEFAULT 0,
	owner      bigint REFERENCES gearwork_servers (id) ON DELETE SET NULL,
	created_at timestamptz NOT NULL DEFAULT now()
);

-- Live jobs coalesce on (function, unique); uniq first so that
-- GET_STATUS_UNIQUE, which names no function, can use the index too.
CREATE UNIQUE INDEX gearwork_jobs_unique ON gearwork_jobs (uniq, function) WHERE uniq IS NOT NULL;
-- Claiming: unclaimed jobs of a function in dispatch order.
CREATE INDEX gearwork_jobs_claim ON gearwork_jobs (function, priority, seq) WHERE owner IS NULL;
-- Releasing a dead server's jobs (ON DELETE SET NULL) and a server's own.
CREATE INDEX gearwork_jobs_owner ON gearwork_jobs (owner) WHERE owner IS NOT NULL;
`},
	{2, "lifecycle state of jobs (retries, dead letters, results, ordering, cron)", `
ALTER TABLE gearwork_jobs
	ADD COLUMN state        smallint NOT NULL DEFAULT 0,
	ADD COLUMN attempts     bigint NOT NULL DEFAULT 0,
	ADD COLUMN not_before   bigint NOT NULL DEFAULT 0,
	ADD COLUMN last_error   bytea NOT NULL DEFAULT '',
	ADD COLUMN history      jsonb,
	ADD COLUMN result       bytea,
	ADD COLUMN finished_at  bigint NOT NULL DEFAULT 0,
	ADD COLUMN ordering_key bytea NOT NULL DEFAULT '',
	ADD COLUMN max_attempts integer NOT NULL DEFAULT 0,
	ADD COLUMN timeout      bigint NOT NULL DEFAULT 0,
	ADD COLUMN schedule     bytea NOT NULL DEFAULT '',
	ADD COLUMN tick         bigint NOT NULL DEFAULT 0;

-- Dead letters (state 2) no longer hold their unique: a new submit with it
-- is a new job. Retained results (state 3) still answer it.
DROP INDEX gearwork_jobs_unique;
CREATE UNIQUE INDEX gearwork_jobs_unique ON gearwork_jobs (uniq, function) WHERE uniq IS NOT NULL AND state <> 2;
-- Only queued (0) and retry-waiting (1) jobs are ever claimed.
DROP INDEX gearwork_jobs_claim;
CREATE INDEX gearwork_jobs_claim ON gearwork_jobs (function, priority, seq) WHERE owner IS NULL AND state IN (0, 1);
`},
	{3, "broker metadata (cron ticks, pauses)", `
CREATE TABLE gearwork_meta (
	key   bytea PRIMARY KEY,
	value bytea NOT NULL
);
`},
	{4, "indexes for cluster-wide dead letters and retained results", `
-- Dead letters of every server: listed by function in the order they died,
-- counted, trimmed to the function's limit.
CREATE INDEX gearwork_jobs_dead ON gearwork_jobs (function, finished_at, seq) WHERE state = 2;
-- Retained results of every server, by the time they expire (not_before
-- holds it for state 3; 0 for rows written before it did).
CREATE INDEX gearwork_jobs_done ON gearwork_jobs (not_before) WHERE state = 3;
`},
	{5, "cluster-wide ordered queues, concurrency and rate limits", `
-- The plain claim takes only jobs without an ordering key.
DROP INDEX gearwork_jobs_claim;
CREATE INDEX gearwork_jobs_claim ON gearwork_jobs (function, priority, seq)
	WHERE owner IS NULL AND state IN (0, 1) AND ordering_key = '';
-- Ordered queues: the live jobs of each (function, ordering key) in order,
-- to find the head of each key.
CREATE INDEX gearwork_jobs_ordered ON gearwork_jobs (function, ordering_key, seq)
	WHERE state IN (0, 1) AND ordering_key <> '';
-- Rate limits: the token bucket of each rate-limited function, as of at.
CREATE TABLE gearwork_rates (
	function bytea PRIMARY KEY,
	tokens   double precision NOT NULL,
	at       timestamptz NOT NULL
);
`},
	{6, "progress of running jobs", `
-- The last WORK_STATUS of a job a server runs, for GET_STATUS asked of
-- another server.
ALTER TABLE gearwork_jobs ADD COLUMN progress_num bigint NOT NULL DEFAULT 0,
	ADD COLUMN progress_den bigint NOT NULL DEFAULT 0;
`},
	{7, "records of ended jobs", `
-- The final record of each job that ended, whichever server ended it:
-- written in the transaction that deletes the job, kept per function for
-- its history policy. data is the record as the broker encodes it.
CREATE TABLE gearwork_records (
	seq      bigint PRIMARY KEY,
	function bytea NOT NULL,
	state    text NOT NULL,
	finished bigint NOT NULL,
	data     bytea NOT NULL
);
-- Listings newest first, of one function or of all; expiry by function.
CREATE INDEX gearwork_records_function ON gearwork_records (function, finished DESC, seq DESC);
CREATE INDEX gearwork_records_finished ON gearwork_records (finished DESC, seq DESC);
`},
	{8, "batches", `
-- The batch a job belongs to (0: none), and whether its end was counted
-- in the batch (so that a round written twice counts it once).
ALTER TABLE gearwork_jobs ADD COLUMN batch bigint NOT NULL DEFAULT 0,
	ADD COLUMN batch_done boolean NOT NULL DEFAULT false;
-- A batch: its callbacks (function NULL: none; payload the JSON string
-- the callback's payload carries), its counters, and which callbacks were
-- submitted (fired: 1 on_success, 2 on_complete; fire_now: those the last
-- update submitted).
CREATE TABLE gearwork_batches (
	id               bigint PRIMARY KEY,
	success_fn       bytea,
	success_payload  bytea,
	complete_fn      bytea,
	complete_payload bytea,
	closed           boolean NOT NULL DEFAULT false,
	total            bigint NOT NULL DEFAULT 0,
	succeeded        bigint NOT NULL DEFAULT 0,
	failed           bigint NOT NULL DEFAULT 0,
	dead             bigint NOT NULL DEFAULT 0,
	fired            smallint NOT NULL DEFAULT 0,
	fire_now         smallint NOT NULL DEFAULT 0,
	failures         text[] NOT NULL DEFAULT '{}',
	truncated        boolean NOT NULL DEFAULT false,
	created          bigint NOT NULL,
	completed        bigint NOT NULL DEFAULT 0
);
`},
	{9, "records of jobs of batches", `
-- The batch an ended job belonged to (0: none), so that a batch's
-- records are listed, newest first, without reading the others.
ALTER TABLE gearwork_records ADD COLUMN batch bigint NOT NULL DEFAULT 0;
CREATE INDEX gearwork_records_batch ON gearwork_records (batch, finished DESC, seq DESC) WHERE batch <> 0;
`},
	{10, "jobs that wait for other jobs", `
-- A waiting job (state 4) names the jobs it still waits for, and whether
-- it runs even when one of them ends without success. State 5 marks a new
-- waiting job whose dependencies the inserting transaction has not
-- checked yet: no committed row has it.
ALTER TABLE gearwork_jobs ADD COLUMN after_seqs bigint[] NOT NULL DEFAULT '{}',
	ADD COLUMN after_anyway boolean NOT NULL DEFAULT false;
-- The waiting jobs that name a job that ended.
CREATE INDEX gearwork_jobs_after ON gearwork_jobs USING gin (after_seqs) WHERE state = 4;
`},
	{11, "running jobs and expiry of batches", `
-- Whether a worker of the server that holds the job runs it (written
-- with its progress), for the running count of its batch.
ALTER TABLE gearwork_jobs ADD COLUMN running boolean NOT NULL DEFAULT false;
-- The jobs of each batch that a server holds.
CREATE INDEX gearwork_jobs_batch_held ON gearwork_jobs (batch) WHERE batch <> 0 AND owner IS NOT NULL;
-- Completed batches in the order they completed, for their retention.
CREATE INDEX gearwork_batches_completed ON gearwork_batches (completed) WHERE completed <> 0;
`},
	{12, "whether any job waits for others", `
-- Lets a round that ends jobs see in one probe that no job waits at all.
CREATE INDEX gearwork_jobs_waiting ON gearwork_jobs (seq) WHERE state = 4;
`},
	{13, "jobs held by a server without a per-row foreign key check", `
-- The foreign key on owner checked every job a claim or an insert took
-- (a third of a claim's time over a deep queue). A statement that takes
-- jobs now locks its server's row itself, once (FOR KEY SHARE, as the
-- check did), and takes nothing when the row is gone; deleting a server's
-- row still releases its jobs, by this trigger. Its UPDATE takes a fresh
-- snapshot, so it also sees the jobs of a claim that committed while the
-- DELETE waited for that claim's lock.
CREATE FUNCTION gearwork_release_jobs() RETURNS trigger LANGUAGE plpgsql
	SET search_path FROM CURRENT AS $$
BEGIN
	UPDATE gearwork_jobs SET owner = NULL WHERE owner = OLD.id;
	RETURN NULL;
END $$;
CREATE TRIGGER gearwork_servers_release AFTER DELETE ON gearwork_servers
	FOR EACH ROW EXECUTE FUNCTION gearwork_release_jobs();
ALTER TABLE gearwork_jobs DROP CONSTRAINT gearwork_jobs_owner_fkey;
`},
}

// LatestVersion is the schema version this build of Gearwork migrates to.
var LatestVersion = migrations[len(migrations)-1].version

// ErrSchemaTooNew is returned (wrapped) by Open and Migrate when the
// database was migrated by a newer Gearwork than this one.
var ErrSchemaTooNew = errors.New("postgres: the database schema is newer than this Gearwork knows")

// migrate brings the current schema up to LatestVersion and returns the
// versions it applied. Every migration runs in one transaction holding an
// advisory lock on the schema, so servers that start at the same time
// apply each migration exactly once and wait for each other.
func migrate(ctx context.Context, conn *pgx.Conn) ([]int, error) {
	tx, err := conn.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("postgres: migrate: %w", err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtext(current_schema() || '.gearwork_migrations'))`); err != nil {
		return nil, fmt.Errorf("postgres: migrate: lock: %w", err)
	}
	var schema *string
	if err := tx.QueryRow(ctx, `SELECT current_schema()`).Scan(&schema); err != nil {
		return nil, fmt.Errorf("postgres: migrate: %w", err)
	}
	if schema == nil {
		return nil, errors.New("postgres: migrate: no schema of search_path exists; create it first")
	}
	if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS gearwork_migrations (
		version    integer PRIMARY KEY,
		name       text NOT NULL,
		applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		return nil, fmt.Errorf("postgres: migrate: create gearwork_migrations: %w", err)
	}
	var current int
	if err := tx.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM gearwork_migrations`).Scan(&current); err != nil {
		return nil, fmt.Errorf("postgres: migrate: %w", err)
	}
	if current > LatestVersion {
		return nil, fmt.Errorf("%w: schema %q is at version %d, this Gearwork knows up to %d",
			ErrSchemaTooNew, *schema, current, LatestVersion)
	}
	var applied []int
	for _, m := range migrations {
		if m.version <= current {
			continue
		}
		if _, err := tx.Exec(ctx, m.sql); err != nil {
			return nil, fmt.Errorf("postgres: migration %d (%s): %w", m.version, m.name, err)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO gearwork_migrations (version, name) VALUES ($1, $2)`, m.version, m.name); err != nil {
			return nil, fmt.Errorf("postgres: migration %d: %w", m.version, err)
		}
		applied = append(applied, m.version)
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, fmt.Errorf("postgres: migrate: commit: %w", err)
	}
	return applied, nil
}

// Migrate connects to url and brings its schema up to LatestVersion, as the
// server does when it starts. It returns the versions it applied (none
// when the schema was current).
func Migrate(ctx context.Context, url string) ([]int, error) {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return nil, fmt.Errorf("postgres: connect: %w", err)
	}
	defer func() { _ = conn.Close(context.WithoutCancel(ctx)) }()
	return migrate(ctx, conn)
}
