package cluster

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// The summaries of the A/B benchmarks key each system's runs by its base
// name, so two builds may not share one; and a system that did not run
// (River, when it cannot be built) has a median of 0, which the summary
// takes as no ratio, instead of a panic.
func TestBenchSummaries(t *testing.T) {
	t.Parallel()
	require.NoError(t, distinctNames([]string{"/tmp/before/gearwork", "/tmp/after", "riverbench"}))
	err := distinctNames([]string{"/tmp/before/gearwork", "/tmp/after/gearwork"})
	require.ErrorContains(t, err, `"/tmp/before/gearwork" and "/tmp/after/gearwork" are both named "gearwork"`)

	require.Equal(t, 3.0, median([]float64{5, 1, 3}))
	require.Zero(t, median(nil), "a system that did not run has no median")
}
