package pebble_test

import (
	"context"
	"sync"
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
			var mu sync.Mutex
			dirs := map[*testing.T]string{}
			storetest.Run(t, func(t *testing.T) store.Store {
				mu.Lock()
				dir, ok := dirs[t]
				if !ok {
					dir = t.TempDir()
					dirs[t] = dir
				}
				mu.Unlock()
				s, err := pebble.Open(context.Background(), dir, pebble.Options{Sync: mode, CacheSize: 1 << 20, MemTableSize: 1 << 20})
				require.NoError(t, err)
				return s
			})
		})
	}
}
