package hostile_test

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/gearman"
	"github.com/gearwork/gearwork/internal/gearmantest/wire"
	"github.com/gearwork/gearwork/internal/testserver"
)

// fileLimit is the open file limit (soft and hard) of the servers that
// startAtFileLimit starts.
const fileLimit = 256

// startAtFileLimit starts a server (with args) whose open file limit is
// fileLimit, soft and hard, so that it cannot raise it; the test itself may
// then open flood connections and more.
func startAtFileLimit(t *testing.T, flood uint64, args ...string) *testserver.Server {
	t.Helper()
	sh := testserver.NeedCommand(t, "sh")
	raiseFileLimit(t, flood+500)
	return testserver.StartWrapped(t, []string{sh, "-c", fmt.Sprintf(`ulimit -n %d && exec "$0" "$@"`, fileLimit)}, args...)
}

// submitLarge submits 40 background jobs of 1 MiB to fn, enough to
// overflow the Pebble store's 32 MiB memtable so that it opens new files (a
// write-ahead log and a table), and requires JOB_CREATED for each.
func submitLarge(t *testing.T, client *wire.Conn, fn string) {
	t.Helper()
	payload := strings.Repeat("p", 1<<20)
	for i := range 40 {
		cmd, args := client.Call(gearman.SubmitJobBg, fn, fmt.Sprint(i), payload)
		require.Equal(t, gearman.JobCreated, cmd, "submit %d: %q", i, args)
	}
}

// openFlood opens n idle connections to addr and returns a function that
// closes them, which also runs when the test ends. Connections beyond what
// the server accepts wait in its listen backlog.
func openFlood(t *testing.T, addr string, n int) (closeAll func()) {
	t.Helper()
	open := make([]net.Conn, 0, n)
	closeAll = func() {
		for _, nc := range open {
			nc.Close()
		}
		open = nil
	}
	t.Cleanup(closeAll)
	for range n {
		nc, err := net.DialTimeout("tcp", addr, time.Minute)
		require.NoError(t, err)
		open = append(open, nc)
	}
	return closeAll
}

// raiseFileLimit raises this process's open file limit (inherited by the
// server it starts) to at least want. If the hard limit is lower the test
// fails, or is skipped when GEARWORK_ALLOW_SKIP=1.
func raiseFileLimit(t *testing.T, want uint64) {
	t.Helper()
	var rl syscall.Rlimit
	require.NoError(t, syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl))
	if rl.Cur >= want {
		return
	}
	if rl.Max < want {
		msg := fmt.Sprintf("open file limit is %d (hard %d); 10k idle connections need %d: raise it with ulimit -n", rl.Cur, rl.Max, want)
		if os.Getenv("GEARWORK_ALLOW_SKIP") == "1" {
			t.Skip(msg + "; skipped because GEARWORK_ALLOW_SKIP=1")
		}
		t.Fatal(msg + " (or set GEARWORK_ALLOW_SKIP=1 to skip)")
	}
	rl.Cur = max(rl.Cur, want)
	require.NoError(t, syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl))
}

// TestFileLimitReachedAtAccept runs the server with an open file limit of
// 256 (soft and hard, so it cannot raise it) and a Pebble store, and opens
// 1,000 connections beside a client and a worker connected before. The
// server caps its connections below the limit (and says so), keeping
// descriptors for its store, which it tells how many it may keep open: the earlier connections keep working, and
// background submits large enough to make the store open new files (a
// new write-ahead log and a table) all get JOB_CREATED. The accept loop
// does not spin at the limit, and once the flood closes new connections
// are served again.
func TestFileLimitReachedAtAccept(t *testing.T) {
	if testing.Short() {
		t.Skip("file limit test skipped in -short mode")
	}
	const flood = 1000
	dir := t.TempDir()
	srv := startAtFileLimit(t, flood, "--store", "pebble:"+dir)
	require.Contains(t, srv.Log(), "max_connections=128", "the connection limit is capped below the file limit")
	// The store keeps no more files open than the reserve allows (Pebble
	// records its options in the data directory).
	options, err := filepath.Glob(filepath.Join(dir, "OPTIONS-*"))
	require.NoError(t, err)
	require.NotEmpty(t, options)
	opts, err := os.ReadFile(options[len(options)-1])
	require.NoError(t, err)
	require.Contains(t, string(opts), "max_open_files=96")

	client, worker := wire.Dial(t, srv.Addr), wire.Dial(t, srv.Addr)
	worker.Send(gearman.CanDo, "fd")
	worker.Send(gearman.EchoReq, "ready")
	worker.Expect(gearman.EchoRes, "ready")
	closeFlood := openFlood(t, srv.Addr, flood)
	deadline := time.Now().Add(time.Minute)
	// Either the server refuses connections beyond its limit, or (without
	// a limit below the file limit) its accept fails.
	for atLimit := func() bool {
		log := srv.Log()
		return strings.Contains(log, "too many connections") || strings.Contains(log, "accept failed")
	}; !atLimit(); {
		require.True(t, time.Now().Before(deadline), "the server never reached a limit:\n%s", srv.Log())
		time.Sleep(10 * time.Millisecond) // polling the log
	}

	// At the limit, the accept loop is quiet: measured over two seconds
	// (a spinning loop would take most of a core, or whatever share of
	// the machine it can get).
	cpu0 := serverCPU(t, srv.Pid())
	time.Sleep(2 * time.Second) // the measurement window
	idleCPU := serverCPU(t, srv.Pid()) - cpu0
	require.Less(t, idleCPU, 400*time.Millisecond, "the server must not spin at the file limit")

	// Existing connections work, and the store can still open files.
	submitLarge(t, client, "fd")
	for i := range 3 {
		cmd, args := worker.Call(gearman.GrabJob)
		require.Equal(t, gearman.JobAssign, cmd, "grab %d", i)
		worker.Send(gearman.WorkComplete, args[0], "")
	}
	client.Send(gearman.EchoReq, "still here")
	client.Expect(gearman.EchoRes, "still here")

	// Once the flood ends, new connections are served.
	closeFlood()
	deadline = time.Now().Add(time.Minute)
	for {
		c, err := wire.DialStream(srv.Addr)
		require.NoError(t, err)
		_ = c.NC.SetDeadline(time.Now().Add(10 * time.Second))
		err = c.Send(gearman.EchoReq, "new")
		var echo gearman.Packet
		if err == nil {
			echo, err = c.Next()
		}
		c.Close()
		if err == nil {
			require.Equal(t, gearman.EchoRes, echo.Command)
			require.Equal(t, "new", string(echo.Arg(0)))
			break
		}
		require.True(t, time.Now().Before(deadline), "no new connection is served after the flood: %v", err)
		time.Sleep(10 * time.Millisecond) // the server frees the flood's connections as it reads their ends
	}
	require.True(t, srv.Alive())
	// Without the reserve, the store's flush fails to create its table
	// ("too many open files") and logs errors.
	require.NotContains(t, srv.Log(), "level=ERROR")
}

