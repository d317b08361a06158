package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/gearwork/gearwork/client"
	"github.com/gearwork/gearwork/internal/broker"
)

// submitHelp follows submit's flags in its --help.
const submitHelp = `
The payload is the second argument; "-" reads it from stdin; none means an
empty payload. Streamed data (WORK_DATA) and the result go to stdout,
warnings and progress to stderr. When stdout is a terminal, output that does
not end with a newline gets one, so that the prompt starts on its own line;
otherwise the result's bytes are written exactly as the worker sent them.
A job that fails (WORK_FAIL) exits 1; a Gearwork server's record of the job
then says why: after how many attempts and with which last error (the
worker's last warning, "timed out", "worker vanished"), or who cancelled it.
`

type submitConfig struct {
	servers    string
	background bool
	priority   string
	unique     string
	batch      string
	after      string
	afterUniq  string
	anyway     bool
	at         string
	wait       bool
	poll       time.Duration
	timeout    time.Duration
}

func runSubmit(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	var cfg submitConfig
	fs := newFlagSetHelp("submit", "submit [flags] FUNCTION [PAYLOAD | -]", submitHelp, stderr)
	fs.StringVar(&cfg.servers, "servers", client.DefaultServer, "comma-separated `host:port` list of job servers; a --unique always picks the same one")
	fs.BoolVar(&cfg.background, "background", false, "submit a background job: print its handle and return once the server accepted it")
	fs.StringVar(&cfg.priority, "priority", "normal", "job `priority`: high, normal or low")
	fs.StringVar(&cfg.unique, "unique", "", "unique `id`: a submit matching a live job attaches to it (\"-\": the server hashes the payload)")
	fs.StringVar(&cfg.batch, "batch", "", "add the job to the open batch with this `id` (gearwork admin batch create; implies --background; see docs/batches.md)")
	fs.StringVar(&cfg.after, "after", "", "comma-separated job `handles`: the job waits until they completed successfully, and is cancelled if one fails (implies --background; see docs/batches.md)")
	fs.StringVar(&cfg.afterUniq, "after-unique", "", "`FUNCTION/UNIQUE`: the job waits for the live job of FUNCTION with that unique, as --after does (a retained result with it counts as completed); the job then has no unique of its own (implies --background)")
	fs.BoolVar(&cfg.anyway, "after-anyway", false, "with --after or --after-unique: run the job once those jobs have ended, whatever their outcome")
	fs.StringVar(&cfg.at, "at", "", "run the job at this `time`, RFC 3339 or Unix seconds (SUBMIT_JOB_EPOCH; implies --background, normal priority)")
	fs.BoolVar(&cfg.wait, "wait", false, "with --background: poll the job's state (printed to stderr: its record's, such as scheduled or retry-wait, from a Gearwork server; queued or running from gearmand) until it ends, then report its outcome from its record (a failed, dead, cancelled or excepted job exits non-zero)")
	positiveDurationVar(fs, &cfg.poll, "poll", 500*time.Millisecond, "status poll `interval` for --wait")
	durationVar(fs, &cfg.timeout, "timeout", 0, "give up waiting after this `duration` (0: wait as long as it takes)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	switch {
	case fs.NArg() == 0:
		return helpError(stderr, "submit", "missing the FUNCTION to submit the job to (gearwork submit [flags] FUNCTION [PAYLOAD | -])")
	case fs.NArg() > 2:
		return helpError(stderr, "submit", fmt.Sprintf("unexpected argument %q after the payload (quote a payload with spaces, or use - to read it from stdin)", fs.Arg(2)))
	}
	prio, err := client.ParsePriority(cfg.priority)
	if err != nil {
		return usageError(stderr, err)
	}
	req := client.Request{Function: fs.Arg(0), Unique: cfg.unique, Priority: prio}
	if cfg.batch != "" {
		if _, err := strconv.ParseUint(cfg.batch, 10, 64); err != nil {
			return usageError(stderr, fmt.Errorf("--batch %q: give the id gearwork admin batch create printed", cfg.batch))
		}
		req.Unique = client.BatchUnique(cfg.batch, cfg.unique)
		cfg.background = true
	}
	switch {
	case cfg.after != "" && cfg.batch != "", cfg.afterUniq != "" && (cfg.batch != "" || cfg.after != "" || cfg.unique != ""):
		return usageError(stderr, errors.New("--after, --after-unique, --batch and --unique cannot go together, except --after with --unique (each uses the job's unique id)"))
	case cfg.afterUniq != "":
		fn, unique, _ := strings.Cut(cfg.afterUniq, "/")
		if req.Unique, err = client.AfterJobUnique(fn, unique, cfg.anyway); err != nil {
			return usageError(stderr, fmt.Errorf("--after-unique: %w", err))
		}
		cfg.background = true
	case cfg.after != "":
		if req.Unique, err = client.AfterUnique(strings.Split(cfg.after, ","), cfg.anyway, cfg.unique); err != nil {
			return usageError(stderr, fmt.Errorf("--after: %w", err))
		}
		cfg.background = true
	case cfg.anyway:
		return usageError(stderr, errors.New("--after-anyway goes with --after or --after-unique"))
	}
	if cfg.at != "" {
		if req.RunAt, err = parseAt(cfg.at); err != nil {
			return usageError(stderr, err)
		}
		if prio != client.PriorityNormal {
			return usageError(stderr, errors.New("--at submits with normal priority (SUBMIT_JOB_EPOCH has none): leave out --priority"))
		}
		cfg.background = true
	}
	if cfg.wait && !cfg.background {
		return usageError(stderr, errors.New("--wait needs --background (a foreground job is always waited for)"))
	}
	switch p := fs.Arg(1); p {
	case "-":
		if req.Payload, err = io.ReadAll(stdin); err != nil {
			return fmt.Errorf("reading the payload from stdin: %w", err)
		}
	default:
		req.Payload = []byte(p)
	}
	servers := splitServers(cfg.servers)
	if len(servers) == 0 {
		return usageError(stderr, errors.New("--servers is empty"))
	}
	c, err := client.New(client.Config{
		Servers: servers,
		Logger:  slog.New(slog.DiscardHandler),
	})
	if err != nil {
		return usageError(stderr, err)
	}
	defer c.Close()
	if cfg.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cfg.timeout)
		defer cancel()
	}
	if cfg.background {
		return submitBackground(ctx, c, req, cfg, stdout, stderr)
	}
	out := &trackingWriter{w: stdout}
	req.UpdateFunc = func(u client.Update) {
		switch u.Kind {
		case client.UpdateData:
			_, _ = out.Write(u.Data)
		case client.UpdateWarning:
			fmt.Fprintf(stderr, "warning: %s\n", bytes.TrimRight(u.Data, "\n"))
		case client.UpdateStatus:
			fmt.Fprintf(stderr, "status: %d/%d\n", u.Numerator, u.Denominator)
		}
	}
	t, err := c.Submit(ctx, req)
	if err != nil {
		return submitError(ctx, err, stderr)
	}
	result, err := t.Wait(ctx)
	if errors.Is(err, client.ErrJobFailed) {
		// WORK_FAIL says nothing of why: the job's record does.
		return failedOutcome(ctx, t.Job(), err, stderr)
	}
	if err != nil {
		return submitError(ctx, err, stderr)
	}
	_, _ = out.Write(result)
	if out.n > 0 && out.last != '\n' && isTerminal(stdout) {
		fmt.Fprintln(stdout)
	}
	return nil
}

