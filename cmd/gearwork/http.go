package main

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/gearwork/gearwork/internal/broker"
	"github.com/gearwork/gearwork/internal/httpapi"
)

// httpFlags are serve's flags for the HTTP API.
type httpFlags struct {
	addr       string
	tokensFile string
	cors       string
	// allowedHosts is --http-allowed-hosts, comma-separated.
	allowedHosts string
	// maxConns is --http-max-connections.
	maxConns int
	// maxPerAddress is --http-max-connections-per-address.
	maxPerAddress int
	// metricsMaxFunctions is --metrics-max-functions.
	metricsMaxFunctions int
	// tls holds --http-tls-*: "" means the matching --tls-* flag's file;
	// cert "off" means plain HTTP, clientCA "off" no client certificates.
	tls tlsFiles
}

func (f *httpFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.addr, "http", "127.0.0.1:4780", "`address` of the HTTP API, dashboard and /metrics; \"off\" disables it")
	fs.StringVar(&f.tokensFile, "http-tokens", "", "`file` of bearer tokens, one \"<name> <scopes> <secret or sha256:hex>\" a line (scopes: read,submit,work,admin,metrics); without it (and without mutual TLS) only loopback clients may use the HTTP API")
	fs.StringVar(&f.cors, "http-cors", "", "comma-separated `origins` allowed to call the HTTP API from a browser (\"*\" for any)")
	fs.StringVar(&f.allowedHosts, "http-allowed-hosts", "", "comma-separated host `names` the HTTP API answers to besides its IP addresses, localhost and its TLS certificate's names (e.g. the name of a proxy in front; \"*.example.com\" for one label more; \"*\" for any, which gives up the protection against DNS rebinding)")
	fs.IntVar(&f.maxConns, "http-max-connections", 1000, "most open HTTP connections; more wait to be accepted; at most half of them may be event streams, waiting submits and long polls; 0 means no limit (either way at most a quarter of the open file limit less a reserve for the store)")
	fs.IntVar(&f.maxPerAddress, "http-max-connections-per-address", 0, "most open HTTP connections from one source IPv4 address or IPv6 /64 network, so one host cannot take every connection of --http-max-connections and keep the other clients waiting; more are closed at accept; 0 means no limit")
	fs.IntVar(&f.metricsMaxFunctions, "metrics-max-functions", httpapi.DefaultMetricsMaxFunctions, "most functions /metrics exports series for: those holding jobs, workers, dead letters or a pause first, then those with the most jobs submitted; gearwork_metrics_functions_omitted counts the others; 0 means no limit")
	fs.StringVar(&f.tls.cert, "http-tls-cert", "", "PEM `file` with the HTTP port's certificate (default: --tls-cert's); \"off\" serves plain HTTP even with --tls-cert")
	fs.StringVar(&f.tls.key, "http-tls-key", "", "PEM `file` with the private key of --http-tls-cert (default: --tls-key's)")
	fs.StringVar(&f.tls.clientCA, "http-tls-client-ca", "", "PEM `file` with the CAs whose client certificates the HTTP port requires (default: --tls-client-ca's); \"off\" requires none, so that bearer tokens alone authenticate")
}

// httpSetup is the HTTP API as configured, loaded before anything listens.
type httpSetup struct {
	addr string
	cfg  httpapi.Config
	// tls is nil for plain HTTP.
	tls *tls.Config
	// cert is the HTTP port's certificate (reloaded on SIGHUP); nil
	// without TLS.
	cert *certificate
	// maxConns is the most open HTTP connections (see shareFiles); 0
	// means no limit.
	maxConns int
	// maxPerAddress is the most open HTTP connections from one source;
	// 0 means no limit.
	maxPerAddress int
}

// metricsBound is httpapi.Config.MetricsMaxFunctions for
// --metrics-max-functions, whose 0 means no limit.
func metricsBound(n int) int {
	if n == 0 {
		return -1
	}
	return n
}

