package main

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/gearwork/gearwork/client"
	"github.com/gearwork/gearwork/internal/broker"
)

const adminHelp = `
Commands (sent as the text admin protocol, so they work with gearmand too):
  status                      functions: jobs in total, running, workers
  prioritystatus              functions: queued jobs per priority, workers
  workers                     connections and the functions they registered
  show-jobs                   live jobs: handle, retries, ignored, queued
  uniques                     unique ids of the jobs
  maxqueue                    the queue limits (Gearwork only)
  maxqueue FN [N | H N L]     limit FN's queue (one limit, or per priority;
                              none or 0 removes the limit)
  cancel HANDLE               cancel a queued job (Gearwork: any live job,
                              running too; its record says by whom)
  create FN                   create a function
  drop FN                     drop a function without workers or running
                              jobs, and its queued jobs (cancelled)
  version | getpid | verbose  one value of the server
  shutdown [--graceful]       stop the server (Gearwork; gearmand 1.1.15+
                              uses signals instead)

Job lifecycle commands (Gearwork only; see docs/lifecycle.md):
  policy [FN]                 policies: source, state and the settings that
                              differ from the defaults (--json: every key)
  policy FN KEY=VALUE...      change keys of FN's policy (stored: the change
                              survives a restart and overrides --config)
  policy FN reset             FN follows its --config policy (or the
                              default policy) again (stored)
  pause FN [until TIME|DUR]   stop handing out FN's jobs (until an RFC 3339
                              time or for a duration such as 30m)
  resume FN                   hand out FN's jobs again
  jobs [--function FN] [--state S] [--batch ID] [--limit N] [--cursor C]
                              job records, newest first: live jobs, then
                              ended ones (complete, failed, exception,
                              cancelled, dead) while their history keeps
                              them; --cursor with a row's CURSOR goes on
  job HANDLE                  one job's record: outcome, error, attempts
  retry HANDLE                run a failed, exception or dead job again: a
                              dead letter under its handle, any other as a
                              new job (same function, unique, priority and
                              payload) whose record names HANDLE
  deadletters [FN]            dead letters: handle, attempts, last error
  deadletter show HANDLE      one dead letter with payload and attempts
  deadletter retry HANDLE     queue a dead letter again
  deadletter retry all FN     queue all of FN's dead letters again
  deadletter purge FN         delete all of FN's dead letters
  result HANDLE | unique:U    a retained result, written as it is
                              (--json: as a string, or base64 if binary)
  schedules                   cron schedules: spec, last and next tick
  ordering [FN]               ordering keys: head job, its state, waiting

Batches (Gearwork only; see docs/batches.md):
  batch ID                    a batch's counts, callbacks and failed jobs
  batch ID --state S [--limit N] [--cursor C]
                              the batch's jobs in state S (failed, dead,
                              complete, ...), as jobs --batch ID lists them
  batch create [on_success=FN] [on_complete=FN]
                              create an open batch; prints "batch ID"
  batch close ID              close a batch: it completes, and submits its
                              callbacks, once its jobs have finished

Every server in --servers is asked; with more than one, tables get a
SERVER column. pause, resume and policy FN ... answer "unknown function"
for a function the server does not know (create it first to configure it
before its workers connect).
`

// answerKind is the shape of an admin text answer.
type answerKind int

const (
	answerOK   answerKind = iota // one "OK [value]" line
	answerList                   // lines up to a line holding only "."
	answerData                   // "OK <length>", that many bytes, a newline
)

// adminCommand describes one admin subcommand: the text line sent and
// how the answer is read and shown.
type adminCommand struct {
	line string
	kind answerKind
	// columns names the fields of a list answer's rows.
	columns []string
	// parse turns one list line into values for columns.
	parse func(line string) []any
	// record, if set, reads a whole list answer as one row instead
	// (deadletter show).
	record func(lines []string) ([]any, error)
	// vertical shows each row as "COLUMN value" lines (a record).
	vertical bool
	// describe, if set, turns the value of an OK answer into the text
	// printed for people.
	describe func(value string) string
	// unknownJob, if set, explains an "ERR UNKNOWN_JOB" answer.
	unknownJob string
}

