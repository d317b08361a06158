package gearmanapi

import (
	"context"
	"fmt"
	"strings"

	"github.com/gearwork/gearwork/gearman"
	"github.com/gearwork/gearwork/internal/auth"
)

// adminPerm is what an admin command needs from the connection's grant.
// The zero value is not a permission: a command must name one.
type adminPerm uint8

const (
	// permOpen: every connection may run the command. Its answer holds no
	// payload, result or error text (counts, function names, worker
	// addresses, handles and unique ids at most) and it changes nothing.
	permOpen adminPerm = iota + 1
	// permRead: the answer holds payloads, results or error texts of jobs.
	// The handler shows a job's only if the grant allows auth.ActionRead
	// on the job's function (see conn.mayRead); it changes nothing.
	permRead
	// permAdmin: the command changes state. It runs only if the grant
	// allows auth.ActionAdmin on the command's name.
	permAdmin
	// permSubmit: the command is part of submitting work: it submits
	// jobs, or groups the jobs a client submits (batch create, batch
	// close, whose callbacks are jobs submitted for the client). The
	// handler runs it only if the grant allows auth.ActionSubmit on the
	// functions it submits to (see conn.checkSubmit), as SUBMIT_JOB would;
	// over HTTP the same routes need the submit scope.
	permSubmit
)

// String returns the name used in the help answer and docs/protocol.md.
func (p adminPerm) String() string {
	switch p {
	case permOpen:
		return "open"
	case permRead:
		return "read"
	case permAdmin:
		return "admin"
	case permSubmit:
		return "submit"
	}
	return fmt.Sprintf("adminPerm(%d)", p)
}

// adminAnswer collects an admin command's answer.
type adminAnswer struct {
	strings.Builder
	// close is set by a command after which the connection closes
	// (shutdown).
	close bool
	// c is the connection the answer goes to (spill).
	c *conn
}

// adminSpillBytes is how much of a long answer (a listing) is gathered
// before it is passed on to the connection's output.
const adminSpillBytes = 32 << 10

// adminOutputMark is the most output that may wait for the peer when an
// admin command runs or a long answer goes on: beyond it the command (or
// the answer's next part) waits until the peer has read the rest
// (waitOutput). An admin answer can be thousands of times its request
// ("help", "status" with many functions), so a peer that sent commands
// without reading their answers had each connection hold up to half of
// --max-output (30 MB per connection measured with 10,000 functions, a
// gigabyte for 40 connections), on any connection, even one the rules
// grant nothing.
const adminOutputMark = 64 << 10

// spill passes the answer gathered so far on to the connection's output
// once it holds adminSpillBytes, waiting while the output is over
// adminOutputMark for the peer to read (waitOutput), so that a listing of
// any length is written as it is gathered, at the pace the peer reads. It
// reports false once the connection is dead: the listing may stop.
func (a *adminAnswer) spill() bool {
	if a.Len() < adminSpillBytes || a.c == nil {
		return true
	}
	a.c.writePart([]byte(a.String()))
	a.Reset()
	a.c.mu.Lock()
	over := len(a.c.out) > adminOutputMark
	a.c.mu.Unlock()
	return !over || a.c.waitOutput(adminOutputMark)
}

// adminCommand is one entry of the admin command table.
type adminCommand struct {
	// name is the command's words in lower case, e.g. "cancel job" or
	// "deadletter retry". Admin rules (auth.Permissions.Admin) name it.
	name string
	// args is the argument syntax, e.g. "FUNCTION [until TIME|DURATION]".
	args string
	// perm is what the command needs; see adminPerm.
	perm adminPerm
	// help says in one line what the command does.
	help string
	// run answers the command; args are the words after name, as sent.
	run func(ctx context.Context, c *conn, args []string, a *adminAnswer)
}

// adminCommands is the admin command table: the dispatcher, the
// authorization check, the "help" answer and the table in
// docs/protocol.md all read it (a test checks the document). init sets it
// from adminTable, where adding a command is adding an entry.
var adminCommands []adminCommand

