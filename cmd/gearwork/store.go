package main

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	"github.com/gearwork/gearwork/internal/broker"
)

const (
	defaultStore = "memory:"
	storeHelp    = "\"memory:\" (nothing survives a restart, like gearmand without a queue)"
)

// openStore opens the store named by a --store URL. It returns nil for
// "memory:", where the broker's own memory is the only copy.
func openStore(_ context.Context, url string, _ *slog.Logger) (broker.Store, error) {
	switch {
	case url == "memory:" || url == "memory":
		return nil, nil
	case strings.HasPrefix(url, "pebble:"), strings.HasPrefix(url, "postgres://"), strings.HasPrefix(url, "postgresql://"):
		return nil, fmt.Errorf("--store %q: this store is not available in this build", url)
	default:
		return nil, fmt.Errorf("--store %q: unknown store; use %s", url, storeHelp)
	}
}
