package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/gearwork/gearwork/internal/broker"
)

// parseLifecycleArgs maps the lifecycle subcommands of "gearwork admin"
// to Gearwork's lifecycle admin text commands (docs/lifecycle.md). It
// reports false for a name that is not one of them.
func parseLifecycleArgs(name string, rest []string) (adminCommand, bool, error) {
	parse, found := lifecycleCommands[name]
	if !found {
		return adminCommand{}, false, nil
	}
	cmd, err := parse(rest)
	return cmd, true, err
}

// lifecycleCommands parses the arguments of each lifecycle admin command,
// by command name.
var lifecycleCommands = map[string]func(rest []string) (adminCommand, error){
	"policy":      parsePolicyArgs,
	"pause":       parsePauseArgs,
	"resume":      parseResumeArgs,
	"deadletters": parseDeadlettersArgs,
	"deadletter":  parseDeadletterArgs,
	"jobs":        parseJobsArgs,
	"job":         parseJobArgs,
	"retry":       parseRetryArgs,
	"result":      parseResultArgs,
	"schedules":   parseSchedulesArgs,
	"ordering":    parseOrderingArgs,
	"batch":       parseBatchArgs,
}

// listCommand is a command answered with a list of lines, parsed into
// columns by parse.
func listCommand(line string, columns []string, parse func(string) []any) adminCommand {
	return adminCommand{kind: answerList, line: line, columns: columns, parse: parse}
}

// okCommand is a command answered with OK (or a count, told by describe).
func okCommand(line string, describe func(string) string) adminCommand {
	return adminCommand{kind: answerOK, line: line, describe: describe}
}

// parsePolicyArgs parses the arguments of policy.
func parsePolicyArgs(rest []string) (adminCommand, error) {
	switch {
	case len(rest) <= 1:
		return listCommand(strings.Join(append([]string{"show policy"}, rest...), " "),
			[]string{"FUNCTION", "SOURCE", "STATE", "SETTINGS"}, parsePolicyLine), nil
	case len(rest) == 2 && rest[1] == "reset":
		return okCommand("policy "+rest[0]+" reset", nil), nil
	}
	for _, kv := range rest[1:] {
		if k, _, found := strings.Cut(kv, "="); !found || k == "" {
			return adminCommand{}, fmt.Errorf("policy settings are KEY=VALUE, not %q", kv)
		}
	}
	return okCommand("policy "+strings.Join(rest, " "), nil), nil
}

// parsePauseArgs parses the arguments of pause.
func parsePauseArgs(rest []string) (adminCommand, error) {
	switch {
	case len(rest) == 1:
		return okCommand("pause "+rest[0], nil), nil
	case len(rest) == 2 || len(rest) == 3 && rest[1] == "until":
		until := rest[len(rest)-1]
		if err := checkPauseEnd(until); err != nil {
			return adminCommand{}, fmt.Errorf("pause until %q: %w", until, err)
		}
		return okCommand("pause "+rest[0]+" until "+until, nil), nil
	}
	return adminCommand{}, errors.New("pause takes FN, or FN until TIME|DURATION")
}

// parseResumeArgs parses the arguments of resume.
func parseResumeArgs(rest []string) (adminCommand, error) {
	if len(rest) != 1 {
		return adminCommand{}, errors.New("resume needs a function name")
	}
	return okCommand("resume "+rest[0], nil), nil
}

// parseDeadlettersArgs parses the arguments of deadletters.
func parseDeadlettersArgs(rest []string) (adminCommand, error) {
	if len(rest) > 1 {
		return adminCommand{}, errors.New("deadletters takes at most a function name")
	}
	return listCommand(strings.Join(append([]string{"deadletters"}, rest...), " "),
		[]string{"HANDLE", "FUNCTION", "UNIQUE", "ATTEMPTS", "DIED", "ERROR"}, parseDeadLetterLine), nil
}