// TestFileLimitRaisedAtStart starts the server with a soft open file limit
// of 256 below a higher hard one: it runs with the hard limit, and logs
// it with the connection limit that follows from it.
func TestFileLimitRaisedAtStart(t *testing.T) {
	sh := testserver.NeedCommand(t, "sh")
	var rl syscall.Rlimit
	require.NoError(t, syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl))
	if rl.Max <= 256 {
		t.Skipf("the hard open file limit is %d; the test needs more than 256", rl.Max)
	}
	srv := testserver.StartWrapped(t, []string{sh, "-c", `ulimit -S -n 256 && exec "$0" "$@"`})
	limits, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", srv.Pid()))
	require.NoError(t, err)
	m := regexp.MustCompile(`(?m)^Max open files\s+(\d+)\s+(\d+)`).FindSubmatch(limits)
	require.NotNil(t, m, "%s", limits)
	require.Equal(t, fmt.Sprint(rl.Max), string(m[1]), "soft limit raised to the hard one")
	require.Contains(t, srv.Log(), fmt.Sprintf("open_file_limit=%d", rl.Max))
}

// TestHTTPConnectionFloodKeepsTheStoresDescriptors runs the server with an
// open file limit of 256 and a Pebble store, and opens 1,000 idle
// connections to its HTTP port. HTTP connections are capped within the
// descriptors not kept for the store, as Gearman connections are: the
// store can still open new files (background submits of 1 MiB each
// overflow its memtable and all get JOB_CREATED), nothing is logged as an
// error, and once the flood ends the HTTP API answers again.
func TestHTTPConnectionFloodKeepsTheStoresDescriptors(t *testing.T) {
	if testing.Short() {
		t.Skip("file limit test skipped in -short mode")
	}
	const flood = 1000
	srv := startAtFileLimit(t, flood, "--store", "pebble:"+t.TempDir(), "--http", "127.0.0.1:0")
	httpAddr := srv.HTTPAddr(t)
	require.Contains(t, srv.Log(), "http_max_connections=32", "the HTTP connection limit is capped and logged")

	client := wire.Dial(t, srv.Addr)
	client.Send(gearman.EchoReq, "ready")
	client.Expect(gearman.EchoRes, "ready")
	// Connections beyond the cap wait in the listen backlog, holding no
	// descriptor of the server's.
	closeFlood := openFlood(t, httpAddr, flood)
	submitLarge(t, client, "flood")
	require.True(t, srv.Alive())
	require.NotContains(t, srv.Log(), "level=ERROR")

	closeFlood()
	hc := &http.Client{Timeout: 10 * time.Second}
	deadline := time.Now().Add(time.Minute)
	for {
		resp, err := hc.Get("http://" + httpAddr + "/healthz")
		if err == nil {
			resp.Body.Close()
			require.Equal(t, http.StatusOK, resp.StatusCode)
			break
		}
		require.True(t, time.Now().Before(deadline), "the HTTP API does not answer after the flood: %v", err)
		time.Sleep(50 * time.Millisecond) // the server frees the flood's connections as it reads their ends
	}
}