func submitBackground(ctx context.Context, c *client.Client, req client.Request, cfg submitConfig, stdout, stderr io.Writer) error {
	job, err := c.SubmitBackground(ctx, req)
	if err != nil {
		return submitError(ctx, err, stderr)
	}
	fmt.Fprintln(stdout, job.Handle)
	if !cfg.wait {
		return nil
	}
	// A Gearwork server's record of the job says its state (scheduled,
	// retry-wait, waiting, blocked...); gearmand's GET_STATUS says only
	// whether the job is known and running.
	records := true
	var last string
	for first := true; ; first = false {
		var line string
		if records {
			field, err := jobRecord(ctx, job)
			var ae *adminErr
			switch {
			case err == nil:
				if final, _ := field("final").(bool); final {
					return reportOutcome(ctx, job, stdout, stderr)
				}
				state, _ := field("state").(string)
				line = statusLine(state, field("progress"))
			case errors.As(err, &ae) && ae.code == "UNKNOWN_JOB":
				return reportOutcome(ctx, job, stdout, stderr)
			case errors.As(err, &ae):
				records = false // a server without job records
			default:
				return submitError(ctx, err, stderr)
			}
		}
		if !records {
			st, err := c.Status(ctx, job)
			if err != nil {
				return submitError(ctx, err, stderr)
			}
			if !st.Known {
				return reportOutcome(ctx, job, stdout, stderr)
			}
			state := "queued"
			if st.Running {
				state = "running"
			}
			line = statusLine(state, fmt.Sprintf("%d/%d", st.Numerator, st.Denominator))
		}
		if first || line != last {
			fmt.Fprintln(stderr, line)
			last = line
		}
		t := time.NewTimer(cfg.poll)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return submitError(ctx, ctx.Err(), stderr)
		}
	}
}