// parseDeadletterArgs parses the arguments of deadletter.
func parseDeadletterArgs(rest []string) (adminCommand, error) {
	sub := ""
	if len(rest) > 0 {
		sub = rest[0]
	}
	switch {
	case sub == "show" && len(rest) == 2:
		return adminCommand{kind: answerList, line: "deadletter show " + rest[1], vertical: true,
			columns: []string{"HANDLE", "FUNCTION", "UNIQUE", "PRIORITY", "ATTEMPTS", "DIED", "ERROR", "PAYLOAD", "HISTORY"},
			record:  parseDeadLetterRecord, unknownJob: "no dead letter " + rest[1]}, nil
	case sub == "retry" && len(rest) == 3 && rest[1] == "all":
		return okCommand("deadletter retry all "+rest[2], countText("dead letter", "queued again")), nil
	case sub == "retry" && len(rest) == 2:
		cmd := okCommand("deadletter retry "+rest[1], countText("dead letter", "queued again"))
		cmd.unknownJob = "no dead letter " + rest[1]
		return cmd, nil
	case sub == "purge" && len(rest) == 2:
		return okCommand("deadletter purge "+rest[1], countText("dead letter", "purged")), nil
	}
	return adminCommand{}, errors.New("deadletter takes show HANDLE, retry HANDLE, retry all FN or purge FN")
}

// parseJobsArgs parses the arguments of jobs.
func parseJobsArgs(rest []string) (adminCommand, error) {
	for _, a := range rest {
		if !strings.HasPrefix(a, "function=") && !strings.HasPrefix(a, "state=") && !strings.HasPrefix(a, "batch=") &&
			!strings.HasPrefix(a, "limit=") && !strings.HasPrefix(a, "cursor=") {
			return adminCommand{}, fmt.Errorf("jobs takes --function, --state, --batch, --limit and --cursor, not %q", a)
		}
	}
	return listCommand(strings.Join(append([]string{"jobs"}, rest...), " "),
		[]string{"HANDLE", "FUNCTION", "STATE", "ATTEMPTS", "SUBMITTED", "FINISHED", "ERROR", "CURSOR"},
		func(l string) []any { return parseJobLine(l, 8, 6) }), nil
}

// parseJobArgs parses the arguments of job.
func parseJobArgs(rest []string) (adminCommand, error) {
	if len(rest) != 1 {
		return adminCommand{}, errors.New("job needs a job handle")
	}
	return adminCommand{kind: answerList, line: "job " + rest[0], vertical: true,
		columns: []string{"HANDLE", "FUNCTION", "UNIQUE", "PRIORITY", "BACKGROUND", "STATE", "ATTEMPTS",
			"SUBMITTED", "STARTED", "FINISHED", "ERROR", "CANCELLED_BY", "RETRY_OF", "RESULT", "RESULT_TRUNCATED",
			"PAYLOAD", "PAYLOAD_SIZE", "HISTORY"},
		record: parseJobRecord, unknownJob: "no job " + rest[0] + " (its record may have expired)"}, nil
}

// parseRetryArgs parses the arguments of retry.
func parseRetryArgs(rest []string) (adminCommand, error) {
	if len(rest) != 1 {
		return adminCommand{}, errors.New("retry needs a job handle")
	}
	old := rest[0]
	cmd := okCommand("retry job "+old, func(h string) string {
		if h == old {
			return "dead letter " + old + " queued again"
		}
		return "job " + old + " runs again as " + h
	})
	cmd.unknownJob = "no record of job " + old + " is kept (it never existed, or its record expired)"
	return cmd, nil
}

// parseResultArgs parses the arguments of result.
func parseResultArgs(rest []string) (adminCommand, error) {
	if len(rest) != 1 {
		return adminCommand{}, errors.New("result needs a job handle or unique:UNIQUE")
	}
	return adminCommand{kind: answerData, line: "result " + rest[0],
		unknownJob: "no retained result for " + rest[0]}, nil
}

// parseSchedulesArgs parses the arguments of schedules.
func parseSchedulesArgs(rest []string) (adminCommand, error) {
	if len(rest) != 0 {
		return adminCommand{}, errors.New("schedules needs no arguments")
	}
	return listCommand("show schedules", []string{"NAME", "FUNCTION", "SPEC", "LAST", "NEXT"},
		func(l string) []any { return unset(tabFields(l, 5, func(s string) any { return s })) }), nil
}

// parseOrderingArgs parses the arguments of ordering.
func parseOrderingArgs(rest []string) (adminCommand, error) {
	if len(rest) > 1 {
		return adminCommand{}, errors.New("ordering takes at most a function name")
	}
	return listCommand(strings.Join(append([]string{"show ordering"}, rest...), " "),
		[]string{"FUNCTION", "KEY", "HEAD", "HEAD_STATE", "WAITING"},
		func(l string) []any {
			return unset(tabFields(l, 5, func(s string) any {
				if n, err := strconv.Atoi(s); err == nil {
					return n
				}
				return s
			}))
		}), nil
}

