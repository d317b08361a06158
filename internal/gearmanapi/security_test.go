package gearmanapi

import (
	"cmp"
	"context"
	"crypto/tls"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/gearman"
	"github.com/gearwork/gearwork/internal/auth"
	"github.com/gearwork/gearwork/internal/broker"
	"github.com/gearwork/gearwork/internal/gearmantest/wire"
	"github.com/gearwork/gearwork/internal/testcert"
)

type secBundle struct {
	*testBundle
	srv *Server
}

// setupListener is setup with a listener wrapper (for TLS) and access to
// the Server.
func setupListener(t *testing.T, cfg Config, wrap func(net.Listener) net.Listener) *secBundle {
	t.Helper()
	return setupServer(t, broker.Config{}, cfg, wrap)
}

// setupTLS is setupListener over TLS, with a server certificate of a new
// CA; it returns a client configuration that trusts that CA.
func setupTLS(t *testing.T, cfg Config) (*secBundle, *tls.Config) {
	t.Helper()
	ca := testcert.NewCA(t, "ca")
	tlsCfg := &tls.Config{Certificates: []tls.Certificate{ca.Server(t).TLS}}
	tb := setupListener(t, cfg, func(ln net.Listener) net.Listener { return tls.NewListener(ln, tlsCfg) })
	return tb, ca.ClientTLS()
}

func policy(t *testing.T, rules ...auth.RuleConfig) *auth.Policy {
	t.Helper()
	p, err := auth.New(auth.Config{Rules: rules})
	require.NoError(t, err)
	return p
}

var submitCommands = []gearman.Command{gearman.SubmitJob, gearman.SubmitJobBg, gearman.SubmitJobHigh,
	gearman.SubmitJobHighBg, gearman.SubmitJobLow, gearman.SubmitJobLowBg}

func TestAuthorizationByAddress(t *testing.T) {
	t.Parallel()
	tb := setupListener(t, Config{Authorizer: policy(t,
		auth.RuleConfig{Match: auth.MatchConfig{Address: []string{"127.0.0.0/8"}},
			Allow: auth.Permissions{Submit: []string{"email.*"}, Serve: []string{"email.*"}, Admin: []string{"cancel job"}}},
		auth.RuleConfig{Match: auth.MatchConfig{Any: true}, Deny: auth.Permissions{Submit: []string{"email.secret"}}},
	)}, nil)
	c := tb.dial(t)
	const who = "addr=127.0.0.1"

	c.Send(gearman.SubmitJobBg, "email.send", "", "x")
	c.expectCreated(0)
	for _, cmd := range submitCommands {
		c.Send(cmd, "billing", "", "x")
		c.Expect(gearman.Error, "PERMISSION_DENIED", who+" may not submit to billing")
	}
	c.Send(gearman.SubmitJobEpoch, "billing", "", "0", "x")
	c.Expect(gearman.Error, "PERMISSION_DENIED", who+" may not submit to billing")
	c.Send(gearman.SubmitReduceJob, "billing", "", "r", "", "x")
	c.Expect(gearman.Error, "PERMISSION_DENIED", who+" may not submit to billing")
	c.Send(gearman.SubmitJob, "email.secret", "", "x")
	c.Expect(gearman.Error, "PERMISSION_DENIED", who+" may not submit to email.secret")

	c.Send(gearman.CanDo, "billing")
	c.Expect(gearman.Error, "PERMISSION_DENIED", who+" may not serve billing")
	c.Send(gearman.CanDoTimeout, "billing", "5000")
	c.Expect(gearman.Error, "PERMISSION_DENIED", who+" may not serve billing")
	c.Send(gearman.CanDo, "email.send")
	c.echo("still open")

	a := tb.dial(t)
	for _, line := range []string{"shutdown", "shutdown graceful", "drop function email.send", "maxqueue email.send 1", "create function x"} {
		a.NC.Write([]byte(line + "\r\n"))
		name := strings.Join(strings.Fields(line)[:min(2, len(strings.Fields(line)))], " ")
		if name == "shutdown graceful" || name == "maxqueue email.send" {
			name = strings.Fields(line)[0]
		}
		require.Equal(t, "ERR PERMISSION_DENIED "+strings.ReplaceAll(who+" may not run "+name, " ", "+")+"\r\n", a.Line(), line)
	}
	a.NC.Write([]byte("cancel job H:test:424242\r\n"))
	require.Equal(t, "ERR UNKNOWN_JOB\r\n", a.Line(), "cancel job is allowed (the job is unknown)")
	a.NC.Write([]byte("status\r\n"))
	require.Equal(t, "email.send\t1\t0\t1\n", a.Line(), "read-only commands are open; billing got no worker")
	require.Equal(t, ".\n", a.Line())
}

