package postgres_test

import (
	"io"
	"log/slog"
	"testing"

	"github.com/gearwork/gearwork/internal/store/postgres/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))