// checkPauseEnd refuses what the server refuses as the end of a pause:
// anything but a positive Go duration or an RFC 3339 time not yet passed.
func checkPauseEnd(s string) error {
	if d, err := time.ParseDuration(s); err == nil && d > 0 {
		return nil
	}
	at, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return errors.New("want an RFC 3339 time (2026-12-01T08:00:00Z) or a positive duration (30m)")
	}
	if !at.After(time.Now()) {
		return errors.New("that time has passed; give a time in the future or a duration (30m)")
	}
	return nil
}

// countText describes an "OK <n>" answer: "3 dead letters purged".
func countText(noun, verb string) func(string) string {
	return func(v string) string {
		if v != "1" {
			noun += "s"
		}
		return v + " " + noun + " " + verb
	}
}

// unset replaces the server's "-" (no value) by nil, which JSON shows as
// null and a table as "-" again.
func unset(vals []any) []any {
	for i, v := range vals {
		if v == "-" {
			vals[i] = nil
		}
	}
	return vals
}

// parsePolicyLine parses "FN SOURCE STATE key=value ...".
func parsePolicyLine(l string) []any {
	f := tabFields(l, 4, func(s string) any { return s })
	var ps policySettings
	for _, kv := range strings.Fields(f[3].(string)) {
		k, v, _ := strings.Cut(kv, "=")
		ps = append(ps, keyValue{k, v})
	}
	f[3] = ps
	if f[2] == "-" {
		f[2] = nil // the default policy has no state
	}
	return f
}

type keyValue struct{ key, value string }

// policySettings are a policy's keys in the server's order. A table shows
// those that differ from the zero policy (whose keys mean "the built-in
// default", docs/lifecycle.md); JSON has them all, as strings in the
// syntax that "policy FN KEY=VALUE" accepts.
type policySettings []keyValue

// String lists the settings that differ from the built-in defaults.
func (ps policySettings) String() string {
	var out []string
	for _, kv := range ps {
		if zero, known := (broker.Policy{}).Get(kv.key); known && zero == kv.value {
			continue
		}
		out = append(out, kv.key+"="+kv.value)
	}
	if len(out) == 0 {
		return "-"
	}
	return strings.Join(out, " ")
}

