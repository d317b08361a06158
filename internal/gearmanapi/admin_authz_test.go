package gearmanapi

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/gearman"
	"github.com/gearwork/gearwork/internal/auth"
	"github.com/gearwork/gearwork/internal/broker"
	"github.com/gearwork/gearwork/internal/gearmantest/wire"
	"github.com/gearwork/gearwork/internal/httpapi"
)

// dialFrom connects from a chosen loopback source address, so that one
// test can hold connections of several identities (rules match addresses).
func (tb *testBundle) dialFrom(t *testing.T, src string) *client {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	nc, err := d.Dial("tcp", tb.addr)
	require.NoError(t, err)
	return &client{wire.New(t, nc)}
}

const (
	submitterAddr = "127.0.0.1" // granted submit only
	operatorAddr  = "127.0.0.2" // granted everything
)

// authzBundle is a server whose rules grant submitterAddr only submit and
// operatorAddr everything, with a dead letter and a retained result of
// "victim" holding private data, a queued job of "victim" with a private
// payload, a dead letter of "spare", a queued job of "idle" and a paused
// function "paused".
type authzBundle struct {
	*secBundle
	dead, done, live string
	// spare is a dead job of another function, whose dead letter the
	// table's example purges (its record stays).
	spare string
	// batch is an open batch.
	batch string
	// shutdowns counts calls of the ShutdownFunc.
	shutdowns atomic.Int32
}

const (
	secretPayload = "SECRET-PAYLOAD"
	secretError   = "SECRET-ERROR"
	secretResult  = "SECRET-RESULT"
	// secretQueued is the payload of a queued job of "victim".
	secretQueued = "SECRET-QUEUED"
)

func setupAuthz(t *testing.T, extra ...auth.RuleConfig) *authzBundle {
	t.Helper()
	rules := append([]auth.RuleConfig{
		{Name: "submitters", Match: auth.MatchConfig{Address: []string{submitterAddr}}, Allow: auth.Permissions{Submit: []string{"*"}}},
		{Name: "operators", Match: auth.MatchConfig{Address: []string{operatorAddr}},
			Allow: auth.Permissions{Submit: []string{"*"}, Serve: []string{"*"}, Admin: []string{"*"}, Read: []string{"*"}}},
	}, extra...)
	ab := &authzBundle{}
	ab.secBundle = setupListener(t, Config{Authorizer: policy(t, rules...),
		ShutdownFunc: func(bool) { ab.shutdowns.Add(1) }}, nil)
	h := func(n int) string { return handle(n) }
	ab.dead, ab.done, ab.live, ab.spare = h(0), h(1), h(3), h(2)
	op := ab.dialFrom(t, operatorAddr)
	for _, fn := range []string{"victim", "spare", "paused"} {
		op.adminOK("create function " + fn)
	}
	op.adminOK("policy victim max_attempts=1 result_retention=1h", "policy spare max_attempts=1", "pause paused")
	for i, job := range []struct{ fn, unique, payload string }{
		{"victim", "", secretPayload}, {"victim", "u-done", "fine"}, {"spare", "", "x"}, {"idle", "", "queued"},
		{"victim", "", secretQueued},
	} {
		op.Send(gearman.SubmitJobBg, job.fn, job.unique, job.payload)
		op.Expect(gearman.JobCreated, h(i))
	}
	op.Send(gearman.CanDo, "victim")
	op.Send(gearman.GrabJob)
	op.Expect(gearman.JobAssign, h(0), "victim", secretPayload)
	op.Send(gearman.WorkException, h(0), secretError)
	op.Send(gearman.GrabJob)
	op.Expect(gearman.JobAssign, h(1), "victim", "fine")
	op.Send(gearman.WorkComplete, h(1), secretResult)
	op.Send(gearman.CantDo, "victim")
	op.Send(gearman.CanDo, "spare")
	op.Send(gearman.GrabJob)
	op.Expect(gearman.JobAssign, h(2), "spare", "x")
	op.Send(gearman.WorkFail, h(2))
	op.Send(gearman.ResetAbilities)
	op.echo("sync")
	require.Contains(t, op.admin("deadletter show "+ab.dead, true), secretError)
	require.Contains(t, op.admin("result "+ab.done, false), "OK")
	created := ab.oneShot(t, operatorAddr, "batch create on_complete=victim")
	require.Regexp(t, `^OK \d+\r?\n$`, created)
	ab.batch = strings.TrimSpace(strings.TrimPrefix(created, "OK "))
	return ab
}

