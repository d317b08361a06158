// Package hostile_test attacks a running gearwork server with hostile
// clients beside normal ones: oversized and malformed headers, garbage,
// overlong admin lines, slowloris connections, floods of connections at
// the open file limit, and ten thousand idle connections. The server must
// stay up, keep its memory small, drop the hostile connections and keep
// serving the normal clients.
package hostile_test

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/gearman"
	"github.com/gearwork/gearwork/internal/gearmantest/wire"
	"github.com/gearwork/gearwork/internal/procstat"
	"github.com/gearwork/gearwork/internal/testserver"
)

func TestMain(m *testing.M) {
	if addr := os.Getenv(attackerEnv); addr != "" {
		os.Exit(attackerMain(addr))
	}
	testserver.Main(m)
}

func header(magic string, cmd gearman.Command, size uint32) []byte {
	h := []byte(magic)
	h = binary.BigEndian.AppendUint32(h, uint32(cmd))
	return binary.BigEndian.AppendUint32(h, size)
}

// worker serves the function "echo" until its connection closes.
func worker(addr string, ready chan<- struct{}) error {
	w, err := wire.DialStream(addr)
	if err != nil {
		return err
	}
	defer w.Close()
	if err := w.Send(gearman.CanDo, "echo"); err != nil {
		return err
	}
	close(ready)
	return w.Work(func(payload []byte) []byte { return payload })
}

// normalClients runs n clients that each submit rounds foreground jobs one
// after the other, pausing think between a result and the next submit,
// and returns every round trip's latency.
func normalClients(t *testing.T, addr string, n, rounds int, think time.Duration) []time.Duration {
	t.Helper()
	var mu sync.Mutex
	var lat []time.Duration
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := wire.DialStream(addr)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			_ = c.NC.SetDeadline(time.Now().Add(5 * time.Minute))
			mine := make([]time.Duration, 0, rounds)
			if think > 0 {
				// Spread the clients over the interval instead of sending
				// all their jobs at the same moment.
				time.Sleep(think * time.Duration(i) / time.Duration(n))
			}
			for j := range rounds {
				if think > 0 && j > 0 {
					time.Sleep(think)
				}
				payload := fmt.Sprintf("client %d round %d", i, j)
				start := time.Now()
				if err := c.Send(gearman.SubmitJob, "echo", "", payload); err != nil {
					errs <- err
					return
				}
				for done := false; !done; {
					p, err := c.Next()
					if err != nil {
						errs <- fmt.Errorf("client %d: %w", i, err)
						return
					}
					switch p.Command {
					case gearman.JobCreated:
					case gearman.WorkComplete:
						if got := string(p.Arg(1)); got != payload {
							errs <- fmt.Errorf("client %d: result %q, want %q", i, got, payload)
							return
						}
						done = true
					default:
						errs <- fmt.Errorf("client %d: unexpected %s", i, p.Command)
						return
					}
				}
				mine = append(mine, time.Since(start))
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	require.Len(t, lat, n*rounds)
	return lat
}

func percentile(d []time.Duration, p float64) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(len(s)-1, int(float64(len(s))*p))]
}

// attack is one kind of hostile connection: it writes its bytes (at its
// own pace) and returns what the server answered before closing.
type attack struct {
	name string
	// first is written at once; then trickle is written one byte per
	// second until the server closes the connection.
	first   []byte
	trickle []byte
	// answer is what the server must send before it closes.
	answer string
}

