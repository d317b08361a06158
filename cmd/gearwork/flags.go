package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// newFlagSet returns a FlagSet whose usage explains the command: the
// synopsis, the flags written as the docs write them (--flag), and the
// exit code table.
func newFlagSet(name, synopsis string, out io.Writer) *flag.FlagSet {
	return newFlagSetHelp(name, synopsis, "", out)
}

// newFlagSetHelp is newFlagSet with more text after the flags.
func newFlagSetHelp(name, synopsis, more string, out io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(out)
	fs.Usage = func() {
		fmt.Fprintf(out, "Usage: gearwork %s\n\nFlags (each also read from GEARWORK_<FLAG>):\n", synopsis)
		printFlags(out, fs)
		fmt.Fprint(out, more)
		fmt.Fprint(out, exitTable)
	}
	return fs
}

// hiddenFlags are aliases kept for old command lines that --help does not
// show: "command flag".
var hiddenFlags = map[string]bool{"bench server": true}

// jobEnvironment are the variables that gearwork work sets for its
// commands, describing their job. They are never read as flags, so that a
// gearwork command such a command runs (a submit of a follow-up job, an
// admin query) does not take the job's unique for its --unique or the
// job's function for its --function.
var jobEnvironment = map[string]bool{"GEARWORK_FUNCTION": true, "GEARWORK_HANDLE": true,
	"GEARWORK_UNIQUE": true, "GEARWORK_PROGRESS_FD": true}

// envName is the variable that sets the flag name.
func envName(name string) string {
	return "GEARWORK_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// printFlags writes fs's flags like flag.PrintDefaults, but with two
// dashes and without the hidden aliases.
func printFlags(w io.Writer, fs *flag.FlagSet) {
	fs.VisitAll(func(f *flag.Flag) {
		if hiddenFlags[fs.Name()+" "+f.Name] {
			return
		}
		var b strings.Builder
		fmt.Fprintf(&b, "  --%s", f.Name)
		name, usage := flag.UnquoteUsage(f)
		if _, ok := f.Value.(durationValue); ok && name == "value" {
			name = "duration"
		}
		if name != "" {
			b.WriteString(" " + name)
		}
		b.WriteString("\n    \t")
		b.WriteString(strings.ReplaceAll(usage, "\n", "\n    \t"))
		if env := envName(f.Name); jobEnvironment[env] {
			fmt.Fprintf(&b, " (not read from %s, which gearwork work sets for its commands)", env)
		}
		switch f.DefValue {
		case "", "0", "false", "0s":
		default:
			if g, ok := f.Value.(flag.Getter); ok {
				if _, isString := g.Get().(string); isString {
					fmt.Fprintf(&b, " (default %q)", f.DefValue)
					break
				}
			}
			fmt.Fprintf(&b, " (default %v)", f.DefValue)
		}
		fmt.Fprintln(w, b.String())
	})
}

// parseFlagsNoArgs is parseFlags for a command that takes flags only: an
// argument after them is a usage error, reported as helpError does.
func parseFlagsNoArgs(fs *flag.FlagSet, args []string) error {
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return helpError(fs.Output(), fs.Name(), fmt.Sprintf("unexpected argument %q", fs.Arg(0)))
	}
	return nil
}

// parseFlags applies GEARWORK_* environment variables to flags not given on
// the command line, after parsing args. --help prints the usage (and
// returns errHelp); a bad flag prints one line saying what is wrong and
// one pointing to --help, not the whole usage.
func parseFlags(fs *flag.FlagSet, args []string) error {
	usage, out := fs.Usage, fs.Output()
	fs.Usage = func() {}
	fs.SetOutput(io.Discard)
	err := fs.Parse(args)
	fs.Usage = usage
	fs.SetOutput(out)
	if err != nil {
		if err == flag.ErrHelp {
			usage()
			return errHelp
		}
		fmt.Fprintf(out, "gearwork %s: %s\nRun \"gearwork %s --help\" for its flags.\n", fs.Name(), flagError(err), fs.Name())
		return errUsage
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] || err != nil || hiddenFlags[fs.Name()+" "+f.Name] {
			return
		}
		env := envName(f.Name)
		if jobEnvironment[env] {
			return
		}
		if v, ok := os.LookupEnv(env); ok {
			if e := fs.Set(f.Name, v); e != nil {
				err = fmt.Errorf("invalid %s=%q: %w", env, v, e)
			}
		}
	})
	if err != nil {
		return usageError(out, err)
	}
	return nil
}

// flagError rewrites the flag package's messages with the flag names as
// the docs write them: "unknown flag --bogus", "flag --jobs needs an
// argument", "invalid value "x" for --jobs: ...".
func flagError(err error) string {
	msg := err.Error()
	if name, ok := strings.CutPrefix(msg, "flag provided but not defined: -"); ok {
		return "unknown flag --" + strings.TrimPrefix(name, "-")
	}
	if name, ok := strings.CutPrefix(msg, "flag needs an argument: -"); ok {
		return "flag --" + strings.TrimPrefix(name, "-") + " needs an argument"
	}
	if strings.HasPrefix(msg, "invalid ") {
		msg = strings.Replace(msg, " for flag -", " for --", 1)
	}
	return msg
}

// errHelp is returned when --help was asked for; it exits 0.
var errHelp = exitError{code: exitOK}

// durationValue is a duration flag that refuses values its flag cannot
// mean: negative ones, and zero too when positive is set.
type durationValue struct {
	d        *time.Duration
	positive bool
}

// durationVar defines a duration flag that must not be negative.
func durationVar(fs *flag.FlagSet, p *time.Duration, name string, value time.Duration, usage string) {
	*p = value
	fs.Var(durationValue{d: p}, name, usage)
}

// positiveDurationVar defines a duration flag that must be positive.
func positiveDurationVar(fs *flag.FlagSet, p *time.Duration, name string, value time.Duration, usage string) {
	*p = value
	fs.Var(durationValue{d: p, positive: true}, name, usage)
}

func (v durationValue) Set(s string) error {
	d, err := time.ParseDuration(s)
	if err != nil {
		return errors.New("want a duration such as 30s, 500ms or 1m30s")
	}
	switch {
	case v.positive && d <= 0:
		return errors.New("must be positive")
	case d < 0:
		return errors.New("must not be negative")
	}
	*v.d = d
	return nil
}

func (v durationValue) String() string {
	if v.d == nil {
		return "0s"
	}
	return v.d.String()
}

func (v durationValue) Get() any { return *v.d }
