package cluster

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/gearman"
	"github.com/gearwork/gearwork/internal/gearmantest/wire"
	"github.com/gearwork/gearwork/internal/store/postgres/pgtest"
)

// TestBatchJoinFailsClosed: with authorization rules, a submit that joins
// a batch needs submit on the batch's callbacks, which are read from the
// database. When they cannot be read, the check refuses the submit
// itself, rather than passing it on as if the batch had no callbacks.
func TestBatchJoinFailsClosed(t *testing.T) {
	t.Parallel()
	cfg := filepath.Join(t.TempDir(), "gearwork.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte(`auth:
  rules:
    - match: {address: ["127.0.0.1"]}
      allow: {submit: ["*"]}
`), 0o600))
	url := pgtest.Schema(t)
	s := startCluster(t, url, 1, "--config", cfg)[0]
	c := wire.Dial(t, s.addr)
	c.Write([]byte("batch create on_success=report\r\n"))
	line := c.Line()
	id, ok := strings.CutPrefix(strings.TrimSpace(line), "OK ")
	require.True(t, ok, "batch create: %q", line)

	pgtest.Exec(t, url, "ALTER TABLE gearwork_batches RENAME TO gearwork_batches_away")
	c.Send(gearman.SubmitJobBg, "work", "batch:"+id, "x")
	args := c.ExpectCmd(gearman.Error)
	require.Equal(t, "QUEUE_ERROR", args[0])
	require.Contains(t, args[1], "could not be read to check the submit's permission")

	pgtest.Exec(t, url, "ALTER TABLE gearwork_batches_away RENAME TO gearwork_batches")
	c.Send(gearman.SubmitJobBg, "work", "batch:"+id, "x")
	c.ExpectCmd(gearman.JobCreated)
}
