package main

import (
	"bytes"
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/internal/store/postgres/pgtest"
)

// TestMigrateAcceptsGearworkOptions runs migrate with the same URL serve
// takes: Gearwork's own options (lease_ttl) must not reach PostgreSQL.
func TestMigrateAcceptsGearworkOptions(t *testing.T) {
	t.Parallel()
	u := pgtest.Schema(t) + "&lease_ttl=10s"
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), []string{"migrate", "--store", u}, nil, &stdout, &stderr)
	require.NoError(t, err, "stderr: %s", stderr.String())
	require.Contains(t, stdout.String(), "schema is at version")

	stdout.Reset()
	require.NoError(t, run(context.Background(), []string{"migrate", "--store", u}, nil, &stdout, &stderr))
	require.Contains(t, stdout.String(), "schema is up to date")

	err = run(context.Background(), []string{"migrate", "--store", pgtest.Schema(t) + "&lease_ttl=soon"}, nil, &stdout, &stderr)
	require.ErrorContains(t, err, `invalid lease_ttl "soon"`)
}
