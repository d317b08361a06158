package gearmanapi

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/gearwork/gearwork/gearman"
	"github.com/gearwork/gearwork/internal/broker"
	"github.com/gearwork/gearwork/internal/gearmantest/wire"
	"github.com/gearwork/gearwork/internal/store"
	"github.com/gearwork/gearwork/internal/testwait"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type testBundle struct {
	addr string
	b    *broker.Broker
}

func setup(t *testing.T, bcfg broker.Config, cfg Config) *testBundle {
	t.Helper()
	return setupServer(t, bcfg, cfg, nil).testBundle
}

// setupServer starts a broker with bcfg (the test's handle prefix, a fixed
// clock, no logs) and serves cfg on it (through wrap, if not nil).
func setupServer(t *testing.T, bcfg broker.Config, cfg Config, wrap func(net.Listener) net.Listener) *secBundle {
	t.Helper()
	bcfg.HandlePrefix = "H:test:"
	if bcfg.Clock == nil {
		bcfg.Clock = fixedClock{}
	}
	bcfg.Logger = slog.New(slog.DiscardHandler)
	b := broker.New(bcfg)
	require.NoError(t, b.Start(context.Background()))
	cfg.Broker = b
	srv, addr := startServer(t, cfg, wrap)
	return &secBundle{testBundle: &testBundle{addr: addr, b: b}, srv: srv}
}

// startServer serves cfg, whose Broker is started, on a free loopback
// port (through wrap, if not nil), with a discarding Logger if cfg has
// none. When the test ends it closes the server, waits for Serve to
// return, and stops the broker.
func startServer(t *testing.T, cfg Config, wrap func(net.Listener) net.Listener) (srv *Server, addr string) {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	srv = New(cfg)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr = ln.Addr().String()
	if wrap != nil {
		ln = wrap(ln)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(context.Background(), ln)
	}()
	t.Cleanup(func() {
		srv.Close()
		<-done
		cfg.Broker.Stop()
	})
	return srv, addr
}

// client is a raw Gearman connection with this package's helpers.
type client struct{ *wire.Conn }

func (tb *testBundle) dial(t *testing.T) *client {
	t.Helper()
	return &client{wire.Dial(t, tb.addr)}
}

// echo checks that the connection still serves requests: it sends an
// ECHO_REQ of s and expects it back.
func (c *client) echo(s string) {
	c.T.Helper()
	c.Send(gearman.EchoReq, s)
	c.Expect(gearman.EchoRes, s)
}

// expectCreated reads a JOB_CREATED for each job n (see handle) in turn.
func (c *client) expectCreated(jobs ...int) {
	c.T.Helper()
	for _, n := range jobs {
		c.Expect(gearman.JobCreated, handle(n))
	}
}

// submitBg sends a SUBMIT_JOB_BG of function, with no unique, for each
// payload.
func (c *client) submitBg(function string, payloads ...string) {
	c.T.Helper()
	for _, p := range payloads {
		c.Send(gearman.SubmitJobBg, function, "", p)
	}
}

// expectSilence checks that nothing arrives for 100 ms (the answer being
// tested is held back), then restores the connection's deadline.
func (c *client) expectSilence(why string) {
	c.T.Helper()
	require.NoError(c.T, c.NC.SetReadDeadline(time.Now().Add(100*time.Millisecond)))
	_, err := c.R.ReadByte()
	var ne net.Error
	require.ErrorAs(c.T, err, &ne, why)
	require.True(c.T, ne.Timeout(), why)
	require.NoError(c.T, c.NC.SetReadDeadline(time.Now().Add(time.Minute)))
}