func adminTable() []adminCommand {
	return []adminCommand{
		// gearmand's commands.
		{"status", "", permOpen, "jobs, running jobs and workers per function", adminStatus},
		{"prioritystatus", "", permOpen, "queued jobs per priority and workers per function", adminPriorityStatus},
		{"workers", "", permOpen, "connections with their address, client id and functions", adminWorkers},
		{"show jobs", "", permOpen, "live jobs: handle, retries, ignored, queued", adminShowJobs},
		{"show unique jobs", "", permOpen, "unique ids of live jobs", adminShowUniqueJobs},
		{"show maxqueue", "[FUNCTION]", permOpen, "queue limits per priority", adminShowMaxQueue},
		{"cancel job", "HANDLE", permAdmin, "cancels a job; waiting clients get WORK_FAIL", adminCancelJob},
		{"create function", "FUNCTION", permAdmin, "makes a function known", adminCreateFunction},
		{"drop function", "FUNCTION", permAdmin, "forgets a function without workers or running jobs, dropping its queue", adminDropFunction},
		{"maxqueue", "FUNCTION [N | HIGH NORMAL LOW]", permAdmin, "limits a function's queue (none or 0: no limit)", adminMaxQueue},
		{"getpid", "", permOpen, "the server's process id", adminGetPID},
		{"version", "", permOpen, "the server's version", adminVersion},
		{"verbose", "", permOpen, "the server's log level", adminVerbose},
		{"shutdown", "[graceful]", permAdmin, "stops the server (graceful: lets running jobs finish)", adminShutdown},
		// Gearwork's lifecycle commands (docs/lifecycle.md).
		{"show policy", "[FUNCTION]", permOpen, "retry and limit policies, and whether functions are paused", adminShowPolicy},
		{"show schedules", "", permOpen, "cron schedules with their last and next runs", adminShowSchedules},
		{"show ordering", "[FUNCTION]", permOpen, "ordering keys with their head job and waiting jobs", adminShowOrdering},
		{"policy", "FUNCTION KEY=VALUE... | FUNCTION reset", permAdmin, "sets keys of a function's policy, or resets it to the default", adminPolicy},
		{"pause", "FUNCTION [until TIME|DURATION]", permAdmin, "stops handing out a function's jobs (until a time, or for a duration)", adminPause},
		{"resume", "FUNCTION", permAdmin, "hands out a paused function's jobs again", adminResume},
		{"deadletters", "[FUNCTION]", permRead, "dead letters with their last error", adminDeadLetters},
		{"deadletter show", "HANDLE", permRead, "one dead letter: payload, error and attempts", adminDeadLetterShow},
		{"deadletter retry", "HANDLE | all FUNCTION", permAdmin, "queues dead letters again", adminDeadLetterRetry},
		{"deadletter purge", "FUNCTION", permAdmin, "deletes a function's dead letters", adminDeadLetterPurge},
		{"result", "HANDLE | unique:UNIQUE", permRead, "a finished job's retained result", adminResult},
		{"jobs", "[function=FUNCTION] [state=STATE] [batch=ID] [limit=N] [cursor=CURSOR]", permRead, "job records, newest first: live jobs, then ended ones (of one batch: batch=ID)", adminJobs},
		{"job", "HANDLE", permRead, "one job's record: state, outcome, error and attempts", adminJob},
		{"retry job", "HANDLE", permAdmin, "runs a failed, exception or dead job again; answers the handle of the job that runs", adminRetryJob},
		// Batches (docs/batches.md).
		{"batch", "ID", permOpen, "a batch's counts, callbacks and first failed jobs", adminBatch},
		{"batch create", "[on_success=FUNCTION] [on_complete=FUNCTION]", permSubmit, "creates an open batch and answers its id", adminBatchCreate},
		{"batch close", "ID", permSubmit, "closes a batch: it completes once its jobs have finished", adminBatchClose},
		{"help", "", permOpen, "this list: command, arguments, permission, what it does", adminHelp},
	}
}

// adminIndex finds a command by name; adminMaxWords is the most words in
// a name. Both are built from adminCommands, which init checks.
var (
	adminIndex    = map[string]*adminCommand{}
	adminMaxWords int
)

func init() {
	adminCommands = adminTable()
	for i := range adminCommands {
		cmd := &adminCommands[i]
		switch {
		case cmd.name == "" || cmd.name != lowerASCII(strings.Join(strings.Fields(cmd.name), " ")):
			panic("gearmanapi: admin command name " + fmt.Sprintf("%q", cmd.name) + " is not lower-case words")
		case adminIndex[cmd.name] != nil:
			panic("gearmanapi: admin command " + cmd.name + " is listed twice")
		case cmd.perm < permOpen || cmd.perm > permSubmit:
			panic("gearmanapi: admin command " + cmd.name + " names no permission")
		case cmd.help == "" || cmd.run == nil:
			panic("gearmanapi: admin command " + cmd.name + " lacks help or a handler")
		}
		adminIndex[cmd.name] = cmd
		adminMaxWords = max(adminMaxWords, len(strings.Fields(cmd.name)))
	}
}

