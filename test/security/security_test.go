// Package security_test runs the gearwork binary with TLS, mutual TLS and
// authorization rules and talks to it with real clients: Go's crypto/tls
// with the raw Gearman codec, openssl s_client, and Debian's gearman CLI
// where its build supports TLS.
package security_test

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/gearman"
	"github.com/gearwork/gearwork/internal/gearmantest/wire"
	"github.com/gearwork/gearwork/internal/testcert"
	"github.com/gearwork/gearwork/internal/testserver"
	"github.com/gearwork/gearwork/internal/testwait"
)

func TestMain(m *testing.M) { testserver.Main(m) }

// pki is a throwaway CA with a server certificate and files on disk.
type pki struct {
	dir               string
	ca                *testcert.CA
	caFile            string
	certFile, keyFile string
	serverKeyPEM      []byte
	clientKeyPEMs     [][]byte
	clientFiles       map[string][2]string
	clients           map[string]*testcert.Pair
	serverCA          *testcert.CA
	serverCAFile      string
}

func newPKI(t *testing.T, clientCNs ...string) *pki {
	t.Helper()
	p := &pki{dir: t.TempDir(), clientFiles: map[string][2]string{}, clients: map[string]*testcert.Pair{}}
	p.serverCA = testcert.NewCA(t, "server CA")
	p.serverCAFile = p.serverCA.WriteFile(t, p.dir, "server-ca")
	srv := p.serverCA.Server(t)
	p.serverKeyPEM = srv.KeyPEM
	p.certFile, p.keyFile = srv.WriteFiles(t, p.dir, "server")
	p.ca = testcert.NewCA(t, "client CA")
	p.caFile = p.ca.WriteFile(t, p.dir, "client-ca")
	for _, cn := range clientCNs {
		c := p.ca.Client(t, cn)
		p.clients[cn] = c
		p.clientKeyPEMs = append(p.clientKeyPEMs, c.KeyPEM)
		cf, kf := c.WriteFiles(t, p.dir, "client-"+cn)
		p.clientFiles[cn] = [2]string{cf, kf}
	}
	return p
}

func (p *pki) serverArgs(mutual bool) []string {
	args := []string{"--tls-cert", p.certFile, "--tls-key", p.keyFile}
	if mutual {
		args = append(args, "--tls-client-ca", p.caFile)
	}
	return args
}

// requireOldTLSRefused checks that the TLS port at addr refuses TLS 1.1 and
// older.
func (p *pki) requireOldTLSRefused(t *testing.T, addr string) {
	t.Helper()
	cfg := p.serverCA.ClientTLS()
	cfg.MinVersion, cfg.MaxVersion = tls.VersionTLS10, tls.VersionTLS11
	old, err := tls.Dial("tcp", addr, cfg)
	if err == nil {
		old.Close()
	}
	require.Error(t, err, "TLS 1.1 and older are refused")
}

// conn is a raw Gearman connection.
type conn struct{ *wire.Conn }

func (p *pki) dial(t *testing.T, addr, cn string) (*conn, error) {
	t.Helper()
	cfg := p.serverCA.ClientTLS()
	cfg.MinVersion = tls.VersionTLS12
	if cn != "" {
		cfg.Certificates = []tls.Certificate{p.clients[cn].TLS}
	}
	d := &net.Dialer{Timeout: time.Minute}
	nc, err := tls.DialWithDialer(d, "tcp", addr, cfg)
	if err != nil {
		return nil, err
	}
	return &conn{wire.New(t, nc)}, nil
}

func TestTLSWithGoClient(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	srv := testserver.Start(t, p.serverArgs(false)...)
	c, err := p.dial(t, srv.Addr, "")
	require.NoError(t, err)
	c.Send(gearman.EchoReq, "over TLS")
	c.Expect(gearman.EchoRes, "over TLS")
	c.Send(gearman.SubmitJobBg, "f", "", "payload")
	got, err := c.ReadPacket()
	require.NoError(t, err)
	require.Equal(t, gearman.JobCreated, gearman.Command(binary.BigEndian.Uint32(got[4:8])))

	p.requireOldTLSRefused(t, srv.Addr)
	// A plaintext Gearman client gets no answer and is disconnected.
	plain, err := net.Dial("tcp", srv.Addr)
	require.NoError(t, err)
	defer plain.Close()
	require.NoError(t, plain.SetDeadline(time.Now().Add(time.Minute)))
	_, err = plain.Write(wire.Packet(gearman.MagicReq, gearman.EchoReq, "plain"))
	require.NoError(t, err)
	rest, _ := io.ReadAll(plain)
	require.NotContains(t, string(rest), "plain")
}