// MarshalJSON writes an object with the keys in the server's order.
func (ps policySettings) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, kv := range ps {
		if i > 0 {
			b.WriteByte(',')
		}
		k, err := json.Marshal(kv.key)
		if err != nil {
			return nil, err
		}
		v, err := json.Marshal(kv.value)
		if err != nil {
			return nil, err
		}
		b.Write(k)
		b.WriteByte(':')
		b.Write(v)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// parseDeadLetterLine parses `HANDLE FN UNIQUE ATTEMPTS DIED "ERROR"`.
func parseDeadLetterLine(l string) []any { return parseJobLine(l, 6, 5) }

// parseJobLine parses a line of a job listing: n tab-separated fields,
// "-" where unset, the fourth the number of attempts and the one at
// errField a quoted error.
func parseJobLine(l string, n, errField int) []any {
	f := unset(tabFields(l, n, func(s string) any { return s }))
	if n, err := strconv.Atoi(fmt.Sprint(f[3])); err == nil {
		f[3] = n
	}
	if e, ok := f[errField].(string); ok {
		f[errField] = unquote(e)
	}
	return f
}

// unquote undoes the server's Go quoting of a free-text field, keeping
// the text as it came if it is not quoted.
func unquote(s string) string {
	if u, err := strconv.Unquote(s); err == nil {
		return u
	}
	return s
}

// attempt is one run in a dead letter's history.
type attempt struct {
	Attempt int    `json:"attempt"`
	Start   any    `json:"start"`
	End     any    `json:"end"`
	Outcome string `json:"outcome"`
	Worker  string `json:"worker,omitempty"`
	Error   string `json:"error"`
}

// history is a dead letter's attempts, shown as a table below the record.
type history []attempt

func (h history) tableHeader() []string {
	return []string{"ATTEMPT", "START", "END", "OUTCOME", "ERROR"}
}

func (h history) tableRows() [][]string {
	rows := make([][]string, len(h))
	for i, a := range h {
		var e any = a.Error
		if a.Error == "" {
			e = nil
		}
		rows[i] = []string{strconv.Itoa(a.Attempt), cell(a.Start), cell(a.End), cell(a.Outcome), cell(e)}
	}
	return rows
}

// parseDeadLetterRecord parses the answer to "deadletter show": one
// "key<TAB>value" line per field and one "attempt" line per run, into the
// values of the deadletter show columns.
func parseDeadLetterRecord(lines []string) ([]any, error) {
	fields, h, err := parseRecordLines(lines, false, "handle", "function", "attempts")
	if err != nil {
		return nil, err
	}
	return []any{fields["handle"], fields["function"], unquote(fields["unique"]), fields["priority"],
		intOrText(fields["attempts"]), unset([]any{fields["died"]})[0], unquote(fields["error"]), blob(unquote(fields["payload"])), history(h)}, nil
}

// jobHistory is a job record's attempts, with the worker of each.
type jobHistory []attempt

func (h jobHistory) tableHeader() []string {
	return []string{"ATTEMPT", "START", "END", "OUTCOME", "WORKER", "ERROR"}
}

func (h jobHistory) tableRows() [][]string {
	rows := history(h).tableRows()
	for i, a := range h {
		rows[i] = append(rows[i][:4:4], cell(a.Worker), rows[i][4])
	}
	return rows
}

// parseJobRecord reads the answer of "job HANDLE" as one row.
func parseJobRecord(lines []string) ([]any, error) {
	fields, h, err := parseRecordLines(lines, true, "handle", "function", "state")
	if err != nil {
		return nil, err
	}
	opt := func(k string) any {
		v, ok := fields[k]
		if !ok {
			return nil
		}
		return unquote(v)
	}
	// An ended job's record keeps the first 256 bytes of its payload
	// (payload_size says how long it was) and up to 4 KiB of its result.
	var result, truncated, payload, size any
	if v, ok := fields["result"]; ok {
		result = blob(unquote(v))
		truncated = fields["result_truncated"] == "true"
	}
	if v, ok := fields["payload"]; ok {
		payload = blob(unquote(v))
	}
	if v, ok := fields["payload_size"]; ok {
		size = intOrText(v)
	}
	times := unset([]any{fields["submitted"], fields["started"], fields["finished"]})
	return []any{fields["handle"], fields["function"], unquote(fields["unique"]), fields["priority"],
		fields["background"] == "true", fields["state"], intOrText(fields["attempts"]), times[0], times[1], times[2],
		unquote(fields["error"]), opt("cancelled_by"), opt("retry_of"), result, truncated, payload, size, jobHistory(h)}, nil
}

// parseRecordLines splits the answer to "deadletter show" or "job": one
// "key<TAB>value" line per field, which must include each of required, and
// one "attempt" line per run, which names its worker when withWorker.
func parseRecordLines(lines []string, withWorker bool, required ...string) (map[string]string, []attempt, error) {
	attemptFields := 6
	if withWorker {
		attemptFields = 7
	}
	fields := map[string]string{}
	h := []attempt{}
	for _, l := range lines {
		f := strings.Split(l, "\t")
		if f[0] == "attempt" {
			if len(f) != attemptFields {
				return nil, nil, fmt.Errorf("malformed attempt line %q", l)
			}
			n, err := strconv.Atoi(f[1])
			if err != nil {
				return nil, nil, fmt.Errorf("malformed attempt line %q", l)
			}
			times := unset([]any{f[2], f[3]})
			a := attempt{Attempt: n, Start: times[0], End: times[1], Outcome: f[4], Error: unquote(f[attemptFields-1])}
			if withWorker {
				a.Worker = f[5]
			}
			h = append(h, a)
			continue
		}
		if len(f) != 2 {
			return nil, nil, fmt.Errorf("malformed line %q", l)
		}
		fields[f[0]] = f[1]
	}
	for _, k := range required {
		if _, ok := fields[k]; !ok {
			return nil, nil, fmt.Errorf("no %s line", k)
		}
	}
	return fields, h, nil
}

// intOrText is s as an int where it is one, else s itself.
func intOrText(s string) any {
	if n, err := strconv.Atoi(s); err == nil {
		return n
	}
	return s
}
