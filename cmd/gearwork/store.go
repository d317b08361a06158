package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/gearwork/gearwork/internal/broker"
	"github.com/gearwork/gearwork/internal/store"
	"github.com/gearwork/gearwork/internal/store/pebble"
)

const (
	defaultStore = "pebble:./gearwork-data"
	storeHelp    = "\"pebble:DIR\" (embedded and durable: the default), \"postgres://USER@HOST/DB\" (shared by several servers; see docs/postgres.md) or \"memory:\" (nothing survives a restart, like gearmand without a queue)"
	syncHelp     = "when a background job is on disk before JOB_CREATED: \"always\" (fsync first; the default), " +
		"\"interval:50ms\" (fsync every interval: an OS crash or power cut loses the last interval), " +
		"\"none\" (never fsync: an OS crash or power cut loses what the OS had not written back); pebble store only"
	budgetHelp = "bytes of job payloads kept in memory, like 4GiB or 512MiB; payloads beyond it stay on disk and are read back " +
		"when the job is handed out (pebble store only); \"unlimited\" keeps all, 0 keeps none (default: a quarter of RAM)"
)

// The Pebble store syncs removals for the broker's durable admin answers.
var _ broker.Syncer = (*pebble.Store)(nil)

// storeConfig is what the serve flags say about the store.
type storeConfig struct {
	url          string
	sync         string
	memoryBudget string
	// maxOpenFiles bounds the files the Pebble store keeps open (set from
	// the descriptor reserve, see capConnections); 0 means Pebble's default.
	maxOpenFiles int
}

// openedStore is the store a --store URL names: local for a store this
// server alone uses, shared for one that several servers share (the broker
// runs in shared mode on it); neither for "memory:", where the broker's own
// memory is the only copy.
type openedStore struct {
	local  store.Store
	shared store.SharedStore
}

// configure hands the store to the broker in the mode it was opened for.
func (o openedStore) configure(cfg *broker.Config) {
	cfg.Store, cfg.Shared = o.local, o.shared
}

// Close closes the store, if any.
func (o openedStore) Close() error {
	switch {
	case o.shared != nil:
		return o.shared.Close()
	case o.local != nil:
		return o.local.Close()
	}
	return nil
}

// checkStoreURL checks the form of a --store URL without opening it.
func checkStoreURL(url string) error {
	switch {
	case url == "memory:" || url == "memory":
		return nil
	case strings.HasPrefix(url, "postgres://"), strings.HasPrefix(url, "postgresql://"):
		_, err := postgresConfig(url)
		return err
	case strings.HasPrefix(url, "pebble:"):
		if strings.TrimPrefix(url, "pebble:") == "" {
			return fmt.Errorf("--store %q: name a directory, as in pebble:./gearwork-data", url)
		}
		return nil
	}
	return fmt.Errorf("--store %q: unknown store; use %s", url, storeHelp)
}

// storeFlags are the serve flags that only one kind of store reads: the
// kind (the prefix of its --store URL) and why the others do not.
var storeFlags = []struct{ flag, store, name, others string }{
	{"sync", "pebble:", "Pebble", "memory: writes nothing to disk, and PostgreSQL commits as the database is configured"},
	{"memory-budget", "pebble:", "Pebble", "memory: keeps every payload in memory, and PostgreSQL reads jobs from their rows"},
	{"insert-delay", "postgres://", "PostgreSQL", "only a store shared by several servers delays its inserts"},
}

// checkStoreFlags refuses a store flag given (on the command line or in
// its GEARWORK_* variable) for a store that would ignore it: a --sync or
// --memory-budget meant for Pebble with --store memory: or postgres://
// would otherwise change nothing, without a word.
func checkStoreFlags(url string, set map[string]bool) error {
	kind := url
	switch {
	case url == "memory" || url == "memory:":
		kind = "memory:"
	case strings.HasPrefix(url, "pebble:"):
		kind = "pebble:"
	case strings.HasPrefix(url, "postgres://"), strings.HasPrefix(url, "postgresql://"):
		kind = "postgres://"
	}
	for _, f := range storeFlags {
		if set[f.flag] && kind != f.store {
			return fmt.Errorf("--%s applies to the %s store only, not to --store %s (%s): leave it out", f.flag, f.name, kind, f.others)
		}
	}
	return nil
}

// openStore opens the store named by a --store URL.
func openStore(ctx context.Context, cfg storeConfig, log *slog.Logger) (openedStore, error) {
	mode, interval, err := parseSync(cfg.sync)
	if err != nil {
		return openedStore{}, err
	}
	if err := checkStoreURL(cfg.url); err != nil {
		return openedStore{}, err
	}
	switch url := cfg.url; {
	case url == "memory:" || url == "memory":
		return openedStore{}, nil
	case strings.HasPrefix(url, "pebble:"):
		dir := strings.TrimPrefix(url, "pebble:")
		st, err := pebble.Open(ctx, dir, pebble.Options{Sync: mode, Interval: interval, Logger: log, MaxOpenFiles: cfg.maxOpenFiles})
		if err != nil {
			return openedStore{}, explainStoreError(err)
		}
		return openedStore{local: st}, nil
	case strings.HasPrefix(url, "postgres://"), strings.HasPrefix(url, "postgresql://"):
		st, err := openPostgres(ctx, url, log)
		if err != nil {
			return openedStore{}, err
		}
		return openedStore{shared: st}, nil
	}
	return openedStore{}, checkStoreURL(cfg.url) // not reached: checked above
}

// explainStoreError adds what an operator can do to an error from opening
// or replaying the store.
func explainStoreError(err error) error {
	if errors.Is(err, store.ErrCorrupt) {
		return fmt.Errorf("%w\nThe data directory is damaged and the server will not start on it. "+
			"Keep a copy for recovery; to start with an empty queue, move the directory aside", err)
	}
	return err
}

// parseSync parses --sync: always, none or interval:DURATION.
func parseSync(s string) (pebble.SyncMode, time.Duration, error) {
	switch {
	case s == "" || s == "always":
		return pebble.SyncAlways, 0, nil
	case s == "none":
		return pebble.SyncNone, 0, nil
	case s == "interval":
		return pebble.SyncInterval, 50 * time.Millisecond, nil
	case strings.HasPrefix(s, "interval:"):
		d, err := time.ParseDuration(strings.TrimPrefix(s, "interval:"))
		if err != nil || d <= 0 {
			return 0, 0, fmt.Errorf("invalid --sync %q: the interval must be a positive duration, as in interval:50ms", s)
		}
		return pebble.SyncInterval, d, nil
	}
	return 0, 0, fmt.Errorf("invalid --sync %q: use always, interval:50ms or none", s)
}
