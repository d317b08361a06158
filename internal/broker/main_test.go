package broker

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/gearwork/gearwork/internal/store/postgres/pgtest"
)

// TestMain checks for leaked goroutines once the tests have run and the
// PostgreSQL server of the shared-mode tests (pgtest) has stopped.
func TestMain(m *testing.M) { goleak.VerifyTestMain(stopPostgresAfter{m}) }

// stopPostgresAfter runs the tests, then stops the PostgreSQL server of
// the shared-mode tests.
type stopPostgresAfter struct{ m *testing.M }

func (s stopPostgresAfter) Run() int {
	defer pgtest.Cleanup()
	return s.m.Run()
}