// statusLine is what --wait prints of a live job: its state, and its
// progress ("N/D") once the worker has reported some.
func statusLine(state string, progress any) string {
	p, _ := progress.(string)
	if _, d, ok := strings.Cut(p, "/"); ok && d != "0" {
		return "status: " + state + " " + p
	}
	return "status: " + state
}

// submitError turns a client error into an exit code and a message.
func submitError(ctx context.Context, err error, stderr io.Writer) error {
	var exc *client.ExceptionError
	var se *client.ServerError
	switch {
	case errors.As(err, &exc):
		fmt.Fprintf(stderr, "exception: %s\n", exc.Data)
		return exitError{code: exitException, msg: "job " + exc.Handle + " threw an exception"}
	case errors.Is(err, client.ErrJobFailed):
		return exitError{code: exitJobFailed, msg: strings.TrimPrefix(err.Error(), "client: ")}
	case errors.As(err, &se):
		return exitError{code: exitRefused, msg: "server refused the job: " + se.Code + ": " + se.Text}
	case errors.Is(err, client.ErrInvalidRequest):
		// The client checks a request before it sends anything.
		return exitError{code: exitUsage, msg: strings.TrimPrefix(err.Error(), "client: ")}
	case errors.Is(err, context.DeadlineExceeded):
		return exitError{code: exitUnreachable, msg: "timed out"}
	case errors.Is(err, context.Canceled) && ctx.Err() != nil:
		return exitError{code: exitInterrupted, msg: "interrupted"}
	default:
		return exitError{code: exitUnreachable, msg: strings.TrimPrefix(err.Error(), "client: ")}
	}
}

// parseAt parses --at: RFC 3339 or Unix seconds.
func parseAt(s string) (time.Time, error) {
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		if n <= 0 {
			return time.Time{}, fmt.Errorf("invalid --at %q: Unix seconds must be positive", s)
		}
		return time.Unix(n, 0), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("invalid --at %q: use RFC 3339 (2025-01-02T15:04:05Z) or Unix seconds", s)
	}
	return t, nil
}

// splitServers splits a --servers list, dropping empty entries.
func splitServers(s string) []string {
	var out []string
	for _, a := range strings.Split(s, ",") {
		if a = strings.TrimSpace(a); a != "" {
			out = append(out, a)
		}
	}
	return out
}

// usageError prints err and returns the usage exit code.
func usageError(stderr io.Writer, err error) error {
	fmt.Fprintln(stderr, "gearwork:", err)
	return exitError{code: exitUsage}
}

// helpError prints what is wrong with a command line and where to read
// about it, and returns the usage exit code.
func helpError(stderr io.Writer, command, msg string) error {
	fmt.Fprintf(stderr, "gearwork %s: %s\nRun \"gearwork %s --help\" for its flags.\n", command, msg, command)
	return exitError{code: exitUsage}
}

