package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/gearwork/gearwork/internal/auth"
	"github.com/gearwork/gearwork/internal/broker"
	"github.com/gearwork/gearwork/internal/config"
)

// securityConfig holds the serve flags for transport security,
// authorization and limits.
type securityConfig struct {
	tls              tlsFiles
	handshakeTimeout time.Duration
	insecure         bool

	maxConnections  int
	maxPerAddress   int
	maxPacketUnauth int
	readTimeout     time.Duration
	writeTimeout    time.Duration
	maxOutput       int
	maxQueuedBytes  int64
	maxRecordBytes  int64
	maxFunctions    int
	maxWorkerFns    int
	maxOpenBatches  int
}

func (sc *securityConfig) register(fs *flag.FlagSet) {
	fs.StringVar(&sc.tls.cert, "tls-cert", "", "PEM `file` with the server certificate (chain); enables TLS on the Gearman port and the HTTP port")
	fs.StringVar(&sc.tls.key, "tls-key", "", "PEM `file` with the server certificate's private key")
	fs.StringVar(&sc.tls.clientCA, "tls-client-ca", "", "PEM `file` with the CAs that sign client certificates; enables mutual TLS: identities for the auth rules on the Gearman port, a certificate required on the HTTP port")
	fs.DurationVar(&sc.handshakeTimeout, "tls-handshake-timeout", 10*time.Second, "close connections whose TLS handshake takes longer than this `duration`; on the HTTP port with TLS it also bounds reading each request's header")
	fs.BoolVar(&sc.insecure, "insecure", false, "allow listening on a non-loopback address without authentication (anyone who can connect may submit, serve and run admin commands; without --http-tokens the HTTP API then serves every client)")
	fs.IntVar(&sc.maxConnections, "max-connections", 10000, "most open Gearman connections; more are closed at accept; 0 means no limit (either way at most the open file limit less a reserve for the store)")
	fs.IntVar(&sc.maxPerAddress, "max-connections-per-address", 0, "most open Gearman connections from one source IPv4 address or IPv6 /64 network (a host may use any address of its /64), so one host cannot take them all; more are closed at accept; 0 means no limit")
	sc.maxPacketUnauth = 16 << 10
	fs.Var(sizeValue[int]{&sc.maxPacketUnauth}, "max-packet-unauthenticated", "largest packet body (a `size` such as 16KiB) from a connection the auth rules grant nothing")
	fs.DurationVar(&sc.readTimeout, "read-timeout", 30*time.Second, "close a connection whose packet or admin line does not complete within this `duration` of its first byte, or of its last 256 KiB for at most 16 connections at a time (idle time between packets is not limited); 0 disables")
	fs.DurationVar(&sc.writeTimeout, "write-timeout", 60*time.Second, "close a connection that does not read its answers for this `duration`; 0 disables")
	fs.Var(sizeValue[int]{&sc.maxOutput}, "max-output", "unread output (a `size` such as 256MiB) one connection may accumulate before it is dropped as a slow reader (default max(4 × max-packet, 64MiB))")
	sc.maxQueuedBytes = 1 << 30
	fs.Var(sizeValue[int64]{&sc.maxQueuedBytes}, "max-queued-bytes", "memory budget (a `size` such as 1GiB) for the payloads of live jobs and batch callbacks; submits beyond it get \"Job queue is full\"; 0 means no budget")
	sc.maxRecordBytes = broker.DefaultMaxRecordBytes
	fs.Var(sizeValue[int64]{&sc.maxRecordBytes}, "max-record-bytes", "memory (a `size` such as 256MiB) for the records of ended jobs the server keeps in memory (all of them with --store memory:, those not yet written otherwise), across functions; beyond it the records of the jobs that ended first are forgotten first, whatever history and history_max allow; 0 means no bound, else at least 1MiB")
	fs.IntVar(&sc.maxFunctions, "max-functions", broker.DefaultMaxFunctions, "most function names the server knows (each costs about a kilobyte until \"drop function\"); at the limit a new name makes it forget the function that has held nothing longest (no jobs, workers, pause or policy), and a submit or admin command naming a new one gets TOO_MANY_FUNCTIONS only when every one holds something (a CAN_DO is then ignored); 0 means no limit")
	fs.IntVar(&sc.maxOpenBatches, "max-open-batches", broker.DefaultMaxOpenBatches, "most batches that have not completed (open, or closed with jobs to finish); creating one more gets a too-many-batches error; 0 means no limit")
	fs.IntVar(&sc.maxWorkerFns, "max-worker-functions", broker.DefaultMaxWorkerFunctions, "most functions one connection may register with CAN_DO; more are ignored (CAN_DO has no answer), logged and counted in gearwork_worker_functions_refused_total; 0 means no limit")
}

