package postgres

import "context"

// SettingForTest returns a run-time setting of a connection of each of the
// store's pools (commit rounds and claims).
func (s *Store) SettingForTest(ctx context.Context, name string) (rounds, claims string, err error) {
	const q = `SELECT current_setting($1)`
	if err = s.pool.QueryRow(ctx, q, name).Scan(&rounds); err == nil {
		err = s.apool.QueryRow(ctx, q, name).Scan(&claims)
	}
	return rounds, claims, err
}

// TrimsForTest reports how many trims by count ExpireRecords has run.
func (s *Store) TrimsForTest() int64 { return s.trims.Load() }

// SetStatementBytesForTest bounds the bytes of one statement (maxStatementBytes).
func (s *Store) SetStatementBytesForTest(n int) { s.stmtBytes = n }
