package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
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
		[]string{"HANDLE", "FUNCTION", "UNIQUE", "ATTEMPTS", "DIED_AT", "ERROR"}, parseDeadLetterLine), nil
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
			columns: []string{"HANDLE", "FUNCTION", "UNIQUE", "PRIORITY", "ATTEMPTS", "DIED_AT", "ERROR", "PAYLOAD", "HISTORY"},
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
		[]string{"HANDLE", "FUNCTION", "STATE", "ATTEMPTS", "SUBMITTED_AT", "FINISHED_AT", "LAST_ERROR", "CURSOR"},
		func(l string) []any { return parseJobLine(l, 8, 6) }), nil
}

// parseJobArgs parses the arguments of job.
func parseJobArgs(rest []string) (adminCommand, error) {
	if len(rest) != 1 {
		return adminCommand{}, errors.New("job needs a job handle")
	}
	columns := make([]string, len(jobFields))
	for i, f := range jobFields {
		columns[i] = strings.ToUpper(f.name)
	}
	return adminCommand{kind: answerList, line: "job " + rest[0], vertical: true,
		columns: columns, record: parseJobRecord, unknownJob: "no job " + rest[0] + ": it never existed, or its record is no longer kept (see the policy keys history and history_max)"}, nil
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
		// No error is "-" as every absent value, not a blank cell.
		if f[errField] = unquote(e); f[errField] == "" {
			f[errField] = nil
		}
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
	return []any{fields["handle"], fields["function"], textField("unique")(fields, nil), fields["priority"],
		intOrText(fields["attempts"]), unset([]any{fields["died"]})[0], textField("error")(fields, nil), blob(unquote(fields["payload"])), history(h)}, nil
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

// jobField is one field of a job's record as "gearwork admin job" shows
// it: name is the field's name in GET /v1/jobs/{handle} (a column in
// capitals, a key in --json), value reads it from the lines of the admin
// "job" answer. A field the job does not have is nil: "-" in a table,
// null in JSON.
type jobField struct {
	name  string
	value func(fields map[string]string, h []attempt) any
}

// jobFields are the fields of a job's record in the order of GET
// /v1/jobs/{handle}, the one list the view's columns and values come
// from. The HTTP API's result_text and payload_preview_text have no
// column: a blob is shown as text when it is UTF-8 (JSON: key_base64
// otherwise).
var jobFields = []jobField{
	{"handle", textField("handle")},
	{"function", textField("function")},
	{"state", textField("state")},
	{"unique", textField("unique")},
	{"priority", textField("priority")},
	{"background", boolField("background")},
	{"run_at", textField("run_at")},
	{"progress", textField("progress")},
	{"retries", numberField("retries")},
	{"waiting_clients", numberField("waiting_clients")},
	{"submitted_at", textField("submitted")},
	{"started_at", textField("started")},
	{"finished_at", textField("finished")},
	{"attempts", numberField("attempts")},
	{"max_attempts", numberField("max_attempts")},
	{"last_error", textField("error")},
	{"ordering_key", textField("ordering_key")},
	{"retry_at", textField("retry_at")},
	{"result", blobField("result")},
	{"result_truncated", boolField("result_truncated")},
	{"final", boolField("final")},
	{"not_stored", boolField("not_stored")},
	{"payload_preview", blobField("payload")},
	{"payload_size", numberField("payload_size")},
	{"cancelled_by", textField("cancelled_by")},
	{"cancelled_at", textField("cancelled_at")},
	{"retry_of", textField("retry_of")},
	{"batch", textField("batch")},
	{"after", listField("after")},
	{"history", func(_ map[string]string, h []attempt) any {
		if len(h) == 0 {
			return nil // no attempt yet
		}
		return jobHistory(h)
	}},
}

// jobFieldOf is the value of the field name (a jobFields name) in a row
// of parseJobRecord.
func jobFieldOf(row []any, name string) any {
	i := slices.IndexFunc(jobFields, func(f jobField) bool { return f.name == name })
	if i < 0 {
		panic("no job field " + name) // a programmer's error
	}
	return row[i]
}

// textField reads the line key as text (unquoted where the server quotes
// it): nil when the line is missing, "-" or empty.
func textField(key string) func(map[string]string, []attempt) any {
	return func(fields map[string]string, _ []attempt) any {
		v, ok := fields[key]
		if !ok || v == "-" {
			return nil
		}
		if v = unquote(v); v == "" {
			return nil
		}
		return v
	}
}

// numberField reads the line key as a number (its text if it is not one).
func numberField(key string) func(map[string]string, []attempt) any {
	return func(fields map[string]string, _ []attempt) any {
		v, ok := fields[key]
		if !ok || v == "-" {
			return nil
		}
		return intOrText(v)
	}
}

// listField reads the line key as a list of words (handles).
func listField(key string) func(map[string]string, []attempt) any {
	return func(fields map[string]string, _ []attempt) any {
		v, ok := fields[key]
		if !ok || v == "-" || v == "" {
			return nil
		}
		return strings.Fields(v)
	}
}

// boolField reads the line key as true or false.
func boolField(key string) func(map[string]string, []attempt) any {
	return func(fields map[string]string, _ []attempt) any {
		v, ok := fields[key]
		if !ok {
			return nil
		}
		return v == "true"
	}
}

// blobField reads the quoted bytes of the line key (an empty one is
// there: a result may be empty).
func blobField(key string) func(map[string]string, []attempt) any {
	return func(fields map[string]string, _ []attempt) any {
		v, ok := fields[key]
		if !ok {
			return nil
		}
		return blob(unquote(v))
	}
}

// parseJobRecord reads the answer of "job HANDLE" as one row, the values
// of jobFields.
func parseJobRecord(lines []string) ([]any, error) {
	fields, h, err := parseRecordLines(lines, true, "handle", "function", "state")
	if err != nil {
		return nil, err
	}
	row := make([]any, len(jobFields))
	for i, f := range jobFields {
		row[i] = f.value(fields, h)
	}
	return row, nil
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
