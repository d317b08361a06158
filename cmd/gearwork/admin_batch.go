package main

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// parseBatchArgs parses the arguments of batch: "batch ID" shows a batch,
// "batch create [on_success=FN] [on_complete=FN]" and "batch close ID"
// change one (docs/batches.md).
func parseBatchArgs(rest []string) (adminCommand, error) {
	if len(rest) == 0 {
		return adminCommand{}, errors.New("batch needs a batch id, or create or close")
	}
	switch rest[0] {
	case "create":
		for _, a := range rest[1:] {
			k, v, ok := strings.Cut(a, "=")
			if !ok || v == "" || (k != "on_success" && k != "on_complete") {
				return adminCommand{}, fmt.Errorf("batch create takes on_success=FUNCTION and on_complete=FUNCTION, not %q", a)
			}
		}
		return okCommand(strings.Join(append([]string{"batch create"}, rest[1:]...), " "),
			func(id string) string { return "batch " + id }), nil
	case "close":
		if len(rest) != 2 || !isBatchID(rest[1]) {
			return adminCommand{}, errors.New("batch close needs one batch id")
		}
		return okCommand("batch close "+rest[1], nil), nil
	}
	if len(rest) != 1 || !isBatchID(rest[0]) {
		return adminCommand{}, fmt.Errorf("batch %s: give one batch id (a number), or create or close", strings.Join(rest, " "))
	}
	return adminCommand{kind: answerList, line: "batch " + rest[0], vertical: true,
		columns: []string{"BATCH", "CLOSED", "COMPLETE", "TOTAL", "PENDING", "RUNNING", "SUCCEEDED", "FAILED", "DEAD",
			"ON_SUCCESS", "ON_COMPLETE", "CREATED", "COMPLETED", "FAILURES"},
		record: parseBatchRecord}, nil
}

func isBatchID(s string) bool {
	_, err := strconv.ParseUint(s, 10, 64)
	return err == nil
}

// parseBatchRecord reads the answer to "batch ID": "key\tvalue" lines, a
// "on_success\tFUNCTION\tfired|waiting" line per callback and a
// "failure\tHANDLE" line per failed job.
func parseBatchRecord(lines []string) ([]any, error) {
	fields := map[string]string{}
	callbacks := map[string]any{"on_success": nil, "on_complete": nil}
	failures := []string{}
	for _, l := range lines {
		f := strings.Split(l, "\t")
		switch {
		case len(f) == 3 && (f[0] == "on_success" || f[0] == "on_complete"):
			callbacks[f[0]] = f[1] + " (" + f[2] + ")"
		case len(f) == 2 && f[0] == "failure":
			failures = append(failures, f[1])
		case len(f) == 2:
			fields[f[0]] = f[1]
		default:
			return nil, fmt.Errorf("malformed line %q", l)
		}
	}
	for _, k := range []string{"batch", "closed", "complete", "total", "pending", "running", "succeeded", "failed", "dead"} {
		if _, ok := fields[k]; !ok {
			return nil, fmt.Errorf("no %s line", k)
		}
	}
	times := unset([]any{fields["created"], fields["completed"]})
	return []any{fields["batch"], fields["closed"] == "true", fields["complete"] == "true",
		intOrText(fields["total"]), intOrText(fields["pending"]), intOrText(fields["running"]),
		intOrText(fields["succeeded"]), intOrText(fields["failed"]), intOrText(fields["dead"]),
		callbacks["on_success"], callbacks["on_complete"], times[0], times[1], failures}, nil
}