func attacks() []attack {
	garbage := make([]byte, 256)
	for i := range garbage {
		garbage[i] = byte(rand.IntN(256))
	}
	garbage[0], garbage[1] = 0, 'X' // a NUL first byte makes it binary
	return []attack{
		{name: "4 GiB header", first: header("\x00REQ", gearman.SubmitJob, 1<<32-1),
			answer: string(gearman.AppendPacket(nil, gearman.MagicRes, gearman.Error, []byte("ARGUMENT_TOO_LARGE"),
				[]byte("packet body of 4294967295 bytes exceeds the limit of 67108864 bytes")))},
		{name: "wrong magic", first: header("\x00RAQ", gearman.EchoReq, 4),
			answer: string(gearman.AppendPacket(nil, gearman.MagicRes, gearman.Error, []byte("INVALID_MAGIC"),
				[]byte(`bad packet magic "\x00RAQ"`)))},
		{name: "garbage", first: garbage,
			answer: string(gearman.AppendPacket(nil, gearman.MagicRes, gearman.Error, []byte("INVALID_MAGIC"),
				fmt.Appendf(nil, "bad packet magic %q", garbage[:4])))},
		{name: "8 KiB admin line without newline", first: []byte(strings.Repeat("s", 8192)),
			answer: "ERR LINE_TOO_LONG Admin+line+exceeds+8192+bytes\r\n"},
		{name: "slowloris header", trickle: wire.Request(gearman.EchoReq, "never completes")},
		{name: "slowloris admin line", first: []byte("s"), trickle: []byte(strings.Repeat("t", 100) + "\r\n")},
		{name: "60 MiB claim, trickled", first: header("\x00REQ", gearman.EchoReq, 60<<20), trickle: []byte(strings.Repeat("x", 100))},
	}
}

// runAttack runs one hostile connection and reports an error unless the
// server answered as expected and closed the connection. started is
// called once the attack's first bytes are written.
func runAttack(addr string, a attack, started func()) error {
	defer started()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		return fmt.Errorf("%s: dial: %w", a.name, err)
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(2 * time.Minute))
	if _, err := nc.Write(a.first); err != nil {
		return fmt.Errorf("%s: write: %w", a.name, err)
	}
	stop := make(chan struct{})
	defer close(stop)
	if len(a.trickle) > 0 {
		go func() {
			tick := time.NewTicker(time.Second)
			defer tick.Stop()
			for _, b := range a.trickle {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				if _, err := nc.Write([]byte{b}); err != nil {
					return
				}
			}
		}()
	}
	started()
	got, err := io.ReadAll(nc)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return fmt.Errorf("%s: the server did not drop the connection", a.name)
	}
	if string(got) != a.answer {
		return fmt.Errorf("%s: server answered %q, want %q", a.name, got, a.answer)
	}
	return nil
}

// The hostile load's shape: held slow connections, and at least
// fastMin malformed ones opened at fastRate a second for as long as the
// measurement runs.
const (
	held     = 400
	fastMin  = 600
	fastRate = 300
)

