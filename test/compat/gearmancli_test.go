package compat

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/gearman"
	"github.com/gearwork/gearwork/internal/testwait"
)

// Tests driving the server with Debian's gearman command-line tool
// (libgearman): client mode and worker mode (-w).

// gearmanCLI starts the gearman tool against s.
func gearmanCLI(t *testing.T, s *server, stdin string, args ...string) *proc {
	t.Helper()
	bin := need(t, "gearman")
	var in *strings.Reader
	if stdin != "" {
		in = strings.NewReader(stdin)
	}
	all := append([]string{"-h", s.host, "-p", s.port}, args...)
	if in == nil {
		return startProc(t, nil, bin, all...)
	}
	return startProc(t, in, bin, all...)
}

// waitWorkers polls until fn has n registered workers.
func waitWorkers(t *testing.T, s *server, fn string, n int) {
	t.Helper()
	testwait.Until(t, fmt.Sprintf("%d workers for %s", n, fn), func() bool {
		return status(t, s)[fn].Workers == n
	})
}

func TestGearmanCLIForeground(t *testing.T) {
	t.Parallel()
	eachServer(t, func(t *testing.T, s *server) {
		worker := gearmanCLI(t, s, "", "-w", "-f", "upper", "-c", "3", "--", "tr", "a-z", "A-Z")
		waitWorkers(t, s, "upper", 1)
		for _, prio := range [][]string{nil, {"-I"}, {"-L"}} {
			args := append(append([]string{}, prio...), "-f", "upper")
			out, err := gearmanCLI(t, s, "hello gearman "+strings.Join(prio, ""), args...).wait(t)
			require.NoError(t, err)
			require.Equal(t, "HELLO GEARMAN "+strings.ToUpper(strings.Join(prio, "")), out)
		}
		_, err := worker.wait(t)
		require.NoError(t, err, "the worker exits after -c 3 jobs")
		waitStatus(t, s, "upper", funcStatus{})
	})
}

func TestGearmanCLIBackground(t *testing.T) {
	t.Parallel()
	eachServer(t, func(t *testing.T, s *server) {
		out, err := gearmanCLI(t, s, "background payload", "-b", "-f", "bg").wait(t)
		require.NoError(t, err)
		require.Empty(t, out, "a background submit prints nothing")
		waitStatus(t, s, "bg", funcStatus{Total: 1})
		require.Contains(t, admin(t, s, "prioritystatus"), "bg\t0\t1\t0\t0")

		file := filepath.Join(t.TempDir(), "job")
		worker := gearmanCLI(t, s, "", "-w", "-f", "bg", "-c", "1", "--", "sh", "-c", `cat > "$0"`, file)
		_, err = worker.wait(t)
		require.NoError(t, err)
		got, err := os.ReadFile(file)
		require.NoError(t, err)
		require.Equal(t, "background payload", string(got))
		waitStatus(t, s, "bg", funcStatus{})
	})
}