func TestAuthorizationByClientCertificate(t *testing.T) {
	t.Parallel()
	ca := testcert.NewCA(t, "clients")
	serverCA := testcert.NewCA(t, "servers")
	srvCert := serverCA.Server(t)
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{srvCert.TLS},
		ClientCAs: ca.Pool(), ClientAuth: tls.VerifyClientCertIfGiven}
	tb := setupListener(t, Config{Authorizer: policy(t,
		auth.RuleConfig{Match: auth.MatchConfig{CommonName: []string{"web-*"}}, Allow: auth.Permissions{Submit: []string{"*"}}},
		auth.RuleConfig{Match: auth.MatchConfig{SAN: []string{"*.workers.test"}}, Allow: auth.Permissions{Serve: []string{"resize"}}},
	)}, func(ln net.Listener) net.Listener { return tls.NewListener(ln, tlsCfg) })

	dial := func(cert *testcert.Pair) *client {
		cfg := serverCA.ClientTLS()
		if cert != nil {
			cfg.Certificates = []tls.Certificate{cert.TLS}
		}
		nc, err := tls.Dial("tcp", tb.addr, cfg)
		require.NoError(t, err)
		return &client{wire.New(t, nc)}
	}

	web := dial(ca.Client(t, "web-1"))
	web.Send(gearman.SubmitJobBg, "resize", "", "img")
	web.expectCreated(0)
	web.Send(gearman.CanDo, "resize")
	web.Expect(gearman.Error, "PERMISSION_DENIED", "cn=web-1 addr=127.0.0.1 may not serve resize")

	w := dial(ca.Client(t, "worker", "w1.workers.test"))
	w.Send(gearman.CanDo, "resize")
	w.Send(gearman.SubmitJob, "resize", "", "img")
	w.Expect(gearman.Error, "PERMISSION_DENIED", "cn=worker addr=127.0.0.1 may not submit to resize")
	w.Send(gearman.GrabJob)
	w.Expect(gearman.JobAssign, handle(0), "resize", "img")

	anon := dial(nil)
	anon.Send(gearman.SubmitJob, "resize", "", "img")
	anon.Expect(gearman.Error, "PERMISSION_DENIED", "addr=127.0.0.1 may not submit to resize")

	// A certificate from another CA does not verify: the handshake fails.
	// (The client is made to send it; by default Go's client sends none
	// that the server's CA list does not name.)
	other := testcert.NewCA(t, "other").Client(t, "web-1")
	nc, err := tls.Dial("tcp", tb.addr, &tls.Config{RootCAs: serverCA.Pool(), ServerName: "127.0.0.1",
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &other.TLS, nil }})
	if err == nil {
		// TLS 1.3 reports the server's rejection on the first read.
		require.NoError(t, nc.SetReadDeadline(time.Now().Add(time.Minute)))
		_, err = nc.Read(make([]byte, 1))
		nc.Close()
	}
	require.ErrorContains(t, err, "certificate")
	require.Eventually(t, func() bool { return tb.srv.LimitStats().HandshakeFailures == 1 }, time.Minute, time.Millisecond)
}