func TestForegroundRoundTripBytes(t *testing.T) {
	t.Parallel()
	tb := setup(t, broker.Config{}, Config{})
	w := tb.dial(t)
	w.Send(gearman.CanDo, "reverse")
	w.Send(gearman.PreSleep)
	c := tb.dial(t)
	c.Send(gearman.SubmitJob, "reverse", "u1", "hello")
	c.expectCreated(0)
	w.Expect(gearman.Noop)
	w.Send(gearman.GrabJobUniq)
	w.Expect(gearman.JobAssignUniq, handle(0), "reverse", "u1", "hello")
	w.Send(gearman.WorkStatus, handle(0), "1", "2")
	w.Send(gearman.WorkData, handle(0), "partial")
	w.Send(gearman.WorkComplete, handle(0), "olleh")
	c.Expect(gearman.WorkStatus, handle(0), "1", "2")
	c.Expect(gearman.WorkData, handle(0), "partial")
	c.Expect(gearman.WorkComplete, handle(0), "olleh")
	w.Send(gearman.GrabJob)
	w.Expect(gearman.NoJob)
}

// fixedClock makes job handles predictable: numbering starts at the
// clock's Unix time in microseconds.
type fixedClock struct{}

func (fixedClock) Now() time.Time { return time.Unix(1000, 0) }

// handle returns the handle of the n-th job (from 0) submitted to a
// server of setupServer, whose broker has a fixed clock.
func handle(n int) string {
	return "H:test:" + strconv.Itoa(1_000_000_000+n)
}

func TestErrors(t *testing.T) {
	t.Parallel()
	tb := setup(t, broker.Config{}, Config{MaxPacket: 1024})
	c := tb.dial(t)
	// A response magic from a client.
	_, err := c.NC.Write(gearman.AppendPacket(nil, gearman.MagicRes, gearman.EchoReq, []byte("x")))
	require.NoError(t, err)
	c.Expect(gearman.Error, "INVALID_MAGIC", "Request magic expected")
	c.Send(gearman.Command(99), "whatever")
	c.Expect(gearman.Error, "INVALID_COMMAND", "Invalid command expected")
	c.Send(gearman.JobCreated, "H:x:1")
	c.Expect(gearman.Error, "INVALID_COMMAND", "Command not expected")
	c.Send(gearman.SubmitJob, "only-a-function")
	c.Expect(gearman.Error, "INVALID_PACKET", "SUBMIT_JOB needs 3 NUL-separated arguments")
	c.Send(gearman.WorkComplete, "H:test:12345", "x")
	c.Expect(gearman.Error, "JOB_NOT_FOUND", "Job given in work result not found")
	c.Send(gearman.OptionReq, "nonsense")
	c.Expect(gearman.Error, "UNKNOWN_OPTION", "Server does not recognize given option")
	c.Send(gearman.SubmitJobBg, "f", "01234567890123456789012345678901234567890123456789012345678901234", "x")
	c.Expect(gearman.Error, "ARGUMENT_TOO_LARGE", "Unique value too large")
	// The connection still works after all of that.
	c.echo("still here")

	// An oversized header gets an ERROR and the connection is closed
	// without the body being read.
	hdr := []byte("\x00REQ\x00\x00\x00\x12\xff\xff\xff\xff")
	_, err = c.NC.Write(hdr)
	require.NoError(t, err)
	c.Expect(gearman.Error, "ARGUMENT_TOO_LARGE", "packet body of 4294967295 bytes exceeds the limit of 1024 bytes")
	_, err = c.R.ReadByte()
	require.ErrorIs(t, err, io.EOF)
}

