package main

import (
	"crypto/tls"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/internal/testcert"
	"github.com/gearwork/gearwork/internal/testserver"
)

// TestServiceManagerNotifyAndReload runs serve as systemd's Type=notify
// would: it sends READY=1 once both ports listen, RELOADING=1 and READY=1
// around a SIGHUP, which reloads the TLS certificate (new connections get
// the renewed one), and STOPPING=1 when it stops.
func TestServiceManagerNotifyAndReload(t *testing.T) {
	t.Parallel()
	bin := testserver.Binary(t)
	dir := t.TempDir()
	sock := filepath.Join(dir, "notify.sock")
	notify, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	require.NoError(t, err)
	defer notify.Close()
	messages := make(chan string, 16)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := notify.Read(buf)
			if err != nil {
				close(messages)
				return
			}
			messages <- string(buf[:n])
		}
	}()
	next := func(what string) string {
		t.Helper()
		select {
		case m, ok := <-messages:
			require.True(t, ok, "notification socket closed while waiting for %s", what)
			return m
		case <-time.After(30 * time.Second):
			t.Fatalf("no %s notification", what)
			return ""
		}
	}

	ca := testcert.NewCA(t, "reload CA")
	certFile, keyFile := ca.Server(t).WriteFiles(t, dir, "server")
	cmd := exec.Command(bin, "serve", "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--store", "memory:",
		"--tls-cert", certFile, "--tls-key", keyFile)
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+sock)
	lines, exited := startLogged(t, cmd)

	ready := next("READY")
	require.True(t, strings.HasPrefix(ready, "READY=1\nSTATUS=serving 127.0.0.1:"), ready)
	addr := strings.TrimPrefix(ready, "READY=1\nSTATUS=serving ")
	var log strings.Builder
	for l := range lines { // READY comes after both listening lines
		log.WriteString(l + "\n")
		if strings.Contains(l, "HTTP API listening") {
			break
		}
	}
	require.Regexp(t, regexp.MustCompile(`msg="serve: listening" addr=`+regexp.QuoteMeta(addr)), log.String())

	serverCert := func() string {
		t.Helper()
		c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: ca.Pool(), ServerName: "localhost"})
		require.NoError(t, err)
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].SerialNumber.String()
	}
	first := serverCert()
	renewed := ca.Server(t)
	require.NoError(t, os.WriteFile(certFile, renewed.CertPEM, 0o600))
	require.NoError(t, os.WriteFile(keyFile, renewed.KeyPEM, 0o600))
	require.NoError(t, cmd.Process.Signal(syscall.SIGHUP))
	require.Equal(t, "RELOADING=1", next("RELOADING"))
	require.Equal(t, "READY=1", next("READY after the reload"))
	second := serverCert()
	require.NotEqual(t, first, second, "new connections get the renewed certificate")
	require.Equal(t, renewed.TLS.Leaf.SerialNumber.String(), second)

	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	require.Equal(t, "STOPPING=1", next("STOPPING"))
	for l := range lines {
		log.WriteString(l + "\n")
	}
	require.NoError(t, <-exited)
	require.Contains(t, log.String(), `msg="serve: SIGHUP: certificate reloaded" port=gearman`)
	require.Contains(t, log.String(), `msg="serve: SIGHUP: certificate reloaded" port=http`)
}