func TestUnauthenticatedPacketLimit(t *testing.T) {
	t.Parallel()
	// dialWithSubmitters serves with the limit for connections that no
	// rule grants anything, and one rule that lets addresses in cidr
	// submit, and dials it.
	dialWithSubmitters := func(cidr string) *client {
		tb := setupListener(t, Config{MaxPacketUnauthenticated: 1024, Authorizer: policy(t,
			auth.RuleConfig{Match: auth.MatchConfig{Address: []string{cidr}}, Allow: auth.Permissions{Submit: []string{"*"}}},
		)}, nil)
		return tb.dial(t)
	}
	c := dialWithSubmitters("10.0.0.0/8")
	c.Send(gearman.EchoReq, strings.Repeat("a", 1024))
	c.Expect(gearman.EchoRes, strings.Repeat("a", 1024))
	c.Send(gearman.EchoReq, strings.Repeat("a", 1025))
	c.ExpectClosed(string(gearman.AppendPacket(nil, gearman.MagicRes, gearman.Error, []byte("ARGUMENT_TOO_LARGE"),
		[]byte("packet body of 1025 bytes exceeds the limit of 1024 bytes"))))

	g := dialWithSubmitters("127.0.0.1")
	g.Send(gearman.EchoReq, strings.Repeat("a", 100_000))
	g.Expect(gearman.EchoRes, strings.Repeat("a", 100_000))
}

func TestReadTimeoutDropsSlowClients(t *testing.T) {
	t.Parallel()
	tb := setupListener(t, Config{ReadTimeout: 100 * time.Millisecond, IdleRelease: -1}, nil)
	idle := tb.dial(t)
	idle.echo("x")

	partialHeader := tb.dial(t)
	partialHeader.NC.Write([]byte("\x00REQ\x00\x00"))
	partialBody := tb.dial(t)
	partialBody.NC.Write(gearman.AppendPacket(nil, gearman.MagicReq, gearman.EchoReq, []byte("0123456789"))[:15])
	partialLine := tb.dial(t)
	partialLine.NC.Write([]byte("stat"))
	for _, c := range []*client{partialHeader, partialBody, partialLine} {
		c.ExpectClosed("")
	}
	require.Equal(t, int64(3), tb.srv.LimitStats().ReadTimeouts)
	// The idle connection was idle longer than the timeout, but between
	// frames: it stays.
	idle.echo("y")
}

// allReleased reports whether every connection of srv has released its
// reader (it is idle: parked, or waiting with no buffer).
func allReleased(srv *Server) bool {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	for sc := range srv.conns {
		sc.rmu.Lock()
		r := sc.released
		sc.rmu.Unlock()
		if !r {
			return false
		}
	}
	return true
}

func TestIdleConnectionsReleaseTheirReader(t *testing.T) {
	t.Parallel()
	tb := setupListener(t, Config{IdleRelease: 10 * time.Millisecond}, nil)
	c := tb.dial(t)
	released := func() bool { return allReleased(tb.srv) }
	for i := range 20 {
		c.Send(gearman.EchoReq, strings.Repeat("e", i*1000))
		c.Expect(gearman.EchoRes, strings.Repeat("e", i*1000))
		require.Eventually(t, released, time.Minute, time.Millisecond)
	}
	// Frames that arrive in pieces across the idle threshold, and frames
	// sent while the janitor may be kicking, are read whole.
	pkt := gearman.AppendPacket(nil, gearman.MagicReq, gearman.EchoReq, []byte("split"))
	for i := range 200 {
		c.NC.Write(pkt[:i%len(pkt)])
		c.NC.Write(pkt[i%len(pkt):])
		c.Expect(gearman.EchoRes, "split")
	}
	require.Zero(t, tb.srv.LimitStats().ReadTimeouts)
}

func TestMaxConnections(t *testing.T) {
	t.Parallel()
	tb := setupListener(t, Config{MaxConnections: 2}, nil)
	a, b := tb.dial(t), tb.dial(t)
	for _, c := range []*client{a, b} {
		c.echo("in")
	}
	tb.dial(t).ExpectClosed("")
	require.Equal(t, int64(1), tb.srv.LimitStats().Rejected)
	a.NC.Close()
	require.Eventually(t, func() bool { return tb.srv.Connections() == 1 }, time.Minute, time.Millisecond)
	c := tb.dial(t)
	c.echo("again")
}

func TestWriteTimeoutDropsPeersThatDoNotRead(t *testing.T) {
	t.Parallel()
	tb := setupListener(t, Config{WriteTimeout: 100 * time.Millisecond}, nil)
	c := tb.dial(t)
	big := gearman.AppendPacket(nil, gearman.MagicReq, gearman.EchoReq, make([]byte, 1<<20))
	go func() {
		// Never reads; stops when the server closes the connection.
		for range 256 {
			if _, err := c.NC.Write(big); err != nil {
				return
			}
		}
	}()
	require.Eventually(t, func() bool { return tb.srv.LimitStats().WriteTimeouts == 1 }, time.Minute, time.Millisecond)
	require.Eventually(t, func() bool { return tb.srv.Connections() == 0 }, time.Minute, time.Millisecond)
}