// TestGearmanCLIPriorityOrder queues HIGH, NORMAL and LOW background jobs of
// two functions while no worker runs, then starts one worker for both and
// records the order it receives them.
func TestGearmanCLIPriorityOrder(t *testing.T) {
	t.Parallel()
	eachServer(t, func(t *testing.T, s *server) {
		submits := []struct{ flag, fn, payload string }{
			{"-L", "pa", "pa-low"},
			{"", "pb", "pb-normal-1"},
			{"-I", "pa", "pa-high"},
			{"-L", "pb", "pb-low"},
			{"", "pa", "pa-normal"},
			{"-I", "pb", "pb-high"},
			{"", "pb", "pb-normal-2"},
		}
		for _, sub := range submits {
			args := []string{"-b", "-f", sub.fn}
			if sub.flag != "" {
				args = append([]string{sub.flag}, args...)
			}
			_, err := gearmanCLI(t, s, sub.payload, args...).wait(t)
			require.NoError(t, err)
		}
		require.ElementsMatch(t, []string{"pa\t1\t1\t1\t0", "pb\t1\t2\t1\t0"}, admin(t, s, "prioritystatus"))

		file := filepath.Join(t.TempDir(), "order")
		worker := gearmanCLI(t, s, "", "-w", "-f", "pa", "-f", "pb", "-c", fmt.Sprint(len(submits)),
			"--", "sh", "-c", `cat >> "$0"; echo >> "$0"`, file)
		_, err := worker.wait(t)
		require.NoError(t, err)
		data, err := os.ReadFile(file)
		require.NoError(t, err)
		order := strings.Fields(string(data))
		t.Logf("%s handed out: %v", s.kind, order)
		require.Len(t, order, len(submits))

		if s.isGearwork() {
			// Priority applies across functions: both HIGH jobs first, then
			// NORMAL, then LOW; FIFO within a function and priority.
			require.ElementsMatch(t, []string{"pa-high", "pb-high"}, order[0:2])
			require.ElementsMatch(t, []string{"pa-normal", "pb-normal-1", "pb-normal-2"}, order[2:5])
			require.Less(t, indexOf(order, "pb-normal-1"), indexOf(order, "pb-normal-2"))
			require.ElementsMatch(t, []string{"pa-low", "pb-low"}, order[5:7])
			return
		}
		// gearmand 1.1.20 drains one function (in its worker's function
		// list order) by priority before it looks at the next one.
		first, second := order[0][:2], order[4][:2]
		require.NotEqual(t, first, second)
		byFn := map[string][]string{
			"pa": {"pa-high", "pa-normal", "pa-low"},
			"pb": {"pb-high", "pb-normal-1", "pb-normal-2", "pb-low"},
		}
		require.Equal(t, append(byFn[first], byFn[second]...), order)
	})
}

func indexOf(list []string, s string) int {
	for i, x := range list {
		if x == s {
			return i
		}
	}
	return -1
}

// TestGearmanCLICoalescing: two foreground clients submit the same unique;
// the job runs once and both clients print its one result.
func TestGearmanCLICoalescing(t *testing.T) {
	t.Parallel()
	eachServer(t, func(t *testing.T, s *server) {
		w := rawWorker(t, s, "co")
		c1 := gearmanCLI(t, s, "payload-1", "-f", "co", "-u", "same-key")
		handle, fn, unique, payload := w.grabWhenReady()
		require.Equal(t, "co", fn)
		require.Equal(t, "same-key", unique)
		require.Equal(t, "payload-1", payload)

		c2 := gearmanCLI(t, s, "payload-2", "-f", "co", "-u", "same-key")
		probe := dialRaw(t, s)
		testwait.Until(t, "the second client to attach", func() bool {
			probe.Send(gearman.GetStatusUnique, "same-key")
			a := probe.ExpectCmd(gearman.StatusResUnique)
			return a[5] == "2"
		})
		probe.Send(gearman.GetStatusUnique, "same-key")
		probe.Expect(gearman.StatusResUnique, "same-key", "1", "1", "0", "0", "2")

		w.Send(gearman.WorkComplete, handle, "the one result")
		for _, c := range []*proc{c1, c2} {
			out, err := c.wait(t)
			require.NoError(t, err)
			require.Equal(t, "the one result", out)
		}
		w.Send(gearman.GrabJobUniq)
		w.Expect(gearman.NoJob)
		waitStatus(t, s, "co", funcStatus{Workers: 1})
	})
}