func TestAdminText(t *testing.T) {
	t.Parallel()
	tb := setup(t, broker.Config{}, Config{Version: "9.9"})
	w := tb.dial(t)
	w.Send(gearman.SetClientID, "wid")
	w.Send(gearman.CanDo, "f")
	w.echo("sync")
	c := tb.dial(t)
	c.Send(gearman.SubmitJobHighBg, "f", "", "a")
	c.expectCreated(0)
	c.Send(gearman.SubmitJobLowBg, "g", "u", "b")
	c.expectCreated(1)

	a := tb.dial(t)
	for _, tc := range []struct {
		line string // sent with "\n" after it
		list bool   // the answer is a list that ends with "."
		want string
	}{
		{"status\r", true, "f\t1\t0\t1\ng\t1\t0\t0\n.\n"}, // a CRLF line end works too
		{"prioritystatus", true, "f\t1\t0\t0\t1\ng\t0\t0\t1\t0\n.\n"},
		{"show unique jobs", true, "u\n.\n"},
		{"show jobs", true, handle(0) + "\t0\t0\t0\n" + handle(1) + "\t0\t0\t0\n.\n"},
		{"maxqueue g 5", false, "OK\r\n"},
		{"show maxqueue g", true, "g\t5\t5\t5\n.\n"},
		{"cancel job " + handle(1), false, "OK\r\n"},
		{"cancel job H:test:1", false, "ERR UNKNOWN_JOB\r\n"},
		{"drop function f", false, "ERR there are still connected workers or executing clients\r\n"},
		{"drop function nope", false, "ERR function not found\r\n"},
		{"create function h", false, "OK\r\n"},
		{"version", false, "OK 9.9\n"},
		{"verbose", false, "OK INFO\n"},
		{"bogus", false, "ERR UNKNOWN_COMMAND Unknown+server+commandbogus\r\n"},
		{"show nothing", false, "ERR UNKNOWN_SHOW_ARGUMENTS\r\n"},
	} {
		require.Equal(t, tc.want, a.admin(tc.line, tc.list), tc.line)
	}
	_, err := a.NC.Write([]byte("workers\n"))
	require.NoError(t, err)
	var lines []string
	for l := a.Line(); l != ".\n"; l = a.Line() {
		lines = append(lines, l)
	}
	require.Len(t, lines, 3)
	require.Regexp(t, `^\d+ 127\.0\.0\.1 wid : f\n$`, lines[0])
}

// failSwitch makes an operation fail while it is on, recording when each
// failure happened, to check that the code under test backs off.
type failSwitch struct {
	on    atomic.Bool
	mu    sync.Mutex
	times []time.Time
}

// fail reports whether the operation is to fail now, recording when if so.
func (f *failSwitch) fail() bool {
	if !f.on.Load() {
		return false
	}
	f.mu.Lock()
	f.times = append(f.times, time.Now())
	f.mu.Unlock()
	return true
}

// requireBackoff waits for n failures and checks that at least least
// passed between the first and the n-th.
func (f *failSwitch) requireBackoff(t *testing.T, n int, least time.Duration, msg string) {
	t.Helper()
	require.Eventually(t, func() bool { return len(f.failures()) >= n }, time.Minute, time.Millisecond)
	times := f.failures()
	require.GreaterOrEqual(t, times[n-1].Sub(times[0]), least, msg)
}

func (f *failSwitch) failures() []time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.times)
}

// slowStore holds every Save until released, to observe answer ordering.
type slowStore struct {
	mu      sync.Mutex
	release chan struct{}
}

func (s *slowStore) Save(ctx context.Context, _ []store.Job) error {
	select {
	case <-s.release:
	case <-ctx.Done():
	}
	return nil
}
func (s *slowStore) Delete(context.Context, []uint64) error            { return nil }
func (s *slowStore) Load(context.Context, func(store.Job) error) error { return nil }
func (s *slowStore) Close() error                                      { return nil }

// setupSlowStore serves cfg on a broker that stores jobs in a slowStore.
func setupSlowStore(t *testing.T, cfg Config) (*secBundle, *slowStore) {
	t.Helper()
	st := &slowStore{release: make(chan struct{})}
	return setupServer(t, broker.Config{Store: st}, cfg, nil), st
}

func TestDurableAnswersKeepRequestOrder(t *testing.T) {
	t.Parallel()
	tb, st := setupSlowStore(t, Config{})
	c := tb.dial(t)
	// Pipelined: background submits wait for the store; the echo after
	// them must not overtake their JOB_CREATED.
	c.submitBg("f", "1", "2")
	c.Send(gearman.EchoReq, "after")
	c.expectSilence("nothing may be answered before the jobs are stored")
	close(st.release)
	c.expectCreated(0, 1)
	c.Expect(gearman.EchoRes, "after")
}