// state is what the admin commands can change, as the operator sees it.
func (tb *authzBundle) state(t *testing.T) string {
	t.Helper()
	var sb strings.Builder
	for _, line := range []string{"status", "show jobs", "show maxqueue", "show policy", "deadletters"} {
		sb.WriteString(tb.oneShot(t, operatorAddr, line))
	}
	fmt.Fprintf(&sb, "shutdowns %d\n", tb.shutdowns.Load())
	list, err := tb.b.Batches(context.Background(), 0)
	require.NoError(t, err)
	for _, bt := range list {
		fmt.Fprintf(&sb, "batch %d closed=%t\n", bt.ID, bt.Closed)
	}
	return sb.String()
}

func deniedLine(who, name string) string {
	return "ERR PERMISSION_DENIED " + strings.ReplaceAll("addr="+who+" may not run "+name, " ", "+") + "\r\n"
}

// deniedSubmit is the answer to a command that would submit to function
// fn for one who may not.
func deniedSubmit(who, fn string) string {
	return "ERR PERMISSION_DENIED " + strings.ReplaceAll("addr="+who+" may not submit to "+fn, " ", "+") + "\r\n"
}

// adminHTTPTwins names, for each admin command that the HTTP API also
// offers, the route that does the same.
var adminHTTPTwins = map[string]string{
	"status":           "GET /v1/functions",
	"workers":          "GET /v1/workers",
	"cancel job":       "DELETE /v1/jobs/{handle}",
	"pause":            "POST /v1/functions/{fn}/pause",
	"resume":           "POST /v1/functions/{fn}/resume",
	"deadletters":      "GET /v1/dead-letters",
	"deadletter retry": "POST /v1/dead-letters/{handle}/retry",
	"deadletter purge": "DELETE /v1/dead-letters",
	"jobs":             "GET /v1/jobs",
	"job":              "GET /v1/jobs/{handle}",
	"retry job":        "POST /v1/jobs/{handle}/retry",
	"batch":            "GET /v1/batches/{id}",
	"batch create":     "POST /v1/batches",
	"batch close":      "POST /v1/batches/{id}/close",
}

// TestAdminTableAgreesWithHTTPRoutes: an admin command and the HTTP route
// that does the same need the same permission (reads, which are open or
// read on the Gearman port, need the read scope over HTTP).
func TestAdminTableAgreesWithHTTPRoutes(t *testing.T) {
	t.Parallel()
	want := map[adminPerm]httpapi.Scope{permOpen: httpapi.ScopeRead, permRead: httpapi.ScopeRead,
		permAdmin: httpapi.ScopeAdmin, permSubmit: httpapi.ScopeSubmit}
	for name, route := range adminHTTPTwins {
		cmd := adminIndex[name]
		require.NotNil(t, cmd, "no admin command %q", name)
		method, pattern, _ := strings.Cut(route, " ")
		scope, ok := httpapi.RouteScope(method, pattern)
		require.True(t, ok, "no route %s", route)
		require.Equal(t, want[cmd.perm], scope, "%q needs %s on the Gearman port, %s needs the %s scope", name, cmd.perm, route, scope)
	}
}

// A connection the rules grant only submit can change no server state
// through admin commands, and reads no payload, result or error.
func TestSubmitOnlyConnectionCannotUseAdminCommands(t *testing.T) {
	t.Parallel()
	tb := setupAuthz(t)
	c := tb.dialFrom(t, submitterAddr)
	for _, tc := range []struct{ line, name string }{
		{"pause victim", "pause"},
		{"pause victim until 1h", "pause"},
		{"resume victim", "resume"},
		{"policy victim max_attempts=0", "policy"},
		{"policy victim reset", "policy"},
		{"deadletter retry " + tb.dead, "deadletter retry"},
		{"deadletter retry all victim", "deadletter retry"},
		{"deadletter purge victim", "deadletter purge"},
		{"shutdown", "shutdown"},
	} {
		require.Equal(t, deniedLine(submitterAddr, tc.name), c.admin(tc.line, false), tc.line)
	}
	for _, line := range []string{"result " + tb.done, "result unique:u-done", "deadletter show " + tb.dead, "deadletters victim"} {
		got := c.admin(line, false)
		require.True(t, strings.HasPrefix(got, "ERR PERMISSION_DENIED "), "%s: %q", line, got)
	}
	got := c.admin("deadletters", true)
	require.NotContains(t, got, secretError)
	require.NotContains(t, got, tb.dead)

	// Nothing changed.
	fp := tb.b.Policy("victim")
	require.EqualValues(t, 1, fp.MaxAttempts)
	for _, p := range tb.b.Policies() {
		require.Equal(t, p.Name == "paused", p.Paused, p.Name)
	}
	op := tb.dialFrom(t, operatorAddr)
	require.Contains(t, op.admin("deadletters victim", true), tb.dead)
	require.Contains(t, op.admin("result "+tb.done, false), "OK")
	require.Equal(t, secretResult+"\n", op.Line())
}