// TestHostileClientsBesideNormalOnes measures normal clients alone, then
// beside 1,000 or more hostile connections: slow ones (slowloris headers,
// admin lines and a trickled 60 MiB claim) held open while the normal
// clients run, and malformed ones (4 GiB header, wrong magic, garbage, an
// 8 KiB admin line without newline) opened continuously meanwhile. Every
// hostile connection must be answered as specified and dropped, the normal
// clients must all succeed, and the server's peak RSS must stay small.
// Latencies are reported, not asserted.
//
// The attackers run in a separate process at a lower priority (nice 10),
// as they would run on other machines: in this process their goroutines
// would delay the workers' and clients' goroutines in the same scheduler,
// and the figure would measure the load generator rather than the server.
// The server's own work for every hostile connection (accepting, reading,
// answering, closing) still competes with the normal clients.
func TestHostileClientsBesideNormalOnes(t *testing.T) {
	if testing.Short() {
		t.Skip("hostile load test skipped in -short mode")
	}
	const (
		normal = 100
		// rounds makes each measured phase last about two seconds, so
		// that the slow attackers' once-a-second bytes fall into it
		// twice, whatever their phase.
		rounds = 150
	)
	nice := testserver.NeedCommand(t, "nice")
	srv := testserver.Start(t, append([]string{"--read-timeout", "10s"}, strings.Fields(os.Getenv("HOSTILE_SERVER_ARGS"))...)...)
	for range 4 {
		ready := make(chan struct{})
		go func() { _ = worker(srv.Addr, ready) }()
		<-ready
	}

	// Warm up (stacks, buffers, the heap), so that the baseline does not
	// carry start-up costs the second phase does not.
	normalClients(t, srv.Addr, normal, 10, 0)
	// Two loads: paced, each client sending a job every think (about 5,000
	// jobs a second in all, leaving the machine headroom, as a latency
	// measurement should), and saturating, each client sending its next
	// job as soon as the last returned (the machine's two cores are busy,
	// so every CPU cycle the attack costs anyone shows up as latency).
	const think = 20 * time.Millisecond
	var paced, saturated [2][]time.Duration
	var pacedCPU, saturatedCPU [2]phaseCPU
	pacedCPU[0] = measureCPU(t, srv.Pid(), 0, func() { paced[0] = normalClients(t, srv.Addr, normal, rounds, think) })
	saturatedCPU[0] = measureCPU(t, srv.Pid(), 0, func() { saturated[0] = normalClients(t, srv.Addr, normal, rounds, 0) })

	attacker := startAttacker(t, nice, srv.Addr)
	pacedCPU[1] = measureCPU(t, srv.Pid(), attacker.pid(), func() { paced[1] = normalClients(t, srv.Addr, normal, rounds, think) })
	saturatedCPU[1] = measureCPU(t, srv.Pid(), attacker.pid(), func() { saturated[1] = normalClients(t, srv.Addr, normal, rounds, 0) })
	hostile := attacker.finish(t)
	require.True(t, srv.Alive(), "the server must survive")
	after := normalClients(t, srv.Addr, 10, 3, 0)
	require.NotEmpty(t, after)

	st, err := srv.Status("VmHWM", "VmRSS")
	require.NoError(t, err)
	// Each 4 GiB claim and each 60 MiB claim would have cost its full size
	// had the server allocated what headers claim.
	require.Less(t, st["VmHWM"], int64(512<<10), "peak RSS %d kB must stay far below the 4 GiB a header claimed", st["VmHWM"])

	var report strings.Builder
	for _, load := range []struct {
		name string
		lat  [2][]time.Duration
		cpu  [2]phaseCPU
	}{{fmt.Sprintf("paced (a job per client every %s)", think), paced, pacedCPU}, {"saturating", saturated, saturatedCPU}} {
		fmt.Fprintf(&report, "| %s, normal clients only | %d | %s | %s | %s |\n", load.name,
			len(load.lat[0]), ms(percentile(load.lat[0], 0.5)), ms(percentile(load.lat[0], 0.99)), load.cpu[0])
		fmt.Fprintf(&report, "| %s, beside %d hostile connections | %d | %s | %s | %s |\n", load.name, hostile,
			len(load.lat[1]), ms(percentile(load.lat[1], 0.5)), ms(percentile(load.lat[1], 0.99)), load.cpu[1])
	}
	t.Logf("server peak RSS %d kB\n| load | round trips | p50 | p99 | phase | server CPU | clients and workers CPU | attackers CPU |\n%s", st["VmHWM"], report.String())
	if path := os.Getenv("HOSTILE_REPORT"); path != "" {
		require.NoError(t, os.WriteFile(path, []byte(report.String()+fmt.Sprintf("\nserver peak RSS: %d kB\n", st["VmHWM"])), 0o644))
	}
}

// attackerEnv names the environment variable that makes this test binary
// an attacker process (see attackerMain); its value is the server's
// address.
const attackerEnv = "GEARWORK_HOSTILE_ATTACK"

// attackerProc is a running attacker process.
type attackerProc struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *bufio.Scanner
}

