package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
)

// tlsFiles names the PEM files of the TLS setup (--tls-cert, --tls-key,
// --tls-client-ca). The files are read at start; the certificate and key
// again on SIGHUP (certificate.reload), the client CAs only at start.
type tlsFiles struct {
	cert, key, clientCA string
}

func (f tlsFiles) enabled() bool { return f.cert != "" || f.key != "" || f.clientCA != "" }

// serverTLS builds the TLS configuration for the Gearman port (and any
// other port that serves TLS): TLS 1.2 or later with Go's default cipher
// suites. With a client CA, clients must present a certificate signed by
// it (requireClientCert), or may present one (otherwise; the authorization
// rules then decide what connections without one may do). Errors name the
// file but never include its contents.
func serverTLS(f tlsFiles, requireClientCert bool) (*tls.Config, *certificate, error) {
	if f.cert == "" || f.key == "" {
		return nil, nil, errors.New("TLS needs both --tls-cert and --tls-key")
	}
	c := &certificate{files: f}
	if err := c.reload(); err != nil {
		return nil, nil, err
	}
	cfg := &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: c.get,
	}
	if f.clientCA != "" {
		pem, err := os.ReadFile(f.clientCA)
		if err != nil {
			return nil, nil, fmt.Errorf("cannot read --tls-client-ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, nil, fmt.Errorf("--tls-client-ca %s holds no PEM certificate", f.clientCA)
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.VerifyClientCertIfGiven
		if requireClientCert {
			cfg.ClientAuth = tls.RequireAndVerifyClientCert
		}
	}
	return cfg, c, nil
}

// certificate is a server certificate that SIGHUP can replace: handshakes
// use the one loaded last, so that a renewed certificate takes effect
// without a restart.
type certificate struct {
	files tlsFiles
	cur   atomic.Pointer[tls.Certificate]
}

// reload reads the certificate and key files again; on an error the
// certificate in use stays.
func (c *certificate) reload() error {
	cert, err := tls.LoadX509KeyPair(c.files.cert, c.files.key)
	if err != nil {
		return fmt.Errorf("cannot load --tls-cert %s and --tls-key %s: %w", c.files.cert, c.files.key, err)
	}
	c.cur.Store(&cert)
	return nil
}

func (c *certificate) get(*tls.ClientHelloInfo) (*tls.Certificate, error) { return c.cur.Load(), nil }

// certSubject describes the server certificate for the log: its subject
// and expiry, nothing secret.
func certSubject(c *certificate) string {
	if c == nil {
		return ""
	}
	cert := c.cur.Load()
	if cert == nil || len(cert.Certificate) == 0 {
		return ""
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		return ""
	}
	return leaf.Subject.String() + " (expires " + leaf.NotAfter.UTC().Format("2006-01-02") + ")"
}