// adminExamples are the arguments each admin command of the table runs
// with in TestAdminTable ({dead}, {done}, {live} and {spare} are the
// fixture's dead letter, finished job, queued job and dead job of spare). Every command of the table
// needs one, and a state-changing command's must change state.
var adminExamples = map[string]string{
	"status": "", "prioritystatus": "", "workers": "", "show jobs": "", "show unique jobs": "",
	"show maxqueue": "", "cancel job": "{live}", "create function": "other", "drop function": "idle",
	"maxqueue": "other 5", "getpid": "", "version": "", "verbose": "", "shutdown": "graceful",
	"show policy": "", "show schedules": "", "show ordering": "", "policy": "victim max_attempts=0",
	"pause": "victim", "resume": "paused", "deadletters": "", "deadletter show": "{dead}",
	"deadletter retry": "{dead}", "deadletter purge": "spare", "result": "{done}", "help": "",
	"jobs": "", "job": "{dead}", "retry job": "{spare}",
	"batch": "{batch}", "batch create": "on_success=victim", "batch close": "{batch}",
}

// oneShot runs one admin line on a fresh connection from src and returns
// everything the server answers before it closes the connection (the
// client half-closes after the line).
func (tb *authzBundle) oneShot(t *testing.T, src, line string) string {
	t.Helper()
	c := tb.dialFrom(t, src)
	_, err := c.NC.Write([]byte(line + "\r\n"))
	require.NoError(t, err)
	require.NoError(t, c.NC.(*net.TCPConn).CloseWrite())
	got, err := io.ReadAll(c.R)
	require.NoError(t, err, line)
	return string(got)
}

