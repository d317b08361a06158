package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/internal/auth"
	"github.com/gearwork/gearwork/internal/testcert"
)

func TestParseAuthConfig(t *testing.T) {
	t.Parallel()
	cfg, err := parseAuthConfig([]byte(`
functions:            # another section, read elsewhere
  email: {retries: 3}
auth:
  rules:
    - name: web
      match: {cn: ["web-*"], address: ["10.0.0.0/8"]}
      allow: {submit: ["email.*"]}
      deny: {submit: ["email.secret"]}
    - match: {any: true}
      allow: {admin: ["cancel job"]}
`))
	require.NoError(t, err)
	require.Equal(t, &auth.Config{Rules: []auth.RuleConfig{
		{Name: "web", Match: auth.MatchConfig{CommonName: []string{"web-*"}, Address: []string{"10.0.0.0/8"}},
			Allow: auth.Permissions{Submit: []string{"email.*"}}, Deny: auth.Permissions{Submit: []string{"email.secret"}}},
		{Match: auth.MatchConfig{Any: true}, Allow: auth.Permissions{Admin: []string{"cancel job"}}},
	}}, cfg)

	none, err := parseAuthConfig([]byte("functions: {}\n"))
	require.NoError(t, err)
	require.Nil(t, none)

	_, err = parseAuthConfig([]byte("auth:\n  rules:\n    - match: {any: true}\n      alow: {submit: ['*']}\n"))
	require.EqualError(t, err, `auth: line 4: unknown key "alow"`, "a misspelt key must not be ignored, and the error names its line in the file")
	_, err = parseAuthConfig([]byte("functions: {}\nauth:\n  rules:\n    - match: {cn: web}\n"))
	require.EqualError(t, err, `auth: line 4: want a list, not "web"`)
	_, err = parseAuthConfig([]byte("auth: [\n"))
	require.ErrorContains(t, err, "invalid YAML")
}

func FuzzParseAuthConfig(f *testing.F) {
	f.Add([]byte("auth:\n  rules:\n    - match: {any: true}\n      allow: {submit: ['*']}\n"))
	f.Add([]byte("auth: {rules: [{match: {cn: [a*], address: ['10.0.0.0/8', '::1']}, deny: {admin: ['*']}}]}"))
	f.Add([]byte("x: 1\nauth:\n  rules: []\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := parseAuthConfig(data)
		if err != nil || cfg == nil {
			return
		}
		p, err := auth.New(*cfg)
		if err != nil {
			return
		}
		// A compiled policy answers without panicking, and a zero
		// identity (unknown address, no certificate) is matched only by
		// "any" rules.
		id := auth.Identity{}
		anyRule := false
		for _, r := range cfg.Rules {
			anyRule = anyRule || r.Match.Any
		}
		if !anyRule {
			require.False(t, p.Grant(id).Any())
		}
	})
}

func TestCheckExposure(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	log := slog.New(slog.DiscardHandler)
	for _, addr := range []string{"127.0.0.1:4730", "[::1]:4730", "localhost:4730", "127.9.9.9:0"} {
		require.False(t, exposed(ctx, addr), addr)
		require.NoError(t, checkExposure(ctx, gearmanPort(addr), false, false, log), addr)
		require.NoError(t, checkExposure(ctx, httpPort(addr), false, false, log), addr)
	}
	for _, addr := range []string{":4730", "0.0.0.0:4730", "[::]:4730", "192.0.2.1:4730", "no-such-host.invalid:4730", "junk"} {
		require.True(t, exposed(ctx, addr), addr)
	}
	err := checkExposure(ctx, gearmanPort("0.0.0.0:4730"), false, false, log)
	var ex exitError
	require.ErrorAs(t, err, &ex)
	require.Equal(t, exitUsage, ex.code)
	require.Contains(t, ex.msg, "refusing to listen on 0.0.0.0:4730 (--listen) without authentication")
	require.Contains(t, ex.msg, "--tls-client-ca")
	require.Contains(t, ex.msg, "--insecure")
	require.NoError(t, checkExposure(ctx, gearmanPort("0.0.0.0:4730"), true, false, log))
	var buf bytes.Buffer
	require.NoError(t, checkExposure(ctx, gearmanPort("0.0.0.0:4730"), false, true, slog.New(slog.NewTextHandler(&buf, nil))))
	require.Contains(t, buf.String(), "without authentication (--insecure)")

	err = checkExposure(ctx, httpPort(":4780"), false, false, log)
	require.ErrorAs(t, err, &ex)
	require.Equal(t, exitUsage, ex.code)
	require.Contains(t, ex.msg, "refusing to listen on :4780 (--http) without authentication")
	require.Contains(t, ex.msg, "--http-tokens FILE")
	require.Contains(t, ex.msg, "--http 127.0.0.1:4780")
	require.NotContains(t, ex.msg, "auth: section", "the auth rules do not apply to the HTTP port")
	require.NoError(t, checkExposure(ctx, httpPort(":4780"), true, false, log))
}