// TestSubmitAnswersKeepSubmitOrder: the broker answers a coalesced submit
// and a refused one at once, while an earlier background submit waits for
// the store; every JOB_CREATED (or ERROR) must still come in the order of
// the submits, since clients match them by position. A foreground submit
// waits for the earlier answers, so its job's events cannot overtake its
// JOB_CREATED.
func TestSubmitAnswersKeepSubmitOrder(t *testing.T) {
	t.Parallel()
	tb, st := setupSlowStore(t, Config{})
	w := tb.dial(t)
	w.Send(gearman.CanDo, "f")
	w.echo("ready")
	c := tb.dial(t)
	c.Send(gearman.SubmitJobBg, "f", "u1", "1") // job 0, waits for the store
	c.Send(gearman.SubmitJobBg, "f", "u1", "2") // coalesces with job 0
	c.Send(gearman.SubmitJobBg, "", "", "3")    // refused before the broker
	c.Send(gearman.SubmitJobBg, "f", "", "4")   // job 1, waits for the store
	c.Send(gearman.SubmitJob, "f", "", "5")     // job 2, foreground
	c.expectSilence("the first answer is the stored job's")
	close(st.release)
	c.expectCreated(0, 0)
	c.Expect(gearman.Error, "INVALID_FUNCTION_NAME", "function name must be 1 to 511 bytes")
	c.expectCreated(1, 2)
	// The worker completes the foreground job; its result follows.
	for _, want := range []string{"1", "4", "5"} {
		w.Send(gearman.GrabJob)
		cmd, args := w.Read()
		require.Equal(t, gearman.JobAssign, cmd)
		require.Equal(t, want, args[2])
		if want == "5" {
			w.Send(gearman.WorkComplete, args[0], "done")
			c.Expect(gearman.WorkComplete, args[0], "done")
		}
	}
}

// TestWaitingForSubmitAnswersIsNotAReadTimeout: a request that has
// arrived whole but waits for an earlier submit's answer (held by a slow
// store) is not a frame that is slow to arrive: the connection must not be
// closed by the read timeout, however long the store takes.
func TestWaitingForSubmitAnswersIsNotAReadTimeout(t *testing.T) {
	t.Parallel()
	tb, st := setupSlowStore(t, Config{ReadTimeout: 20 * time.Millisecond})
	srv := tb.srv
	var releaseOnce sync.Once
	release := func() { releaseOnce.Do(func() { close(st.release) }) }
	t.Cleanup(release) // before the server's cleanup, which waits for the reader
	c := tb.dial(t)
	c.submitBg("f", "1")
	c.Send(gearman.EchoReq, "after")
	// Let the janitor sweep with its clock well past the read timeout.
	waitJanitor(t, srv, 10*srv.cfg.ReadTimeout)
	require.Zero(t, srv.LimitStats().ReadTimeouts, "a complete request waiting for an answer timed out")
	release()
	c.expectCreated(0)
	c.Expect(gearman.EchoRes, "after")
}

// TestBadHeaderAfterSubmitsAnswersThemFirst: a header the server refuses
// (a size beyond the packet limit) closes the connection, but the answers
// of the submits before it, which wait for the store, are sent first.
func TestBadHeaderAfterSubmitsAnswersThemFirst(t *testing.T) {
	t.Parallel()
	tb, st := setupSlowStore(t, Config{})
	c := tb.dial(t)
	c.submitBg("f", "1", "2")
	huge := []byte("\x00REQ\x00\x00\x00\x10\xff\xff\xff\xff") // ECHO_REQ claiming 4 GiB
	_, err := c.NC.Write(huge)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return tb.b.JobCount() == 2 }, time.Minute, time.Millisecond)
	close(st.release)
	c.expectCreated(0, 1)
	cmd, args := c.Read()
	require.Equal(t, gearman.Error, cmd)
	require.Equal(t, "ARGUMENT_TOO_LARGE", args[0])
	_, err = c.R.ReadByte()
	require.ErrorIs(t, err, io.EOF, "the connection is closed after the ERROR")
}

