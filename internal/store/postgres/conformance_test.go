package postgres_test

import (
	"context"
	"sync"
	"testing"

	"github.com/gearwork/gearwork/internal/store"
	"github.com/gearwork/gearwork/internal/store/postgres"
	"github.com/gearwork/gearwork/internal/store/postgres/pgtest"
	"github.com/gearwork/gearwork/internal/store/storetest"
)

// TestConformance runs the suite every Gearwork store passes. Each case has
// its own schema; reopening a store in the same case opens the same schema.
func TestConformance(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	urls := map[*testing.T]string{}
	storetest.Run(t, func(t *testing.T) store.Store {
		mu.Lock()
		u, ok := urls[t]
		mu.Unlock()
		if !ok {
			u = pgtest.Schema(t)
			mu.Lock()
			urls[t] = u
			mu.Unlock()
		}
		s, err := postgres.Open(context.Background(), postgres.Config{URL: u, Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

// TestSharedConformance runs the suite of the shared-store contract. Each
// case has its own schema; every server of a case opens that schema.
func TestSharedConformance(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	urls := map[*testing.T]string{}
	storetest.RunShared(t, func(t *testing.T, name string) store.SharedStore {
		mu.Lock()
		u, ok := urls[t]
		mu.Unlock()
		if !ok {
			u = pgtest.Schema(t)
			mu.Lock()
			urls[t] = u
			mu.Unlock()
		}
		s, err := postgres.Open(context.Background(), postgres.Config{URL: u, Name: name, Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}