// trackingWriter remembers the last byte written, so that a result can be
// ended with a newline on a terminal.
type trackingWriter struct {
	w    io.Writer
	n    int
	last byte
}

func (t *trackingWriter) Write(p []byte) (int, error) {
	if len(p) > 0 {
		t.n += len(p)
		t.last = p[len(p)-1]
	}
	return t.w.Write(p)
}

// isTerminal reports whether w is a character device such as a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// jobRecord reads the record of job ("job HANDLE" on the admin port) and
// returns a reader of its fields.
func jobRecord(ctx context.Context, job client.Job) (func(name string) any, error) {
	cmd, err := parseJobArgs([]string{job.Handle})
	if err != nil {
		return nil, err
	}
	a, err := adminRoundTrip(ctx, job.Server, cmd, 10*time.Second)
	if err != nil {
		return nil, err
	}
	row := a.rows[0]
	return func(name string) any { return jobFieldOf(row, name) }, nil
}

// failedOutcome explains the WORK_FAIL of a foreground job from its record
// (Gearwork): after how many attempts and with which last error (the
// worker's last warning, "timed out", "worker vanished"), or who cancelled
// it. A server that keeps no such record (gearmand) leaves failed, the
// client's error, as it is.
func failedOutcome(ctx context.Context, job client.Job, failed error, stderr io.Writer) error {
	field, err := jobRecord(ctx, job)
	if err != nil {
		return submitError(ctx, failed, stderr)
	}
	state, _ := field("state").(string)
	if state != broker.FinalFailed && state != broker.FinalCancelled {
		return submitError(ctx, failed, stderr)
	}
	return endedError(job.Handle, field)
}

// reportOutcome reports how a background job that the server no longer
// holds ended, from its record ("job HANDLE" on the admin port): a
// completed job's result goes to stdout, anything else is an error with
// its exit code. A server that keeps no job records (gearmand) only says
// the job is done.
func reportOutcome(ctx context.Context, job client.Job, stdout, stderr io.Writer) error {
	field, err := jobRecord(ctx, job)
	var ae *adminErr
	switch {
	case errors.As(err, &ae) && ae.code == "UNKNOWN_JOB":
		fmt.Fprintln(stderr, "status: done")
		return exitError{code: exitFailed, msg: "job " + job.Handle + " ended, but the server keeps no record of how (see the policy keys history and history_max)"}
	case errors.As(err, &ae):
		// A server without job records.
		fmt.Fprintln(stderr, "status: done")
		return nil
	case err != nil:
		return submitError(ctx, err, stderr)
	}
	state, _ := field("state").(string)
	lastErr, _ := field("last_error").(string)
	fmt.Fprintf(stderr, "status: %s\n", state)
	switch state {
	case broker.FinalComplete:
		if r, ok := field("result").(blob); ok {
			_, _ = stdout.Write(r)
		}
		return nil
	case broker.FinalException:
		fmt.Fprintf(stderr, "exception: %s\n", lastErr)
		return exitError{code: exitException, msg: "job " + job.Handle + " threw an exception"}
	}
	return endedError(job.Handle, field)
}

// endedError is the error of a job whose record says it ended failed,
// dead or cancelled: who cancelled it, or after how many attempts it
// ended and with which last error.
func endedError(handle string, field func(name string) any) error {
	state, _ := field("state").(string)
	if state == broker.FinalCancelled {
		by, _ := field("cancelled_by").(string)
		return exitError{code: exitFailed, msg: fmt.Sprintf("job %s was cancelled (by %s)", handle, by)}
	}
	attempts := field("attempts")
	runs := "attempts"
	if fmt.Sprint(attempts) == "1" {
		runs = "attempt"
	}
	msg := fmt.Sprintf("job %s %s after %v %s", handle, state, attempts, runs)
	// The error as the worker sent it, less the newline that ends a
	// command's stderr. A failed job whose last error is only "failed"
	// (a WORK_FAIL without a warning) says it once.
	if lastErr, _ := field("last_error").(string); lastErr != "" && lastErr != state {
		msg += ": " + strings.TrimRight(lastErr, "\r\n")
	}
	return exitError{code: exitJobFailed, msg: msg}
}