func TestHandshakeTimeout(t *testing.T) {
	t.Parallel()
	tb, _ := setupTLS(t, Config{HandshakeTimeout: 100 * time.Millisecond})
	silent := tb.dial(t)
	silent.ExpectClosed("")
	// The handshake's context closes the socket before the handshake
	// returns and is counted.
	require.Eventually(t, func() bool { return tb.srv.LimitStats().HandshakeFailures == 1 }, time.Minute, time.Millisecond)
	require.Eventually(t, func() bool { return tb.srv.Connections() == 0 }, time.Minute, time.Millisecond)
}

// TestReturnMemory: memory released by idle connections is returned to
// the system once releases settle: a large amount at once, the small tail
// of a burst too, but that at most every returnMemorySmallEvery.
func TestReturnMemory(t *testing.T) {
	t.Parallel()
	now := int64(time.Hour)
	s := &Server{lastReturn: now}
	tick := func(add int64) (returned bool) {
		s.releasedBytes.Add(add)
		before := s.lastReturn
		now += int64(500 * time.Millisecond)
		s.returnMemory(now)
		return s.lastReturn != before
	}
	require.False(t, tick(32<<20), "releases still coming")
	require.True(t, tick(0), "settled: 32 MiB returned")
	require.False(t, tick(2<<20))
	require.False(t, tick(0), "a small tail waits for returnMemorySmallEvery")
	for range int(returnMemorySmallEvery/(500*time.Millisecond)) - 3 {
		require.False(t, tick(0))
	}
	require.True(t, tick(0), "then it is returned")
	require.False(t, tick(0), "nothing left")
	require.False(t, tick(100<<10))
	for range 100 {
		require.False(t, tick(0), "less than returnMemorySmall stays")
	}
}

// TestHostileConnectionsStayOutOfTheBroker: a connection joins the broker
// (takes a session, under the broker's lock, which every good client's
// request needs) with its first valid frame only. One that sends nothing,
// or a malformed or oversized header, is answered and dropped without
// ever appearing in the broker.
func TestHostileConnectionsStayOutOfTheBroker(t *testing.T) {
	t.Parallel()
	tb := setupListener(t, Config{MaxPacket: 1 << 20}, nil)
	first := tb.dial(t)
	first.echo("first")
	silent := tb.dial(t)
	for _, a := range []struct{ send, answer string }{
		{"\x00REQ\x00\x00\x00\x10\xff\xff\xff\xff", string(gearman.AppendPacket(nil, gearman.MagicRes, gearman.Error,
			[]byte("ARGUMENT_TOO_LARGE"), []byte("packet body of 4294967295 bytes exceeds the limit of 1048576 bytes")))},
		{"\x00RAQ\x00\x00\x00\x10\x00\x00\x00\x00", string(gearman.AppendPacket(nil, gearman.MagicRes, gearman.Error,
			[]byte("INVALID_MAGIC"), []byte(`bad packet magic "\x00RAQ"`)))},
	} {
		c := tb.dial(t)
		// In pieces: the header is assembled before it is checked.
		for i := range len(a.send) {
			_, err := c.NC.Write([]byte{a.send[i]})
			require.NoError(t, err)
		}
		c.ExpectClosed(a.answer)
	}
	last := tb.dial(t)
	last.echo("last")

	var ids []uint64
	for _, w := range tb.b.Workers() {
		ids = append(ids, w.ID)
	}
	require.Equal(t, []uint64{1, 2}, ids, "only the two connections that sent a valid frame have sessions")
	require.Eventually(t, func() bool { return tb.srv.Connections() == 3 }, time.Minute, time.Millisecond, "first, silent and last are open")
	silent.echo("late")
}