// startAttacker starts this test binary as an attacker process at nice 10
// and returns once its held connections are open.
func startAttacker(t *testing.T, nice, addr string) *attackerProc {
	t.Helper()
	cmd := exec.Command(nice, "-n", "10", os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), attackerEnv+"="+addr)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	a := &attackerProc{cmd: cmd, stdin: stdin, out: bufio.NewScanner(stdout)}
	require.True(t, a.out.Scan(), "attacker ended before its held connections were open: %v", a.out.Err())
	require.Equal(t, "started", a.out.Text())
	return a
}

func (a *attackerProc) pid() int { return a.cmd.Process.Pid }

// finish tells the attacker to stop opening connections, waits until every
// attack has ended, fails the test for each one the server did not answer
// and drop as specified, and returns how many hostile connections were
// made.
func (a *attackerProc) finish(t *testing.T) int {
	t.Helper()
	_, err := io.WriteString(a.stdin, "stop\n")
	require.NoError(t, err)
	require.NoError(t, a.stdin.Close())
	n := -1
	for a.out.Scan() {
		line := a.out.Text()
		if rest, ok := strings.CutPrefix(line, "error "); ok {
			t.Error(rest)
		} else if rest, ok := strings.CutPrefix(line, "done "); ok {
			n, err = strconv.Atoi(rest)
			require.NoError(t, err)
		}
	}
	require.NoError(t, a.cmd.Wait())
	require.GreaterOrEqual(t, n, held+fastMin, "attacker did not report its count")
	return n
}

// attackerMain is the attacker process: it opens the held slow
// connections, says "started", then opens malformed ones at fastRate a
// second until it has opened at least fastMin and its standard input says
// "stop" (or ends). When every attack has ended it writes "error <text>"
// for each that went wrong and "done <connections>", and returns the exit
// code.
func attackerMain(addr string) int {
	var slow, fast []attack
	for _, a := range attacks() {
		if len(a.trickle) > 0 {
			slow = append(slow, a)
		} else {
			fast = append(fast, a)
		}
	}
	var (
		wg, started sync.WaitGroup
		mu          sync.Mutex
		errs        []error
		count       atomic.Int64
	)
	run := func(a attack) {
		defer wg.Done()
		count.Add(1)
		var once sync.Once
		if err := runAttack(addr, a, func() { once.Do(started.Done) }); err != nil {
			mu.Lock()
			errs = append(errs, err)
			mu.Unlock()
		}
	}
	for i := range held {
		wg.Add(1)
		started.Add(1)
		go run(slow[i%len(slow)])
	}
	started.Wait()
	fmt.Println("started")

	stop := make(chan struct{})
	go func() {
		// Any line, or the end of input, stops the malformed ones.
		_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
		close(stop)
	}()
	// Eight at a time, paced, so that they spread over the measurement
	// instead of arriving at once.
	var next atomic.Int64
	pace := time.NewTicker(time.Second / fastRate)
	defer pace.Stop()
	var dialers sync.WaitGroup
	for range 8 {
		dialers.Add(1)
		go func() {
			defer dialers.Done()
			for {
				i := next.Add(1) - 1
				if i >= fastMin {
					select {
					case <-stop:
						return
					default:
					}
				}
				<-pace.C
				wg.Add(1)
				started.Add(1)
				run(fast[int(i)%len(fast)])
			}
		}()
	}
	dialers.Wait()
	wg.Wait()
	for _, err := range errs {
		fmt.Println("error", strings.ReplaceAll(err.Error(), "\n", " "))
	}
	fmt.Println("done", count.Load())
	return 0
}

// phaseCPU is the wall time of a phase and the CPU time that the server,
// this test process (normal clients and workers) and the attacker process
// used during it.
type phaseCPU struct {
	wall, server, clients, attackers time.Duration
}

func (p phaseCPU) String() string {
	return fmt.Sprintf("%s | %s | %s | %s", ms(p.wall), ms(p.server), ms(p.clients), ms(p.attackers))
}

