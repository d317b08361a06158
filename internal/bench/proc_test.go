package bench

import (
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestParseRSS(t *testing.T) {
	t.Parallel()
	got, err := parseRSS([]byte("Name:\tgearmand\nVmPeak:\t  999 kB\nVmRSS:\t   12345 kB\nThreads:\t3\n"))
	require.NoError(t, err)
	require.Equal(t, int64(12345*1024), got)
	_, err = parseRSS([]byte("Name:\tzombie\nState:\tZ (zombie)\n"))
	require.ErrorContains(t, err, "no VmRSS line")
	got, err = parseStatusKB([]byte("VmRSS:\t   12345 kB\nRssAnon:\t    2000 kB\nRssFile:\t   10000 kB\n"), "RssFile")
	require.NoError(t, err)
	require.Equal(t, int64(10000*1024), got)
}

func TestParseCPU(t *testing.T) {
	t.Parallel()
	// A command name with spaces and parentheses; utime=250 stime=50 ticks.
	stat := "4242 (my (odd) server) S 1 4242 4242 0 -1 4194560 1234 0 0 0 250 50 0 0 20 0 3 0 100 0 0\n"
	got, err := parseCPU([]byte(stat))
	require.NoError(t, err)
	require.Equal(t, 3*time.Second, got)
	_, err = parseCPU([]byte("4242 (x) S 1 2"))
	require.ErrorContains(t, err, "malformed")
	_, err = parseCPU([]byte("no parenthesis"))
	require.ErrorContains(t, err, "malformed")
}

func TestReadOwnProcess(t *testing.T) {
	t.Parallel()
	rss, err := readRSS(os.Getpid())
	require.NoError(t, err)
	require.Positive(t, rss)
	_, err = readCPU(os.Getpid())
	require.NoError(t, err)
	_, err = readRSS(1 << 30)
	require.Error(t, err, "no such process")
}
