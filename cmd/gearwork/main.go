// Command gearwork is the Gearwork job server and its tools.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// version is the release this source tree is; a binary built from a
// module version (go install ...@v1.2.3) reports that version instead (see
// buildVersion).
const version = "0.1.0"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	var ex exitError
	switch {
	case err == nil:
	case errors.As(err, &ex):
		if ex.msg != "" {
			fmt.Fprintln(os.Stderr, "gearwork:", ex.msg)
		}
		os.Exit(ex.code)
	case errors.Is(err, errUsage):
		os.Exit(exitUsage)
	default:
		fmt.Fprintln(os.Stderr, "gearwork:", err)
		os.Exit(exitFailed)
	}
}

// exitError carries a specific exit code.
type exitError struct {
	code int
	msg  string
}

func (e exitError) Error() string { return e.msg }

// errUsage is returned after a usage message was printed.
var errUsage = errors.New("usage")

type command struct {
	name    string
	summary string
	run     func(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error
}

func commands() []command {
	return []command{
		{"serve", "run the job server", runServe},
		{"submit", "submit a job and print its result", runSubmit},
		{"work", "run a command for each job of a function", runWork},
		{"admin", "query and manage a server over the admin protocol", runAdmin},
		{"migrate", "create or upgrade a PostgreSQL store's schema", runMigrate},
		{"bench", "measure a Gearman server (Gearwork or gearmand) under load", runBench},
		{"health", "check a server's readiness over HTTP (container health checks)", runHealth},
		{"version", "print the version, commit and Go version (also --version, -v)", runVersion},
	}
}

func runVersion(_ context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) error {
	fs := newFlagSet("version", "version", stderr)
	if err := parseFlagsNoArgs(fs, args); err != nil {
		return err
	}
	fmt.Fprintln(stdout, buildVersion())
	return nil
}

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) > 0 && (args[0] == "--version" || args[0] == "-v" || args[0] == "-version") {
		return runVersion(ctx, args[1:], stdin, stdout, stderr)
	}
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stdout)
		if len(args) == 0 {
			return errUsage
		}
		return nil
	}
	for _, c := range commands() {
		if c.name == args[0] {
			return c.run(ctx, args[1:], stdin, stdout, stderr)
		}
	}
	fmt.Fprintf(stderr, "gearwork: unknown command %q\nRun \"gearwork --help\" for the list of commands.\n", args[0])
	return errUsage
}

func usage(w io.Writer) {
	fmt.Fprintln(w, `Gearwork is a Gearman-compatible background job server.

Usage:
  gearwork <command> [flags]

Commands:`)
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-8s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, `
Run "gearwork <command> --help" for the flags of a command. Every flag can
also be set by an environment variable: GEARWORK_ followed by the flag name
in upper case with dashes as underscores (--max-packet: GEARWORK_MAX_PACKET),
except --function and --unique: GEARWORK_FUNCTION and GEARWORK_UNIQUE are
the job's, which "gearwork work" sets for its commands.
"gearwork --version" (or -v) prints the version, commit and Go version.`+exitTable)
}
