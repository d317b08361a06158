package bench

import (
	"fmt"
	"time"

	"github.com/gearwork/gearwork/internal/procstat"
)

// readRSS returns a process's resident set size (VmRSS) in bytes.
func readRSS(pid int) (int64, error) {
	return readStatus(pid, "VmRSS")
}

// readRSSFile returns the file-backed part of a process's resident set
// (RssFile: mapped pages of its executable and libraries) in bytes.
func readRSSFile(pid int) (int64, error) {
	return readStatus(pid, "RssFile")
}

// readStatus returns one memory figure of /proc/PID/status in bytes.
func readStatus(pid int, key string) (int64, error) {
	st, err := procstat.Status(pid, key)
	if err != nil {
		return 0, fmt.Errorf("read server memory: %w", err)
	}
	return st[key] << 10, nil
}

// readCPU returns the user plus system CPU time a process (all its
// threads) has used, with the kernel's 10 ms resolution.
func readCPU(pid int) (time.Duration, error) {
	cpu, err := procstat.CPU(pid)
	if err != nil {
		return 0, fmt.Errorf("read server CPU time: %w", err)
	}
	return cpu, nil
}
