package memory_test

import (
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
	data := storetest.PerTest(func(*testing.T) *memory.Store { return memory.New() })
	storetest.Run(t, func(t *testing.T) store.Store { return data(t).Reopen() })
}
