package cluster

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
)

// BenchmarkPostgresAB compares Gearwork builds on one durable PostgreSQL in
// one run, for changes too small to see across runs on a shared machine:
//
//	GEARWORK_BENCH_BINS="/tmp/gearwork-before /tmp/gearwork-after" \
//	GEARWORK_BENCH_SHAPES="16x1 64x1 4x100" GEARWORK_BENCH_REPS=3 \
//	GEARWORK_BENCH_SERVERS=1 GEARWORK_BENCH_JOBS=10000 \
//	nice -n 10 go test -run '^$' -bench PostgresAB -benchtime 1x ./test/cluster/
//
// Each shape is CLIENTSxBATCH (16 workers, as in BenchmarkPostgres). The
// builds alternate, in a rotating order, on a fresh schema each time; it
// prints every run and the medians of jobs/s and of the CPU time of the
// Gearwork servers and PostgreSQL together per job. Skipped unless
// GEARWORK_BENCH_BINS is set.
func BenchmarkPostgresAB(b *testing.B) {
	bins := strings.Fields(os.Getenv("GEARWORK_BENCH_BINS"))
	if len(bins) == 0 {
		b.Skip("GEARWORK_BENCH_BINS is not set")
	}
	shapes := strings.Fields(cmpOr(os.Getenv("GEARWORK_BENCH_SHAPES"), "16x1 64x1 4x100"))
	reps, _ := strconv.Atoi(os.Getenv("GEARWORK_BENCH_REPS"))
	reps = max(reps, 1)
	servers, _ := strconv.Atoi(os.Getenv("GEARWORK_BENCH_SERVERS"))
	servers = max(servers, 1)
	pg := durablePG(b)
	postmaster := postmasterPID(b, pg.URL)
	jobs := benchJobs()
	type key struct{ shape, bin string }
	rates, cpus := map[key][]float64{}, map[key][]float64{}
	for rep := range reps {
		for _, shape := range shapes {
			var clients, batch int
			if _, err := fmt.Sscanf(shape, "%dx%d", &clients, &batch); err != nil {
				b.Fatalf("shape %q: %v", shape, err)
			}
			for i := range bins {
				bin := bins[(i+rep)%len(bins)]
				url := freshSchema(b, pg.URL, "gearwork_bench")
				addrs, procs := startServers(b, bin, url, servers)
				isPG := func(pid int) bool { return pid == postmaster || parentPID(pid) == postmaster }
				isServer := func(pid int) bool {
					return slices.ContainsFunc(procs, func(c *exec.Cmd) bool { return c.Process.Pid == pid })
				}
				pgBefore, gwBefore := cpuTicks(isPG), cpuTicks(isServer)
				_, total := load(b, addrs, jobs, clients, batch, 16)
				pgUsed, gwUsed := cpuTicks(isPG)-pgBefore, cpuTicks(isServer)-gwBefore
				used := pgUsed + gwUsed
				stopServers(procs)
				k := key{shape, filepath.Base(bin)}
				rate := float64(jobs) / total.Seconds()
				cpu := float64(used) * 1e4 / float64(jobs) // ticks are 10 ms
				rates[k] = append(rates[k], rate)
				cpus[k] = append(cpus[k], cpu)
				b.Logf("run %d %s %s: %.0f jobs/s, %.0f µs CPU/job (Gearwork %.0f, PostgreSQL %.0f)", rep, shape, k.bin,
					rate, cpu, float64(gwUsed)*1e4/float64(jobs), float64(pgUsed)*1e4/float64(jobs))
			}
		}
	}
	median := func(x []float64) float64 {
		y := slices.Clone(x)
		slices.Sort(y)
		return y[len(y)/2]
	}
	for _, shape := range shapes {
		for _, bin := range bins {
			k := key{shape, filepath.Base(bin)}
			fmt.Printf("servers=%d %s %s: median %.0f jobs/s, %.0f µs CPU/job\n",
				servers, shape, k.bin, median(rates[k]), median(cpus[k]))
		}
	}
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// postmasterPID returns the process id of the PostgreSQL server behind url
// (the parent of a backend).
func postmasterPID(b *testing.B, url string) int {
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close(ctx)
	var backend int
	if err := conn.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&backend); err != nil {
		b.Fatal(err)
	}
	return parentPID(backend)
}

// procStat returns the fields of /proc/PID/stat after the command name.
func procStat(pid int) []string {
	raw, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return nil
	}
	s := string(raw)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 > len(s) {
		return nil
	}
	return strings.Fields(s[i+2:])
}

func parentPID(pid int) int {
	f := procStat(pid)
	if len(f) < 2 {
		return -1
	}
	p, _ := strconv.Atoi(f[1])
	return p
}

// cpuTicks sums the user and system CPU time, in clock ticks, of the
// running processes for which match holds.
func cpuTicks(match func(pid int) bool) int64 {
	entries, _ := os.ReadDir("/proc")
	var sum int64
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || !match(pid) {
			continue
		}
		f := procStat(pid)
		if len(f) < 13 {
			continue
		}
		u, _ := strconv.ParseInt(f[11], 10, 64)
		s, _ := strconv.ParseInt(f[12], 10, 64)
		sum += u + s
	}
	return sum
}