// TestCloseDoesNotWaitForTheStore: a reader waiting for earlier submits'
// answers (the store holds them) is released when the server closes the
// connection, so Close returns without the store answering.
func TestCloseDoesNotWaitForTheStore(t *testing.T) {
	t.Parallel()
	st := &slowStore{release: make(chan struct{})}
	b := broker.New(broker.Config{HandlePrefix: "H:test:", Clock: fixedClock{}, Store: st,
		Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, b.Start(context.Background()))
	t.Cleanup(b.Stop)
	srv := New(Config{Broker: b, Logger: slog.New(slog.DiscardHandler)})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.Serve(context.Background(), ln)
	}()
	t.Cleanup(func() { close(st.release) }) // runs before b.Stop
	tb := &testBundle{addr: ln.Addr().String(), b: b}
	c := tb.dial(t)
	c.submitBg("f", "1")
	c.Send(gearman.EchoReq, "after") // the reader waits for the submit's answer
	require.Eventually(t, func() bool { return b.JobCount() == 1 }, time.Minute, time.Millisecond)
	closed := make(chan struct{})
	go func() {
		srv.Close()
		<-served
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(time.Minute):
		t.Fatal("Close waited for the store to answer a submit")
	}
}

// waitJanitor polls until the janitor has swept with its clock d past the
// current one (two ticks later than the first such clock, so that the sweep
// of that tick is over).
func waitJanitor(t *testing.T, srv *Server, d time.Duration) {
	t.Helper()
	target := srv.now.Load() + int64(d)
	deadline := time.Now().Add(time.Minute)
	ticks := 0
	last := srv.now.Load()
	for ticks < 2 {
		require.True(t, time.Now().Before(deadline), "the janitor does not run")
		time.Sleep(time.Millisecond)
		if now := srv.now.Load(); now != last && now > target {
			ticks++
			last = now
		}
	}
}

// TestRejectedPacketsKeepAnswerOrder: a packet refused before it reaches
// the broker (wrong magic, unknown command, missing arguments) is answered
// with an ERROR in its place, after the answers of the submits before it,
// even while those wait for the store.
func TestRejectedPacketsKeepAnswerOrder(t *testing.T) {
	t.Parallel()
	tb, st := setupSlowStore(t, Config{})
	c := tb.dial(t)
	c.submitBg("f", "1")
	badMagic := gearman.AppendPacket(nil, gearman.MagicRes, gearman.EchoReq, []byte("x"))
	unknown := gearman.AppendPacket(nil, gearman.MagicReq, gearman.Command(999))
	short := gearman.AppendPacket(nil, gearman.MagicReq, gearman.SubmitJobBg, []byte("f"))
	for _, pkt := range [][]byte{badMagic, unknown, short} {
		_, err := c.NC.Write(pkt)
		require.NoError(t, err)
	}
	c.Send(gearman.EchoReq, "after")
	c.Send(gearman.EchoReq, "sync")
	// The first answer must be the submit's, which waits for the store;
	// whatever came earlier would be taken for it.
	c.expectSilence("nothing may be answered before the job is stored")
	close(st.release)
	c.expectCreated(0)
	for _, code := range []string{"INVALID_MAGIC", "INVALID_COMMAND", "INVALID_PACKET"} {
		cmd, args := c.Read()
		require.Equal(t, gearman.Error, cmd)
		require.Equal(t, code, args[0])
	}
	c.Expect(gearman.EchoRes, "after")
	c.Expect(gearman.EchoRes, "sync")
}