// TestGearmanCLIClientGone: a foreground job whose only client disconnects
// is dropped while queued; while running, the worker's result is accepted
// and discarded.
func TestGearmanCLIClientGone(t *testing.T) {
	t.Parallel()
	eachServer(t, func(t *testing.T, s *server) {
		c := gearmanCLI(t, s, "queued", "-f", "gone")
		waitStatus(t, s, "gone", funcStatus{Total: 1})
		c.kill()
		if s.isGearwork() {
			// Gearwork drops the queued job at once.
			waitStatus(t, s, "gone", funcStatus{})
		} else {
			// gearmand 1.1.20 marks it ignored and drops it only when a
			// worker would take it.
			testwait.Until(t, "the queued job to be ignored", func() bool {
				jobs := admin(t, s, "show jobs")
				return len(jobs) == 1 && strings.Split(jobs[0], "\t")[2] == "1"
			})
			require.Equal(t, funcStatus{Total: 1}, status(t, s)["gone"])
		}

		w := rawWorker(t, s, "gone")
		if !s.isGearwork() {
			w.Send(gearman.GrabJobUniq)
			w.Expect(gearman.NoJob)
			waitStatus(t, s, "gone", funcStatus{Workers: 1})
		}
		c = gearmanCLI(t, s, "running", "-f", "gone")
		handle, _, _, payload := w.grabWhenReady()
		require.Equal(t, "running", payload)
		waitStatus(t, s, "gone", funcStatus{Total: 1, Running: 1, Workers: 1})
		c.kill()
		// Wait until the server has noticed the client is gone: the job
		// then has no waiting client.
		testwait.Until(t, "the job to lose its client", func() bool {
			for _, line := range admin(t, s, "show jobs") {
				if strings.HasPrefix(line, handle+"\t") {
					return strings.Split(line, "\t")[2] == "1"
				}
			}
			return false
		})
		w.Send(gearman.WorkComplete, handle, "nobody listens")
		w.Send(gearman.EchoReq, "after")
		w.Expect(gearman.EchoRes, "after")
		waitStatus(t, s, "gone", funcStatus{Workers: 1})
	})
}

// TestGearmanCLIZeroBytePayload submits a job without workload and gets an
// empty result back.
func TestGearmanCLIZeroBytePayload(t *testing.T) {
	t.Parallel()
	eachServer(t, func(t *testing.T, s *server) {
		file := filepath.Join(t.TempDir(), "len")
		worker := gearmanCLI(t, s, "", "-w", "-f", "empty", "-c", "1", "--", "sh", "-c", `wc -c > "$0"`, file)
		waitWorkers(t, s, "empty", 1)
		out, err := gearmanCLI(t, s, "", "-s", "-f", "empty").wait(t)
		require.NoError(t, err)
		require.Empty(t, out)
		_, err = worker.wait(t)
		require.NoError(t, err)
		n, err := os.ReadFile(file)
		require.NoError(t, err)
		require.Equal(t, "0", strings.TrimSpace(string(n)))
	})
}

// TestGearmanCLILineModes: the gearman tool's line modes and less used
// options, side by side with gearmand: a client with -n (a job per input
// line) and -N (the same without the newline), -P (output prefixed with
// the function name, for the worker's WORK_DATA and its WORK_COMPLETE
// alike), several -f (the same payload to each function), and -t (a
// timeout in milliseconds on a function nobody serves); a worker with -n
// (WORK_DATA for each line of its command's output) serving two functions.
func TestGearmanCLILineModes(t *testing.T) {
	t.Parallel()
	eachServer(t, func(t *testing.T, s *server) {
		worker := gearmanCLI(t, s, "", "-w", "-f", "cli_a", "-f", "cli_b", "-n", "-c", "6", "--", "tr", "a-z", "A-Z")
		waitWorkers(t, s, "cli_b", 1)
		out, err := gearmanCLI(t, s, "one\ntwo\n", "-f", "cli_a", "-n", "-P").wait(t)
		require.NoError(t, err)
		require.Equal(t, "cli_a: ONE\ncli_a: cli_a: TWO\ncli_a: ", out)
		out, err = gearmanCLI(t, s, "three\nfour\n", "-f", "cli_b", "-N", "-P").wait(t)
		require.NoError(t, err)
		require.Equal(t, "cli_b: THREEcli_b: cli_b: FOURcli_b: ", out)
		out, err = gearmanCLI(t, s, "x\n", "-f", "cli_a", "-f", "cli_b").wait(t)
		require.NoError(t, err)
		require.Equal(t, "X\nX\n", out)
		_, err = worker.wait(t)
		require.NoError(t, err, "the worker ran its six jobs")

		// The tool reports the timeout but exits 0, against either server.
		p := gearmanCLI(t, s, "", "-t", "300", "-f", "cli_nobody", "-s")
		out, err = p.wait(t)
		require.NoError(t, err)
		require.Empty(t, out)
		require.Contains(t, p.stderr.String(), "GEARMAN_TIMEOUT")
	})
}