func runAdmin(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) error {
	fs := newFlagSetHelp("admin", "admin [flags] COMMAND [ARGS...]", adminHelp, stderr)
	servers := fs.String("servers", client.DefaultServer, "comma-separated `host:port` list of job servers")
	asJSON := fs.Bool("json", false, "print JSON instead of a table: an array of objects (one per row or per server)")
	timeout := new(time.Duration)
	positiveDurationVar(fs, timeout, "timeout", 10*time.Second, "give up on a server after this `duration`")
	graceful := fs.Bool("graceful", false, "with shutdown: let running jobs finish first")
	function := fs.String("function", "", "with jobs: only this `function`")
	state := fs.String("state", "", "with jobs: only this `state` (queued, running, complete, failed, dead, ...)")
	limit := fs.Int("limit", 0, "with jobs: at most this many `rows` (1-1000, default 50)")
	cursor := fs.String("cursor", "", "with jobs: go on after the row with this `cursor`")
	batch := fs.String("batch", "", "with jobs: only the jobs of this batch `id` (as batch ID --state ...)")
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
		if len(words) == 0 || words[0] != "shutdown" {
			return helpError(stderr, "admin", "--graceful goes with shutdown")
		}
		words = append(words, "--graceful")
	}
	limitSet := false
	fs.Visit(func(f *flag.Flag) { limitSet = limitSet || f.Name == "limit" })
	if limitSet && (*limit < 1 || *limit > broker.MaxJobPage) {
		return helpError(stderr, "admin", fmt.Sprintf("invalid --limit %d: use 1 to %d", *limit, broker.MaxJobPage))
	}
	listing := *function != "" || *state != "" || *cursor != "" || limitSet
	if len(words) == 2 && words[0] == "batch" && isBatchID(words[1]) && listing {
		// "batch ID --state failed": the batch's jobs, as jobs lists them.
		words, *batch = []string{"jobs"}, words[1]
	}
	if len(words) > 0 && words[0] == "jobs" {
		for _, kv := range [][2]string{{"function", *function}, {"state", *state}, {"batch", *batch}, {"cursor", *cursor}} {
			if kv[1] != "" {
				words = append(words, kv[0]+"="+kv[1])
			}
		}
		if *limit != 0 {
			words = append(words, "limit="+strconv.Itoa(*limit))
		}
	} else if listing || *batch != "" {
		return helpError(stderr, "admin", "--function, --state, --batch, --limit and --cursor go with jobs (and --state, --limit and --cursor with batch ID)")
	}
	// The text admin protocol separates words by spaces: an empty word, or
	// one with white space, would reach the server as other words ("maxqueue
	// '' 5" limited a function named "5").
	for _, w := range words {
		if w == "" || strings.ContainsAny(w, " \t\r\n\v\f") {
			return helpError(stderr, "admin", fmt.Sprintf("%q: the admin protocol takes no empty argument and none with white space (function names and handles have none)", w))
		}
	}
	cmd, err := parseAdminArgs(words)
	if err != nil {
		return helpError(stderr, "admin", err.Error())
	}
	addrs := splitServers(*servers)
	if len(addrs) == 0 {
		return usageError(stderr, errors.New("--servers is empty"))
	}
	var answers []adminAnswer
	code := 0
	for _, addr := range addrs {
		a, err := adminRoundTrip(ctx, addr, cmd, *timeout)
		var ae *adminErr
		switch {
		case errors.As(err, &ae):
			if ae.code == "UNKNOWN_JOB" && ae.text == "" {
				ae.text = cmd.unknownJob
			}
			fmt.Fprintf(stderr, "gearwork admin: %s: %s\n", addr, ae)
			code = max(code, 1)
			continue
		case err != nil:
			fmt.Fprintf(stderr, "gearwork admin: %s: %v\n", addr, err)
			code = exitUnreachable
			continue
		}
		answers = append(answers, a)
	}
	if err := printAdmin(stdout, cmd, answers, len(addrs) > 1, *asJSON); err != nil {
		return err
	}
	if code != 0 {
		return exitError{code: code}
	}
	return nil
}

// adminAnswer is one server's answer to an admin command.
type adminAnswer struct {
	server string
	rows   [][]any // answerList
	value  string  // answerOK: the text after "OK"
	data   []byte  // answerData
}

