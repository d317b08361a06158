package pebble_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/gearwork/gearwork/internal/store"
	"github.com/gearwork/gearwork/internal/store/pebble"
	"github.com/gearwork/gearwork/internal/store/storetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestConformance(t *testing.T) {
	t.Parallel()
	for _, mode := range []pebble.SyncMode{pebble.SyncAlways, pebble.SyncInterval, pebble.SyncNone} {
		t.Run(mode.String(), func(t *testing.T) {
			t.Parallel()
			// Each test gets its own directory; a second open in the same
			// test reopens it.
			dir := storetest.PerTest(func(t *testing.T) string { return t.TempDir() })
			storetest.Run(t, func(t *testing.T) store.Store {
				s, err := pebble.Open(context.Background(), dir(t), pebble.Options{Sync: mode, CacheSize: 1 << 20, MemTableSize: 1 << 20})
				require.NoError(t, err)
				return s
			})
		})
	}
}
