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
	schema := schemaPerCase()
	storetest.Run(t, func(t *testing.T) store.Store {
		u := schema(t)
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
	schema := schemaPerCase()
	storetest.RunShared(t, func(t *testing.T, name string) store.SharedStore {
		u := schema(t)
		s, err := postgres.Open(context.Background(), postgres.Config{URL: u, Name: name, Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

// schemaPerCase returns a function that gives each test case its own
// schema: the same one every time it is called in that case.
func schemaPerCase() func(t *testing.T) string {
	var mu sync.Mutex
	urls := map[*testing.T]string{}
	return func(t *testing.T) string {
		mu.Lock()
		u, ok := urls[t]
		mu.Unlock()
		if !ok {
			u = pgtest.Schema(t)
			mu.Lock()
			urls[t] = u
			mu.Unlock()
		}
		return u
	}
}
