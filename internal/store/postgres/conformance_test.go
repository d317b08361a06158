package postgres_test

import (
	"context"
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
	schema := storetest.PerTest(func(t *testing.T) string { return pgtest.Schema(t) })
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
	schema := storetest.PerTest(func(t *testing.T) string { return pgtest.Schema(t) })
	storetest.RunShared(t, func(t *testing.T, name string) store.SharedStore {
		u := schema(t)
		s, err := postgres.Open(context.Background(), postgres.Config{URL: u, Name: name, Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}
