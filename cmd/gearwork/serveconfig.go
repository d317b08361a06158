package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/gearwork/gearwork/gearman"
	"github.com/gearwork/gearwork/internal/config"
)

// checkServeConfig checks serve's whole configuration (flags, the files
// they name, the --config file) before the server logs anything or binds
// a port, so that a mistake is the first and only thing reported. Each
// error names the flag and the value and exits with exitUsage.
func checkServeConfig(ctx context.Context, cfg *serveConfig) error {
	bad := func(err error) error { return exitError{code: exitUsage, msg: err.Error()} }
	if _, err := parseLogLevel(cfg.logLevel); err != nil {
		return bad(err)
	}
	if _, err := newLogger(io.Discard, cfg.logFormat, slog.LevelInfo); err != nil {
		return bad(err)
	}
	if cfg.maxPacket <= 0 {
		return bad(fmt.Errorf("invalid --max-packet %d: must be positive", cfg.maxPacket))
	}
	if cfg.jobRetries < 0 {
		return bad(fmt.Errorf("invalid --job-retries %d: must be 0 (no limit) or more", cfg.jobRetries))
	}
	if len(cfg.handlePrefix) > maxHandlePrefix {
		return bad(fmt.Errorf("invalid --handle-prefix %q: %d bytes, at most %d: with a job's number of up to 17 digits a handle must fit the %d bytes libgearman's clients and workers keep, or they never see their jobs end",
			cfg.handlePrefix, len(cfg.handlePrefix), maxHandlePrefix, gearman.MaxHandleSize))
	}
	if cfg.batchRetention < 0 {
		return bad(fmt.Errorf("invalid --batch-retention %s: must be 0 (forever) or more", cfg.batchRetention))
	}
	addrs := []struct{ flag, value string }{{"--listen", cfg.listen}}
	if cfg.http.addr != "off" && cfg.http.addr != "" {
		addrs = append(addrs, struct{ flag, value string }{"--http", cfg.http.addr})
	}
	if cfg.pprof != "" {
		addrs = append(addrs, struct{ flag, value string }{"--pprof", cfg.pprof})
	}
	for _, a := range addrs {
		if err := checkListenAddr(ctx, a.flag, a.value); err != nil {
			return bad(err)
		}
	}
	if cfg.http.addr == "off" || cfg.http.addr == "" {
		// Settings of an HTTP API that does not run would change nothing.
		for _, f := range httpOnlyFlags() {
			if cfg.set[f] {
				return bad(fmt.Errorf("--%s configures the HTTP API, which --http off disables: leave it out, or give --http an address", f))
			}
		}
	}
	if err := checkStoreURL(cfg.store.url); err != nil {
		return bad(err)
	}
	if limit, why := maxPacketLimit(cfg.store.url); cfg.maxPacket > limit {
		return bad(fmt.Errorf("invalid --max-packet %s: at most %s%s", formatSize(int64(cfg.maxPacket)), formatSize(int64(limit)), why))
	}
	if _, _, err := parseSync(cfg.store.sync); err != nil {
		return bad(err)
	}
	if _, err := parseMemoryBudget(cfg.store.memoryBudget); err != nil {
		return bad(err)
	}
	if err := checkStoreFlags(cfg.store.url, cfg.set); err != nil {
		return bad(err)
	}
	if _, err := cfg.sec.load(cfg.configFile); err != nil {
		return bad(err)
	}
	if _, err := cfg.http.load(cfg.sec.tls, cfg.sec.handshakeTimeout, cfg.sec.insecure); err != nil {
		return bad(err)
	}
	if _, _, err := memoryLimit(cfg.memoryLimit, os.Getenv("GOMEMLIMIT"), availableMemory()); err != nil {
		return bad(err)
	}
	if cfg.configFile != "" {
		if _, err := config.Load(cfg.configFile); err != nil {
			return bad(fmt.Errorf("--config: %w", err))
		}
	}
	return nil
}

// httpOnlyFlags are the serve flags that only the HTTP API reads: every
// flag of httpFlags but --http itself, so that a flag added there is
// refused with --http off without a second list to keep in step.
func httpOnlyFlags() []string {
	fs := flag.NewFlagSet("http", flag.ContinueOnError)
	new(httpFlags).register(fs)
	var names []string
	fs.VisitAll(func(f *flag.Flag) {
		if f.Name != "http" {
			names = append(names, f.Name)
		}
	})
	return names
}

// checkListenAddr checks a listen address given to flag: host:port with
// a port from 0 to 65535 and a host that is empty (every interface), an
// IP address or a name that resolves.
func checkListenAddr(ctx context.Context, flag, addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		why := err.Error()
		var ae *net.AddrError
		if errors.As(err, &ae) {
			why = ae.Err
		}
		return fmt.Errorf("invalid %s %q: want host:port, such as 127.0.0.1:4730, [::1]:4730 or :4730 (%s)", flag, addr, why)
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil {
		if _, lerr := net.DefaultResolver.LookupPort(ctx, "tcp", port); lerr != nil || port == "" {
			return fmt.Errorf("invalid %s %q: port %q is not a number from 0 to 65535", flag, addr, port)
		}
	} else if n > 65535 {
		return fmt.Errorf("invalid %s %q: port %d is above 65535", flag, addr, n)
	}
	if host == "" {
		return nil
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return nil
	}
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := net.DefaultResolver.LookupNetIP(rctx, "ip", host); err != nil {
		return fmt.Errorf("invalid %s %q: host %q does not resolve: %v", flag, addr, host, err)
	}
	return nil
}

// parseLogLevel parses --log-level.
func parseLogLevel(s string) (slog.Level, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("invalid --log-level %q: use debug, info, warn or error", s)
	}
	return level, nil
}

// newLogger returns the server's logger for --log-format: "text" (slog's
// key=value lines) or "json" (one JSON object a line).
func newLogger(w io.Writer, format string, level slog.Level) (*slog.Logger, error) {
	opts := &slog.HandlerOptions{Level: level}
	switch strings.ToLower(format) {
	case "text", "":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("invalid --log-format %q: use text or json", format)
}

// maxPacketLimit is the largest --max-packet the store named by url can
// take, and why. A job's payload and its result (each up to --max-packet)
// are stored together: in one row of PostgreSQL, which refuses a message
// or a value over 1 GB, so that a larger job would make a commit round
// that can never succeed and is tried again forever; in one record of a
// Pebble batch, which Pebble bounds at 4 GiB (larger, it panics); and
// every store keeps them in memory, with up to 4 × --max-packet of unread
// output per connection.
func maxPacketLimit(url string) (int, string) {
	if strings.HasPrefix(url, "postgres://") || strings.HasPrefix(url, "postgresql://") {
		return 256 << 20, " with --store postgres://: a job's row holds its payload and its result, and PostgreSQL refuses a message or a value over 1 GB"
	}
	return 1 << 30, ": a job's payload and its result are kept in memory and stored together (Pebble refuses a write of 4 GiB, PostgreSQL a row of 1 GB)"
}
