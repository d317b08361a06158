package security_test

import (
	"crypto/tls"
	"encoding/json"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/internal/testserver"
)

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

	// TLS 1.1 and older are refused.
	old, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: p.serverCA.Pool(), ServerName: "127.0.0.1",
		MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11})
	if err == nil {
		old.Close()
	}
	require.Error(t, err)
	ok, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: p.serverCA.Pool(), ServerName: "127.0.0.1",
		MinVersion: tls.VersionTLS12, MaxVersion: tls.VersionTLS12, NextProtos: []string{"h2", "http/1.1"}})
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
