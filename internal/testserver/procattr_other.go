//go:build !linux

package testserver

import "os/exec"

// dieWithTests: only Linux kills a process when its parent dies; elsewhere
// a server outlives a test binary that dies without its cleanups.
func dieWithTests(*exec.Cmd) {}
