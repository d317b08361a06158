package testserver

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/internal/procstat"
	"github.com/gearwork/gearwork/internal/testwait"
)

// orphanHelper, set in the environment, makes TestServerDiesWithItsTestBinary
// the test binary that starts a server and dies without its cleanups.
const orphanHelper = "GEARWORK_TESTSERVER_ORPHAN_HELPER"

// A test binary that dies without running its cleanups (a -timeout panic,
// a kill) takes the servers it started with it. What is tested is how
// start starts a process, so the server is a stand-in that logs the
// listening line and sleeps, as quick to start as any process.
func TestServerDiesWithItsTestBinary(t *testing.T) {
	if os.Getenv(orphanHelper) != "" {
		s, err := start(t, "gearwork", []string{"sh", "-c",
			`echo 'msg="serve: listening" addr=127.0.0.1:1' >&2; exec sleep 300`}, nil)
		require.NoError(t, err)
		fmt.Println("pid", s.Pid())
		os.Exit(3) // no cleanup runs
	}
	t.Parallel()
	cmd := exec.Command(os.Args[0], "-test.run=^TestServerDiesWithItsTestBinary$")
	cmd.Env = append(os.Environ(), orphanHelper+"=1")
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	pid := 0
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 2 && f[0] == "pid" {
			pid, err = strconv.Atoi(f[1])
			require.NoError(t, err)
		}
	}
	require.Error(t, cmd.Wait(), "the helper exits with status 3")
	require.NotZero(t, pid, "the helper started a server")
	t.Cleanup(func() {
		if running(pid) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	testwait.Until(t, "the orphaned server to die", func() bool { return !running(pid) })
}

// running reports whether process pid exists and is not a zombie.
func running(pid int) bool {
	st, err := procstat.ReadStat(pid)
	return err == nil && st.State != 'Z'
}