// printAdmin writes the answers as JSON (an array of objects: one per row,
// or one per server for OK and data answers) or for people: an aligned
// table, the values of OK answers, or the raw data.
func printAdmin(w io.Writer, cmd adminCommand, answers []adminAnswer, multi, asJSON bool) error {
	if asJSON {
		out := []map[string]any{}
		for _, a := range answers {
			switch cmd.kind {
			case answerOK:
				out = append(out, map[string]any{"server": a.server, "result": a.value})
			case answerData:
				m := map[string]any{"server": a.server, "length": len(a.data)}
				putJSON(m, "data", blob(a.data))
				out = append(out, m)
			case answerList:
				for _, r := range a.rows {
					m := map[string]any{"server": a.server}
					for i, col := range cmd.columns {
						putJSON(m, jsonName(col), r[i])
					}
					out = append(out, m)
				}
			}
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	switch cmd.kind {
	case answerOK:
		for _, a := range answers {
			v := a.value
			switch {
			case cmd.describe != nil:
				v = cmd.describe(v)
			case v == "":
				v = "OK"
			}
			if multi {
				fmt.Fprintf(w, "%s\t%s\n", a.server, v)
			} else {
				fmt.Fprintln(w, v)
			}
		}
		return nil
	case answerData:
		for _, a := range answers {
			if _, err := w.Write(a.data); err != nil {
				return err
			}
		}
		return nil
	}
	if len(answers) == 0 {
		return nil // every server failed: no table, only the errors
	}
	if cmd.vertical {
		return printRecords(w, cmd.columns, answers, multi)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
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
				fmt.Fprint(tw, cell(v))
			}
			fmt.Fprintln(tw)
		}
	}
	return tw.Flush()
}

// printRecords writes each row as "COLUMN value" lines, followed by the
// rows of any nested table, with a blank line between records.
func printRecords(w io.Writer, columns []string, answers []adminAnswer, multi bool) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	first := true
	for _, a := range answers {
		for _, r := range a.rows {
			if !first {
				fmt.Fprintln(tw)
			}
			first = false
			if multi {
				fmt.Fprintf(tw, "SERVER\t%s\n", a.server)
			}
			var nested []nestedTable
			for i, v := range r {
				if n, ok := v.(nestedTable); ok {
					nested = append(nested, n)
					continue
				}
				fmt.Fprintf(tw, "%s\t%s\n", columns[i], cell(v))
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			for _, n := range nested {
				if len(n.tableRows()) == 0 {
					continue
				}
				fmt.Fprintln(tw)
				fmt.Fprintln(tw, strings.Join(n.tableHeader(), "\t"))
				for _, nr := range n.tableRows() {
					fmt.Fprintln(tw, strings.Join(nr, "\t"))
				}
				if err := tw.Flush(); err != nil {
					return err
				}
			}
		}
	}
	return tw.Flush()
}

// nestedTable is a value shown as a table of its own below a record.
type nestedTable interface {
	tableHeader() []string
	tableRows() [][]string
}

// cell formats a value for a table cell: nil as "-", lists joined by
// spaces, and text that would break the table's alignment (tabs, line
// breaks, other unprintable characters) Go-quoted.
func cell(v any) string {
	switch v := v.(type) {
	case nil:
		return "-"
	case []string:
		return strings.Join(v, " ")
	case blob:
		return textCell(string(v))
	case string:
		return textCell(v)
	case fmt.Stringer:
		return v.String()
	}
	return fmt.Sprint(v)
}

func textCell(s string) string {
	if !utf8.ValidString(s) {
		return strconv.Quote(s)
	}
	for _, r := range s {
		if r == '\t' || !strconv.IsPrint(r) {
			return strconv.Quote(s)
		}
	}
	return s
}

// blob is uninterpreted bytes (a payload or a result). In JSON it is a
// string when it is valid UTF-8, and otherwise base64 under the key's
// name with "_base64" appended.
type blob []byte

