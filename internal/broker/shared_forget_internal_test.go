package broker

import (
	"context"
	"io"
	"log/slog"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/internal/store/postgres"
	"github.com/gearwork/gearwork/internal/store/postgres/pgtest"
	"github.com/gearwork/gearwork/internal/testwait"
)

// What the claim loop keeps about a function in shared mode goes with
// the function, when it is forgotten at Config.MaxFunctions as when it is
// dropped: nothing keeps a function the broker no longer knows.
func TestSharedModeForgetsWhatItKeptOfAGoneFunction(t *testing.T) {
	t.Parallel()
	url := pgtest.Schema(t)
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	st, err := postgres.Open(context.Background(), postgres.Config{URL: url, Name: "a", Logger: quiet})
	require.NoError(t, err)
	b := New(Config{Shared: st, HandlePrefix: "H:a:", Logger: quiet, MaxFunctions: 2})
	require.NoError(t, b.Start(context.Background()))
	t.Cleanup(func() {
		b.Stop()
		_ = st.Close()
	})
	c := b.mode.(*sharedMode)
	holds := func(f *function) bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		_, empty := c.empty[f]
		_, idle := c.idleSince[f]
		_, misses := c.rateMisses[f]
		_, rates := c.rates[f]
		return empty || idle || misses || rates
	}
	// used registers a worker for name, which the claim loop finds
	// nothing for, and unregisters it; it returns the function.
	used := func(name string) *function {
		w := b.NewSession("w", &recorder{})
		require.NoError(t, b.CanDo(w, []byte(name), 0))
		b.mu.Lock()
		f := b.functions[name]
		b.mu.Unlock()
		testwait.Until(t, "the claim loop keeps state of "+name, func() bool { return holds(f) })
		b.CloseSession(w)
		return f
	}

	forgotten := used("forgotten")
	require.NoError(t, b.CreateFunction("x"))
	require.NoError(t, b.CreateFunction("y"))
	b.mu.Lock()
	require.Nil(t, b.functions["forgotten"])
	b.mu.Unlock()
	require.False(t, holds(forgotten))

	dropped := used("dropped")
	require.NoError(t, b.DropFunction(context.Background(), "dropped"))
	require.False(t, holds(dropped))
}
