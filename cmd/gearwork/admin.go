package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/gearwork/gearwork/client"
)

const adminHelp = `
Commands (sent as the text admin protocol, so they work with gearmand too):
  status                      functions: jobs in total, running, workers
  prioritystatus              functions: queued jobs per priority, workers
  workers                     connections and the functions they registered
  jobs                        jobs: handle, retries, ignored, queued
  uniques                     unique ids of the jobs
  maxqueue                    the queue limits (Gearwork only)
  maxqueue FN [N | H N L]     limit FN's queue (one limit, or per priority;
                              none or 0 removes the limit)
  cancel HANDLE               remove a queued job
  create FN                   create a function
  drop FN                     drop a function without workers or jobs
  version | getpid | verbose  one value of the server
  shutdown [--graceful]       stop the server (Gearwork; gearmand 1.1.15+
                              uses signals instead)

Every server in --servers is asked; with more than one, tables get a
SERVER column. Exit status: 0 ok, 1 a server answered with an error,
2 invalid arguments, 4 a server could not be reached.
`

// adminCommand describes one admin subcommand: the text line sent and
// how the answer is read.
type adminCommand struct {
	line string
	// columns names the fields of a list answer; nil for a one-line
	// answer ("OK ...").
	columns []string
	// parse turns one list line into values for columns.
	parse func(line string) []any
}

