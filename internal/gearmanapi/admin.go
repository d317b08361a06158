package gearmanapi

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/gearwork/gearwork/gearman"
	"github.com/gearwork/gearwork/internal/broker"
)

// Text answers, byte for byte as gearmand writes them.
const (
	textOK           = "OK\r\n"
	textUnknownShow  = "ERR UNKNOWN_SHOW_ARGUMENTS\r\n"
	textUnknownJob   = "ERR UNKNOWN_JOB\r\n"
	textFuncNotFound = "ERR function not found\r\n"
)

// errText is the answer to an admin command that failed with err:
// gearmand's ERR UNKNOWN_JOB for a job that is not there (no record of
// it either: one that ended is JOB_ENDED), Gearwork's own codes otherwise.
func errText(err error) string {
	switch {
	case errors.Is(err, broker.ErrJobNotFound):
		return textUnknownJob
	case errors.Is(err, broker.ErrJobEnded):
		// "The job has already ended (cancelled)".
		text := strings.ToUpper(err.Error()[:1]) + err.Error()[1:]
		return "ERR JOB_ENDED " + strings.ReplaceAll(adminText(text), " ", "+") + ";+job+HANDLE+shows+its+record\r\n"
	case errors.Is(err, broker.ErrJobHeldElsewhere):
		return "ERR JOB_HELD_ELSEWHERE The+server+holding+the+job+did+not+drop+it;+cancel+it+there\r\n"
	case errors.Is(err, broker.ErrTooManyFunctions):
		return "ERR TOO_MANY_FUNCTIONS " + strings.ReplaceAll(adminText(err.Error()), " ", "+") + "\r\n"
	default:
		return "ERR STORE_ERROR " + strings.ReplaceAll(adminText(err.Error()), " ", "+") + "\r\n"
	}
}

// adminText returns s, a text a peer chose (a function name, a unique, a
// client id, an ordering key), for a line of an admin answer: its control
// characters (bytes below 0x20, and 0x7f) as \xNN, so that it cannot end
// the line or the answer early, or add fields to it. Function names may
// hold any bytes, as in gearmand (gearman.CheckFunctionName), so every
// answer that shows one shows it through adminText (or adminWord).
func adminText(s string) string {
	return escapeAdmin(s, false)
}

// adminWord is adminText for a field that ends at a space (the functions
// of a "workers" line): spaces are shown as \x20 too.
func adminWord(s string) string {
	return escapeAdmin(s, true)
}

