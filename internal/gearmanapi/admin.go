package gearmanapi

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/gearwork/gearwork/gearman"
	"github.com/gearwork/gearwork/internal/auth"
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
// gearmand's ERR UNKNOWN_JOB for a job that is not there, Gearwork's own
// codes otherwise.
func errText(err error) string {
	switch {
	case errors.Is(err, broker.ErrJobNotFound):
		return textUnknownJob
	case errors.Is(err, broker.ErrJobHeldElsewhere):
		return "ERR JOB_HELD_ELSEWHERE The+server+holding+the+job+did+not+drop+it;+cancel+it+there\r\n"
	default:
		return "ERR STORE_ERROR " + strings.ReplaceAll(err.Error(), " ", "+") + "\r\n"
	}
}

func errArgs(cmd string) string {
	return "ERR INVALID_ARGUMENTS An+incomplete+set+of+arguments+was+sent+to+this+command+" + cmd + "\r\n"
}

// admin answers one admin text line. It reports false when the connection
// should close afterwards (shutdown).
func (c *conn) admin(ctx context.Context, line []byte) bool {
	c.waitAcks()
	cmd, err := gearman.ParseAdmin(line)
	if err != nil {
		c.write([]byte("ERR UNKNOWN_COMMAND Unknown+server+command\r\n"))
		return true
	}
	if mutatingAdmin[cmd.Name] && !c.allowed(auth.ActionAdmin, cmd.Name) {
		c.write([]byte(c.deniedAdminLine(cmd.Name)))
		return true
	}
	b := c.srv.b
	var sb strings.Builder
	switch cmd.Name {
	case "status":
		for _, f := range b.Status(ctx) {
			fmt.Fprintf(&sb, "%s\t%d\t%d\t%d\n", f.Name, f.Total, f.Running, f.Workers)
		}
		sb.WriteString(".\n")
	case "prioritystatus":
		for _, f := range b.Status(ctx) {
			fmt.Fprintf(&sb, "%s\t%d\t%d\t%d\t%d\n", f.Name, f.Queued[0], f.Queued[1], f.Queued[2], f.Workers)
		}
		sb.WriteString(".\n")
	case "workers":
		for _, w := range b.Workers() {
			fmt.Fprintf(&sb, "%d %s %s :", w.ID, hostOf(w.Addr), w.ClientID)
			for _, f := range w.Functions {
				sb.WriteString(" " + f)
			}
			sb.WriteString("\n")
		}
		sb.WriteString(".\n")
	case "show jobs":
		for _, j := range b.Jobs(0) {
			fmt.Fprintf(&sb, "%s\t%d\t%d\t%d\n", b.Handle(j.Seq), j.Retries, b2i(j.Ignored), b2i(j.Queued))
		}
		sb.WriteString(".\n")
	case "show unique jobs":
		for _, u := range b.Uniques() {
			sb.WriteString(u + "\n")
		}
		sb.WriteString(".\n")
	case "show maxqueue":
		for _, f := range b.Status(ctx) {
			if len(cmd.Args) > 0 && cmd.Args[0] != f.Name {
				continue
			}
			fmt.Fprintf(&sb, "%s\t%d\t%d\t%d\n", f.Name, f.MaxQueue[0], f.MaxQueue[1], f.MaxQueue[2])
		}
		sb.WriteString(".\n")
	case "show":
		if !c.adminLifecycle(ctx, cmd, &sb) {
			sb.WriteString(textUnknownShow)
		}
	case "cancel job":
		if len(cmd.Args) != 1 {
			sb.WriteString(errArgs("cancel"))
			break
		}
		if err := b.CancelJob(ctx, []byte(cmd.Args[0])); err != nil {
			sb.WriteString(errText(err))
			break
		}
		sb.WriteString(textOK)
	case "create function":
		if len(cmd.Args) != 1 || len(cmd.Args[0]) > gearman.MaxFunctionSize {
			sb.WriteString(errArgs("create"))
			break
		}
		b.CreateFunction(cmd.Args[0])
		sb.WriteString(textOK)
	case "drop function":
		if len(cmd.Args) != 1 {
			sb.WriteString(errArgs("drop"))
			break
		}
		switch err := b.DropFunction(cmd.Args[0]); {
		case err == nil:
			sb.WriteString(textOK)
		case errors.Is(err, broker.ErrFunctionBusy):
			sb.WriteString("ERR there are still connected workers or executing clients\r\n")
		default:
			sb.WriteString(textFuncNotFound)
		}
	case "maxqueue":
		if len(cmd.Args) == 0 {
			sb.WriteString(errArgs("maxqueue"))
			break
		}
		// As gearmand: one number applies to every priority; three set
		// high, normal, low; none (or zero, or negative) means unlimited.
		var limits [3]int
		for i := range 3 {
			if len(cmd.Args) > i+1 {
				n, _ := strconv.Atoi(cmd.Args[i+1])
				limits[i] = max(n, 0)
			}
		}
		if len(cmd.Args) <= 2 {
			limits[1], limits[2] = limits[0], limits[0]
		}
		b.SetMaxQueue(cmd.Args[0], limits)
		sb.WriteString(textOK)
	case "getpid":
		fmt.Fprintf(&sb, "OK %d\n", os.Getpid())
	case "verbose":
		fmt.Fprintf(&sb, "OK %s\n", c.srv.cfg.Verbose)
	case "version":
		fmt.Fprintf(&sb, "OK %s\n", c.srv.cfg.Version)
	case "shutdown":
		if c.srv.cfg.ShutdownFunc == nil {
			sb.WriteString("ERR UNKNOWN_COMMAND Unknown+server+command+shutdown\r\n")
			break
		}
		graceful := len(cmd.Args) > 0 && strings.EqualFold(cmd.Args[0], "graceful")
		c.write([]byte(textOK))
		// Write the answer before the stop begins: it closes every
		// connection, and a queued "OK" would be lost.
		c.flush()
		c.srv.cfg.ShutdownFunc(graceful)
		return graceful
	default:
		if !c.adminLifecycle(ctx, cmd, &sb) {
			sb.WriteString("ERR UNKNOWN_COMMAND Unknown+server+command" + cmd.Name + "\r\n")
		}
	}
	c.write([]byte(sb.String()))
	return true
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
