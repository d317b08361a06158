package procstat

import (
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestParseStatus(t *testing.T) {
	t.Parallel()
	got, err := ParseStatus([]byte("Name:\tgearmand\nVmPeak:\t  999 kB\nVmRSS:\t   12345 kB\nThreads:\t3\n"), "VmRSS")
	require.NoError(t, err)
	require.Equal(t, map[string]int64{"VmRSS": 12345}, got)
	got, err = ParseStatus([]byte("VmRSS:\t   12345 kB\nRssAnon:\t    2000 kB\nRssFile:\t   10000 kB\n"), "RssFile", "VmRSS")
	require.NoError(t, err)
	require.Equal(t, map[string]int64{"RssFile": 10000, "VmRSS": 12345}, got)
	_, err = ParseStatus([]byte("Name:\tzombie\nState:\tZ (zombie)\n"), "VmRSS")
	require.ErrorContains(t, err, "no VmRSS line")
	_, err = ParseStatus([]byte("VmRSS:\t12345\n"), "VmRSS")
	require.ErrorContains(t, err, "malformed")
}

func TestParseStat(t *testing.T) {
	t.Parallel()
	// A command name with spaces and parentheses; utime=250 stime=50
	// cutime=7 cstime=3 ticks.
	stat := "4242 (my (odd) server) S 17 4242 4242 0 -1 4194560 1234 0 0 0 250 50 7 3 20 0 3 0 100 0 0\n"
	got, err := ParseStat([]byte(stat))
	require.NoError(t, err)
	require.Equal(t, Stat{State: 'S', PPID: 17, CPU: 3 * time.Second, ChildrenCPU: 100 * time.Millisecond}, got)
	_, err = ParseStat([]byte("4242 (x) S 1 2"))
	require.ErrorContains(t, err, "malformed")
	_, err = ParseStat([]byte("no parenthesis"))
	require.ErrorContains(t, err, "malformed")
	_, err = ParseStat([]byte("4242 (x) S 1 4242 4242 0 -1 4194560 1234 0 0 0 x 50 7 3 20\n"))
	require.ErrorContains(t, err, "malformed")
}

func TestReadOwnProcess(t *testing.T) {
	t.Parallel()
	st, err := ReadStat(os.Getpid())
	require.NoError(t, err)
	require.Equal(t, os.Getppid(), st.PPID)
	require.Contains(t, "RSD", string(st.State))
	mem, err := Status(os.Getpid(), "VmRSS", "VmHWM")
	require.NoError(t, err)
	require.Positive(t, mem["VmRSS"])
	require.GreaterOrEqual(t, mem["VmHWM"], mem["VmRSS"])
	_, err = CPU(1 << 30)
	require.Error(t, err, "no such process")
	_, err = Status(1<<30, "VmRSS")
	require.Error(t, err, "no such process")
}
