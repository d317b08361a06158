package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"time"

	"github.com/gearwork/gearwork/internal/store/postgres"
)

// openPostgres opens the shared PostgreSQL store (migrating its schema).
// The broker runs in shared mode on it.
func openPostgres(ctx context.Context, raw string, log *slog.Logger) (*postgres.Store, error) {
	cfg, err := postgresConfig(raw)
	if err != nil {
		return nil, err
	}
	cfg.Logger = log
	st, err := postgres.Open(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("--store %s: %w", redactURL(cfg.URL), err)
	}
	return st, nil
}

// postgresConfig parses a --store postgres:// URL, which serve and migrate
// take alike. Gearwork's own options ride in the URL's query and are
// removed before it goes to the driver: lease_ttl=DURATION sets how long a
// dead server's jobs stay its own (default 10s).
func postgresConfig(raw string) (postgres.Config, error) {
	var cfg postgres.Config
	u, err := url.Parse(raw)
	if err != nil {
		// url.Error repeats the URL, password and all: keep only why.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return cfg, fmt.Errorf("--store: invalid PostgreSQL URL: %w", err)
	}
	q := u.Query()
	if q.Has("lease_ttl") {
		v := q.Get("lease_ttl")
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return cfg, fmt.Errorf("--store %s: invalid lease_ttl %q: want a positive duration such as 10s", u.Redacted(), v)
		}
		cfg.LeaseTTL = d
		q.Del("lease_ttl")
		u.RawQuery = q.Encode()
	}
	cfg.URL = u.String()
	return cfg, nil
}