// security is what securityConfig resolves to at start.
type security struct {
	tls    *tls.Config
	cert   *certificate // the Gearman port's, reloaded on SIGHUP; nil without TLS
	policy *auth.Policy
}

// load reads the TLS files and the auth rules from the auth: section of
// configFile (the --config file, whose other sections hold lifecycle
// policies; "" for none).
func (sc *securityConfig) load(configFile string) (*security, error) {
	switch {
	case sc.maxConnections < 0:
		return nil, fmt.Errorf("invalid --max-connections %d: must be 0 or more", sc.maxConnections)
	case sc.maxPerAddress < 0:
		return nil, fmt.Errorf("invalid --max-connections-per-address %d: must be 0 or more", sc.maxPerAddress)
	case sc.maxPacketUnauth <= 0:
		return nil, fmt.Errorf("invalid --max-packet-unauthenticated %d: must be positive", sc.maxPacketUnauth)
	case sc.maxOutput < 0 || sc.maxQueuedBytes < 0:
		return nil, errors.New("--max-output and --max-queued-bytes must be 0 or more")
	case sc.maxRecordBytes != 0 && sc.maxRecordBytes < 1<<20:
		return nil, fmt.Errorf("invalid --max-record-bytes %s: must be 0 (no bound) or at least 1MiB", formatSize(sc.maxRecordBytes))
	case sc.maxFunctions < 0 || sc.maxWorkerFns < 0 || sc.maxOpenBatches < 0:
		return nil, errors.New("--max-functions, --max-worker-functions and --max-open-batches must be 0 or more")
	case sc.readTimeout < 0 || sc.writeTimeout < 0 || sc.handshakeTimeout <= 0:
		return nil, errors.New("--read-timeout and --write-timeout must be 0 or more, --tls-handshake-timeout positive")
	}
	var s security
	var rules *auth.Config
	if configFile != "" {
		data, err := os.ReadFile(configFile)
		if err != nil {
			return nil, fmt.Errorf("cannot read --config: %w", err)
		}
		if rules, err = parseAuthConfig(data); err != nil {
			return nil, fmt.Errorf("--config %s: %w", configFile, err)
		}
	}
	requireCert := false
	if rules == nil && sc.tls.clientCA != "" {
		// Mutual TLS without rules: a client certificate is required, and
		// every verified client may do everything.
		requireCert = true
		rules = &auth.Config{Rules: []auth.RuleConfig{{
			Name:  "verified clients (--tls-client-ca without auth rules)",
			Match: auth.MatchConfig{Verified: true},
			Allow: auth.Permissions{Submit: []string{"*"}, Serve: []string{"*"}, Admin: []string{"*"}, Read: []string{"*"}},
		}}}
	}
	if rules != nil {
		p, err := auth.New(*rules)
		if err != nil {
			return nil, err
		}
		s.policy = p
	}
	if sc.tls.enabled() {
		t, cert, err := serverTLS(sc.tls, requireCert)
		if err != nil {
			return nil, err
		}
		s.tls, s.cert = t, cert
	}
	if rules != nil && usesCertificates(rules) && (s.tls == nil || s.tls.ClientCAs == nil) {
		return nil, errors.New("the auth rules match client certificates, but mutual TLS is off: set --tls-cert, --tls-key and --tls-client-ca")
	}
	return &s, nil
}

// rules is the number of authorization rules in force.
func (s *security) rules() int {
	if s.policy == nil {
		return 0
	}
	return s.policy.Len()
}

// usesCertificates reports whether any rule matches on certificate data.
func usesCertificates(cfg *auth.Config) bool {
	for _, r := range cfg.Rules {
		if r.Match.Verified || len(r.Match.CommonName) > 0 || len(r.Match.SAN) > 0 {
			return true
		}
	}
	return false
}

