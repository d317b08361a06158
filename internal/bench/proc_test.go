package bench

import (
	"os"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestReadOwnProcess(t *testing.T) {
	t.Parallel()
	rss, err := readRSS(os.Getpid())
	require.NoError(t, err)
	require.Positive(t, rss)
	file, err := readRSSFile(os.Getpid())
	require.NoError(t, err)
	require.Positive(t, file)
	require.Less(t, file, rss)
	_, err = readCPU(os.Getpid())
	require.NoError(t, err)
	_, err = readRSS(1 << 30)
	require.ErrorContains(t, err, "read server memory")
	_, err = readCPU(1 << 30)
	require.ErrorContains(t, err, "read server CPU time")
}
