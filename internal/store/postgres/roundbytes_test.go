package postgres_test

import (
	"bytes"
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/internal/store"
	"github.com/gearwork/gearwork/internal/store/postgres/pgtest"
)

// countStatements makes the database count the statements that insert
// into or update gearwork_jobs and gearwork_records, by operation and
// table, in the table stmts.
func countStatements(t *testing.T, url string) {
	t.Helper()
	pgtest.Exec(t, url, `CREATE TABLE stmts (op text)`)
	pgtest.Exec(t, url, `CREATE FUNCTION count_stmt() RETURNS trigger LANGUAGE plpgsql AS
		$$BEGIN INSERT INTO stmts VALUES (TG_OP || ' ' || TG_TABLE_NAME); RETURN NULL; END$$`)
	for name, on := range map[string]string{"ji": "INSERT ON gearwork_jobs", "ju": "UPDATE ON gearwork_jobs",
		"ri": "INSERT ON gearwork_records"} {
		pgtest.Exec(t, url, `CREATE TRIGGER count_`+name+` AFTER `+on+` FOR EACH STATEMENT EXECUTE FUNCTION count_stmt()`)
	}
}

func statements(t *testing.T, url, op string) int {
	t.Helper()
	var n int
	pgtest.QueryRow(t, url, `SELECT count(*) FROM stmts WHERE op = '`+op+`'`, &n)
	pgtest.Exec(t, url, `DELETE FROM stmts WHERE op = $1`, op)
	return n
}

// A commit round sends its new jobs, updates (retained results) and
// records in statements of a bounded size, all in one transaction:
// PostgreSQL refuses a message or an array over 1 GB, which one statement
// of a round of many results of up to 64 MiB would pass, and such a round
// would be tried again forever. Here the bound is 4 KiB and each job
// carries 1,500 bytes.
func TestCommitRoundSplitsStatementsByBytes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := pgtest.Schema(t)
	s := openStore(t, url, "a")
	s.SetStatementBytesForTest(4 << 10)
	_, err := s.Join(ctx, func(string) {}, func(string) {}, func(error) {})
	require.NoError(t, err)
	countStatements(t, url)

	const n = 12
	big := func(c byte) []byte { return bytes.Repeat([]byte{c}, 1500) }
	jobs := make([]store.Job, n)
	claim := make([]bool, n)
	for i := range jobs {
		jobs[i] = newJob("f", "", "")
		jobs[i].Payload, jobs[i].LastError = big('p'), "e"
		claim[i] = true
	}
	res, err := s.Commit(ctx, store.CommitParams{Insert: store.InsertParams{HandlePrefix: "H:t:", Jobs: jobs, Claim: claim}})
	require.NoError(t, err)
	require.GreaterOrEqual(t, statements(t, url, "INSERT gearwork_jobs"), 4, "new jobs in several statements")

	var recs []store.Record
	for i := range jobs {
		jobs[i].Seq, jobs[i].State, jobs[i].Result, jobs[i].FinishedAt = res.Inserted[i].Seq, store.StateDone, big('r'), 1
		recs = append(recs, store.Record{Seq: jobs[i].Seq, Function: "f", State: "complete", Finished: 1, Data: big('d')})
	}
	pgtest.Exec(t, url, `DELETE FROM stmts`) // an INSERT ... ON CONFLICT DO UPDATE counts as an UPDATE too
	_, err = s.Commit(ctx, store.CommitParams{Update: jobs, Records: recs})
	require.NoError(t, err)
	require.GreaterOrEqual(t, statements(t, url, "UPDATE gearwork_jobs"), 4, "results in several statements")
	require.GreaterOrEqual(t, statements(t, url, "INSERT gearwork_records"), 4, "records in several statements")
	for _, j := range jobs {
		got, err := s.StoredJob(ctx, j.Seq, store.StateDone)
		require.NoError(t, err)
		require.Equal(t, big('r'), got.Result)
		require.Equal(t, big('p'), got.Payload)
		r, err := s.Record(ctx, j.Seq)
		require.NoError(t, err)
		require.Equal(t, big('d'), r.Data)
	}

	// A round written again whose records are stored already (its commit
	// was not acknowledged) replaces them, in every statement.
	for i := range recs {
		recs[i].Data = big('D')
	}
	_, err = s.Commit(ctx, store.CommitParams{Records: recs})
	require.NoError(t, err)
	for _, r := range recs {
		got, err := s.Record(ctx, r.Seq)
		require.NoError(t, err)
		require.Equal(t, big('D'), got.Data)
	}

	// Update splits too, in one transaction.
	for i := range jobs {
		jobs[i].Result = big('R')
	}
	pgtest.Exec(t, url, `DELETE FROM stmts`)
	require.NoError(t, s.Update(ctx, jobs))
	require.GreaterOrEqual(t, statements(t, url, "UPDATE gearwork_jobs"), 4)
	got, err := s.StoredJob(ctx, jobs[n-1].Seq, store.StateDone)
	require.NoError(t, err)
	require.Equal(t, big('R'), got.Result)
}
