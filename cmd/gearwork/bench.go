package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/gearwork/gearwork/internal/bench"
)

func runBench(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) error {
	var (
		cfg       bench.Config
		scenarios string
		asJSON    bool
	)
	fs := newFlagSet("bench", "bench [flags]\n\n"+
		"Drives a Gearman job server (Gearwork or gearmand) with load scenarios and prints,\n"+
		"for each, one machine-readable line on stdout (key=value pairs, or JSON with --json)\n"+
		"and a readable summary on stderr; on a terminal, stderr also shows a progress line (rate, elapsed, ETA).\n\nScenarios: "+strings.Join(bench.Scenarios(), ", ")+
		".\n\"drain\" means drain1,drain8 and \"fg\" means fg1,fg64; memory and idle need --pid, verify needs --queue.", stderr)
	fs.StringVar(&cfg.Addr, "servers", "127.0.0.1:4730", "`host:port` of the Gearman server to measure (one)")
	fs.StringVar(&cfg.Addr, "server", "127.0.0.1:4730", "old name of --servers")
	fs.StringVar(&scenarios, "scenario", "all", "comma-separated scenario `names`; \"all\" runs every one (memory and idle only with --pid)")
	fs.IntVar(&cfg.Jobs, "jobs", 200000, "jobs (or requests) each scenario measures")
	fs.IntVar(&cfg.Payload, "payload", 64, "payload size in `bytes` (at least 8)")
	fs.IntVar(&cfg.Connections, "connections", 4, "client connections (`N`) of submit, steady, echo and memory")
	fs.IntVar(&cfg.Inflight, "inflight", 64, "requests (`P`) each client connection keeps in flight")
	fs.IntVar(&cfg.Workers, "workers", 8, "worker connections (`W`) of drain1, drain8 and steady")
	fs.IntVar(&cfg.Grabs, "grabs", 1, "GRAB_JOB_UNIQ (`G`) each steady worker keeps in flight; at most W×G jobs wait between submit and start")
	fs.Float64Var(&cfg.Rate, "rate", 0, "steady's submit `rate` in jobs per second over all connections (0: as fast as possible); a paced rate measures what a job costs at moderate load")
	fs.IntVar(&cfg.Backlog, "backlog", 0, "`jobs` submit queues before it measures (the rate with a deep queue)")
	fs.IntVar(&cfg.IdleConns, "idle-conns", 10000, "connections the idle scenario holds open")
	fs.DurationVar(&cfg.IdleSettle, "idle-settle", 10*time.Second, "how long idle lets its connections idle before it reads the server's memory")
	fs.IntVar(&cfg.PID, "pid", 0, "the server's process `id` (same machine): adds its RSS and CPU per job, enables memory and idle")
	fs.DurationVar(&cfg.Timeout, "timeout", 2*time.Minute, "limit for each scenario, loading and cleanup included")
	fs.StringVar(&cfg.Queue, "queue", "", "exact function `name` for memory and verify, with checkable payloads: memory queues them, verify (which needs it) completes --jobs of them and checks each payload")
	fs.BoolVar(&cfg.NoCleanup, "no-cleanup", false, "leave what a scenario created on the server: the jobs it queued and its gearwork-bench.* function (by default both are removed; use it when the server is restarted afterwards anyway)")
	fs.BoolVar(&asJSON, "json", false, "print each result as a JSON object instead of key=value pairs")
	if err := parseFlagsNoArgs(fs, args); err != nil {
		return err
	}
	if strings.Contains(cfg.Addr, ",") {
		return usageError(stderr, fmt.Errorf("invalid --servers %q: bench measures one server", cfg.Addr))
	}
	for _, f := range []struct {
		name string
		v    int
	}{{"jobs", cfg.Jobs}, {"connections", cfg.Connections}, {"inflight", cfg.Inflight},
		{"workers", cfg.Workers}, {"grabs", cfg.Grabs}, {"idle-conns", cfg.IdleConns}} {
		if f.v < 1 {
			return usageError(stderr, fmt.Errorf("invalid --%s %d: must be at least 1", f.name, f.v))
		}
	}
	if cfg.Timeout <= 0 {
		return usageError(stderr, fmt.Errorf("invalid --timeout %s: must be positive", cfg.Timeout))
	}
	if cfg.IdleSettle <= 0 {
		return usageError(stderr, fmt.Errorf("invalid --idle-settle %s: must be positive", cfg.IdleSettle))
	}
	if err := cfg.Validate(); err != nil {
		return usageError(stderr, err)
	}
	names, err := bench.ParseScenarios(scenarios, cfg.PID != 0)
	if err != nil {
		return usageError(stderr, err)
	}
	if isTerminal(stderr) {
		cfg.Progress = stderr
	}
	failed, unreachable := 0, 0
	for _, name := range names {
		res, err := bench.Run(ctx, cfg, name)
		if err != nil {
			fmt.Fprintln(stderr, "gearwork:", err)
			failed++
			if errors.Is(err, bench.ErrConnect) {
				unreachable++
			}
			if ctx.Err() != nil {
				break
			}
			continue
		}
		if asJSON {
			line, err := json.Marshal(res)
			if err != nil {
				return err
			}
			fmt.Fprintf(stdout, "%s\n", line)
		} else {
			fmt.Fprintln(stdout, res.Line())
		}
		fmt.Fprintln(stderr, res.Summary())
	}
	if failed > 0 {
		code := exitFailed
		switch {
		case ctx.Err() != nil:
			code = exitInterrupted
		case unreachable == failed:
			code = exitUnreachable
		}
		return exitError{code: code, msg: fmt.Sprintf("bench: %d of %d scenarios failed", failed, len(names))}
	}
	return nil
}
