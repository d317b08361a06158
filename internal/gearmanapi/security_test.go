package gearmanapi

import (
	"crypto/tls"
	"net"
	"strings"
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
