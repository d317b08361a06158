package main

import (
	"fmt"
	"strings"
)

// Exit codes, the same for every command. Each --help prints exitTable.
const (
	exitOK          = 0
	exitFailed      = 1   // the job failed (WORK_FAIL), an admin command was answered with an error, a bench scenario failed, or serve stopped on an error
	exitUsage       = 2   // invalid flags, arguments or configuration
	exitException   = 3   // the worker sent WORK_EXCEPTION
	exitUnreachable = 4   // no server answered: down, connection lost, or --timeout passed
	exitRefused     = 5   // the server refused the request with an ERROR packet
	exitInterrupted = 130 // SIGINT or SIGTERM
)

// exitJobFailed is exitFailed as submit uses it.
const exitJobFailed = exitFailed

// exitCodes explains each exit code; it is the one source of exitTable.
var exitCodes = []struct {
	code    int
	meaning string
}{
	{exitOK, "success (submit: the job completed, or a background job was accepted)"},
	{exitFailed, "failure: the job failed (WORK_FAIL), a server answered an admin command\nwith an error, a bench scenario failed, or serve stopped on an error"},
	{exitUsage, "invalid flags, arguments or configuration (nothing was sent or started)"},
	{exitException, "the job threw an exception (WORK_EXCEPTION; its data goes to stderr)"},
	{exitUnreachable, "no server could be reached, the connection was lost, or --timeout passed"},
	{exitRefused, "the server refused the request (ERROR packet, e.g. a full queue)"},
	{exitInterrupted, "interrupted (SIGINT or SIGTERM) before the command finished"},
}

// exitTable is the exit code table printed by every --help.
var exitTable = func() string {
	var b strings.Builder
	b.WriteString("\nExit status (every command):\n")
	for _, e := range exitCodes {
		lines := strings.Split(e.meaning, "\n")
		fmt.Fprintf(&b, "  %-4d %s\n", e.code, lines[0])
		for _, l := range lines[1:] {
			fmt.Fprintf(&b, "       %s\n", l)
		}
	}
	return b.String()
}()