// tlsFiles returns the TLS files of the HTTP port: its own flags, else
// those of the Gearman port (shared); none with --http-tls-cert off.
func (f httpFlags) tlsFiles(shared tlsFiles) (tlsFiles, error) {
	if f.tls.cert == "off" {
		if f.tls.clientCA != "" && f.tls.clientCA != "off" {
			return tlsFiles{}, errors.New("--http-tls-client-ca needs TLS on the HTTP port, but --http-tls-cert is off")
		}
		return tlsFiles{}, nil
	}
	files := tlsFiles{
		cert:     cmp.Or(f.tls.cert, shared.cert),
		key:      cmp.Or(f.tls.key, shared.key),
		clientCA: cmp.Or(f.tls.clientCA, shared.clientCA),
	}
	if files.clientCA == "off" {
		files.clientCA = ""
	}
	return files, nil
}

// load reads the token file and the TLS files of the HTTP API. It returns
// nil (and no error) with --http off. shared are the --tls-* files,
// handshakeTimeout is --tls-handshake-timeout and insecure is --insecure.
func (f httpFlags) load(shared tlsFiles, handshakeTimeout time.Duration, insecure bool) (*httpSetup, error) {
	if f.addr == "off" || f.addr == "" {
		return nil, nil
	}
	if f.maxConns < 0 {
		return nil, fmt.Errorf("invalid --http-max-connections %d: must be 0 or more", f.maxConns)
	}
	if f.maxPerAddress < 0 {
		return nil, fmt.Errorf("invalid --http-max-connections-per-address %d: must be 0 or more", f.maxPerAddress)
	}
	if f.metricsMaxFunctions < 0 {
		return nil, fmt.Errorf("invalid --metrics-max-functions %d: must be 0 or more", f.metricsMaxFunctions)
	}
	v := buildVersion()
	h := &httpSetup{addr: f.addr, maxPerAddress: f.maxPerAddress, cfg: httpapi.Config{AllowRemote: insecure, Version: v.Version, Commit: v.Commit,
		MetricsMaxFunctions: metricsBound(f.metricsMaxFunctions)}}
	if f.tokensFile != "" {
		file, err := os.Open(f.tokensFile)
		if err != nil {
			return nil, fmt.Errorf("--http-tokens: %w", err)
		}
		h.cfg.Tokens, err = httpapi.ParseTokens(file)
		file.Close()
		if err != nil {
			return nil, fmt.Errorf("--http-tokens %s: %w", f.tokensFile, err)
		}
	}
	if f.cors != "" {
		for _, o := range strings.Split(f.cors, ",") {
			if o = strings.TrimSpace(o); o != "" {
				h.cfg.CORSOrigins = append(h.cfg.CORSOrigins, o)
			}
		}
	}
	for _, n := range strings.Split(f.allowedHosts, ",") {
		if n = strings.TrimSpace(n); n != "" {
			h.cfg.AllowedHosts = append(h.cfg.AllowedHosts, n)
		}
	}
	files, err := f.tlsFiles(shared)
	if err != nil {
		return nil, err
	}
	if files.enabled() {
		// With client CAs every client needs a certificate: the HTTP API
		// has no rules that could grant anything to clients without one
		// (bearer tokens then only narrow what each may do).
		if h.tls, h.cert, err = serverTLS(files, true); err != nil {
			return nil, fmt.Errorf("HTTP port: %w", err)
		}
		// HTTP/1.1 only: the same connection limits and timeouts as
		// without TLS.
		h.tls.NextProtos = []string{"http/1.1"}
		// The names of the port's certificate are names it answers to
		// (those of the certificate loaded at start: a certificate reloaded
		// by SIGHUP does not change them).
		if c := h.cert.cur.Load(); c != nil && len(c.Certificate) > 0 {
			if leaf, err := x509.ParseCertificate(c.Certificate[0]); err == nil {
				h.cfg.AllowedHosts = append(h.cfg.AllowedHosts, leaf.DNSNames...)
			}
		}
		h.cfg.ReadHeaderTimeout = handshakeTimeout
	}
	return h, nil
}