// TestResultsOfOneWriteStayApart sends two WORK_COMPLETEs in one write:
// the reader reuses one buffer for work result bodies, so the first
// job's retained result must not be overwritten by the second's.
func TestResultsOfOneWriteStayApart(t *testing.T) {
	t.Parallel()
	tb := setup(t, broker.Config{Policies: map[string]broker.Policy{"f": {ResultRetention: time.Hour}}}, Config{})
	c := tb.dial(t)
	c.submitBg("f", "a", "b")
	c.expectCreated(0, 1)
	w := tb.dial(t)
	w.Send(gearman.CanDo, "f")
	w.Send(gearman.GrabJob)
	w.Expect(gearman.JobAssign, handle(0), "f", "a")
	w.Send(gearman.GrabJob)
	w.Expect(gearman.JobAssign, handle(1), "f", "b")
	var out []byte
	out = gearman.AppendPacket(out, gearman.MagicReq, gearman.WorkComplete, []byte(handle(0)), []byte("first"))
	out = gearman.AppendPacket(out, gearman.MagicReq, gearman.WorkComplete, []byte(handle(1)), []byte("again"))
	w.Write(out)
	w.Send(gearman.GrabJob)
	w.Expect(gearman.NoJob)
	for n, want := range []string{"first", "again"} {
		r, ok, err := tb.b.Result(context.Background(), []byte(handle(n)))
		require.NoError(t, err)
		require.True(t, ok, "result of job %d", n)
		require.Equal(t, want, string(r.Data), "result of job %d", n)
	}
}

// TestEchoesOfOneWriteStayApart sends echoes in one write, with a
// background submit among them: each echo's body is read into the
// reader's reused buffer, so each answer must be encoded before the next
// request overwrites it.
func TestEchoesOfOneWriteStayApart(t *testing.T) {
	t.Parallel()
	tb := setup(t, broker.Config{}, Config{})
	c := tb.dial(t)
	var out []byte
	out = gearman.AppendPacket(out, gearman.MagicReq, gearman.EchoReq, []byte("first"))
	out = gearman.AppendPacket(out, gearman.MagicReq, gearman.SubmitJobBg, []byte("f"), nil, []byte("x"))
	out = gearman.AppendPacket(out, gearman.MagicReq, gearman.EchoReq, []byte("second, longer"))
	out = gearman.AppendPacket(out, gearman.MagicReq, gearman.EchoReq, []byte("3"))
	c.Write(out)
	c.Expect(gearman.EchoRes, "first")
	c.expectCreated(0)
	c.Expect(gearman.EchoRes, "second, longer")
	c.Expect(gearman.EchoRes, "3")
}

// TestRequestsCountsPacketsAndAdminLines: what the processor pacer
// counts as work.
func TestRequestsCountsPacketsAndAdminLines(t *testing.T) {
	t.Parallel()
	sb := setupServer(t, broker.Config{}, Config{}, nil)
	require.Zero(t, sb.srv.Requests())
	c := sb.dial(t)
	var out []byte
	for range 3 {
		out = gearman.AppendPacket(out, gearman.MagicReq, gearman.EchoReq, []byte("e"))
	}
	c.Write(out)
	for range 3 {
		c.Expect(gearman.EchoRes, "e")
	}
	require.Contains(t, c.admin("version", false), "gearwork")
	testwait.Until(t, "four requests", func() bool { return sb.srv.Requests() == 4 })
}

// TestOwnDataCopiesOnlyBorrowedBodies: a work result read into the
// reader's reused buffer is copied for the broker, and one in a body of
// its own (over 1 KiB, or a command that is not borrowed) is kept as it
// is, so that a large result is not copied twice.
func TestOwnDataCopiesOnlyBorrowedBodies(t *testing.T) {
	data := []byte("result")
	borrowed := ownData(&gearman.Frame{Borrowed: true}, data)
	require.Equal(t, data, borrowed)
	require.NotSame(t, &data[0], &borrowed[0], "a borrowed body's data is copied")
	own := ownData(&gearman.Frame{}, data)
	require.Same(t, &data[0], &own[0], "a body of its own is kept, not copied")
	require.Nil(t, ownData(&gearman.Frame{Borrowed: true}, nil))
	require.NotNil(t, ownData(&gearman.Frame{}, []byte{}), "empty data stays empty, not nil")
}