// lookupAdmin returns the command whose name is the longest run of
// leading words, matched without regard to case, and the words after it.
func lookupAdmin(words []string) (*adminCommand, []string) {
	for n := min(len(words), adminMaxWords); n > 0; n-- {
		if cmd := adminIndex[lowerASCII(strings.Join(words[:n], " "))]; cmd != nil {
			return cmd, words[n:]
		}
	}
	return nil, nil
}

// admin answers one admin text line. It reports false when the connection
// should close afterwards (shutdown).
func (c *conn) admin(ctx context.Context, line []byte) bool {
	c.waitAcks()
	// Answers wait for the peer to read the earlier ones (adminOutputMark).
	c.mu.Lock()
	over := len(c.out) > adminOutputMark
	c.mu.Unlock()
	if over && !c.waitOutput(adminOutputMark) {
		return false
	}
	parsed, err := gearman.ParseAdmin(line)
	if err != nil {
		c.write([]byte("ERR UNKNOWN_COMMAND Unknown+server+command\r\n"))
		return true
	}
	cmd, args := lookupAdmin(append(strings.Fields(parsed.Name), parsed.Args...))
	if cmd == nil {
		// As gearmand: an unknown show object, and Gearwork's deadletter
		// without a known subcommand, have answers of their own.
		switch parsed.Name {
		case "show":
			c.write([]byte(textUnknownShow))
		case "deadletter":
			c.write([]byte(errArgs("deadletter")))
		default:
			c.write([]byte("ERR UNKNOWN_COMMAND Unknown+server+command" + parsed.Name + "\r\n"))
		}
		return true
	}
	if cmd.perm == permAdmin && !c.allowed(auth.ActionAdmin, cmd.name) {
		c.write([]byte(c.deniedLine(auth.ActionAdmin, cmd.name)))
		return true
	}
	a := adminAnswer{c: c}
	cmd.run(ctx, c, args, &a)
	c.endAnswer([]byte(a.String()))
	return !a.close
}

// mayRead reports whether the connection may read the payloads, results
// and errors of function's jobs, without logging a denial (for lists,
// which leave such jobs out).
func (c *conn) mayRead(function string) bool {
	return c.grant == nil || c.grant.Allow(auth.ActionRead, function)
}

// checkSubmit reports whether the connection may submit to every function
// of fns, or, when fns is empty, to some function (a permSubmit command
// that submits to none, such as a batch without callbacks); a denial is
// logged and answered.
func (c *conn) checkSubmit(fns []string, a *adminAnswer) bool {
	if len(fns) == 0 {
		if c.grant == nil || c.grant.Some(auth.ActionSubmit) {
			return true
		}
		fns = []string{"any function"}
	}
	for _, fn := range fns {
		if !c.allowed(auth.ActionSubmit, fn) {
			a.WriteString(c.deniedLine(auth.ActionSubmit, fn))
			return false
		}
	}
	return true
}

// checkRead is mayRead for a single job: a denial is logged and answered.
func (c *conn) checkRead(function string, a *adminAnswer) bool {
	if c.allowed(auth.ActionRead, function) {
		return true
	}
	a.WriteString(c.deniedLine(auth.ActionRead, function))
	return false
}

func adminHelp(_ context.Context, _ *conn, _ []string, a *adminAnswer) {
	for _, cmd := range adminCommands {
		fmt.Fprintf(a, "%s\t%s\t%s\n", strings.TrimSpace(cmd.name+" "+cmd.args), cmd.perm, cmd.help)
	}
	a.WriteString(".\n")
}

// adminDocTable renders the table as the Markdown table of
// docs/protocol.md.
func adminDocTable() string {
	var sb strings.Builder
	sb.WriteString("| Command | Needs | What it does |\n|---|---|---|\n")
	for _, cmd := range adminCommands {
		need := cmd.perm.String()
		switch cmd.perm {
		case permAdmin:
			need = "`admin: [\"" + cmd.name + "\"]`"
		case permRead:
			need = "`read` on the job's function"
		case permSubmit:
			need = "`submit` on the callbacks' functions"
		}
		fmt.Fprintf(&sb, "| `%s` | %s | %s |\n", strings.ReplaceAll(strings.TrimSpace(cmd.name+" "+cmd.args), "|", `\|`),
			need, cmd.help)
	}
	return sb.String()
}

// lowerASCII lower-cases ASCII letters only, as gearman.ParseAdmin does:
// Unicode case mapping could turn other bytes into a command's name.
func lowerASCII(s string) string {
	b := []byte(s)
	for i, ch := range b {
		if ch >= 'A' && ch <= 'Z' {
			b[i] = ch + 'a' - 'A'
		}
	}
	return string(b)
}
