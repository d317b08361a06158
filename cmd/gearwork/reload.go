package main

import (
	"log/slog"
)

// reload answers SIGHUP. Gearwork logs to stderr, which systemd's journal
// or the container runtime keeps, so there is no log file to reopen. What
// it reads again are the TLS certificates and keys of the Gearman port and
// the HTTP port (--tls-cert/--tls-key, --http-tls-cert/--http-tls-key):
// new connections get the renewed certificate, open ones keep theirs. A
// file that cannot be read or parsed is logged and the certificate in use
// stays. Everything else (flags, --config, the auth rules, the client CAs)
// needs a restart.
func reload(log *slog.Logger, gearmanCert *certificate, http *httpSetup) {
	sdNotify(log, "RELOADING=1")
	defer sdNotify(log, "READY=1")
	certs := []struct {
		port string
		cert *certificate
	}{{"gearman", gearmanCert}}
	if http != nil {
		certs = append(certs, struct {
			port string
			cert *certificate
		}{"http", http.cert})
	}
	reloaded := 0
	for _, c := range certs {
		if c.cert == nil {
			continue
		}
		if err := c.cert.reload(); err != nil {
			log.Error("serve: SIGHUP: keeping the certificate in use", slog.String("port", c.port), slog.String("error", err.Error()))
			continue
		}
		reloaded++
		log.Info("serve: SIGHUP: certificate reloaded", slog.String("port", c.port), slog.String("certificate", certSubject(c.cert)))
	}
	if reloaded == 0 {
		log.Info("serve: SIGHUP received: no TLS certificate to reload; logs go to stderr, nothing to reopen")
	}
}
