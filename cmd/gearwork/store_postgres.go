package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"time"

	"github.com/gearwork/gearwork/internal/broker"
	"github.com/gearwork/gearwork/internal/store/postgres"
)

// openPostgres opens the shared PostgreSQL store (migrating its schema).
// The broker runs in shared mode on it. Gearwork's own options ride in the
// URL's query and are removed before it goes to the driver:
// lease_ttl=DURATION sets how long a dead server's jobs stay its own
// (default 10s).
func openPostgres(ctx context.Context, raw string, log *slog.Logger) (broker.Store, error) {
	cfg := postgres.Config{Logger: log}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("--store: invalid PostgreSQL URL: %w", err)
	}
	q := u.Query()
	if v := q.Get("lease_ttl"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return nil, fmt.Errorf("--store %s: invalid lease_ttl %q: want a positive duration such as 10s", u.Redacted(), v)
		}
		cfg.LeaseTTL = d
		q.Del("lease_ttl")
		u.RawQuery = q.Encode()
	}
	cfg.URL = u.String()
	st, err := postgres.Open(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("--store %s: %w", u.Redacted(), err)
	}
	return st, nil
}
