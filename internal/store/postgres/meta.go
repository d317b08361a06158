package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/gearwork/gearwork/internal/store"
)

// LoadMeta calls each for every metadata entry (cron ticks, pauses) that
// any server sharing the store wrote, and stops at the first error each
// returns.
func (s *Store) LoadMeta(ctx context.Context, each func(store.Meta) error) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	rows, err := s.pool.Query(ctx, `SELECT key, value FROM gearwork_meta ORDER BY key`)
	if err != nil {
		return fmt.Errorf("postgres: load metadata: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var k, v []byte
		if err := rows.Scan(&k, &v); err != nil {
			return fmt.Errorf("postgres: load metadata: %w", err)
		}
		if err := each(store.Meta{Key: string(k), Value: v}); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("postgres: load metadata: %w", err)
	}
	return nil
}

// PutMeta writes metadata entries in order (a nil Value deletes the key),
// in one transaction, durable when it returns.
func (s *Store) PutMeta(ctx context.Context, entries []store.Meta) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	if len(entries) == 0 {
		return nil
	}
	b := &pgx.Batch{}
	s.queueMeta(b, entries)
	if err := s.pool.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("postgres: put metadata: %w", err)
	}
	return nil
}

// GetMeta reads one metadata entry; ok is false when the key is not
// stored.
func (s *Store) GetMeta(ctx context.Context, key string) (value []byte, ok bool, err error) {
	if err := s.check(ctx); err != nil {
		return nil, false, err
	}
	err = s.pool.QueryRow(ctx, `SELECT value FROM gearwork_meta WHERE key = $1`, []byte(key)).Scan(&value)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return nil, false, nil
	case err != nil:
		return nil, false, fmt.Errorf("postgres: read metadata %q: %w", key, err)
	}
	return value, true, nil
}

// queueMeta adds the statements that write entries to a batch, and a
// notification per key so that every server listening learns of the
// change once the batch commits.
func (s *Store) queueMeta(b *pgx.Batch, entries []store.Meta) {
	if len(entries) == 0 {
		return
	}
	var keys []string
	seen := make(map[string]bool)
	for _, m := range entries {
		if !seen[m.Key] {
			seen[m.Key] = true
			keys = append(keys, metaPayload(m.Key))
		}
		if m.Value == nil {
			b.Queue(`DELETE FROM gearwork_meta WHERE key = $1`, []byte(m.Key))
			continue
		}
		b.Queue(`INSERT INTO gearwork_meta (key, value) VALUES ($1, $2)
			ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value`, []byte(m.Key), m.Value)
	}
	b.Queue(notifySQL, s.channel, keys)
}
