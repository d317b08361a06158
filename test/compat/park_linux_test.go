package compat

import (
	"bufio"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/internal/testwait"
)

// parkedSockets counts the sockets the server process pid holds parked:
// registered with an epoll instance as one-shot (the parker registers
// EPOLLIN|EPOLLRDHUP|EPOLLONESHOT; Go's own poller registers edge-triggered
// and never one-shot). It reads /proc/pid/fdinfo, so it works on Linux
// only.
func parkedSockets(t *testing.T, pid int) int {
	t.Helper()
	const epollOneShot = 1 << 30
	dir := filepath.Join("/proc", strconv.Itoa(pid))
	fds, err := os.ReadDir(filepath.Join(dir, "fd"))
	require.NoError(t, err)
	n := 0
	for _, fd := range fds {
		target, err := os.Readlink(filepath.Join(dir, "fd", fd.Name()))
		if err != nil || target != "anon_inode:[eventpoll]" {
			continue // closed meanwhile, or not an epoll instance
		}
		f, err := os.Open(filepath.Join(dir, "fdinfo", fd.Name()))
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			// tfd:        9 events: 40002001 data: ...
			fields := strings.Fields(sc.Text())
			if len(fields) < 4 || fields[0] != "tfd:" || fields[2] != "events:" {
				continue
			}
			ev, err := strconv.ParseUint(fields[3], 16, 32)
			require.NoError(t, err, "fdinfo line %q", sc.Text())
			if ev&epollOneShot != 0 {
				n++
			}
		}
		f.Close()
	}
	return n
}

// TestGearmanCLIWorkerWakesFromPark: libgearman's worker sends PRE_SLEEP
// after NO_JOB and then waits, silent, for NOOP. Once it has been silent
// for longer than the server's idle release (2s by default) its connection
// parks without a goroutine; a job submitted then must still reach it
// (NOOP written to the parked socket, its GRAB_JOB read by a fresh
// goroutine), and it must park and wake again for the next one.
func TestGearmanCLIWorkerWakesFromPark(t *testing.T) {
	t.Parallel()
	s := startGearwork(t)
	gearmanCLI(t, s, "", "-w", "-f", "idlecat", "--", "cat")
	waitWorkers(t, s, "idlecat", 1)
	for _, payload := range []string{"first after parking", "second after parking again"} {
		// The worker is the only connection that lives long enough to
		// park (admin polls close at once).
		testwait.Until(t, "the idle worker's connection to park", func() bool {
			return parkedSockets(t, s.pid()) >= 1
		})
		out, err := gearmanCLI(t, s, payload, "-f", "idlecat").wait(t)
		require.NoError(t, err)
		require.Equal(t, payload, out)
	}
	// A background job, while the worker is parked once more.
	testwait.Until(t, "the idle worker's connection to park", func() bool {
		return parkedSockets(t, s.pid()) >= 1
	})
	_, err := gearmanCLI(t, s, "background", "-b", "-f", "idlecat").wait(t)
	require.NoError(t, err)
	waitStatus(t, s, "idlecat", funcStatus{Workers: 1})
}

// TestPerlClientWaitsWhileParked: a Perl client waits, silent, for a job
// whose Perl worker holds it (silent too) until the test lets it go; both
// connections park meanwhile. The worker's status, data and warning and
// its result still reach the client, and the worker, parked again in its
// PRE_SLEEP after the job, is woken for the next one, whose client is the
// same parked connection.
func TestPerlClientWaitsWhileParked(t *testing.T) {
	t.Parallel()
	s := startGearwork(t)
	w := perlWorker(t, s, 2, "pl_gate=gate", "pl_short=upper")
	waitStatus(t, s, "pl_gate", funcStatus{Workers: 1})
	c := perlClient(t, s)
	gate := filepath.Join(t.TempDir(), "gate")
	c.callAsync(map[string]any{"op": "tasks", "fn": "pl_gate", "payload": gate})
	waitStatus(t, s, "pl_gate", funcStatus{Total: 1, Running: 1, Workers: 1})
	testwait.Until(t, "the waiting client's and the busy worker's connections to park", func() bool {
		return parkedSockets(t, s.pid()) >= 2
	})
	require.NoError(t, os.WriteFile(gate, nil, 0o644))
	var got struct{ Events [][]string }
	c.receive(&got)
	// Gearman::Worker 2.004 sends WORK_STATUS without its denominator
	// (see TestPerlStreamingFailException).
	require.Equal(t, [][]string{{"status", "1/0"}, {"data", "d1"}, {"warning", "w1"}, {"complete", "gated"}}, got.Events)

	testwait.Until(t, "the idle client's and worker's connections to park", func() bool {
		return parkedSockets(t, s.pid()) >= 2
	})
	var short perlDo
	c.call(map[string]any{"op": "do", "fn": "pl_short", "payload": "woken"}, &short)
	require.NotNil(t, short.Result)
	require.Equal(t, "WOKEN", *short.Result)
	_, err := w.wait(t)
	require.NoError(t, err)
}