func TestHTTPLoad(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := testcert.NewCA(t, "ca")
	cert, key := ca.Server(t).WriteFiles(t, dir, "server")
	cert2, key2 := ca.Server(t).WriteFiles(t, dir, "http")
	caFile := ca.WriteFile(t, dir, "ca")
	tokens := filepath.Join(dir, "tokens")
	require.NoError(t, os.WriteFile(tokens, []byte("ci submit,read s3cret\n"), 0o600))
	shared := tlsFiles{cert: cert, key: key, clientCA: caFile}

	off, err := httpFlags{addr: "off"}.load(shared, time.Second, false)
	require.NoError(t, err)
	require.Nil(t, off)

	plain, err := httpFlags{addr: "127.0.0.1:0"}.load(tlsFiles{}, time.Second, false)
	require.NoError(t, err)
	require.Nil(t, plain.tls)
	require.False(t, plain.authenticated())
	require.Zero(t, plain.cfg.ReadHeaderTimeout, "the HTTP API's default")

	// The --tls-* files apply to the HTTP port too; a client CA makes a
	// certificate mandatory there.
	h, err := httpFlags{addr: "127.0.0.1:0"}.load(shared, 3*time.Second, false)
	require.NoError(t, err)
	require.EqualValues(t, tls.VersionTLS12, h.tls.MinVersion)
	require.Equal(t, tls.RequireAndVerifyClientCert, h.tls.ClientAuth)
	require.Equal(t, []string{"http/1.1"}, h.tls.NextProtos)
	require.Equal(t, 3*time.Second, h.cfg.ReadHeaderTimeout, "--tls-handshake-timeout bounds the handshake")
	require.True(t, h.authenticated())

	// Own files, no client CA: server TLS only, tokens authenticate.
	h, err = httpFlags{addr: "127.0.0.1:0", tokensFile: tokens, tls: tlsFiles{cert: cert2, key: key2, clientCA: "off"}}.load(shared, time.Second, true)
	require.NoError(t, err)
	require.Nil(t, h.tls.ClientCAs)
	require.Equal(t, tls.NoClientCert, h.tls.ClientAuth)
	require.Len(t, h.cfg.Tokens, 1)
	require.True(t, h.authenticated())
	require.True(t, h.cfg.AllowRemote, "--insecure")
	served, err := h.tls.GetCertificate(nil)
	require.NoError(t, err)
	leaf, err := x509.ParseCertificate(served.Certificate[0])
	require.NoError(t, err)
	want, err := tls.LoadX509KeyPair(cert2, key2)
	require.NoError(t, err)
	require.Equal(t, want.Certificate[0], leaf.Raw, "the HTTP port's own certificate")

	h, err = httpFlags{addr: "127.0.0.1:0", tls: tlsFiles{cert: "off"}}.load(shared, time.Second, false)
	require.NoError(t, err)
	require.Nil(t, h.tls, "--http-tls-cert off: plain HTTP")
	require.False(t, h.authenticated())

	_, err = httpFlags{addr: "127.0.0.1:0", tls: tlsFiles{cert: "off", clientCA: caFile}}.load(shared, time.Second, false)
	require.ErrorContains(t, err, "--http-tls-client-ca needs TLS")
	_, err = httpFlags{addr: "127.0.0.1:0", tls: tlsFiles{clientCA: caFile}}.load(tlsFiles{}, time.Second, false)
	require.ErrorContains(t, err, "HTTP port: TLS needs both")
	_, err = httpFlags{addr: "127.0.0.1:0", tokensFile: filepath.Join(dir, "missing")}.load(tlsFiles{}, time.Second, false)
	require.ErrorContains(t, err, "--http-tokens")
}

func TestSecurityLoad(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := testcert.NewCA(t, "ca")
	cert, key := ca.Server(t).WriteFiles(t, dir, "server")
	caFile := ca.WriteFile(t, dir, "ca")
	write := func(name, s string) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte(s), 0o600))
		return p
	}
	base := securityConfig{maxPacketUnauth: 1, handshakeTimeout: 1}

	plain := base
	s, err := plain.load("")
	require.NoError(t, err)
	require.False(t, s.authenticated())
	require.Nil(t, s.tls)

	tlsOnly := base
	tlsOnly.tls = tlsFiles{cert: cert, key: key}
	s, err = tlsOnly.load("")
	require.NoError(t, err)
	require.False(t, s.authenticated(), "server-only TLS authenticates nobody")
	require.EqualValues(t, 0x0303, s.tls.MinVersion, "TLS 1.2 at least")

	mtls := tlsOnly
	mtls.tls.clientCA = caFile
	s, err = mtls.load("")
	require.NoError(t, err)
	require.True(t, s.authenticated())
	require.Equal(t, "RequireAndVerifyClientCert", s.tls.ClientAuth.String(), "mTLS without rules requires a certificate")
	require.True(t, s.policy.Allow(auth.Identity{Verified: true}, auth.ActionAdmin, "shutdown"))
	require.False(t, s.policy.Allow(auth.Identity{}, auth.ActionSubmit, "f"))

	rulesFile := write("rules.yaml", "functions:\n  f: {max_attempts: 2}\nauth:\n  rules:\n    - match: {cn: [ops]}\n      allow: {admin: ['*']}\n")
	s, err = mtls.load(rulesFile)
	require.NoError(t, err)
	require.Equal(t, "VerifyClientCertIfGiven", s.tls.ClientAuth.String(), "rules decide about connections without a certificate")

	s, err = base.load(write("addr.yaml", "auth:\n  rules:\n    - match: {address: [10.0.0.0/8]}\n      allow: {submit: ['*']}\n"))
	require.NoError(t, err)
	require.True(t, s.authenticated())

	_, err = base.load(rulesFile)
	require.ErrorContains(t, err, "mutual TLS is off")

	_, err = base.load(write("empty.yaml", "auth:\n  rules: []\n"))
	require.ErrorIs(t, err, auth.ErrNoRules)

	keyOnly := base
	keyOnly.tls = tlsFiles{key: key}
	_, err = keyOnly.load("")
	require.ErrorContains(t, err, "both --tls-cert and --tls-key")

	swapped := base
	swapped.tls = tlsFiles{cert: key, key: cert}
	_, err = swapped.load("")
	require.Error(t, err)
	keyPEM, rerr := os.ReadFile(key)
	require.NoError(t, rerr)
	require.NotContains(t, err.Error(), string(keyPEM[30:60]), "errors never quote key material")
}
