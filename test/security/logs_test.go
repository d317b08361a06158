package security_test

import (
	"context"
	"crypto/tls"
	"encoding/pem"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/gearman"
	"github.com/gearwork/gearwork/internal/testcert"
	"github.com/gearwork/gearwork/internal/testserver"
)

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
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
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
