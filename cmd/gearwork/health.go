package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	neturl "net/url"
	"strings"
	"time"
)

// runHealth asks a server's HTTP API whether it is ready, for container
// health checks on images without curl (see the Dockerfile): exit 0 for a
// 2xx answer, exitFailed for another answer, exitUnreachable when nothing
// answers.
func runHealth(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) error {
	fs := newFlagSet("health", "health [flags]", stderr)
	url := fs.String("url", "http://127.0.0.1:4780/readyz", "`URL` to GET: /readyz (ready to take and hand out jobs) or /healthz (the process serves HTTP)")
	timeout := new(time.Duration)
	positiveDurationVar(fs, timeout, "timeout", 3*time.Second, "give up after this `duration`")
	if err := parseFlagsNoArgs(fs, args); err != nil {
		return err
	}
	// A URL that cannot reach a server is a mistake in the command, not
	// an unreachable server.
	if u, err := neturl.Parse(*url); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return usageError(stderr, fmt.Errorf("invalid --url %q: want http://HOST:PORT/readyz (or https://)", *url))
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, *url, nil)
	if err != nil {
		return usageError(stderr, fmt.Errorf("invalid --url %q: %w", *url, err))
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return exitError{code: exitUnreachable, msg: err.Error()}
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	fmt.Fprintf(stdout, "%d %s\n", resp.StatusCode, strings.TrimSpace(string(body)))
	if resp.StatusCode/100 != 2 {
		return exitError{code: exitFailed}
	}
	return nil
}
