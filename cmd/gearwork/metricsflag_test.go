package main

import (
	"flag"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/internal/httpapi"
)

// --metrics-max-functions defaults to httpapi's bound, 0 means no bound and
// a negative value is refused.
func TestMetricsMaxFunctionsFlag(t *testing.T) {
	t.Parallel()
	var f httpFlags
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	f.register(fs)
	require.NoError(t, fs.Parse(nil))
	h, err := f.load(tlsFiles{}, time.Second, false)
	require.NoError(t, err)
	require.Equal(t, httpapi.DefaultMetricsMaxFunctions, h.cfg.MetricsMaxFunctions)
	for arg, want := range map[string]int{"0": -1, "5": 5} {
		require.NoError(t, fs.Parse([]string{"--metrics-max-functions", arg}))
		h, err = f.load(tlsFiles{}, time.Second, false)
		require.NoError(t, err)
		require.Equal(t, want, h.cfg.MetricsMaxFunctions, arg)
	}
	require.NoError(t, fs.Parse([]string{"--metrics-max-functions", "-3"}))
	_, err = f.load(tlsFiles{}, time.Second, false)
	require.ErrorContains(t, err, "invalid --metrics-max-functions -3: must be 0 or more")
}
