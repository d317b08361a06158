// Command testsummary reads the output of "go test -json" on its standard
// input, prints what plain "go test" would (each package's result line, and
// the output of failed tests only), and ends with a summary of the tests
// that were skipped, with the reason each gave.
//
// It exits with status 1 if a test failed, or if any test was skipped and
// GEARWORK_ALLOW_SKIP=1 is not set: every tool the tests need is installed
// by scripts/deps.sh, so a skip in "make test" is a test that silently did
// not run. With -summary FILE the summary is also written to FILE, for a
// script that prints it again at its very end. Usage (scripts/test.sh):
//
//	go test -json ./... | go run ./scripts/testsummary [-summary FILE]
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
)

func main() {
	summary := flag.String("summary", "", "also write the summary of skipped tests to this file")
	flag.Parse()
	var extra io.Writer = io.Discard
	if *summary != "" {
		f, err := os.Create(*summary)
		if err != nil {
			fmt.Fprintf(os.Stderr, "testsummary: %v\n", err)
			os.Exit(1)
		}
		extra = f
	}
	code := runTo(os.Stdin, os.Stdout, extra, os.Getenv("GEARWORK_ALLOW_SKIP") == "1")
	if f, ok := extra.(*os.File); ok {
		f.Close()
	}
	os.Exit(code)
}

// event is one line of "go test -json" (see "go doc test2json").
type event struct {
	Action     string
	Package    string
	ImportPath string // build events
	Test       string
	Output     string
}

// skip is a skipped test and the reason it logged.
type skip struct {
	pkg, test, reason string
}

// run copies the readable part of the stream in to out, then the summary,
// and returns the exit status.
func run(in io.Reader, out io.Writer, allowSkip bool) int {
	return runTo(in, out, io.Discard, allowSkip)
}

// runTo is run that writes the summary to summary as well.
func runTo(in io.Reader, out, summary io.Writer, allowSkip bool) int {
	outputs := map[string][]string{} // by package and test: the test's output so far
	var skips []skip
	failed := false
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		line := sc.Bytes()
		var e event
		if err := json.Unmarshal(line, &e); err != nil || e.Action == "" {
			// Not an event (go test's own messages): pass it on.
			fmt.Fprintf(out, "%s\n", line)
			continue
		}
		key := e.Package + "\x00" + e.Test
		switch {
		case e.Action == "build-output":
			fmt.Fprint(out, e.Output)
		case e.Action == "build-fail":
			failed = true
		case e.Test == "":
			// Package-level output: its result line, output printed outside any test.
			if e.Action == "output" && e.Output != "PASS\n" { // plain go test prints no PASS line
				fmt.Fprint(out, e.Output)
			}
			if e.Action == "fail" {
				failed = true
				// Tests that never ended (a panic, a timeout): show what
				// they wrote.
				for k, lines := range outputs {
					if strings.HasPrefix(k, e.Package+"\x00") {
						fmt.Fprint(out, strings.Join(lines, ""))
						delete(outputs, k)
					}
				}
			}
		case e.Action == "output":
			outputs[key] = append(outputs[key], e.Output)
		case e.Action == "fail":
			failed = true
			fmt.Fprint(out, strings.Join(outputs[key], ""))
			delete(outputs, key)
		case e.Action == "skip":
			skips = append(skips, skip{pkg: e.Package, test: e.Test, reason: reason(outputs[key])})
			delete(outputs, key)
		case e.Action == "pass":
			delete(outputs, key)
		}
	}
	if err := sc.Err(); err != nil {
		fmt.Fprintf(out, "testsummary: reading go test -json: %v\n", err)
		return 1
	}
	both := io.MultiWriter(out, summary)
	if len(skips) == 0 {
		fmt.Fprintln(both, "== skipped tests: none")
	} else {
		fmt.Fprintf(both, "== skipped tests: %d\n", len(skips))
		for _, s := range skips {
			fmt.Fprintf(both, "SKIP %s %s: %s\n", s.pkg, s.test, s.reason)
		}
		if !allowSkip {
			fmt.Fprintln(both, "tests were skipped: install what they need (scripts/deps.sh), or set GEARWORK_ALLOW_SKIP=1 to accept skips")
			failed = true
		}
	}
	if failed {
		return 1
	}
	return 0
}

// reason returns what a skipped test logged, without go test's own lines
// (=== RUN, --- SKIP).
func reason(lines []string) string {
	var parts []string
	for _, l := range lines {
		t := strings.TrimSpace(l)
		if t == "" || strings.HasPrefix(t, "=== ") || strings.HasPrefix(t, "--- ") {
			continue
		}
		parts = append(parts, t)
	}
	if len(parts) == 0 {
		return "(no reason given)"
	}
	return strings.Join(parts, " ")
}