// authenticated reports whether the HTTP API authenticates its clients:
// by bearer tokens or by client certificates.
func (h *httpSetup) authenticated() bool {
	return len(h.cfg.Tokens) > 0 || h.tls != nil && h.tls.ClientCAs != nil
}

// httpFrontEnd is the running HTTP server, or nil when disabled.
type httpFrontEnd struct {
	srv  *httpapi.Server
	ln   net.Listener
	done chan error
}

// startHTTP starts the HTTP API beside the Gearman port. It returns nil
// (and no error) when setup is nil (--http off).
func startHTTP(ctx context.Context, setup *httpSetup, b *broker.Broker, connections func() map[string]int, log *slog.Logger) (*httpFrontEnd, error) {
	if setup == nil {
		return nil, nil
	}
	cfg := setup.cfg
	cfg.Broker, cfg.ConnectionsFunc, cfg.Logger = b, connections, log
	ln, err := net.Listen("tcp", setup.addr)
	if err != nil {
		return nil, fmt.Errorf("cannot listen on %s (--http): %w", setup.addr, err)
	}
	attrs := []any{slog.Int("tokens", len(cfg.Tokens))}
	if setup.maxConns > 0 || setup.maxPerAddress > 0 {
		// Under TLS, so that the HTTP server still sees *tls.Conn.
		ll := newLimitListener(ln, setup.maxConns, setup.maxPerAddress, refusedLogger(log, setup.maxPerAddress))
		cfg.ConnState = ll.ConnState
		ln = ll
	}
	if setup.maxConns > 0 {
		// Requests that stay open take at most half the connections, so
		// event streams cannot keep the other requests (/healthz among
		// them) waiting at accept.
		cfg.MaxLongRequests = max(1, setup.maxConns/2)
	}
	if setup.tls != nil {
		ln = tls.NewListener(ln, setup.tls)
		attrs = append(attrs, slog.Bool("tls", true), slog.String("certificate", certSubject(setup.cert)),
			slog.Bool("mutual", setup.tls.ClientCAs != nil))
	}
	if setup.maxConns > 0 {
		attrs = append(attrs, slog.Int("max_connections", setup.maxConns))
	}
	if setup.maxPerAddress > 0 {
		attrs = append(attrs, slog.Int("max_connections_per_address", setup.maxPerAddress))
	}
	h := &httpFrontEnd{srv: httpapi.New(cfg), ln: ln, done: make(chan error, 1)}
	go func() { h.done <- h.srv.Serve(ctx, ln) }()
	log.Info("serve: HTTP API listening", append([]any{slog.String("addr", ln.Addr().String())}, attrs...)...)
	return h, nil
}

// refusedLogger returns what logs the HTTP connections closed for the
// limit per address: a warning at most once a second, as the peer decides
// how many there are.
func refusedLogger(log *slog.Logger, perAddress int) func(net.Addr) {
	var last atomic.Int64
	return func(remote net.Addr) {
		now := time.Now().UnixNano()
		if prev := last.Load(); now-prev < int64(time.Second) || !last.CompareAndSwap(prev, now) {
			return
		}
		log.Warn("serve: too many HTTP connections from one address; closing a new one",
			slog.String("remote", remote.String()), slog.Int("max_connections_per_address", perAddress))
	}
}

// stop shuts the HTTP API down, giving requests up to timeout. Safe on nil.
func (h *httpFrontEnd) stop(timeout time.Duration, log *slog.Logger) {
	if h == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := h.srv.Shutdown(ctx); err != nil {
		log.Warn("serve: HTTP shutdown", slog.String("error", err.Error()))
	}
	if err := <-h.done; err != nil && !errors.Is(err, httpapi.ErrServerClosed) {
		log.Warn("serve: HTTP server", slog.String("error", err.Error()))
	}
}
