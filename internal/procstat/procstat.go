// Package procstat reads what Linux tells of a process in /proc: its CPU
// time, parent and state from /proc/PID/stat, and the memory figures of
// /proc/PID/status. The benchmarks and the end-to-end tests measure the
// server with it; elsewhere than on Linux every read fails.
package procstat

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"time"
)

// clockTicks is USER_HZ, the unit of the CPU times in /proc/PID/stat. It
// is 100 on every Linux architecture Go supports (sysconf(_SC_CLK_TCK) is
// out of reach without cgo), so the times have a resolution of 10 ms.
const clockTicks = 100

// Stat is what /proc/PID/stat tells of a process.
type Stat struct {
	// State is the process's state letter: R running, S sleeping, D in
	// uninterruptible wait, Z zombie, and so on.
	State byte
	// PPID is the process id of its parent.
	PPID int
	// CPU is the user plus system time that the process (all its
	// threads) has used.
	CPU time.Duration
	// ChildrenCPU is the user plus system time of its children that have
	// ended and been waited for.
	ChildrenCPU time.Duration
}

// ReadStat reads /proc/PID/stat. It fails if the process does not exist.
func ReadStat(pid int) (Stat, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return Stat{}, fmt.Errorf("procstat: %w", err)
	}
	return ParseStat(data)
}

// CPU returns the user plus system time that process pid (all its
// threads) has used, with a resolution of 10 ms.
func CPU(pid int) (time.Duration, error) {
	st, err := ReadStat(pid)
	return st.CPU, err
}

// ParseStat parses the contents of a /proc/PID/stat file.
func ParseStat(stat []byte) (Stat, error) {
	// The command name (field 2) is in parentheses and may hold spaces
	// and parentheses itself; the fields after the last ')' are plain.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return Stat{}, fmt.Errorf("procstat: malformed /proc/PID/stat")
	}
	f := bytes.Fields(stat[i+1:])
	// f[0] is field 3 (state), f[1] field 4 (ppid); utime, stime, cutime
	// and cstime are fields 14 to 17.
	if len(f) < 15 || len(f[0]) != 1 {
		return Stat{}, fmt.Errorf("procstat: malformed /proc/PID/stat: %d fields", len(f)+2)
	}
	var n [5]int64
	for k, field := range [][]byte{f[1], f[11], f[12], f[13], f[14]} {
		v, err := strconv.ParseInt(string(field), 10, 64)
		if err != nil {
			return Stat{}, fmt.Errorf("procstat: malformed /proc/PID/stat: field %q", field)
		}
		n[k] = v
	}
	return Stat{
		State:       f[0][0],
		PPID:        int(n[0]),
		CPU:         time.Duration(n[1]+n[2]) * time.Second / clockTicks,
		ChildrenCPU: time.Duration(n[3]+n[4]) * time.Second / clockTicks,
	}, nil
}

// Status reads the named fields of /proc/PID/status, such as "VmRSS",
// "VmHWM", "RssAnon" and "RssFile", in kB as the file gives them. It fails
// if the process does not exist or a field is missing (a zombie has no
// memory fields).
func Status(pid int, fields ...string) (map[string]int64, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return nil, fmt.Errorf("procstat: %w", err)
	}
	return ParseStatus(data, fields...)
}

// ParseStatus returns the named fields, in kB, of the contents of a
// /proc/PID/status file: its "Name:   N kB" lines.
func ParseStatus(status []byte, fields ...string) (map[string]int64, error) {
	out := make(map[string]int64, len(fields))
	for line := range bytes.Lines(status) {
		name, rest, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			continue
		}
		for _, want := range fields {
			if string(name) != want {
				continue
			}
			f := bytes.Fields(rest)
			if len(f) != 2 || string(f[1]) != "kB" {
				return nil, fmt.Errorf("procstat: malformed /proc/PID/status line %q", bytes.TrimSpace(line))
			}
			kB, err := strconv.ParseInt(string(f[0]), 10, 64)
			if err != nil {
				return nil, fmt.Errorf("procstat: malformed /proc/PID/status line %q", bytes.TrimSpace(line))
			}
			out[want] = kB
		}
	}
	for _, want := range fields {
		if _, ok := out[want]; !ok {
			return nil, fmt.Errorf("procstat: no %s line in /proc/PID/status (is the process a zombie?)", want)
		}
	}
	return out, nil
}