// authenticated reports whether connections are authenticated: by mutual
// TLS or by auth rules (which may match source addresses only).
func (s *security) authenticated() bool {
	return s.policy != nil || s.tls != nil && s.tls.ClientCAs != nil
}

// listenPort describes a port that accepts work or admin commands, for
// checkExposure's refusal.
type listenPort struct {
	// addr is the address as configured; flag is its flag ("--listen").
	addr, flag string
	// loopback is the flag with a loopback address; loopbackDefault says
	// it is the default.
	loopback        string
	loopbackDefault bool
	// risk says what anyone who can connect could do.
	risk string
	// remedies are the ways to authenticate clients on this port.
	remedies []string
}

// gearmanPort describes the Gearman port listening on addr.
func gearmanPort(addr string) listenPort {
	return listenPort{addr: addr, flag: "--listen", loopback: "--listen 127.0.0.1:4730", loopbackDefault: true,
		risk: `Anyone who can reach this address could submit jobs, register as a worker and
run admin commands such as "cancel job", "drop function" and "shutdown".`,
		remedies: []string{
			"require client certificates: --tls-cert, --tls-key and --tls-client-ca;",
			"restrict clients with authorization rules in --config (an auth: section);",
		}}
}

// httpPort describes the HTTP API listening on addr.
func httpPort(addr string) listenPort {
	return listenPort{addr: addr, flag: "--http", loopback: "--http 127.0.0.1:4780", loopbackDefault: true,
		risk: `Anyone who can reach this address could submit, cancel and take jobs, retry and
purge dead letters and pause functions through the HTTP API.`,
		remedies: []string{
			"require bearer tokens: --http-tokens FILE;",
			"require client certificates: --tls-cert, --tls-key and --tls-client-ca\n    (or the --http-tls-* flags for this port alone);",
		}}
}

// pprofPort describes the profiling port (--pprof) listening on addr. It
// has no authentication of its own.
func pprofPort(addr string) listenPort {
	return listenPort{addr: addr, flag: "--pprof", loopback: "--pprof 127.0.0.1:6060",
		risk: `Anyone who can reach this address could read the server's command line (with a
--store URL's password), its goroutines and profiles, and make it profile itself.`}
}

// checkExposure refuses to serve port on a non-loopback address when
// nothing authenticates its clients, unless insecure is set. The address
// is checked before anything is bound. It is meant for every port that
// accepts work or admin commands.
func checkExposure(ctx context.Context, port listenPort, authenticated, insecure bool, log *slog.Logger) error {
	if authenticated || !exposed(ctx, port.addr) {
		return nil
	}
	if insecure {
		log.Warn("serve: listening on a non-loopback address without authentication (--insecure): "+
			strings.Join(strings.Fields(port.risk), " "), slog.String("addr", port.addr), slog.String("flag", port.flag))
		return nil
	}
	var msg strings.Builder
	fmt.Fprintf(&msg, "refusing to listen on %s (%s) without authentication.\n%s\nDo one of:\n", port.addr, port.flag, port.risk)
	if port.loopbackDefault {
		fmt.Fprintf(&msg, "  - listen on a loopback address (%s), the default;\n", port.loopback)
	} else {
		fmt.Fprintf(&msg, "  - listen on a loopback address (%s);\n", port.loopback)
	}
	for _, r := range port.remedies {
		fmt.Fprintf(&msg, "  - %s\n", r)
	}
	msg.WriteString("  - or accept the risk explicitly with --insecure.\nSee docs/security.md.")
	return exitError{code: exitUsage, msg: msg.String()}
}

// exposed reports whether a listen address may accept connections from
// other hosts: an empty or unspecified host, a non-loopback IP, or a name
// that resolves to any non-loopback address (or does not resolve).
func exposed(ctx context.Context, listen string) bool {
	host, _, err := net.SplitHostPort(listen)
	if err != nil || host == "" {
		return true
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		return !ip.IsLoopback()
	}
	addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil || len(addrs) == 0 {
		return true
	}
	for _, a := range addrs {
		if !a.IsLoopback() {
			return true
		}
	}
	return false
}

// parseAuthConfig returns the auth: section of a YAML configuration file,
// or nil if it has none (see config.ParseAuth).
func parseAuthConfig(data []byte) (*auth.Config, error) {
	return config.ParseAuth(data)
}