// TestMaxConnectionsPerAddress: one source address cannot open more than
// MaxConnectionsPerAddress connections; others still can, and a closed
// connection frees its place.
func TestMaxConnectionsPerAddress(t *testing.T) {
	t.Parallel()
	tb := setupListener(t, Config{MaxConnectionsPerAddress: 2}, nil)
	dialFrom := func(ip string) *client {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
		nc, err := d.Dial("tcp", tb.addr)
		require.NoError(t, err)
		return &client{wire.New(t, nc)}
	}
	a, b := dialFrom("127.0.0.2"), dialFrom("127.0.0.2")
	for _, c := range []*client{a, b} {
		c.echo("in")
	}
	dialFrom("127.0.0.2").ExpectClosed("")
	require.Equal(t, int64(1), tb.srv.LimitStats().Rejected)
	for range 2 {
		other := dialFrom("127.0.0.3")
		other.echo("other")
	}
	a.NC.Close()
	require.Eventually(t, func() bool { return tb.srv.Connections() == 3 }, time.Minute, time.Millisecond)
	c := dialFrom("127.0.0.2")
	c.echo("again")
	require.Equal(t, int64(1), tb.srv.LimitStats().Rejected)
}

// emfileListener fails Accept with EMFILE while its switch is on, and
// accepts normally otherwise.
type emfileListener struct {
	net.Listener
	failSwitch
}

func (l *emfileListener) Accept() (net.Conn, error) {
	if l.fail() {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	}
	return l.Listener.Accept()
}

// TestAcceptOutOfFileDescriptors: while accept fails for want of file
// descriptors, the server retries after growing pauses instead of
// spinning, keeps serving the connections it has, and accepts again once
// descriptors are free.
func TestAcceptOutOfFileDescriptors(t *testing.T) {
	t.Parallel()
	var ln *emfileListener
	tb := setupListener(t, Config{}, func(inner net.Listener) net.Listener {
		ln = &emfileListener{Listener: inner}
		return ln
	})
	existing := tb.dial(t)
	existing.echo("before")

	ln.on.Store(true)
	// An accept already in progress may still return this connection;
	// the ones after it fail, and it is served at the latest once accept
	// works again.
	waiting := tb.dial(t)
	waiting.Send(gearman.EchoReq, "queued")
	// Pauses of 5, 10, 20 and 40 ms at least between the first five
	// attempts.
	ln.requireBackoff(t, 5, 75*time.Millisecond, "accept must back off")
	existing.echo("meanwhile")

	ln.on.Store(false)
	waiting.Expect(gearman.EchoRes, "queued")
	later := tb.dial(t)
	later.echo("after")
	existing.echo("still")
}

// serverSide reports f of the server's connection from the client c, or
// false if the server has none; f runs with the server's lock held.
func (tb *secBundle) serverSide(c *client, f func(*conn) bool) bool {
	tb.srv.mu.Lock()
	defer tb.srv.mu.Unlock()
	for sc := range tb.srv.conns {
		if sc.remote == c.NC.LocalAddr().String() {
			return f(sc)
		}
	}
	return false
}

// writing reports whether the server is in the middle of a write to the
// client c (a write the peer does not take).
func (tb *secBundle) writing(c *client) bool {
	return tb.serverSide(c, func(sc *conn) bool { return sc.writeStart.Load() != 0 })
}

// smallSendBuffer sets the send buffer of the server's side of client c
// small, which also stops the kernel from growing it: with the client's
// small window (dialSmallWindow) the sockets then take a few hundred
// kilobytes whatever the machine's buffer tuning, so a test's larger output
// surely waits in the server.
func (tb *secBundle) smallSendBuffer(t *testing.T, c *client) {
	t.Helper()
	var err error
	found := tb.serverSide(c, func(sc *conn) bool {
		tc, ok := sc.nc.(*net.TCPConn)
		if ok {
			err = tc.SetWriteBuffer(64 << 10)
		}
		return ok
	})
	require.True(t, found, "the server holds the client's TCP connection")
	require.NoError(t, err)
}

// queued returns how many jobs of function fn the broker holds.
func (tb *secBundle) queued(fn string) int {
	for _, f := range tb.b.Status(context.Background()) {
		if f.Name == fn {
			return f.Total
		}
	}
	return 0
}

// dialSmallWindow connects a client whose receive buffer is set small
// before it connects (so that the window it offers stays small): a
// server's writes to it wait as soon as it stops reading.
func (tb *secBundle) dialSmallWindow(t *testing.T) *client {
	t.Helper()
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 128<<10)
		})
		return cmp.Or(err, serr)
	}}
	nc, err := d.Dial("tcp", tb.addr)
	require.NoError(t, err)
	return &client{wire.New(t, nc)}
}

