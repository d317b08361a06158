package memory_test

import (
	"sync"
	"testing"

	"go.uber.org/goleak"

	"github.com/gearwork/gearwork/internal/store"
	"github.com/gearwork/gearwork/internal/store/memory"
	"github.com/gearwork/gearwork/internal/store/storetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestConformance(t *testing.T) {
	t.Parallel()
	// Each test gets its own data; a second open in the same test reopens it.
	var mu sync.Mutex
	opened := map[*testing.T]*memory.Store{}
	storetest.Run(t, func(t *testing.T) store.Store {
		mu.Lock()
		defer mu.Unlock()
		if s := opened[t]; s != nil {
			return s.Reopen()
		}
		s := memory.New()
		opened[t] = s
		return s
	})
}