func TestMutualTLSRequiresAClientCertificate(t *testing.T) {
	t.Parallel()
	p := newPKI(t, "worker-1")
	srv := testserver.Start(t, p.serverArgs(true)...)

	c, err := p.dial(t, srv.Addr, "worker-1")
	require.NoError(t, err)
	c.Send(gearman.EchoReq, "mutual")
	c.Expect(gearman.EchoRes, "mutual")
	_, err = c.NC.Write([]byte("maxqueue f 5\r\n"))
	require.NoError(t, err)
	line, err := c.R.ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "OK\r\n", line, "mTLS without rules: a verified client may run admin commands")

	anon, err := p.dial(t, srv.Addr, "")
	if err == nil {
		// With TLS 1.3 the server's refusal arrives on the first read.
		anon.Send(gearman.EchoReq, "anonymous")
		_, err = anon.ReadPacket()
	}
	require.Error(t, err)
}

func TestAuthRulesFromConfigFile(t *testing.T) {
	t.Parallel()
	p := newPKI(t, "web-1", "ops-alice")
	cfg := filepath.Join(p.dir, "gearwork.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte(`
functions:              # lifecycle policies share the file
  email.send: {max_attempts: 3, result_retention: 1h}
auth:
  rules:
    - name: web front ends
      match: {cn: ["web-*"]}
      allow: {submit: ["email.*"]}
      deny: {submit: ["email.internal"]}
    - name: operators
      match: {cn: ["ops-*"], address: ["127.0.0.0/8"]}
      allow: {admin: ["*"], serve: ["*"], read: ["email.*"]}
`), 0o600))
	srv := testserver.Start(t, append(p.serverArgs(true), "--config", cfg)...)

	web, err := p.dial(t, srv.Addr, "web-1")
	require.NoError(t, err)
	web.Send(gearman.SubmitJobBg, "email.internal", "", "x")
	web.Expect(gearman.Error, "PERMISSION_DENIED", "cn=web-1 addr=127.0.0.1 may not submit to email.internal")
	web.Send(gearman.CanDo, "email.send")
	web.Expect(gearman.Error, "PERMISSION_DENIED", "cn=web-1 addr=127.0.0.1 may not serve email.send")
	_, err = web.NC.Write([]byte("shutdown\r\n"))
	require.NoError(t, err)
	line, err := web.R.ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "ERR PERMISSION_DENIED cn=web-1+addr=127.0.0.1+may+not+run+shutdown\r\n", line)
	web.Send(gearman.SubmitJob, "email.send", "", "hello")
	created, err := web.ReadPacket()
	require.NoError(t, err)
	require.Equal(t, gearman.JobCreated, gearman.Command(binary.BigEndian.Uint32(created[4:8])))
	handle := string(created[gearman.HeaderSize:])

	ops, err := p.dial(t, srv.Addr, "ops-alice")
	require.NoError(t, err)
	ops.Send(gearman.CanDo, "email.send")
	ops.Send(gearman.GrabJob)
	ops.Expect(gearman.JobAssign, handle, "email.send", "hello")
	ops.Send(gearman.WorkComplete, handle, "sent")
	web.Expect(gearman.WorkComplete, handle, "sent")
	_, err = ops.NC.Write([]byte("drop function nothing\r\n"))
	require.NoError(t, err)
	line, err = ops.R.ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "ERR function not found\r\n", line, "ops may run admin commands")

	// State-changing lifecycle commands need admin, results need read.
	web.Send(gearman.SubmitJobBg, "email.send", "", "later")
	created, err = web.ReadPacket()
	require.NoError(t, err)
	bg := string(created[gearman.HeaderSize:])
	ops.Send(gearman.GrabJob)
	ops.Expect(gearman.JobAssign, bg, "email.send", "later")
	ops.Send(gearman.WorkComplete, bg, "sent")
	ops.Send(gearman.EchoReq, "sync")
	ops.Expect(gearman.EchoRes, "sync")
	for _, tc := range []struct{ line, want string }{
		{"pause email.send", "ERR PERMISSION_DENIED cn=web-1+addr=127.0.0.1+may+not+run+pause\r\n"},
		{"policy email.send max_attempts=0", "ERR PERMISSION_DENIED cn=web-1+addr=127.0.0.1+may+not+run+policy\r\n"},
		{"result " + bg, "ERR PERMISSION_DENIED cn=web-1+addr=127.0.0.1+may+not+read+email.send\r\n"},
	} {
		_, err = web.NC.Write([]byte(tc.line + "\r\n"))
		require.NoError(t, err)
		line, err = web.R.ReadString('\n')
		require.NoError(t, err)
		require.Equal(t, tc.want, line, tc.line)
	}
	_, err = ops.NC.Write([]byte("result " + bg + "\r\n"))
	require.NoError(t, err)
	for _, want := range []string{"OK 4\n", "sent\n"} {
		line, err = ops.R.ReadString('\n')
		require.NoError(t, err)
		require.Equal(t, want, line, "ops may read email.send's results")
	}
	require.True(t, srv.Alive())
}

func TestOpenSSLClient(t *testing.T) {
	t.Parallel()
	openssl := testserver.NeedCommand(t, "openssl")
	p := newPKI(t, "cli")
	srv := testserver.Start(t, p.serverArgs(true)...)
	ctx := testwait.Context(t)
	files := p.clientFiles["cli"]
	cmd := exec.CommandContext(ctx, openssl, "s_client", "-connect", srv.Addr, "-quiet",
		"-CAfile", p.serverCAFile, "-verify_return_error", "-cert", files[0], "-key", files[1])
	req := wire.Packet(gearman.MagicReq, gearman.EchoReq, "from openssl")
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	require.NoError(t, cmd.Start())
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	_, err = stdin.Write(req)
	require.NoError(t, err)
	want := wire.Packet(gearman.MagicRes, gearman.EchoRes, "from openssl")
	got := make([]byte, len(want))
	_, err = io.ReadFull(stdout, got)
	if err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatalf("reading openssl's output: %v\nopenssl stderr:\n%s\nserver log:\n%s", err, stderr.String(), srv.Log())
	}
	require.Equal(t, string(want), string(got))
}

// TestGearmanCLIThroughOpenSSL runs Debian's gearman CLI (libgearman) as a
// worker and a client against a TLS port with client certificates, each
// connection carried by openssl s_client. Debian's libgearman 1.1.20 has no
// TLS of its own (it links no TLS library; gearman -S sends plaintext, see
// docs/security.md), so OpenSSL is the TLS client here and libgearman
// writes and reads the Gearman packets inside it.
func TestGearmanCLIThroughOpenSSL(t *testing.T) {
	t.Parallel()
	cli := testserver.NeedCommand(t, "gearman")
	openssl := testserver.NeedCommand(t, "openssl")
	p := newPKI(t, "cli")
	srv := testserver.Start(t, p.serverArgs(true)...)
	files := p.clientFiles["cli"]
	host, port, err := net.SplitHostPort(tlsTunnel(t, openssl, srv.Addr,
		"-CAfile", p.serverCAFile, "-verify_return_error", "-cert", files[0], "-key", files[1]))
	require.NoError(t, err)
	ctx := testwait.Context(t)
	worker := exec.CommandContext(ctx, cli, "-h", host, "-p", port, "-w", "-f", "tls_fn", "-c", "1", "--", "tr", "a-z", "A-Z")
	var wout bytes.Buffer
	worker.Stdout, worker.Stderr = &wout, &wout
	require.NoError(t, worker.Start())
	out, err := exec.CommandContext(ctx, cli, "-h", host, "-p", port, "-f", "tls_fn", "over tls").CombinedOutput()
	require.NoError(t, err, "%s\nserver log:\n%s", out, srv.Log())
	require.Equal(t, "OVER TLS", string(out))
	require.NoError(t, worker.Wait(), "the worker ends after its one job: %s", wout.String())
}

// tlsTunnel listens on a loopback port and carries each connection made to
// it over TLS to addr with its own "openssl s_client -quiet" process (with
// the extra arguments), so that a client without TLS talks to a TLS port.
// It returns the port's address; everything stops when the test ends.
func tlsTunnel(t *testing.T, openssl, addr string, args ...string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var (
		mu    sync.Mutex
		procs []*exec.Cmd
		conns []net.Conn
		wg    sync.WaitGroup
	)
	wg.Go(func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			cmd := exec.Command(openssl, append([]string{"s_client", "-connect", addr, "-quiet"}, args...)...)
			cmd.Stdin, cmd.Stdout = nc, nc
			cmd.WaitDelay = time.Second
			mu.Lock()
			conns = append(conns, nc)
			if err := cmd.Start(); err != nil {
				t.Errorf("tunnel: starting openssl: %v", err)
				nc.Close()
			} else {
				procs = append(procs, cmd)
			}
			mu.Unlock()
		}
	})
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		for _, nc := range conns {
			nc.Close()
		}
		for _, cmd := range procs { // -quiet ignores end of input: stop each by its pid
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	return ln.Addr().String()
}

// TestRefusesExposedAddressWithoutAuthentication: the Gearman or HTTP port
// bound to a non-loopback address needs tokens or mutual TLS, or
// --insecure; the server refuses to start and says so.
func TestRefusesExposedAddressWithoutAuthentication(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	rules := filepath.Join(t.TempDir(), "rules.yaml")
	require.NoError(t, os.WriteFile(rules, []byte("auth:\n  rules:\n    - match: {address: [10.0.0.0/8]}\n      allow: {submit: ['*']}\n"), 0o600))
	for _, tc := range []struct {
		name string
		args []string
		want []string
		// notWant must not be in the output: the server did not start.
		notWant string
	}{
		{"gearman port", []string{"--listen", "0.0.0.0:0", "--http", "off"},
			[]string{"refusing to listen on 0.0.0.0:0 (--listen) without authentication", "--insecure"}, "serve: listening"},
		{"http port", []string{"--listen", "127.0.0.1:0", "--http", "0.0.0.0:0"},
			[]string{"gearwork: refusing to listen on 0.0.0.0:0 (--http) without authentication",
				"--http-tokens FILE", "--tls-client-ca", "--insecure"}, "listening"},
		// Server-side TLS alone authenticates nobody.
		{"http port with server TLS", append([]string{"--listen", "127.0.0.1:0", "--http", "0.0.0.0:0"}, p.serverArgs(false)...),
			[]string{"refusing to listen on 0.0.0.0:0 (--http)"}, ""},
		// Nor do the Gearman port's auth rules: they match Gearman
		// connections, not HTTP requests.
		{"http port with gearman auth rules", []string{"--listen", "0.0.0.0:0", "--config", rules, "--http", "[::]:0"},
			[]string{"refusing to listen on [::]:0 (--http)"}, ""},
		// Broken TLS settings for the HTTP port stop the server as well.
		{"http port with a certificate but no key", []string{"--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--http-tls-cert", p.certFile},
			[]string{"HTTP port: TLS needs both --tls-cert and --tls-key"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := serveRefused(t, tc.args...)
			for _, want := range tc.want {
				require.Contains(t, out, want)
			}
			if tc.notWant != "" {
				require.NotContains(t, out, tc.notWant)
			}
		})
	}
}

// serveRefused runs "gearwork serve" with args, which must refuse to start
// (exit code 2), and returns what it wrote.
func serveRefused(t *testing.T, args ...string) string {
	t.Helper()
	ctx := testwait.Context(t)
	out, code := testserver.Run(ctx, t, append([]string{"serve"}, args...)...)
	require.Equal(t, 2, code, out)
	return out
}

// TestHTTPOverTLS serves the HTTP API with the --tls-* files of the Gearman
// port and talks to it with curl, trusting only the throwaway CA.
func TestHTTPOverTLS(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	srv := testserver.Start(t, append(p.serverArgs(false), "--http", "127.0.0.1:0")...)
	addr := srv.HTTPAddr(t)
	base := "https://" + addr
	require.Regexp(t, `msg="serve: HTTP API listening" addr=\S+ tokens=0 tls=true certificate="CN=gearwork test server \(expires [-0-9]+\)" mutual=false`, srv.Log())

	out, code := testserver.Curl(t.Context(), t, "--cacert", p.serverCAFile, base+"/healthz")
	require.Equal(t, 0, code, out)

	// A job submitted over HTTPS is seen on the Gearman port (also TLS).
	out, code = testserver.Curl(t.Context(), t, "--cacert", p.serverCAFile, "-X", "POST", "--data-binary", "over https",
		base+"/v1/functions/tls_fn/jobs")
	require.Equal(t, 0, code, out)
	var job struct{ Handle, State string }
	require.NoError(t, json.Unmarshal([]byte(out), &job), out)
	require.NotEmpty(t, job.Handle)
	c, err := p.dial(t, srv.Addr, "")
	require.NoError(t, err)
	_, err = c.NC.Write([]byte("status\n"))
	require.NoError(t, err)
	line, err := c.R.ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "tls_fn\t1\t0\t0\n", line)

	// curl's own trust store does not know the throwaway CA.
	out, code = testserver.Curl(t.Context(), t, base+"/healthz")
	require.NotEqual(t, 0, code, out)
	// Plain HTTP to the TLS port is answered with 400 by net/http.
	out, code = testserver.Curl(t.Context(), t, "-w", "%{http_code}", "http://"+addr+"/healthz")
	require.Equal(t, 0, code, out)
	require.Contains(t, out, "400")

	p.requireOldTLSRefused(t, addr)
	cfg := p.serverCA.ClientTLS()
	cfg.MinVersion, cfg.MaxVersion, cfg.NextProtos = tls.VersionTLS12, tls.VersionTLS12, []string{"h2", "http/1.1"}
	ok, err := tls.Dial("tcp", addr, cfg)
	require.NoError(t, err, "TLS 1.2 is accepted")
	require.Equal(t, "http/1.1", ok.ConnectionState().NegotiatedProtocol, "HTTP/1.1 only")
	ok.Close()
}

// TestHTTPMutualTLS: with --tls-client-ca the HTTP port requires a client
// certificate signed by that CA; --http-tls-client-ca off lifts that for
// the HTTP port alone.
func TestHTTPMutualTLS(t *testing.T) {
	t.Parallel()
	p := newPKI(t, "web-1")
	srv := testserver.Start(t, append(p.serverArgs(true), "--http", "127.0.0.1:0")...)
	base := "https://" + srv.HTTPAddr(t)
	require.Contains(t, srv.Log(), "mutual=true")
	certFile, keyFile := p.clientFiles["web-1"][0], p.clientFiles["web-1"][1]

	out, code := testserver.Curl(t.Context(), t, "--cacert", p.serverCAFile, "--cert", certFile, "--key", keyFile, base+"/v1/functions")
	require.Equal(t, 0, code, out)
	require.True(t, json.Valid([]byte(out)), out)

	out, code = testserver.Curl(t.Context(), t, "--cacert", p.serverCAFile, base+"/v1/functions")
	require.NotEqual(t, 0, code, "no client certificate: the handshake fails: %s", out)
	require.NotContains(t, out, "[")

	// A certificate from another CA (here the server CA's own server
	// certificate, valid but not a client CA's) is refused too.
	out, code = testserver.Curl(t.Context(), t, "--cacert", p.serverCAFile, "--cert", p.certFile, "--key", p.keyFile, base+"/v1/functions")
	require.NotEqual(t, 0, code, out)

	// The Gearman port keeps requiring certificates; the HTTP port
	// does not with --http-tls-client-ca off (loopback, no tokens).
	open := testserver.Start(t, append(p.serverArgs(true), "--http", "127.0.0.1:0", "--http-tls-client-ca", "off")...)
	out, code = testserver.Curl(t.Context(), t, "--cacert", p.serverCAFile, "https://"+open.HTTPAddr(t)+"/v1/functions")
	require.Equal(t, 0, code, out)
	require.Contains(t, open.Log(), "mutual=false")
	anon, err := p.dial(t, open.Addr, "")
	if err == nil {
		_, err = anon.NC.Write([]byte("status\n"))
		if err == nil {
			_, err = anon.R.ReadString('\n')
		}
	}
	require.Error(t, err, "the Gearman port still requires a client certificate")
}

// TestHTTPTLSHandshakeTimeout: a client that connects to the HTTPS port
// and never starts the handshake is disconnected by the handshake
// deadline (--tls-handshake-timeout), which the server logs.
func TestHTTPTLSHandshakeTimeout(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	srv := testserver.Start(t, append(p.serverArgs(false), "--http", "127.0.0.1:0",
		"--tls-handshake-timeout", "200ms", "--log-level", "debug")...)
	nc, err := net.Dial("tcp", srv.HTTPAddr(t))
	require.NoError(t, err)
	defer nc.Close()
	require.NoError(t, nc.SetReadDeadline(time.Now().Add(time.Minute)))
	n, err := nc.Read(make([]byte, 1))
	require.Equal(t, 0, n)
	var ne net.Error
	require.False(t, errors.As(err, &ne) && ne.Timeout(), "the server, not the client's own deadline, ends the connection: %v", err)
	local := nc.LocalAddr().String()
	deadline := time.Now().Add(time.Minute)
	for !strings.Contains(srv.Log(), "TLS handshake error from "+local) {
		require.True(t, time.Now().Before(deadline), "no handshake error logged for %s:\n%s", local, srv.Log())
		time.Sleep(10 * time.Millisecond)
	}
	for _, l := range strings.Split(srv.Log(), "\n") {
		if strings.Contains(l, "TLS handshake error from "+local) {
			require.Contains(t, l, "i/o timeout")
		}
	}
}

// secretFragments returns pieces of a PEM private key that must never be
// logged: its type line and every line of its base64 body.
func secretFragments(t *testing.T, keyPEM []byte) []string {
	t.Helper()
	block, _ := pem.Decode(keyPEM)
	require.NotNil(t, block)
	frags := []string{"PRIVATE KEY"}
	for _, line := range strings.Split(string(keyPEM), "\n") {
		if len(line) >= 16 && !strings.HasPrefix(line, "-----") {
			frags = append(frags, line)
		}
	}
	return frags
}

// TestNoSecretsInLogs runs the server at debug level with mutual TLS and
// rules, provokes every kind of failure it logs (failed handshakes,
// plaintext on the TLS port, a foreign client certificate, denied
// requests, bad frames), and checks that no key material appears in its
// log, nor in the errors of a start-up with broken key files.
func TestNoSecretsInLogs(t *testing.T) {
	t.Parallel()
	p := newPKI(t, "web-1")
	cfg := filepath.Join(p.dir, "gearwork.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte("auth:\n  rules:\n    - match: {cn: [web-*]}\n      allow: {submit: [ok]}\n"), 0o600))
	srv := testserver.Start(t, append(p.serverArgs(true), "--config", cfg, "--log-level", "debug")...)

	// Plaintext and garbage on the TLS port.
	for _, junk := range []string{"status\r\n", "\x00REQ\x00\x00\x00\x10\x00\x00\x00\x00", "\x16\x03\x01\x00\x05hello"} {
		nc, err := net.Dial("tcp", srv.Addr)
		require.NoError(t, err)
		require.NoError(t, nc.SetDeadline(time.Now().Add(time.Minute)))
		_, _ = nc.Write([]byte(junk))
		_, _ = io.ReadAll(nc)
		nc.Close()
	}
	// A client certificate from another CA.
	foreign := testcert.NewCA(t, "foreign").Client(t, "web-1")
	fc, err := tls.Dial("tcp", srv.Addr, &tls.Config{RootCAs: p.serverCA.Pool(), ServerName: "127.0.0.1",
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &foreign.TLS, nil }})
	if err == nil {
		require.NoError(t, fc.SetDeadline(time.Now().Add(time.Minute)))
		_, _ = fc.Read(make([]byte, 1))
		fc.Close()
	}
	// Denied requests and a bad frame from a verified client.
	c, err := p.dial(t, srv.Addr, "web-1")
	require.NoError(t, err)
	c.Send(gearman.SubmitJob, "forbidden", "", "x")
	c.Expect(gearman.Error, "PERMISSION_DENIED", "cn=web-1 addr=127.0.0.1 may not submit to forbidden")
	_, err = c.NC.Write([]byte("\x00XXX\x00\x00\x00\x01\x00\x00\x00\x00"))
	require.NoError(t, err)
	_, _ = io.ReadAll(c.R)

	srv.Stop()
	log := srv.Log()
	// The log must show the failures, or the test proves nothing.
	require.Contains(t, log, "TLS handshake failed")
	require.Contains(t, log, "permission denied")
	require.Contains(t, log, "bad header")
	secrets := secretFragments(t, p.serverKeyPEM)
	for _, k := range p.clientKeyPEMs {
		secrets = append(secrets, secretFragments(t, k)...)
	}
	secrets = append(secrets, secretFragments(t, foreign.KeyPEM)...)
	for _, s := range secrets {
		require.NotContains(t, log, s)
	}

	// Start-up errors with broken key files name the files only.
	ctx := testwait.Context(t)
	for _, args := range [][]string{
		{"--tls-cert", p.keyFile, "--tls-key", p.certFile},
		{"--tls-cert", p.certFile, "--tls-key", p.certFile},
		{"--tls-cert", p.keyFile, "--tls-key", p.keyFile},
		{"--tls-cert", p.certFile, "--tls-key", p.keyFile, "--tls-client-ca", p.keyFile},
	} {
		out, code := testserver.Run(ctx, t, append([]string{"serve", "--listen", "127.0.0.1:0", "--http", "off"}, args...)...)
		require.NotEqual(t, 0, code, out)
		require.Contains(t, out, "gearwork:")
		for _, s := range secretFragments(t, p.serverKeyPEM) {
			require.NotContains(t, out, s, "args %v", args)
		}
	}
}

// TestBatchOfAnotherTenantCannotBeJoined: a job joins a batch by the
// unique "batch:ID", and the batch's jobs decide whether and when its
// callbacks are submitted. A peer allowed to submit only its own
// functions must not add jobs to a batch whose callbacks it may not
// submit: a job of its that fails (or never runs) would keep the other
// tenant's on_success callback from ever firing.
func TestBatchOfAnotherTenantCannotBeJoined(t *testing.T) {
	t.Parallel()
	p := newPKI(t, "billing-1", "web-1")
	cfg := filepath.Join(p.dir, "gearwork.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte(`
auth:
  rules:
    - match: {cn: ["billing-*"]}
      allow: {submit: ["billing.*"]}
    - match: {cn: ["web-*"]}
      allow: {submit: ["email.*"]}
`), 0o600))
	srv := testserver.Start(t, append(p.serverArgs(true), "--config", cfg)...)
	billing, err := p.dial(t, srv.Addr, "billing-1")
	require.NoError(t, err)
	web, err := p.dial(t, srv.Addr, "web-1")
	require.NoError(t, err)
	create := func(c *conn, args string) string {
		t.Helper()
		c.Write([]byte("batch create " + args + "\r\n"))
		line := c.Line()
		id, ok := strings.CutPrefix(line, "OK ")
		require.True(t, ok, "batch create %s: %q", args, line)
		return strings.TrimSpace(id)
	}

	theirs := create(billing, "on_success=billing.report")
	web.Send(gearman.SubmitJobBg, "email.send", "batch:"+theirs, "x")
	web.Expect(gearman.Error, "PERMISSION_DENIED",
		"cn=web-1 addr=127.0.0.1 may not submit to billing.report (a callback of batch "+theirs+")")
	web.Send(gearman.SubmitJobBg, "email.send", "batch:"+theirs+":u1", "x")
	web.ExpectCmd(gearman.Error)
	billing.Write([]byte("batch " + theirs + "\r\n"))
	var status []string
	for l := billing.Line(); l != ".\n"; l = billing.Line() {
		status = append(status, l)
	}
	require.Contains(t, status, "total\t0\n", "the refused jobs joined nothing")

	// Its own batches, and batches without callbacks, it may join.
	mine := create(web, "on_complete=email.report")
	web.Send(gearman.SubmitJobBg, "email.send", "batch:"+mine, "x")
	web.ExpectCmd(gearman.JobCreated)
	plain := create(billing, "")
	web.Send(gearman.SubmitJobBg, "email.send", "batch:"+plain, "x")
	web.ExpectCmd(gearman.JobCreated)
	// The batch's owner joins it as before.
	billing.Send(gearman.SubmitJobBg, "billing.invoice", "batch:"+theirs, "x")
	billing.ExpectCmd(gearman.JobCreated)
}

// TestHTTPFollowsAuthRulesForCertificates: with authorization rules and
// mutual TLS but no tokens, a client certificate may do over HTTP what the
// rules let it do on the Gearman port, and no more. A certificate the rules
// limit to submitting e-mail jobs could submit to any function, pause it,
// read every job and take jobs of any function over HTTP.
func TestHTTPFollowsAuthRulesForCertificates(t *testing.T) {
	t.Parallel()
	p := newPKI(t, "web-1", "ops-alice")
	cfg := filepath.Join(p.dir, "gearwork.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte(`
auth:
  rules:
    - name: web front ends
      match: {cn: ["web-*"]}
      allow: {submit: ["email.*"]}
    - name: operators
      match: {cn: ["ops-*"]}
      allow: {admin: ["*"], serve: ["*"], read: ["*"], submit: ["*"]}
`), 0o600))
	srv := testserver.Start(t, append(p.serverArgs(true), "--config", cfg, "--http", "127.0.0.1:0")...)
	base := "https://" + srv.HTTPAddr(t)
	// call sends a request as cn and returns the status and body.
	call := func(cn, method, path, body string) (int, string) {
		t.Helper()
		out, code := testserver.Curl(t.Context(), t, "--cacert", p.serverCAFile, "--cert", p.clientFiles[cn][0],
			"--key", p.clientFiles[cn][1], "-X", method, "--data-binary", body, "-w", "\n%{http_code}", base+path)
		require.Equal(t, 0, code, out)
		i := strings.LastIndexByte(out, '\n')
		require.GreaterOrEqual(t, i, 0, out)
		status, err := strconv.Atoi(out[i+1:])
		require.NoError(t, err, out)
		return status, out[:i]
	}

	status, body := call("ops-alice", "POST", "/v1/functions/billing/jobs", "invoice for alice")
	require.Equal(t, 202, status, body)
	var billing struct{ Handle string }
	require.NoError(t, json.Unmarshal([]byte(body), &billing))

	for _, tc := range []struct{ method, path, body string }{
		{"POST", "/v1/functions/billing/jobs", "forged"},
		{"POST", "/v1/functions/billing/pause", ""},
		{"DELETE", "/v1/jobs/" + billing.Handle, ""},
		{"GET", "/v1/jobs", ""},
		{"GET", "/v1/jobs/" + billing.Handle, ""},
		{"POST", "/v1/functions/billing/grab", ""},
		{"POST", "/v1/jobs:batch", `{"function":"billing","payload":"forged"}`},
		{"DELETE", "/v1/dead-letters?function=billing", ""},
	} {
		status, body := call("web-1", tc.method, tc.path, tc.body)
		require.Equal(t, 403, status, "%s %s: %s", tc.method, tc.path, body)
		require.Contains(t, body, "cn=web-1 addr=127.0.0.1 may not", "%s %s", tc.method, tc.path)
		require.NotContains(t, body, "invoice", "%s %s", tc.method, tc.path)
	}
	// What the rules allow, and what the Gearman port shows everyone.
	status, body = call("web-1", "POST", "/v1/functions/email.send/jobs", "hello")
	require.Equal(t, 202, status, body)
	status, body = call("web-1", "GET", "/v1/functions", "")
	require.Equal(t, 200, status, body)

	// Nothing of billing changed: its job is queued, alone, not paused.
	status, body = call("ops-alice", "GET", "/v1/jobs?function=billing", "")
	require.Equal(t, 200, status, body)
	require.Equal(t, 1, strings.Count(body, `"handle"`), body)
	require.Contains(t, body, `"state":"queued"`)
	status, body = call("ops-alice", "GET", "/v1/functions?function=billing", "")
	require.Equal(t, 200, status, body)
	require.NotContains(t, body, `"paused":true`)
	status, body = call("ops-alice", "POST", "/v1/functions/billing/grab", "")
	require.Equal(t, 200, status, body)
	require.Contains(t, body, billing.Handle, "the operator's rules let it serve billing")
}