func runAdmin(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) error {
	fs := newFlagSet("admin", "admin [flags] COMMAND [ARGS...]", stderr)
	servers := fs.String("servers", client.DefaultServer, "comma-separated `host:port` list of job servers")
	asJSON := fs.Bool("json", false, "print JSON instead of a table: an array of objects (one per row or per server)")
	timeout := fs.Duration("timeout", 10*time.Second, "give up on a server after this `duration`")
	graceful := fs.Bool("graceful", false, "with shutdown: let running jobs finish first")
	usage := fs.Usage
	fs.Usage = func() {
		usage()
		fmt.Fprint(stderr, adminHelp)
	}
	// Flags may come before or after the command words ("admin status
	// --json"); words after "--" are never flags.
	var words []string
	for rest := args; ; {
		if err := parseFlags(fs, rest); err != nil {
			return err
		}
		rest = fs.Args()
		if len(rest) == 0 {
			break
		}
		if i := len(args) - len(rest); i > 0 && args[i-1] == "--" {
			words = append(words, rest...)
			break
		}
		words = append(words, rest[0])
		rest = rest[1:]
	}
	if *graceful {
		words = append(words, "--graceful")
	}
	cmd, err := parseAdminArgs(words)
	if err != nil {
		fs.Usage()
		fmt.Fprintln(stderr, "\ngearwork admin:", err)
		return exitError{code: exitUsage}
	}
	addrs := splitServers(*servers)
	if len(addrs) == 0 {
		return usageError(stderr, errors.New("--servers is empty"))
	}
	type answer struct {
		server string
		rows   [][]any
		value  string
	}
	var answers []answer
	code := 0
	for _, addr := range addrs {
		lines, err := adminRoundTrip(ctx, addr, cmd, *timeout)
		var ae *adminErr
		switch {
		case errors.As(err, &ae):
			fmt.Fprintf(stderr, "gearwork admin: %s: %s\n", addr, ae)
			code = max(code, 1)
			continue
		case err != nil:
			fmt.Fprintf(stderr, "gearwork admin: %s: %v\n", addr, err)
			code = exitUnreachable
			continue
		}
		a := answer{server: addr}
		if cmd.columns == nil {
			a.value = strings.TrimSpace(strings.TrimPrefix(lines[0], "OK"))
		} else {
			for _, l := range lines {
				a.rows = append(a.rows, cmd.parse(l))
			}
		}
		answers = append(answers, a)
	}

	multi := len(addrs) > 1
	switch {
	case *asJSON:
		out := []map[string]any{}
		for _, a := range answers {
			if cmd.columns == nil {
				out = append(out, map[string]any{"server": a.server, "result": a.value})
				continue
			}
			for _, r := range a.rows {
				m := map[string]any{"server": a.server}
				for i, col := range cmd.columns {
					m[jsonName(col)] = r[i]
				}
				out = append(out, m)
			}
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(out); err != nil {
			return err
		}
	case cmd.columns == nil:
		for _, a := range answers {
			v := a.value
			if v == "" {
				v = "OK"
			}
			if multi {
				fmt.Fprintf(stdout, "%s\t%s\n", a.server, v)
			} else {
				fmt.Fprintln(stdout, v)
			}
		}
	default:
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		if multi {
			fmt.Fprint(tw, "SERVER\t")
		}
		fmt.Fprintln(tw, strings.Join(cmd.columns, "\t"))
		for _, a := range answers {
			for _, r := range a.rows {
				if multi {
					fmt.Fprint(tw, a.server, "\t")
				}
				for i, v := range r {
					if i > 0 {
						fmt.Fprint(tw, "\t")
					}
					if l, ok := v.([]string); ok {
						v = strings.Join(l, " ")
					}
					fmt.Fprint(tw, v)
				}
				fmt.Fprintln(tw)
			}
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if code != 0 {
		return exitError{code: code}
	}
	return nil
}

// parseAdminArgs maps the command line to an admin text command.
func parseAdminArgs(args []string) (adminCommand, error) {
	if len(args) == 0 {
		return adminCommand{}, errors.New("missing command")
	}
	name, rest := args[0], args[1:]
	for _, a := range args {
		if strings.ContainsAny(a, "\r\n\x00") {
			return adminCommand{}, errors.New("arguments must not contain line breaks or NUL bytes")
		}
	}
	want := func(n int, what string) error {
		if len(rest) != n {
			return fmt.Errorf("%s needs %s", name, what)
		}
		return nil
	}
	num := func(s string) any {
		if n, err := strconv.Atoi(s); err == nil {
			return n
		}
		return s
	}
	single := func(line string) adminCommand { return adminCommand{line: line} }
	switch name {
	case "status":
		return adminCommand{line: "status", columns: []string{"FUNCTION", "TOTAL", "RUNNING", "WORKERS"},
			parse: func(l string) []any { return tabFields(l, 4, num) }}, want(0, "no arguments")
	case "prioritystatus":
		return adminCommand{line: "prioritystatus", columns: []string{"FUNCTION", "HIGH", "NORMAL", "LOW", "WORKERS"},
			parse: func(l string) []any { return tabFields(l, 5, num) }}, want(0, "no arguments")
	case "workers":
		return adminCommand{line: "workers", columns: []string{"FD", "ADDRESS", "CLIENT_ID", "FUNCTIONS"},
			parse: parseWorkerLine}, want(0, "no arguments")
	case "jobs":
		return adminCommand{line: "show jobs", columns: []string{"HANDLE", "RETRIES", "IGNORED", "QUEUED"},
			parse: func(l string) []any { return tabFields(l, 4, num) }}, want(0, "no arguments")
	case "uniques":
		return adminCommand{line: "show unique jobs", columns: []string{"UNIQUE"},
			parse: func(l string) []any { return []any{l} }}, want(0, "no arguments")
	case "maxqueue":
		switch len(rest) {
		case 0:
			return adminCommand{line: "show maxqueue", columns: []string{"FUNCTION", "HIGH", "NORMAL", "LOW"},
				parse: func(l string) []any { return tabFields(l, 4, num) }}, nil
		case 1, 2, 4:
			for _, n := range rest[1:] {
				if _, err := strconv.Atoi(n); err != nil {
					return adminCommand{}, fmt.Errorf("maxqueue limit %q is not a number", n)
				}
			}
			return single("maxqueue " + strings.Join(rest, " ")), nil
		}
		return adminCommand{}, errors.New("maxqueue takes FN, FN N, or FN HIGH NORMAL LOW")
	case "cancel":
		return single("cancel job " + strings.Join(rest, " ")), want(1, "a job handle")
	case "create", "drop":
		return single(name + " function " + strings.Join(rest, " ")), want(1, "a function name")
	case "version", "getpid", "verbose":
		return single(name), want(0, "no arguments")
	case "shutdown":
		switch {
		case len(rest) == 0:
			return single("shutdown"), nil
		case len(rest) == 1 && (rest[0] == "--graceful" || rest[0] == "graceful"):
			return single("shutdown graceful"), nil
		}
		return adminCommand{}, errors.New("shutdown takes only --graceful")
	}
	return adminCommand{}, fmt.Errorf("unknown command %q", name)
}

// tabFields splits a tab-separated line into n values, converting all but
// the first with conv.
func tabFields(l string, n int, conv func(string) any) []any {
	parts := strings.Split(l, "\t")
	out := make([]any, n)
	for i := range n {
		s := ""
		if i < len(parts) {
			s = parts[i]
		}
		if i == 0 {
			out[i] = s
		} else {
			out[i] = conv(s)
		}
	}
	return out
}

// parseWorkerLine parses "FD IP CLIENT-ID : FUNC...".
func parseWorkerLine(l string) []any {
	left, right, _ := strings.Cut(l, " :")
	f := strings.Fields(left)
	for len(f) < 3 {
		f = append(f, "")
	}
	fd := any(f[0])
	if n, err := strconv.Atoi(f[0]); err == nil {
		fd = n
	}
	fns := strings.Fields(right)
	if fns == nil {
		fns = []string{}
	}
	return []any{fd, f[1], f[2], fns}
}

func jsonName(col string) string { return strings.ToLower(col) }

// adminErr is an "ERR CODE text" answer.
type adminErr struct{ code, text string }

func (e *adminErr) Error() string {
	switch {
	case e.text == "":
		return e.code
	case e.code == "":
		return e.text
	}
	return e.code + ": " + e.text
}

// isErrCode reports whether s looks like an error code: UNKNOWN_JOB.
func isErrCode(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if (c < 'A' || c > 'Z') && c != '_' && (c < '0' || c > '9') {
			return false
		}
	}
	return true
}

// adminRoundTrip sends one admin line and reads its answer: the lines of a
// list up to the "." line, or the one "OK ..." line.
func adminRoundTrip(ctx context.Context, addr string, cmd adminCommand, timeout time.Duration) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	stop := context.AfterFunc(ctx, func() { nc.Close() })
	defer stop()
	if _, err := io.WriteString(nc, cmd.line+"\r\n"); err != nil {
		return nil, err
	}
	br := bufio.NewReader(nc)
	var lines []string
	for {
		l, err := br.ReadString('\n')
		if err != nil {
			if ctx.Err() != nil {
				return nil, fmt.Errorf("no answer to %q: %w", cmd.line, ctx.Err())
			}
			if errors.Is(err, io.EOF) && strings.HasPrefix(cmd.line, "shutdown") && len(lines) == 0 {
				// The server went away at once: that is a shutdown too.
				return []string{"OK"}, nil
			}
			return nil, fmt.Errorf("reading the answer to %q: %w", cmd.line, err)
		}
		l = strings.TrimRight(l, "\r\n")
		if len(lines) == 0 && strings.HasPrefix(l, "ERR") {
			rest := strings.TrimSpace(strings.TrimPrefix(l, "ERR"))
			code, text, _ := strings.Cut(rest, " ")
			if !isErrCode(code) {
				// Some answers have no code: "ERR function not found".
				code, text = "", rest
			}
			if t, err := url.QueryUnescape(text); err == nil {
				text = t
			}
			return nil, &adminErr{code: code, text: text}
		}
		if cmd.columns == nil {
			if !strings.HasPrefix(l, "OK") {
				return nil, fmt.Errorf("unexpected answer to %q: %q", cmd.line, l)
			}
			return []string{l}, nil
		}
		if l == "." {
			return lines, nil
		}
		lines = append(lines, l)
	}
}
