//go:build !linux

package testserver

import "os/exec"

// DieWithTests: only Linux kills a process when its parent dies; elsewhere
// a server outlives a test binary that dies without its cleanups.
func DieWithTests(*exec.Cmd) {}
