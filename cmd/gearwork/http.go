package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"github.com/gearwork/gearwork/internal/broker"
	"github.com/gearwork/gearwork/internal/httpapi"
)

// httpFlags are serve's flags for the HTTP API.
type httpFlags struct {
	addr       string
	tokensFile string
	cors       string
}

func (f *httpFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.addr, "http", "127.0.0.1:4780", "`address` of the HTTP API, dashboard and /metrics; \"off\" disables it")
	fs.StringVar(&f.tokensFile, "http-tokens", "", "`file` of bearer tokens, one \"<name> <scopes> <secret or sha256:hex>\" a line (scopes: read,submit,work,admin); without it only loopback clients may use the HTTP API")
	fs.StringVar(&f.cors, "http-cors", "", "comma-separated `origins` allowed to call the HTTP API from a browser (\"*\" for any)")
}

// httpFrontEnd is the running HTTP server, or nil when disabled.
type httpFrontEnd struct {
	srv  *httpapi.Server
	ln   net.Listener
	done chan error
}

// startHTTP starts the HTTP API beside the Gearman port. It returns nil
// (and no error) with --http off.
func startHTTP(ctx context.Context, f httpFlags, b *broker.Broker, connections func() map[string]int, log *slog.Logger) (*httpFrontEnd, error) {
	if f.addr == "off" || f.addr == "" {
		return nil, nil
	}
	cfg := httpapi.Config{Broker: b, ConnectionsFunc: connections, Logger: log}
	if f.tokensFile != "" {
		file, err := os.Open(f.tokensFile)
		if err != nil {
			return nil, fmt.Errorf("--http-tokens: %w", err)
		}
		cfg.Tokens, err = httpapi.ParseTokens(file)
		file.Close()
		if err != nil {
			return nil, fmt.Errorf("--http-tokens %s: %w", f.tokensFile, err)
		}
	}
	if f.cors != "" {
		for _, o := range strings.Split(f.cors, ",") {
			if o = strings.TrimSpace(o); o != "" {
				cfg.CORSOrigins = append(cfg.CORSOrigins, o)
			}
		}
	}
	ln, err := net.Listen("tcp", f.addr)
	if err != nil {
		return nil, fmt.Errorf("cannot listen on %s (--http): %w", f.addr, err)
	}
	h := &httpFrontEnd{srv: httpapi.New(cfg), ln: ln, done: make(chan error, 1)}
	go func() { h.done <- h.srv.Serve(ctx, ln) }()
	log.Info("serve: HTTP API listening", slog.String("addr", ln.Addr().String()), slog.Int("tokens", len(cfg.Tokens)))
	return h, nil
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
