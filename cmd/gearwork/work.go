package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gearwork/gearwork/gearman"
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
(WORK_FAIL): the last 4 KiB of its stderr go first as a warning, which the
server keeps as the failed attempt's error (in the job's record and its
dead letter); the worker's "job failed" log line has the exit status and
the last 512 bytes of stderr. The command's environment has GEARWORK_FUNCTION,
GEARWORK_HANDLE, GEARWORK_UNIQUE and GEARWORK_PROGRESS_FD=3: lines written
to file descriptor 3 report while it runs: "status N D" (WORK_STATUS, N of
D done), "data TEXT" (WORK_DATA) and "warning TEXT" (WORK_WARNING), e.g.
echo "status 1 4" >&3. On SIGINT or SIGTERM the worker takes no new jobs and
waits for running commands (up to --shutdown-timeout).
`

func runWork(ctx context.Context, args []string, _ io.Reader, _, stderr io.Writer) error {
	var cfg workConfig
	fs := newFlagSetHelp("work", "work [flags] FUNCTION -- COMMAND [ARGS...]", workHelp, stderr)
	fs.StringVar(&cfg.servers, "servers", worker.DefaultServer, "comma-separated `host:port` list of job servers to take jobs from")
	fs.IntVar(&cfg.concurrency, "concurrency", 1, "run up to this many `jobs` (commands) at once")
	durationVar(fs, &cfg.timeout, "timeout", 0, "kill a command running longer than this `duration` (CAN_DO_TIMEOUT: Gearwork fails the job, or runs it again when its function's max_attempts allows; gearmand hands it out again). 0: no limit")
	fs.StringVar(&cfg.clientID, "client-id", "", "`id` shown by the server's \"workers\" admin command")
	durationVar(fs, &cfg.shutdownTimeout, "shutdown-timeout", 30*time.Second, "on SIGINT/SIGTERM, how long running commands may take to finish before they are killed")
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
	if function == "" || len(function) > gearman.MaxFunctionSize {
		return usageError(stderr, fmt.Errorf("invalid FUNCTION %q: a function name is 1 to %d bytes", function, gearman.MaxFunctionSize))
	}
	if cfg.concurrency < 1 {
		return usageError(stderr, fmt.Errorf("invalid --concurrency %d: must be at least 1", cfg.concurrency))
	}
	level, err := parseLogLevel(cfg.logLevel)
	if err != nil {
		return usageError(stderr, err)
	}
	if _, err := exec.LookPath(command[0]); err != nil {
		return usageError(stderr, fmt.Errorf("command %q: %w", command[0], err))
	}
	servers := splitServers(cfg.servers)
	if len(servers) == 0 {
		return usageError(stderr, errors.New("--servers is empty"))
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	w, err := worker.New(worker.Config{
		Servers:     servers,
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
	var stdout bytes.Buffer
	stderr := &tailWriter{max: stderrTail}
	cmd.Stdout, cmd.Stderr = &stdout, stderr
	ownProcessGroup(cmd)
	cmd.WaitDelay = 5 * time.Second
	progress, err := h.progressPipe(cmd, j)
	if err != nil {
		return nil, fmt.Errorf("running %s: %w", h.argv[0], err)
	}
	err = cmd.Start()
	progress.started()
	if err == nil {
		err = cmd.Wait()
	}
	progress.wait(cmd.WaitDelay)
	if err == nil {
		if len(stderr.buf) > 0 {
			h.log.Info("work: command wrote to stderr", slog.String("handle", j.Handle),
				slog.String("stderr", strings.TrimRight(string(stderr.buf), "\n")))
		}
		return stdout.Bytes(), nil
	}
	if ctx.Err() != nil {
		return nil, fmt.Errorf("command stopped: %w", context.Cause(ctx))
	}
	// WORK_FAIL carries no data: the end of stderr goes first as a
	// warning, which the server keeps as the failed attempt's error.
	why := stderr.buf
	if len(why) == 0 {
		why = []byte(fmt.Sprintf("%s: %v", h.argv[0], err))
	}
	_ = j.SendWarning(why)
	// The worker logs the error as the job's failure line: with the end
	// of stderr, the operator sees why without the job's record.
	said := ""
	if tail := stderrEnd(stderr.buf, stderrLogTail); tail != "" {
		said = fmt.Sprintf(" (stderr ends %q)", tail)
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return nil, fmt.Errorf("command %s: %w%s", h.argv[0], err, said)
	}
	return nil, fmt.Errorf("running %s: %w%s", h.argv[0], err, said)
}

// stderrTail is how much of a command's stderr is kept: its end.
const stderrTail = 4 << 10

// stderrLogTail is how much of the end of a failed command's stderr its
// failure's log line carries (the job's record keeps stderrTail).
const stderrLogTail = 512

// stderrEnd is the last n bytes of b (from the start of a UTF-8
// character), without the white space at its end.
func stderrEnd(b []byte, n int) string {
	b = bytes.TrimRight(b, " \t\r\n")
	if len(b) > n {
		b = b[len(b)-n:]
		for len(b) > 0 && !utf8.RuneStart(b[0]) {
			b = b[1:]
		}
	}
	return string(b)
}

// tailWriter keeps the last max bytes written to it.
type tailWriter struct {
	max int
	buf []byte
}

func (t *tailWriter) Write(p []byte) (int, error) {
	n := len(p)
	if len(p) >= t.max {
		t.buf = append(t.buf[:0], p[len(p)-t.max:]...)
		return n, nil
	}
	if over := len(t.buf) + len(p) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	t.buf = append(t.buf, p...)
	return n, nil
}

// progressFD is the file descriptor on which a command reports progress:
// lines "status N D" (WORK_STATUS), "data TEXT" (WORK_DATA) and
// "warning TEXT" (WORK_WARNING).
const progressFD = 3

// progressReader reads a command's progress lines and sends them for its
// job.
type progressReader struct {
	r, w *os.File
	done chan struct{}
}

// progressPipe gives the command a pipe as file descriptor progressFD
// (GEARWORK_PROGRESS_FD) and reads its lines into work updates of j.
func (h *commandHandler) progressPipe(cmd *exec.Cmd, j *worker.Job) (*progressReader, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("progress pipe: %w", err)
	}
	if runtime.GOOS != "windows" { // no inherited descriptors there
		cmd.ExtraFiles = []*os.File{w}
	}
	cmd.Env = append(cmd.Env, fmt.Sprintf("GEARWORK_PROGRESS_FD=%d", progressFD))
	p := &progressReader{r: r, w: w, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 0, 4096), 1<<20)
		for sc.Scan() {
			h.progressLine(j, sc.Text())
		}
	}()
	return p, nil
}

// started closes the parent's copy of the write end: the reader ends when
// the command (and any child it passed the descriptor to) has closed it.
func (p *progressReader) started() { p.w.Close() }

// wait waits up to d for the last progress lines, then stops reading.
func (p *progressReader) wait(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-p.done:
	case <-t.C:
	}
	p.r.Close()
	<-p.done
}

func (h *commandHandler) progressLine(j *worker.Job, line string) {
	verb, rest, _ := strings.Cut(line, " ")
	switch verb {
	case "status":
		var num, den uint32
		if _, err := fmt.Sscanf(rest, "%d %d", &num, &den); err == nil {
			_ = j.SendStatus(num, den)
			return
		}
	case "data":
		_ = j.SendData([]byte(rest))
		return
	case "warning":
		_ = j.SendWarning([]byte(rest))
		return
	}
	h.log.Warn("work: ignoring a progress line; use \"status N D\", \"data TEXT\" or \"warning TEXT\"",
		slog.String("handle", j.Handle), slog.String("line", line))
}