func escapeAdmin(s string, space bool) string {
	escape := func(ch byte) bool { return ch < 0x20 || ch == 0x7f || space && ch == ' ' }
	clean := true
	for i := range len(s) {
		if escape(s[i]) {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var sb strings.Builder
	for i := range len(s) {
		if ch := s[i]; escape(ch) {
			fmt.Fprintf(&sb, `\x%02x`, ch)
		} else {
			sb.WriteByte(ch)
		}
	}
	return sb.String()
}

// errArgs is the answer to a command sent without the arguments it needs;
// the words of cmd are joined with '+', as the text of an error line has
// no spaces.
func errArgs(cmd string) string {
	return "ERR INVALID_ARGUMENTS An+incomplete+set+of+arguments+was+sent+to+this+command+" +
		strings.ReplaceAll(cmd, " ", "+") + "\r\n"
}

func adminStatus(ctx context.Context, c *conn, _ []string, a *adminAnswer) {
	for _, f := range c.srv.b.Status(ctx) {
		fmt.Fprintf(a, "%s\t%d\t%d\t%d\n", adminText(f.Name), f.Total, f.Running, f.Workers)
		if !a.spill() {
			break
		}
	}
	a.WriteString(".\n")
}

func adminPriorityStatus(ctx context.Context, c *conn, _ []string, a *adminAnswer) {
	for _, f := range c.srv.b.Status(ctx) {
		fmt.Fprintf(a, "%s\t%d\t%d\t%d\t%d\n", adminText(f.Name), f.Queued[0], f.Queued[1], f.Queued[2], f.Workers)
		if !a.spill() {
			break
		}
	}
	a.WriteString(".\n")
}

func adminWorkers(_ context.Context, c *conn, _ []string, a *adminAnswer) {
	c.srv.b.EachWorker(func(ws []broker.WorkerInfo) bool {
		for _, w := range ws {
			fmt.Fprintf(a, "%d %s %s :", w.ID, hostOf(w.Addr), w.ClientID)
			for _, f := range w.Functions {
				a.WriteString(" " + adminWord(f))
			}
			a.WriteString("\n")
		}
		return a.spill()
	})
	a.WriteString(".\n")
}

// adminShowJobs lists the live jobs in handle order, written as they are
// gathered (broker.EachJob).
func adminShowJobs(_ context.Context, c *conn, _ []string, a *adminAnswer) {
	b := c.srv.b
	b.EachJob(func(js []broker.JobInfo) bool {
		for _, j := range js {
			fmt.Fprintf(a, "%s\t%d\t%d\t%d\n", b.Handle(j.Seq), j.Retries, b2i(j.Ignored), b2i(j.Queued))
		}
		return a.spill()
	})
	a.WriteString(".\n")
}

// adminShowUniqueJobs lists the uniques of live jobs in the handle order of
// their jobs (gearmand lists them in no order), written as they are
// gathered.
func adminShowUniqueJobs(_ context.Context, c *conn, _ []string, a *adminAnswer) {
	c.srv.b.EachUnique(func(us []string) bool {
		for _, u := range us {
			a.WriteString(adminText(u) + "\n")
		}
		return a.spill()
	})
	a.WriteString(".\n")
}

// adminShowMaxQueue lists the max_queue limits of the functions "show
// policy" lists, known or with a policy of their own.
func adminShowMaxQueue(_ context.Context, c *conn, args []string, a *adminAnswer) {
	for _, f := range c.srv.b.Policies() {
		if len(args) > 0 && args[0] != f.Name {
			continue
		}
		q := f.Policy.MaxQueue
		fmt.Fprintf(a, "%s\t%d\t%d\t%d\n", adminText(f.Name), q[0], q[1], q[2])
		if !a.spill() {
			break
		}
	}
	a.WriteString(".\n")
}

func adminCancelJob(ctx context.Context, c *conn, args []string, a *adminAnswer) {
	if len(args) != 1 {
		a.WriteString(errArgs("cancel"))
		return
	}
	if err := c.srv.b.CancelJobBy(ctx, []byte(args[0]), "admin "+c.remote); err != nil {
		a.WriteString(errText(err))
		return
	}
	a.WriteString(textOK)
}

func adminCreateFunction(_ context.Context, c *conn, args []string, a *adminAnswer) {
	if len(args) != 1 || len(args[0]) > gearman.MaxFunctionSize {
		a.WriteString(errArgs("create"))
		return
	}
	if err := c.srv.b.CreateFunction(args[0]); err != nil {
		a.WriteString(errText(err))
		return
	}
	a.WriteString(textOK)
}

func adminDropFunction(ctx context.Context, c *conn, args []string, a *adminAnswer) {
	if len(args) != 1 {
		a.WriteString(errArgs("drop"))
		return
	}
	switch err := c.srv.b.DropFunctionBy(ctx, args[0], "admin "+c.remote); {
	case err == nil:
		// The dropped jobs and pause must not come back after a crash.
		answerDurable(ctx, c, a)
	case errors.Is(err, broker.ErrFunctionBusy):
		a.WriteString("ERR there are still connected workers or executing clients\r\n")
	case errors.Is(err, broker.ErrFunctionNotFound):
		a.WriteString(textFuncNotFound)
	default:
		a.WriteString(errText(err))
	}
}

func adminMaxQueue(ctx context.Context, c *conn, args []string, a *adminAnswer) {
	if len(args) == 0 {
		a.WriteString(errArgs("maxqueue"))
		return
	}
	// As gearmand: one number applies to every priority; three set
	// high, normal, low; none (or zero, or negative) means unlimited.
	// Unlike gearmand, which reads junk as 0, anything else is refused.
	counts := args[1:]
	if len(counts) > 1 && len(counts) != 3 {
		a.WriteString(errInvalid("maxqueue takes FUNCTION [N | HIGH NORMAL LOW]"))
		return
	}
	var limits [3]int
	for i, s := range counts {
		n, err := strconv.Atoi(s)
		if err != nil {
			a.WriteString(errInvalid("maxqueue limit " + s + " is not a whole number"))
			return
		}
		limits[i] = max(n, 0)
	}
	if len(counts) == 1 {
		limits[1], limits[2] = limits[0], limits[0]
	}
	if err := c.srv.b.SetMaxQueue(args[0], limits); err != nil {
		a.WriteString(errText(err))
		return
	}
	answerDurable(ctx, c, a)
}

func adminGetPID(_ context.Context, _ *conn, _ []string, a *adminAnswer) {
	fmt.Fprintf(a, "OK %d\n", os.Getpid())
}

func adminVerbose(_ context.Context, c *conn, _ []string, a *adminAnswer) {
	fmt.Fprintf(a, "OK %s\n", c.srv.cfg.Verbose)
}

func adminVersion(_ context.Context, c *conn, _ []string, a *adminAnswer) {
	fmt.Fprintf(a, "OK %s\n", c.srv.cfg.Version)
}

func adminShutdown(_ context.Context, c *conn, args []string, a *adminAnswer) {
	if c.srv.cfg.ShutdownFunc == nil {
		a.WriteString("ERR UNKNOWN_COMMAND Unknown+server+command+shutdown\r\n")
		return
	}
	graceful := len(args) > 0 && strings.EqualFold(args[0], "graceful")
	c.write([]byte(textOK))
	// Write the answer before the stop begins: it closes every
	// connection, and a queued "OK" would be lost.
	c.flush()
	c.srv.cfg.ShutdownFunc(graceful)
	a.close = !graceful
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// hostOf returns the IP of a host:port address.
func hostOf(addr string) string {
	if i := strings.LastIndexByte(addr, ':'); i > 0 {
		return strings.Trim(addr[:i], "[]")
	}
	return addr
}
