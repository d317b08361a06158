package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
)

// tlsFiles names the PEM files of the TLS setup (--tls-cert, --tls-key,
// --tls-client-ca). The files are read once at start.
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
func serverTLS(f tlsFiles, requireClientCert bool) (*tls.Config, error) {
	if f.cert == "" || f.key == "" {
		return nil, errors.New("TLS needs both --tls-cert and --tls-key")
	}
	cert, err := tls.LoadX509KeyPair(f.cert, f.key)
	if err != nil {
		return nil, fmt.Errorf("cannot load --tls-cert %s and --tls-key %s: %w", f.cert, f.key, err)
	}
	cfg := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
	}
	if f.clientCA != "" {
		pem, err := os.ReadFile(f.clientCA)
		if err != nil {
			return nil, fmt.Errorf("cannot read --tls-client-ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--tls-client-ca %s holds no PEM certificate", f.clientCA)
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.VerifyClientCertIfGiven
		if requireClientCert {
			cfg.ClientAuth = tls.RequireAndVerifyClientCert
		}
	}
	return cfg, nil
}

// certSubject describes the server certificate for the start-up log: its
// subject and expiry, nothing secret.
func certSubject(cfg *tls.Config) string {
	if len(cfg.Certificates) == 0 || len(cfg.Certificates[0].Certificate) == 0 {
		return ""
	}
	leaf, err := x509.ParseCertificate(cfg.Certificates[0].Certificate[0])
	if err != nil {
		return ""
	}
	return leaf.Subject.String() + " (expires " + leaf.NotAfter.UTC().Format("2006-01-02") + ")"
}