// putJSON sets m[key] to v, mapping a blob as blob describes.
func putJSON(m map[string]any, key string, v any) {
	b, ok := v.(blob)
	switch {
	case !ok:
		m[key] = v
	case utf8.Valid(b):
		m[key] = string(b)
	default:
		m[key+"_base64"] = base64.StdEncoding.EncodeToString(b)
	}
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
		return adminCommand{kind: answerList, line: "status", columns: []string{"FUNCTION", "TOTAL", "RUNNING", "WORKERS"},
			parse: func(l string) []any { return tabFields(l, 4, num) }}, want(0, "no arguments")
	case "prioritystatus":
		return adminCommand{kind: answerList, line: "prioritystatus", columns: []string{"FUNCTION", "HIGH", "NORMAL", "LOW", "WORKERS"},
			parse: func(l string) []any { return tabFields(l, 5, num) }}, want(0, "no arguments")
	case "workers":
		return adminCommand{kind: answerList, line: "workers", columns: []string{"FD", "ADDRESS", "CLIENT_ID", "FUNCTIONS"},
			parse: parseWorkerLine}, want(0, "no arguments")
	case "show-jobs":
		return adminCommand{kind: answerList, line: "show jobs", columns: []string{"HANDLE", "RETRIES", "IGNORED", "QUEUED"},
			parse: func(l string) []any { return tabFields(l, 4, num) }}, want(0, "no arguments")
	case "uniques":
		return adminCommand{kind: answerList, line: "show unique jobs", columns: []string{"UNIQUE"},
			parse: func(l string) []any { return []any{l} }}, want(0, "no arguments")
	case "maxqueue":
		switch len(rest) {
		case 0:
			return adminCommand{kind: answerList, line: "show maxqueue", columns: []string{"FUNCTION", "HIGH", "NORMAL", "LOW"},
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
		cmd := single("cancel job " + strings.Join(rest, " "))
		cmd.unknownJob = "no job " + strings.Join(rest, " ") + ": it never existed, or its record is no longer kept"
		return cmd, want(1, "a job handle")
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
	if cmd, ok, err := parseLifecycleArgs(name, rest); ok {
		return cmd, err
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

// adminRoundTrip sends one admin line to addr and reads its answer: the
// lines of a list up to the "." line, the one "OK ..." line, or the data
// after "OK <length>".
func adminRoundTrip(ctx context.Context, addr string, cmd adminCommand, timeout time.Duration) (adminAnswer, error) {
	a := adminAnswer{server: addr}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return a, err
	}
	defer nc.Close()
	stop := context.AfterFunc(ctx, func() { nc.Close() })
	defer stop()
	if _, err := io.WriteString(nc, cmd.line+"\r\n"); err != nil {
		return a, err
	}
	br := bufio.NewReader(nc)
	readErr := func(err error) error {
		if ctx.Err() != nil {
			return fmt.Errorf("no answer to %q: %w", cmd.line, ctx.Err())
		}
		return fmt.Errorf("reading the answer to %q: %w", cmd.line, err)
	}
	var lines []string
	for {
		l, err := br.ReadString('\n')
		if err != nil {
			if ctx.Err() == nil && errors.Is(err, io.EOF) && strings.HasPrefix(cmd.line, "shutdown") && len(lines) == 0 {
				// The server went away at once: that is a shutdown too.
				return a, nil
			}
			return a, readErr(err)
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
			return a, &adminErr{code: code, text: text}
		}
		switch cmd.kind {
		case answerOK, answerData:
			if l != "OK" && !strings.HasPrefix(l, "OK ") {
				return a, fmt.Errorf("unexpected answer to %q: %q", cmd.line, l)
			}
			a.value = strings.TrimSpace(strings.TrimPrefix(l, "OK"))
			if cmd.kind == answerOK {
				return a, nil
			}
			n, err := strconv.Atoi(a.value)
			if err != nil || n < 0 {
				return a, fmt.Errorf("unexpected answer to %q: %q", cmd.line, l)
			}
			// The data, then the newline that ends it.
			a.data = make([]byte, n+1)
			if _, err := io.ReadFull(br, a.data); err != nil {
				return a, readErr(err)
			}
			if a.data[n] != '\n' {
				return a, fmt.Errorf("the answer to %q is longer than its %d bytes", cmd.line, n)
			}
			a.data = a.data[:n]
			return a, nil
		}
		if l == "." {
			break
		}
		lines = append(lines, l)
	}
	if cmd.record != nil {
		row, err := cmd.record(lines)
		if err != nil {
			return a, fmt.Errorf("the answer to %q: %w", cmd.line, err)
		}
		a.rows = [][]any{row}
		return a, nil
	}
	for _, l := range lines {
		a.rows = append(a.rows, cmd.parse(l))
	}
	return a, nil
}
