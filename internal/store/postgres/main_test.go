package postgres_test

import (
	"testing"

	"github.com/gearwork/gearwork/internal/store/postgres/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }
