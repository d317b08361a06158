package gearmanapi

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/gearwork/gearwork/gearman"
	"github.com/gearwork/gearwork/internal/broker"
)

// adminLifecycle answers Gearwork's lifecycle admin commands (policies,
// dead letters, pauses, results, schedules, ordering; see
// docs/lifecycle.md). It reports false for a command it does not know.
func (c *conn) adminLifecycle(ctx context.Context, cmd gearman.AdminCommand, sb *strings.Builder) bool {
	b := c.srv.b
	args := cmd.Args
	switch cmd.Name {
	case "show":
		if len(args) == 0 {
			return false
		}
		switch strings.ToLower(args[0]) {
		case "policy":
			showPolicy(b, args[1:], sb)
		case "schedules":
			for _, s := range b.Schedules() {
				fmt.Fprintf(sb, "%s\t%s\t%s\t%s\t%s\n", s.Name, s.Function, s.Spec, fmtTime(s.Last), fmtTime(s.Next))
			}
			sb.WriteString(".\n")
		case "ordering":
			fn := ""
			if len(args) > 1 {
				fn = args[1]
			}
			for _, o := range b.Orderings(fn) {
				head := "-"
				if o.Head != 0 {
					head = b.Handle(o.Head)
				}
				fmt.Fprintf(sb, "%s\t%s\t%s\t%s\t%d\n", o.Function, o.Key, head, dash(o.HeadState), o.Waiting)
			}
			sb.WriteString(".\n")
		default:
			return false
		}
	case "policy":
		setPolicy(b, args, sb)
	case "pause":
		pause(b, args, sb)
	case "resume":
		if len(args) != 1 {
			sb.WriteString(errArgs("resume"))
			break
		}
		b.Resume(args[0])
		sb.WriteString(textOK)
	case "deadletters":
		fn := ""
		if len(args) > 0 {
			fn = args[0]
		}
		dls, err := b.DeadLetters(ctx, fn, 0)
		if err != nil {
			sb.WriteString(errText(err))
			break
		}
		for _, d := range dls {
			fmt.Fprintf(sb, "%s\t%s\t%s\t%d\t%s\t%s\n", d.Handle, d.Function, dash(d.Unique),
				d.Attempts, fmtTime(d.DiedAt), strconv.Quote(d.LastError))
		}
		sb.WriteString(".\n")
	case "deadletter":
		deadLetter(ctx, b, args, sb)
	case "result":
		result(ctx, b, args, sb)
	default:
		return false
	}
	return true
}

// errInvalid is an ERR INVALID_ARGUMENTS answer with a readable message,
// spaces as '+' like gearmand's error texts.
func errInvalid(msg string) string {
	return "ERR INVALID_ARGUMENTS " + strings.ReplaceAll(msg, " ", "+") + "\r\n"
}

func showPolicy(b *broker.Broker, args []string, sb *strings.Builder) {
	line := func(name, source, state string, p broker.Policy) {
		fmt.Fprintf(sb, "%s\t%s\t%s\t%s\n", name, source, state, p.Format())
	}
	if len(args) == 0 {
		line("*", "default", "-", b.DefaultPolicy())
	}
	found := false
	for _, fp := range b.Policies() {
		if len(args) > 0 && fp.Name != args[0] {
			continue
		}
		found = true
		source := "default"
		if fp.Explicit {
			source = "explicit"
		}
		state := "active"
		switch {
		case fp.Paused && fp.PausedUntil.IsZero():
			state = "paused"
		case fp.Paused:
			state = "paused-until=" + fmtTime(fp.PausedUntil)
		}
		line(fp.Name, source, state, fp.Policy)
	}
	if len(args) > 0 && !found {
		// Unknown function: it would follow the default policy.
		line(args[0], "default", "active", b.Policy(args[0]))
	}
	sb.WriteString(".\n")
}

func setPolicy(b *broker.Broker, args []string, sb *strings.Builder) {
	if len(args) < 2 || len(args[0]) > gearman.MaxFunctionSize {
		sb.WriteString(errArgs("policy"))
		return
	}
	name := args[0]
	if len(args) == 2 && strings.EqualFold(args[1], "reset") {
		b.ResetPolicy(name)
		sb.WriteString(textOK)
		return
	}
	p := b.Policy(name)
	for _, kv := range args[1:] {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			sb.WriteString(errInvalid("want key=value, got " + kv))
			return
		}
		if err := p.Set(strings.ToLower(k), v); err != nil {
			sb.WriteString(errInvalid(err.Error()))
			return
		}
	}
	b.SetPolicy(name, p)
	sb.WriteString(textOK)
}

func pause(b *broker.Broker, args []string, sb *strings.Builder) {
	if len(args) == 0 || len(args[0]) > gearman.MaxFunctionSize {
		sb.WriteString(errArgs("pause"))
		return
	}
	name, rest := args[0], args[1:]
	if len(rest) > 0 && strings.EqualFold(rest[0], "until") {
		rest = rest[1:]
	}
	switch len(rest) {
	case 0:
		b.Pause(name, time.Time{})
	case 1:
		if d, err := time.ParseDuration(rest[0]); err == nil && d > 0 {
			b.PauseFor(name, d)
			break
		}
		at, err := time.Parse(time.RFC3339, rest[0])
		if err != nil {
			sb.WriteString(errInvalid("pause until needs an RFC 3339 time or a positive duration"))
			return
		}
		b.Pause(name, at)
	default:
		sb.WriteString(errArgs("pause"))
		return
	}
	sb.WriteString(textOK)
}

func deadLetter(ctx context.Context, b *broker.Broker, args []string, sb *strings.Builder) {
	if len(args) < 2 {
		sb.WriteString(errArgs("deadletter"))
		return
	}
	switch sub := strings.ToLower(args[0]); {
	case sub == "show" && len(args) == 2:
		d, ok, err := b.DeadLetterByHandle(ctx, []byte(args[1]))
		if err != nil {
			sb.WriteString(errText(err))
			return
		}
		if !ok {
			sb.WriteString(textUnknownJob)
			return
		}
		fmt.Fprintf(sb, "handle\t%s\nfunction\t%s\nunique\t%s\npriority\t%s\nattempts\t%d\ndied\t%s\nerror\t%s\npayload\t%s\n",
			d.Handle, d.Function, strconv.Quote(d.Unique), d.Priority, d.Attempts,
			fmtTime(d.DiedAt), strconv.Quote(d.LastError), strconv.Quote(string(d.Payload)))
		for i, a := range d.History {
			fmt.Fprintf(sb, "attempt\t%d\t%s\t%s\t%s\t%s\n", i+1, fmtNanos(a.Start), fmtNanos(a.End),
				a.Outcome, strconv.Quote(a.Error))
		}
		sb.WriteString(".\n")
	case sub == "retry" && len(args) == 3 && strings.EqualFold(args[1], "all"):
		n, err := b.RetryDeadLetters(ctx, args[2])
		if err != nil {
			sb.WriteString(errText(err))
			return
		}
		fmt.Fprintf(sb, "OK %d\n", n)
	case sub == "retry" && len(args) == 2:
		if err := b.RetryDeadLetter(ctx, []byte(args[1])); err != nil {
			sb.WriteString(errText(err))
			return
		}
		sb.WriteString("OK 1\n")
	case sub == "purge" && len(args) == 2:
		n, err := b.PurgeDeadLetters(ctx, args[1])
		if err != nil {
			sb.WriteString(errText(err))
			return
		}
		fmt.Fprintf(sb, "OK %d\n", n)
	default:
		sb.WriteString(errArgs("deadletter"))
	}
}

// result answers "result HANDLE" or "result unique:U" with "OK <length>",
// a newline, the raw WORK_COMPLETE data and a newline.
func result(ctx context.Context, b *broker.Broker, args []string, sb *strings.Builder) {
	if len(args) != 1 {
		sb.WriteString(errArgs("result"))
		return
	}
	var (
		r   broker.Result
		ok  bool
		err error
	)
	if u, isUnique := strings.CutPrefix(args[0], "unique:"); isUnique {
		r, ok, err = b.ResultByUnique(ctx, "", u)
	} else {
		r, ok, err = b.Result(ctx, []byte(args[0]))
	}
	if err != nil {
		sb.WriteString(errText(err))
		return
	}
	if !ok {
		sb.WriteString(textUnknownJob)
		return
	}
	fmt.Fprintf(sb, "OK %d\n", len(r.Data))
	sb.Write(r.Data)
	sb.WriteString("\n")
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339Nano)
}

func fmtNanos(ns int64) string {
	if ns == 0 {
		return "-"
	}
	return fmtTime(time.Unix(0, ns))
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