// measureCPU runs f and returns its wall time and the CPU time the server
// (pid), this process and the attackers (attackers, if not 0) used
// meanwhile.
func measureCPU(t *testing.T, pid, attackers int, f func()) phaseCPU {
	t.Helper()
	procCPU := func(pid int) time.Duration {
		if pid == 0 {
			return 0
		}
		return serverCPU(t, pid)
	}
	s0, c0, a0 := procCPU(pid), selfCPU(t), procCPU(attackers)
	start := time.Now()
	f()
	wall := time.Since(start)
	return phaseCPU{wall: wall, server: procCPU(pid) - s0, clients: selfCPU(t) - c0, attackers: procCPU(attackers) - a0}
}

// serverCPU returns the user and system time of process pid.
func serverCPU(t *testing.T, pid int) time.Duration {
	t.Helper()
	cpu, err := procstat.CPU(pid)
	require.NoError(t, err)
	return cpu
}

// selfCPU returns this process's user and system time.
func selfCPU(t *testing.T) time.Duration {
	t.Helper()
	var ru syscall.Rusage
	require.NoError(t, syscall.Getrusage(syscall.RUSAGE_SELF, &ru))
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d.Microseconds())/1000) }

// TestHostileConnectionsAllocateLittle runs the hostile attack (1,000 or
// more slow and malformed connections) against an otherwise idle server
// and checks what the server allocated meanwhile, read from its runtime
// statistics: every byte allocated is garbage the collector must find
// while good clients wait. A malformed header is refused from the
// connection's 16-byte buffer, a connection joins the broker only with a
// valid frame, and a large claimed body grows as its bytes arrive, so a
// hostile connection costs a few kilobytes (about 4.5 KB; 15.5 KB before
// those changes).
func TestHostileConnectionsAllocateLittle(t *testing.T) {
	if testing.Short() {
		t.Skip("hostile load test skipped in -short mode")
	}
	const perConn = 8 << 10
	nice := testserver.NeedCommand(t, "nice")
	srv := testserver.Start(t, "--read-timeout", "2s", "--pprof", "127.0.0.1:0")
	pprof := pprofAddr(t, srv)
	before := memStats(t, pprof)
	n := startAttacker(t, nice, srv.Addr).finish(t)
	after := memStats(t, pprof)
	allocated := after["TotalAlloc"] - before["TotalAlloc"]
	t.Logf("%d hostile connections: %d bytes (%d objects) allocated, %d bytes each; %d collections",
		n, allocated, after["Mallocs"]-before["Mallocs"], allocated/uint64(n), after["NumGC"]-before["NumGC"])
	require.Less(t, allocated/uint64(n), uint64(perConn), "a hostile connection must cost the server little garbage")
}

// pprofAddr returns the address of srv's profiling endpoints, which it
// logs when started with --pprof.
func pprofAddr(t *testing.T, srv *testserver.Server) string {
	t.Helper()
	m := regexp.MustCompile(`msg="serve: profiling endpoints" addr=(\S+)`).FindStringSubmatch(srv.Log())
	require.NotNil(t, m, "the server logs its profiling address")
	return m[1]
}

// memStats reads the runtime statistics at the end of the server's
// /debug/pprof/heap?debug=1 page ("# TotalAlloc = 123" lines).
func memStats(t *testing.T, pprofAddr string) map[string]uint64 {
	t.Helper()
	resp, err := http.Get("http://" + pprofAddr + "/debug/pprof/heap?debug=1")
	require.NoError(t, err)
	defer resp.Body.Close()
	st := make(map[string]uint64)
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		name, value, ok := strings.Cut(strings.TrimPrefix(sc.Text(), "# "), " = ")
		if !ok || !strings.HasPrefix(sc.Text(), "# ") {
			continue
		}
		if v, err := strconv.ParseUint(value, 10, 64); err == nil {
			st[name] = v
		}
	}
	require.NoError(t, sc.Err())
	require.Contains(t, st, "TotalAlloc")
	return st
}

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