// TestAdminLongListing: a listing many times MaxOutput is written as it is
// gathered, at the pace the peer reads, and arrives whole, in handle order.
func TestAdminLongListing(t *testing.T) {
	t.Parallel()
	tb := setup(t, broker.Config{}, Config{MaxOutput: 16 << 10})
	c := tb.dial(t)
	const n = 5000
	for i := range n {
		c.Send(gearman.SubmitJobBg, "f", fmt.Sprint("u", i), "")
		c.expectCreated(i)
	}
	a := tb.dial(t)
	var want, wantU strings.Builder
	for i := range n {
		fmt.Fprintf(&want, "%s\t0\t0\t0\n", handle(i))
	}
	want.WriteString(".\n")
	got := a.admin("show jobs", true)
	require.Greater(t, len(got), 4*(16<<10))
	require.Equal(t, want.String(), got)
	for i := range n {
		fmt.Fprintf(&wantU, "u%d\n", i)
	}
	wantU.WriteString(".\n")
	require.Equal(t, wantU.String(), a.admin("show unique jobs", true), "uniques in the handle order of their jobs")
}

// TestPipelinedRequestsGrowTheReadBuffer sends bursts of echoes larger
// than the read buffer in one write each: the connection's reads fill
// its buffer, so it grows to grownReadBuffer (one read then takes in
// what a client pipelines), and every answer still comes back whole and
// in order, including those of requests that straddled the growth.
func TestPipelinedRequestsGrowTheReadBuffer(t *testing.T) {
	t.Parallel()
	sb := setupServer(t, broker.Config{}, Config{IdleRelease: time.Hour}, nil)
	c := sb.dial(t)
	c.echo("first") // the connection has its reader
	var out []byte
	var want []string
	for i := range 300 {
		p := strings.Repeat(strconv.Itoa(i%10), 1+i*13%97)
		out = gearman.AppendPacket(out, gearman.MagicReq, gearman.EchoReq, []byte(p))
		want = append(want, p)
	}
	require.Greater(t, len(out), 4*4096)
	for range 3 {
		c.Write(out)
		for _, p := range want {
			c.Expect(gearman.EchoRes, p)
		}
	}
	sb.srv.mu.Lock()
	var sc *conn
	for k := range sb.srv.conns {
		sc = k
	}
	sb.srv.mu.Unlock()
	require.NotNil(t, sc)
	// The reader grew the buffer before the flush that wrote the last
	// answers, which took c.mu.
	sc.mu.Lock()
	size := sc.rd.r.Size()
	sc.mu.Unlock()
	require.Equal(t, grownReadBuffer, size)
}

// A connection whose read buffer grew for a burst gives it back when it
// idles, as every idle connection gives its reader back, and reads its
// next request into a buffer of the configured size: the memory of idle
// connections does not keep the size of their last burst.
func TestGrownReadBufferIsReleasedWhenIdle(t *testing.T) {
	t.Parallel()
	sb := setupServer(t, broker.Config{}, Config{IdleRelease: 50 * time.Millisecond}, nil)
	c := sb.dial(t)
	c.echo("first")
	var out []byte
	var want []string
	for i := range 300 {
		p := strings.Repeat(strconv.Itoa(i%10), 1+i*13%97)
		out = gearman.AppendPacket(out, gearman.MagicReq, gearman.EchoReq, []byte(p))
		want = append(want, p)
	}
	sb.srv.mu.Lock()
	var sc *conn
	for k := range sb.srv.conns {
		sc = k
	}
	sb.srv.mu.Unlock()
	require.NotNil(t, sc)
	size := func() int {
		// The reader set rd before it wrote the answer just read, under mu.
		sc.mu.Lock()
		defer sc.mu.Unlock()
		return sc.rd.r.Size()
	}
	grown := false
	for range 100 {
		c.Write(out)
		for _, p := range want {
			c.Expect(gearman.EchoRes, p)
		}
		c.echo("after the burst")
		if size() == grownReadBuffer {
			grown = true
			break
		}
	}
	require.True(t, grown, "the buffer grew for the bursts")
	testwait.Until(t, "the idle connection releases its reader", func() bool {
		sc.rmu.Lock()
		defer sc.rmu.Unlock()
		return sc.released
	})
	c.echo("after idling")
	require.Equal(t, 4096, size(), "the next request is read into the configured buffer")
}
