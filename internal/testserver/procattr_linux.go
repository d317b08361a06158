package testserver

import (
	"os/exec"
	"syscall"
)

// DieWithTests makes cmd's process get SIGKILL when the test binary that
// starts it dies, also without its cleanups (a -timeout panic, a kill), so
// that no server outlives its tests. Linux sends it when the thread that
// started the process ends; Go ends threads only with the process, or a
// goroutine that locked one, which start does not.
func DieWithTests(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
