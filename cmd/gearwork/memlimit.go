package main

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/debug"
	"strconv"
	"strings"

	"github.com/gearwork/gearwork/internal/gcpace"
)

const memoryLimitHelp = "soft limit on the Go heap, like 1536MiB: the garbage collector works harder as the heap nears it, " +
	"instead of letting it grow to twice the live data; Pebble's cache and memtables (about 100 MiB) come on top. " +
	"\"off\" sets none; default: GOMEMLIMIT when set, otherwise three quarters of the machine's (or the cgroup's) memory"

// memoryLimit works out the soft memory limit for --memory-limit: flag is
// the flag's value, env the GOMEMLIMIT environment variable and total the
// memory available to the process (0 when unknown). It returns the limit to
// set, or -1 to leave the runtime's own (GOMEMLIMIT, which the runtime has
// applied already, or none), and says where the limit came from.
func memoryLimit(flag, env string, total int64) (limit int64, source string, err error) {
	switch strings.ToLower(strings.TrimSpace(flag)) {
	case "":
		if env != "" {
			return -1, "GOMEMLIMIT", nil
		}
		if total <= 0 {
			return -1, "none (the machine's memory is unknown)", nil
		}
		return total / 4 * 3, "three quarters of the memory", nil
	case "off":
		return int64(^uint64(0) >> 1), "off", nil // math.MaxInt64: the runtime's "no limit"
	}
	n, err := parseSize(flag)
	if err != nil {
		return 0, "", fmt.Errorf("invalid --memory-limit %q: %w", flag, err)
	}
	if n < 64<<20 {
		return 0, "", fmt.Errorf("invalid --memory-limit %q: below 64MiB the server would spend its time collecting garbage", flag)
	}
	return n, "--memory-limit", nil
}

// applyMemoryLimit sets the Go runtime's soft memory limit as --memory-limit
// says (see memoryLimit) and returns the limit in force.
func applyMemoryLimit(flag string, log *slog.Logger) (int64, error) {
	limit, source, err := memoryLimit(flag, os.Getenv("GOMEMLIMIT"), availableMemory())
	if err != nil {
		return 0, err
	}
	if limit >= 0 {
		debug.SetMemoryLimit(limit)
	}
	inForce := debug.SetMemoryLimit(-1)
	if inForce == int64(^uint64(0)>>1) {
		log.Info("serve: no soft memory limit", slog.String("source", source))
	} else {
		log.Info("serve: soft memory limit", slog.Int64("bytes", inForce), slog.String("source", source))
	}
	return inForce, nil
}

// newPacer returns what sets the collector's target after each collection
// so that the payloads kept within --memory-budget get no room of their
// own above them (gcpace), or nil when GOGC is set: the runtime has
// applied it, and it is left as it is.
func newPacer(log *slog.Logger) *gcpace.Pacer {
	if v := os.Getenv("GOGC"); v != "" {
		log.Info("serve: the collector's target is GOGC's", slog.String("GOGC", v))
		return nil
	}
	return gcpace.New(gcpace.Config{})
}

// availableMemory returns the memory available to the process: MemTotal,
// or the cgroup (v2) limit when that is lower; 0 when neither is readable.
func availableMemory() int64 {
	total := int64(0)
	if f, err := os.Open("/proc/meminfo"); err == nil {
		total = memTotal(f)
		f.Close()
	}
	if b, err := os.ReadFile("/sys/fs/cgroup/memory.max"); err == nil {
		if n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64); err == nil && n > 0 && (total == 0 || n < total) {
			total = n
		}
	}
	return total
}

// memTotal reads MemTotal from /proc/meminfo in bytes; 0 when absent.
func memTotal(r io.Reader) int64 {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 && fields[0] == "MemTotal:" {
			if kb, err := strconv.ParseInt(fields[1], 10, 64); err == nil && kb > 0 {
				return kb * 1024
			}
		}
	}
	return 0
}

// parseMemoryBudget parses --memory-budget into broker.Config.MemoryBudget
// (0 unlimited, negative none). An empty value means a quarter of the
// machine's memory.
func parseMemoryBudget(s string) (int64, error) {
	switch strings.ToLower(s) {
	case "":
		return defaultMemoryBudget(), nil
	case "unlimited":
		return 0, nil
	}
	n, err := parseSize(s)
	if err != nil {
		return 0, fmt.Errorf("invalid --memory-budget %q: %w", s, err)
	}
	if n == 0 {
		return -1, nil
	}
	return n, nil
}

// defaultMemoryBudget is a quarter of the memory available to the process
// (availableMemory), or 1 GiB when that is unknown.
func defaultMemoryBudget() int64 {
	if total := availableMemory(); total > 0 {
		return total / 4
	}
	return 1 << 30
}
