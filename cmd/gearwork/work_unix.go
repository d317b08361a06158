//go:build unix

package main

import (
	"os/exec"
	"syscall"
)

// ownProcessGroup starts the command in its own process group, so that a
// Ctrl-C at the terminal reaches the worker (which then finishes running
// jobs gracefully) and not the commands, and so that a timeout kills the
// command's children too.
func ownProcessGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
}