// TestRequestsWaitForAPeerThatDoesNotRead: a peer that pipelines requests
// whose answers are much larger (admin commands) and does not read them
// is served at its own pace: once more than half of MaxOutput waits for
// it, its next request waits for the answers to be written, instead of
// the server holding every answer (a pipeline of a few kilobytes could
// make it hold hundreds of megabytes). Once the peer reads, everything
// is answered in order.
func TestRequestsWaitForAPeerThatDoesNotRead(t *testing.T) {
	t.Parallel()
	tb := setupListener(t, Config{MaxOutput: 64 << 10, WriteTimeout: time.Hour}, nil)
	w := tb.dial(t)
	for i := range 300 {
		w.Send(gearman.CanDo, strings.Repeat("f", 200)+string(rune('A'+i%26))+strings.Repeat("x", i/26))
	}
	w.echo("registered")

	c := tb.dialSmallWindow(t)
	const statuses = 400
	var pipeline []byte
	for range statuses {
		pipeline = append(pipeline, "status\n"...)
	}
	pipeline = append(pipeline, wire.Request(gearman.SubmitJobBg, "marker", "", "after the statuses")...)
	c.Write(pipeline)

	require.Eventually(t, func() bool { return tb.writing(c) }, time.Minute, time.Millisecond,
		"the statuses' answers wait for the client")
	require.Zero(t, tb.queued("marker"),
		"the submit after the statuses waits until the client reads their answers")

	for range statuses {
		for {
			line := c.Line()
			if line == ".\n" {
				break
			}
			require.True(t, strings.HasPrefix(line, "f"), "a status line: %q", line)
		}
	}
	c.ExpectCmd(gearman.JobCreated)
	require.Equal(t, 1, tb.queued("marker"))
}

// TestRequestsWaitForARunningFlush: while a flusher goroutine waits to
// write event output to a peer that does not read (results of its
// foreground job), the peer's own requests are not answered into an
// unbounded buffer either: past half of MaxOutput the next request waits
// for the flush.
func TestRequestsWaitForARunningFlush(t *testing.T) {
	t.Parallel()
	tb := setupListener(t, Config{MaxOutput: 8 << 20, WriteTimeout: time.Hour}, nil)
	w := tb.dial(t)
	w.Send(gearman.CanDo, "f")
	c := tb.dialSmallWindow(t)
	c.Send(gearman.SubmitJob, "f", "", "job")
	c.ExpectCmd(gearman.JobCreated)
	tb.smallSendBuffer(t, c)
	w.Send(gearman.GrabJob)
	job := w.ExpectCmd(gearman.JobAssign)
	data := strings.Repeat("d", 64<<10)
	// Event output below MaxOutput in all, far more than the two small
	// socket buffers take: the flusher waits.
	const chunks = 64 // 4 MiB
	for range chunks {
		w.Send(gearman.WorkData, job[0], data)
	}
	require.Eventually(t, func() bool { return tb.writing(c) }, time.Minute, time.Millisecond,
		"the server waits to write to the client")

	const echoes = 160 // 10 MiB of answers, more than MaxOutput
	var pipeline []byte
	for range echoes {
		pipeline = append(pipeline, wire.Request(gearman.EchoReq, data)...)
	}
	pipeline = append(pipeline, wire.Request(gearman.SubmitJobBg, "marker", "", "after the echoes")...)
	wrote := make(chan error, 1)
	go func() { // the server stops reading it midway
		_, err := c.NC.Write(pipeline)
		wrote <- err
	}()
	require.Eventually(t, func() bool { return tb.srv.LimitStats().OutputWaits > 0 }, time.Minute, time.Millisecond,
		"a request waits for the flush")
	w.echo("the worker is served meanwhile")
	require.Zero(t, tb.queued("marker"), "the submit after the echoes waits for the flush")

	for range chunks {
		c.Expect(gearman.WorkData, job[0], data)
	}
	for range echoes {
		c.Expect(gearman.EchoRes, data)
	}
	c.ExpectCmd(gearman.JobCreated)
	require.NoError(t, <-wrote)
	require.Equal(t, 1, tb.queued("marker"))
}
