// Package hostile_test attacks a running gearwork server with hostile
// clients beside normal ones: oversized and malformed headers, garbage,
// overlong admin lines, slowloris connections, and ten thousand idle
// connections. The server must stay up, keep its memory small, drop the
// hostile connections and keep serving the normal clients.
package hostile_test

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/gearman"
	"github.com/gearwork/gearwork/internal/testserver"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testserver.Cleanup()
	os.Exit(code)
}

func packet(cmd gearman.Command, args ...string) []byte {
	bs := make([][]byte, len(args))
	for i, a := range args {
		bs[i] = []byte(a)
	}
	return gearman.AppendPacket(nil, gearman.MagicReq, cmd, bs...)
}

func header(magic string, cmd gearman.Command, size uint32) []byte {
	h := []byte(magic)
	h = binary.BigEndian.AppendUint32(h, uint32(cmd))
	return binary.BigEndian.AppendUint32(h, size)
}

// readPacket reads one packet and returns its command and arguments'
// bytes (the body).
func readPacket(r *bufio.Reader) (gearman.Command, []byte, error) {
	hdr := make([]byte, gearman.HeaderSize)
	if _, err := io.ReadFull(r, hdr); err != nil {
		return 0, nil, err
	}
	body := make([]byte, binary.BigEndian.Uint32(hdr[8:]))
	if _, err := io.ReadFull(r, body); err != nil {
		return 0, nil, err
	}
	return gearman.Command(binary.BigEndian.Uint32(hdr[4:8])), body, nil
}

// worker serves the function "echo" until its connection closes.
func worker(addr string, ready chan<- struct{}) error {
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer nc.Close()
	r := bufio.NewReader(nc)
	if _, err := nc.Write(append(packet(gearman.CanDo, "echo"), packet(gearman.GrabJob)...)); err != nil {
		return err
	}
	close(ready)
	for {
		cmd, body, err := readPacket(r)
		if err != nil {
			return err
		}
		switch cmd {
		case gearman.NoJob:
			_, err = nc.Write(packet(gearman.PreSleep))
		case gearman.Noop:
			_, err = nc.Write(packet(gearman.GrabJob))
		case gearman.JobAssign:
			args := strings.SplitN(string(body), "\x00", 3)
			_, err = nc.Write(append(packet(gearman.WorkComplete, args[0], args[2]), packet(gearman.GrabJob)...))
		default:
			return fmt.Errorf("worker got %s", cmd)
		}
		if err != nil {
			return err
		}
	}
}

// normalClients runs n clients that each submit rounds foreground jobs one
// after the other, and returns every round trip's latency.
func normalClients(t *testing.T, addr string, n, rounds int) []time.Duration {
	t.Helper()
	var mu sync.Mutex
	var lat []time.Duration
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			nc, err := net.Dial("tcp", addr)
			if err != nil {
				errs <- err
				return
			}
			defer nc.Close()
			_ = nc.SetDeadline(time.Now().Add(5 * time.Minute))
			r := bufio.NewReader(nc)
			mine := make([]time.Duration, 0, rounds)
			for j := range rounds {
				payload := fmt.Sprintf("client %d round %d", i, j)
				start := time.Now()
				if _, err := nc.Write(packet(gearman.SubmitJob, "echo", "", payload)); err != nil {
					errs <- err
					return
				}
				for done := false; !done; {
					cmd, body, err := readPacket(r)
					if err != nil {
						errs <- fmt.Errorf("client %d: %w", i, err)
						return
					}
					switch cmd {
					case gearman.JobCreated:
					case gearman.WorkComplete:
						if got := strings.SplitN(string(body), "\x00", 2)[1]; got != payload {
							errs <- fmt.Errorf("client %d: result %q, want %q", i, got, payload)
							return
						}
						done = true
					default:
						errs <- fmt.Errorf("client %d: unexpected %s", i, cmd)
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
		{name: "slowloris header", trickle: packet(gearman.EchoReq, "never completes")},
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

// TestHostileClientsBesideNormalOnes measures normal clients alone, then
// beside 1,000 hostile connections: slow ones (slowloris headers, admin
// lines and a trickled 60 MiB claim) held open while the normal clients
// run, and malformed ones (4 GiB header, wrong magic, garbage, an 8 KiB
// admin line without newline) opened continuously meanwhile. Every hostile
// connection must be answered as specified and dropped, the normal clients
// must all succeed, and the server's peak RSS must stay small. Latencies
// are reported, not asserted.
func TestHostileClientsBesideNormalOnes(t *testing.T) {
	if testing.Short() {
		t.Skip("hostile load test skipped in -short mode")
	}
	const (
		normal  = 100
		rounds  = 30
		hostile = 1000
		held    = 400
	)
	srv := testserver.Start(t, "--read-timeout", "10s")
	for range 4 {
		ready := make(chan struct{})
		go func() { _ = worker(srv.Addr, ready) }()
		<-ready
	}

	baseline := normalClients(t, srv.Addr, normal, rounds)

	var slow, fast []attack
	for _, a := range attacks() {
		if len(a.trickle) > 0 {
			slow = append(slow, a)
		} else {
			fast = append(fast, a)
		}
	}
	var wg, started sync.WaitGroup
	errs := make(chan error, hostile)
	run := func(a attack) {
		defer wg.Done()
		var once sync.Once
		if err := runAttack(srv.Addr, a, func() { once.Do(started.Done) }); err != nil {
			errs <- err
		}
	}
	for i := range held {
		wg.Add(1)
		started.Add(1)
		go run(slow[i%len(slow)])
	}
	started.Wait()
	// The malformed ones: eight at a time, paced at about 300 new
	// connections a second (so that they spread over the measurement
	// instead of saturating the two cores this test shares with the
	// server), until all are done.
	var next atomic.Int64
	pace := time.NewTicker(time.Second / 300)
	defer pace.Stop()
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := next.Add(1) - 1; i < hostile-held; i = next.Add(1) - 1 {
				<-pace.C
				wg.Add(1)
				started.Add(1)
				run(fast[int(i)%len(fast)])
			}
		}()
	}
	underAttack := normalClients(t, srv.Addr, normal, rounds)
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	require.True(t, srv.Alive(), "the server must survive")
	after := normalClients(t, srv.Addr, 10, 3)
	require.NotEmpty(t, after)

	st, err := srv.Status("VmHWM", "VmRSS")
	require.NoError(t, err)
	// Each 4 GiB claim and each 60 MiB claim would have cost its full size
	// had the server allocated what headers claim.
	require.Less(t, st["VmHWM"], int64(512<<10), "peak RSS %d kB must stay far below the 4 GiB a header claimed", st["VmHWM"])

	report := fmt.Sprintf("| normal clients only | %d | %s | %s |\n| beside %d hostile connections | %d | %s | %s |\n",
		len(baseline), ms(percentile(baseline, 0.5)), ms(percentile(baseline, 0.99)),
		hostile, len(underAttack), ms(percentile(underAttack, 0.5)), ms(percentile(underAttack, 0.99)))
	t.Logf("server peak RSS %d kB\n%s", st["VmHWM"], report)
	if path := os.Getenv("HOSTILE_REPORT"); path != "" {
		require.NoError(t, os.WriteFile(path, []byte(report+fmt.Sprintf("\nserver peak RSS: %d kB\n", st["VmHWM"])), 0o644))
	}
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d.Microseconds())/1000) }