// TestAdminTable walks the admin command table. A connection granted only
// submit runs every command: it sees no payload, result or error, changes
// nothing, and is refused every admin command. A connection granted read
// on the function sees the private data of the read commands. A
// connection granted everything changes nothing with the commands that
// are not marked admin, and a connection granted admin on one command's
// name alone runs it and changes state with it: so a command that changes
// state cannot be left unmarked.
func TestAdminTable(t *testing.T) {
	t.Parallel()
	const readerAddr = "127.0.0.3"
	adminAddr := func(i int) string { return fmt.Sprintf("127.0.1.%d", i+1) }
	extra := []auth.RuleConfig{{Name: "reader", Match: auth.MatchConfig{Address: []string{readerAddr}},
		Allow: auth.Permissions{Read: []string{"victim"}}}}
	for i, cmd := range adminCommands {
		extra = append(extra, auth.RuleConfig{Name: "admin of " + cmd.name,
			Match: auth.MatchConfig{Address: []string{adminAddr(i)}}, Allow: auth.Permissions{Admin: []string{cmd.name}}})
	}
	tb := setupAuthz(t, extra...)
	line := func(cmd adminCommand) string {
		args, ok := adminExamples[cmd.name]
		require.True(t, ok, "adminExamples has no arguments for %q", cmd.name)
		args = strings.NewReplacer("{dead}", tb.dead, "{done}", tb.done, "{live}", tb.live, "{spare}", tb.spare,
			"{batch}", tb.batch).Replace(args)
		return strings.TrimSpace(cmd.name + " " + args)
	}
	secrets := []string{secretPayload, secretError, secretResult, secretQueued}
	deniedRead := "ERR PERMISSION_DENIED " + strings.ReplaceAll("addr="+submitterAddr+" may not read victim", " ", "+") + "\r\n"

	before := tb.state(t)
	for _, cmd := range adminCommands {
		got := tb.oneShot(t, submitterAddr, line(cmd))
		for _, secret := range secrets {
			require.NotContains(t, got, secret, line(cmd))
		}
		switch cmd.perm {
		case permAdmin:
			require.Equal(t, deniedLine(submitterAddr, cmd.name), got, line(cmd))
		case permSubmit:
			// Part of submitting work: a submitter may; it changes state.
			require.True(t, strings.HasPrefix(got, "OK"), "%s: %q", line(cmd), got)
			after := tb.state(t)
			require.NotEqual(t, before, after, "%s changed nothing: give it arguments in adminExamples that do", line(cmd))
			before = after
			continue
		case permRead:
			if got != ".\n" { // a list leaves out what may not be read
				require.Equal(t, deniedRead, got, line(cmd))
			}
		default:
			require.NotEmpty(t, got, line(cmd))
			require.NotContains(t, got, "PERMISSION_DENIED", line(cmd))
		}
		require.Equal(t, before, tb.state(t), "%s changed state for a connection granted submit only", line(cmd))
	}
	for _, cmd := range adminCommands {
		if cmd.perm == permRead {
			// The example shows private data of victim to the operator;
			// a grant of read on victim alone shows the same.
			all := tb.oneShot(t, operatorAddr, line(cmd))
			got := tb.oneShot(t, readerAddr, line(cmd))
			require.NotContains(t, got, "PERMISSION_DENIED", line(cmd))
			shown := 0
			for _, secret := range secrets {
				if strings.Contains(all, secret) {
					shown++
					require.Contains(t, got, secret, line(cmd))
				}
			}
			require.NotZero(t, shown, "%s shows no private data: give it arguments in adminExamples that do", line(cmd))
		}
		if cmd.perm == permSubmit {
			// One not allowed to submit to the callbacks' function may not.
			require.Equal(t, deniedSubmit(readerAddr, "victim"), tb.oneShot(t, readerAddr, line(cmd)), line(cmd))
			require.Equal(t, before, tb.state(t), "%s changed state for a connection that may not submit", line(cmd))
		}
		if cmd.perm != permAdmin && cmd.perm != permSubmit {
			require.NotContains(t, tb.oneShot(t, operatorAddr, line(cmd)), "PERMISSION_DENIED", line(cmd))
			require.Equal(t, before, tb.state(t), "%s changes state but is not marked admin or submit", line(cmd))
		}
	}
	for i, cmd := range adminCommands {
		if cmd.perm != permAdmin {
			continue
		}
		require.Equal(t, deniedLine(readerAddr, cmd.name), tb.oneShot(t, readerAddr, line(cmd)), line(cmd))
		got := tb.oneShot(t, adminAddr(i), line(cmd))
		require.True(t, strings.HasPrefix(got, "OK"), "%s: %q", line(cmd), got)
		after := tb.state(t)
		require.NotEqual(t, before, after, "%s changed nothing: give it arguments in adminExamples that do", line(cmd))
		before = after
	}
}

func TestAdminHelpListsTheTable(t *testing.T) {
	t.Parallel()
	tb := setup(t, broker.Config{}, Config{})
	c := tb.dial(t)
	got := c.admin("HELP", true)
	lines := strings.Split(strings.TrimSuffix(got, ".\n"), "\n")
	require.Len(t, lines, len(adminCommands)+1)
	require.Contains(t, lines, "pause FUNCTION [until TIME|DURATION]\tadmin\tstops handing out a function's jobs (until a time, or for a duration)")
	require.Contains(t, lines, "result HANDLE | unique:UNIQUE\tread\ta finished job's retained result")
	require.Contains(t, lines, "status\topen\tjobs, running jobs and workers per function")
}

const (
	docTableBegin = "<!-- admin command table: generated from adminCommands by GEARWORK_UPDATE_DOCS=1 go test ./internal/gearmanapi -run TestAdminCommandsAreDocumented -->\n"
	docTableEnd   = "<!-- end of the admin command table -->\n"
)

// TestAdminCommandsAreDocumented checks that docs/protocol.md holds the
// admin command table as the server has it.
func TestAdminCommandsAreDocumented(t *testing.T) {
	const path = "../../docs/protocol.md"
	doc, err := os.ReadFile(path)
	require.NoError(t, err)
	before, rest, ok := strings.Cut(string(doc), docTableBegin)
	require.True(t, ok, "docs/protocol.md lacks the line %q", docTableBegin)
	table, after, ok := strings.Cut(rest, docTableEnd)
	require.True(t, ok, "docs/protocol.md lacks the line %q", docTableEnd)
	want := adminDocTable()
	if os.Getenv("GEARWORK_UPDATE_DOCS") == "1" {
		require.NoError(t, os.WriteFile(path, []byte(before+docTableBegin+want+docTableEnd+after), 0o644))
		return
	}
	require.Equal(t, want, table, "run: GEARWORK_UPDATE_DOCS=1 go test ./internal/gearmanapi -run TestAdminCommandsAreDocumented")
}
