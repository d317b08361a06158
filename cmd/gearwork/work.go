package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/gearwork/gearwork/worker"
)

type workConfig struct {
	servers         string
	concurrency     int
	timeout         time.Duration
	clientID        string
	shutdownTimeout time.Duration
	logLevel        string
}

// workHelp follows work's flags in its --help.
const workHelp = `
For each job, COMMAND runs with the job's payload on stdin; its stdout is
the job's result (WORK_COMPLETE). If it exits non-zero the job fails
(WORK_FAIL) and its stderr is sent to the client first as a warning. The
command's environment has GEARWORK_FUNCTION, GEARWORK_HANDLE and
GEARWORK_UNIQUE. On SIGINT or SIGTERM the worker takes no new jobs and
waits for running commands (up to --shutdown-timeout).
`

func runWork(ctx context.Context, args []string, _ io.Reader, _, stderr io.Writer) error {
	var cfg workConfig
	fs := newFlagSetHelp("work", "work [flags] FUNCTION -- COMMAND [ARGS...]", workHelp, stderr)
	fs.StringVar(&cfg.servers, "servers", worker.DefaultServer, "comma-separated `host:port` list of job servers to take jobs from")
	fs.IntVar(&cfg.concurrency, "concurrency", 1, "run up to this many `jobs` (commands) at once")
	fs.DurationVar(&cfg.timeout, "timeout", 0, "kill a command running longer than this `duration`; the server hands the job out again (CAN_DO_TIMEOUT). 0: no limit")
	fs.StringVar(&cfg.clientID, "client-id", "", "`id` shown by the server's \"workers\" admin command")
	fs.DurationVar(&cfg.shutdownTimeout, "shutdown-timeout", 30*time.Second, "on SIGINT/SIGTERM, how long running commands may take to finish before they are killed")
	fs.StringVar(&cfg.logLevel, "log-level", "info", "log `level`: debug, info, warn or error")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	rest := fs.Args()
	if len(rest) >= 2 && rest[1] == "--" {
		rest = append(rest[:1:1], rest[2:]...)
	}
	switch len(rest) {
	case 0:
		return helpError(stderr, "work", "missing the FUNCTION and the COMMAND to run for its jobs (gearwork work [flags] FUNCTION -- COMMAND [ARGS...])")
	case 1:
		return helpError(stderr, "work", "missing the COMMAND to run for each job of "+rest[0]+" (gearwork work [flags] FUNCTION -- COMMAND [ARGS...])")
	}
	function, command := rest[0], rest[1:]
	if cfg.concurrency < 1 {
		return usageError(stderr, fmt.Errorf("invalid --concurrency %d: must be at least 1", cfg.concurrency))
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(cfg.logLevel)); err != nil {
		return usageError(stderr, fmt.Errorf("invalid --log-level %q: use debug, info, warn or error", cfg.logLevel))
	}
	if _, err := exec.LookPath(command[0]); err != nil {
		return usageError(stderr, fmt.Errorf("command %q: %w", command[0], err))
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	w, err := worker.New(worker.Config{
		Servers:     splitServers(cfg.servers),
		Concurrency: cfg.concurrency,
		ClientID:    cfg.clientID,
		Logger:      log,
	})
	if err != nil {
		return usageError(stderr, err)
	}
	w.Register(worker.Function{Name: function, Timeout: cfg.timeout, Handler: &commandHandler{argv: command, log: log}})
	// The jobs' contexts do not derive from ctx: a signal starts a
	// graceful shutdown, it does not kill running commands.
	if err := w.Start(context.WithoutCancel(ctx)); err != nil {
		return err
	}
	log.Info("work: waiting for jobs", slog.String("function", function), slog.String("servers", cfg.servers),
		slog.Int("concurrency", cfg.concurrency))
	<-ctx.Done()
	log.Info("work: stopping; waiting for running jobs", slog.Duration("timeout", cfg.shutdownTimeout))
	sctx, cancel := context.WithTimeout(context.Background(), cfg.shutdownTimeout)
	defer cancel()
	if err := w.Shutdown(sctx); err != nil {
		log.Warn("work: shutdown timed out; killed running commands (their jobs will run again)")
		w.Stop()
	}
	return nil
}

// commandHandler runs a command per job.
type commandHandler struct {
	argv []string
	log  *slog.Logger
}

func (h *commandHandler) ServeJob(ctx context.Context, j *worker.Job) ([]byte, error) {
	cmd := exec.CommandContext(ctx, h.argv[0], h.argv[1:]...)
	cmd.Env = append(os.Environ(),
		"GEARWORK_FUNCTION="+j.Function, "GEARWORK_HANDLE="+j.Handle, "GEARWORK_UNIQUE="+j.Unique)
	cmd.Stdin = bytes.NewReader(j.Payload)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	ownProcessGroup(cmd)
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	if err == nil {
		if stderr.Len() > 0 {
			h.log.Info("work: command wrote to stderr", slog.String("handle", j.Handle),
				slog.String("stderr", strings.TrimRight(stderr.String(), "\n")))
		}
		return stdout.Bytes(), nil
	}
	if ctx.Err() != nil {
		return nil, fmt.Errorf("command stopped: %w", context.Cause(ctx))
	}
	if stderr.Len() > 0 {
		_ = j.SendWarning(stderr.Bytes())
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return nil, fmt.Errorf("command %s: %w", h.argv[0], err)
	}
	return nil, fmt.Errorf("running %s: %w", h.argv[0], err)
}