// TestGearmanCLIWorkerBeyondFunctionLimit: a libgearman worker that names
// more functions than --max-worker-functions keeps serving those it
// registered. CAN_DO has no answer, and libgearman exits on an ERROR it
// did not ask for, so the CAN_DO beyond the limit is ignored.
func TestGearmanCLIWorkerBeyondFunctionLimit(t *testing.T) {
	t.Parallel()
	s := startGearwork(t, "--max-worker-functions", "3")
	worker := gearmanCLI(t, s, "", "-w", "-f", "f1", "-f", "f2", "-f", "f3", "-f", "f4", "-c", "1", "--", "cat")
	// (libgearman sends its CAN_DOs in no set order.)
	var served []string
	testwait.Until(t, "the worker to register three functions", func() bool {
		served = served[:0]
		for fn, st := range status(t, s) {
			if st.Workers == 1 {
				served = append(served, fn)
			}
		}
		return len(served) == 3
	})
	// The refused CAN_DO is the fourth the server reads, so the status can
	// show the three it took before the fourth is read and logged.
	testwait.Until(t, "the fourth CAN_DO to be refused and logged", func() bool {
		return strings.Contains(s.log.String(), "CAN_DO ignored")
	})
	out, err := gearmanCLI(t, s, "hello", "-f", served[0]).wait(t)
	require.NoError(t, err)
	require.Equal(t, "hello", out)
	_, err = worker.wait(t)
	require.NoError(t, err, "the worker exits after -c 1 job, not before")
}

// TestGearmanCLIControlCharactersInFunctionName: function names take any
// bytes, as gearmand takes them, so a libgearman worker of a name with a
// tab serves it; Gearwork's admin answers show the tab as \x09, where
// gearmand's show it raw and so a made-up field.
func TestGearmanCLIControlCharactersInFunctionName(t *testing.T) {
	t.Parallel()
	eachServer(t, func(t *testing.T, s *server) {
		const fn = "tab\there"
		worker := gearmanCLI(t, s, "", "-w", "-f", fn, "-c", "1", "--", "cat")
		out, err := gearmanCLI(t, s, "hello", "-f", fn).wait(t)
		require.NoError(t, err)
		require.Equal(t, "hello", out)
		_, err = worker.wait(t)
		require.NoError(t, err, "the worker exits after -c 1 job, not before")
		if s.isGearwork() {
			require.Contains(t, status(t, s), `tab\x09here`)
		}
	})
}

// TestLongestHandlePrefix: libgearman keeps a job handle in 64 bytes with
// its NUL; its clients and workers never see the end of a job whose handle
// is longer (the gearman tool's client waits for ever, its worker runs
// nothing). The longest --handle-prefix gearwork takes (46 bytes, room for
// a number of 17 digits) works with the gearman tool and PHP's extension;
// one byte more is refused at start, and so is a default prefix from a
// long host name kept short (cmd/gearwork's TestDefaultHandlePrefix).
func TestLongestHandlePrefix(t *testing.T) {
	t.Parallel()
	prefix := "H:" + strings.Repeat("h", 43) + ":"
	s := launchGearwork(t, []string{"serve", "--listen", "127.0.0.1:0", "--store", "memory:",
		"--http", "off", "--handle-prefix", prefix})
	worker := gearmanCLI(t, s, "", "-w", "-f", "long_upper", "-c", "2", "--", "tr", "a-z", "A-Z")
	waitWorkers(t, s, "long_upper", 1)
	out, err := gearmanCLI(t, s, "long handle", "-f", "long_upper").wait(t)
	require.NoError(t, err)
	require.Equal(t, "LONG HANDLE", out)
	c := phpClient(t, s)
	handle := c.background("long_upper", "in the background")
	require.True(t, strings.HasPrefix(handle, prefix), handle)
	require.LessOrEqual(t, len(handle), 63, handle)
	_, err = worker.wait(t)
	require.NoError(t, err, "the worker ran both jobs")
	require.Equal(t, []any{false, false, 0.0, 0.0}, c.status(handle))

	p := startProc(t, nil, gearworkBin, "serve", "--listen", "127.0.0.1:0", "--store", "memory:",
		"--http", "off", "--handle-prefix", prefix+"x")
	_, err = p.wait(t)
	require.Error(t, err)
	require.Contains(t, p.stderr.String(), "invalid --handle-prefix")
}
