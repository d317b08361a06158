package cluster

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gearwork/gearwork/internal/bench"
	"github.com/gearwork/gearwork/internal/procstat"
	"github.com/gearwork/gearwork/internal/store/postgres/pgtest"
	"github.com/gearwork/gearwork/internal/testserver"
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
	if err := distinctNames(bins); err != nil {
		b.Fatalf("GEARWORK_BENCH_BINS: %v", err)
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
	for _, shape := range shapes {
		for _, bin := range bins {
			k := key{shape, filepath.Base(bin)}
			fmt.Printf("servers=%d %s %s: median %.0f jobs/s, %.0f µs CPU/job\n",
				servers, shape, k.bin, median(rates[k]), median(cpus[k]))
		}
	}
}

// median returns the median of x: its middle value, the upper one of an
// even count; 0 when x is empty (a system that did not run).
func median(x []float64) float64 {
	if len(x) == 0 {
		return 0
	}
	y := slices.Clone(x)
	slices.Sort(y)
	return y[len(y)/2]
}

// distinctNames checks that paths, the systems a benchmark compares, have
// distinct base names: their results are printed, and kept, by name.
func distinctNames(paths []string) error {
	seen := make(map[string]string, len(paths))
	for _, p := range paths {
		name := filepath.Base(p)
		if first, ok := seen[name]; ok {
			return fmt.Errorf("%q and %q are both named %q: the results are kept by name, so copy one to another name", first, p, name)
		}
		seen[name] = p
	}
	return nil
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
	var backend int
	withConn(b, url, func(ctx context.Context, conn *pgx.Conn) error {
		return conn.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&backend)
	})
	return parentPID(backend)
}

// parentPID returns the process id of process pid's parent, or -1.
func parentPID(pid int) int {
	st, err := procstat.ReadStat(pid)
	if err != nil {
		return -1
	}
	return st.PPID
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
		if st, err := procstat.ReadStat(pid); err == nil {
			sum += ticks(st.CPU)
		}
	}
	return sum
}

// BenchmarkPostgresBacklog measures deep queues on one durable PostgreSQL
// (with pg_stat_statements), Gearwork builds and River in one run:
//
//   - submit: N durable background submits, no worker connected; Gearwork
//     with "gearwork bench"'s submit scenario (4 connections × 64
//     submits in flight), River with InsertManyFast (COPY) in batches of
//     1,000 from 4 goroutines;
//   - drain: a queue pre-filled with N jobs (untimed), worked by 8 workers;
//     Gearwork with "gearwork bench"'s drain1 (8 worker connections, one
//     GRAB_JOB_UNIQ in flight each), River with a client started on the
//     filled queue (MaxWorkers 1000, FetchCooldown 1 ms), timed from
//     Start to the last job run.
//
// Run it with
//
//	GEARWORK_BENCH_BINS="/tmp/gw-before /tmp/gw-after" GEARWORK_BENCH_REPS=3 \
//	GEARWORK_BENCH_BACKLOG=100000 GEARWORK_BENCH_STATEMENTS=8 \
//	go test -run '^$' -bench PostgresBacklog -benchtime 1x -timeout 60m ./test/cluster/
//
// GEARWORK_BENCH_PHASES="drain" (or "submit") measures one part only.
// GEARWORK_BENCH_BINS defaults to a build of this checkout; the systems
// take turns in a rotating order, each on a fresh schema and with a fresh
// server. It prints every run (rate; the CPU time per job of the server
// process, Gearwork's or River's, and of all of PostgreSQL's processes,
// autovacuum of earlier runs' tables included, and that sum with the
// load generator's CPU time, which for Gearwork is "gearwork bench"'s
// clients and workers in this process and for River runs inside
// riverbench; the execution time of the statements per job, from
// pg_stat_statements), the medians and each build's ratio to River, and,
// with GEARWORK_BENCH_STATEMENTS=K, the K statements on which PostgreSQL
// spent the most time in each measured part of the first round
// (pg_stat_statements, reset when the part begins; execution and
// planning time). With GEARWORK_BENCH_PROFILE=DIR it saves a 2-second CPU
// profile of each Gearwork server from the start of each measured part
// into DIR. River is skipped, and so is each build's ratio to it, when
// test/cluster/riverbench cannot be built. The builds must have distinct
// base names (the results are kept by name).
func BenchmarkPostgresBacklog(b *testing.B) {
	dir := b.TempDir()
	bins := strings.Fields(os.Getenv("GEARWORK_BENCH_BINS"))
	if len(bins) == 0 {
		bins = []string{testserver.PlainBinary(b)}
	}
	if err := distinctNames(append(slices.Clone(bins), "riverbench")); err != nil {
		b.Fatalf("GEARWORK_BENCH_BINS: %v", err)
	}
	reps := max(envInt("GEARWORK_BENCH_REPS"), 1)
	jobs := envInt("GEARWORK_BENCH_BACKLOG")
	if jobs <= 0 {
		jobs = 100000
	}
	top := envInt("GEARWORK_BENCH_STATEMENTS")
	phases := strings.Fields(cmpOr(os.Getenv("GEARWORK_BENCH_PHASES"), "submit drain"))
	pg, err := pgtest.Start(context.Background(), pgtest.Options{Durable: true,
		Settings: []string{"shared_preload_libraries=pg_stat_statements", "track_wal_io_timing=on",
			"pg_stat_statements.track_planning=on"}})
	if err != nil {
		b.Skip(err.Error())
	}
	b.Cleanup(pg.Stop)
	execSQL(b, pg.URL, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
	postmaster := postmasterPID(b, pg.URL)
	pgCPU := func() int64 { return postgresTicks(postmaster) }

	systems := slices.Clone(bins)
	river := filepath.Join(dir, "riverbench")
	cmd := exec.Command("go", "build", "-o", river, ".")
	cmd.Dir = "riverbench"
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Logf("River skipped: cannot build riverbench: %v\n%s", err, out)
	} else {
		systems = append(systems, river)
	}

	type key struct{ phase, system string }
	rates, cpus, alls, dbs := map[key][]float64{}, map[key][]float64{}, map[key][]float64{}, map[key][]float64{}
	record := func(rep int, k key, m measured) {
		rate := float64(jobs) / m.elapsed.Seconds()
		rates[k] = append(rates[k], rate)
		cpu := float64(m.serverTicks+m.pgTicks) * 1e4 / float64(jobs) // ticks are 10 ms
		cpus[k] = append(cpus[k], cpu)
		db := m.dbMS * 1e3 / float64(jobs)
		dbs[k] = append(dbs[k], db)
		all := cpu + float64(m.clientNS)/1e3/float64(jobs)
		alls[k] = append(alls[k], all)
		fmt.Printf("run %d %s %s: %.0f jobs/s, %.1f µs CPU/job (server %.1f, PostgreSQL %.1f; with the load generator %.1f), statements %.1f µs/job, %s\n",
			rep, k.phase, k.system, rate, cpu, float64(m.serverTicks)*1e4/float64(jobs), float64(m.pgTicks)*1e4/float64(jobs), all, db, m.wal)
		if rep == 0 && top > 0 {
			fmt.Printf("pg_stat_statements, %s, %s (%d jobs):\n%s", k.phase, k.system, jobs, m.statements)
		}
	}
	for rep := range reps {
		for i := range systems {
			sys := systems[(i+rep)%len(systems)]
			name := filepath.Base(sys)
			for _, phase := range phases {
				var m measured
				if sys == river {
					m = riverBacklog(b, river, pg.URL, phase, jobs, top, pgCPU)
				} else {
					m = gearworkBacklog(b, sys, pg.URL, phase, jobs, top, pgCPU)
				}
				record(rep, key{phase, name}, m)
			}
		}
	}
	for _, phase := range phases {
		riverRate := median(rates[key{phase, "riverbench"}])
		for _, sys := range systems {
			k := key{phase, filepath.Base(sys)}
			line := fmt.Sprintf("%s %s: median %.0f jobs/s, %.1f µs CPU/job (%.1f with the load generator), statements %.1f µs/job", phase, k.system,
				median(rates[k]), median(cpus[k]), median(alls[k]), median(dbs[k]))
			if sys != river && riverRate > 0 {
				line += fmt.Sprintf(", %.2f× River", median(rates[k])/riverRate)
			}
			fmt.Println(line)
		}
	}
}

// measured is one measured part of BenchmarkPostgresBacklog.
type measured struct {
	elapsed              time.Duration
	serverTicks, pgTicks int64
	// clientNS is the CPU time of the load generator when it is not the
	// server process: "gearwork bench"'s clients and workers, which run
	// in this process (River's run inside riverbench, the server).
	clientNS int64
	// statements lists the top statements (topStatements) and dbMS is
	// the execution time of all of them.
	statements string
	dbMS       float64
	// wal sums up pg_stat_wal over the part (walStats).
	wal string
}

func envInt(name string) int {
	n, _ := strconv.Atoi(os.Getenv(name))
	return n
}

// gearworkBacklog runs "gearwork bench"'s submit (phase "submit") or
// drain1 ("drain") against a fresh Gearwork server bin on a fresh schema.
func gearworkBacklog(b *testing.B, bin, url, phase string, jobs, top int, pgCPU func() int64) measured {
	b.Helper()
	var extra []string
	profile := os.Getenv("GEARWORK_BENCH_PROFILE")
	pprofAddr := fmt.Sprintf("127.0.0.1:%d", freePort(b))
	if profile != "" {
		extra = []string{"--pprof", pprofAddr}
	}
	addrs, procs := startServers(b, bin, freshSchema(b, url, "gearwork_bench"), 1, extra...)
	defer stopServers(procs)
	var profiled sync.WaitGroup
	defer profiled.Wait()
	server := procs[0].Process.Pid
	isServer := func(pid int) bool { return pid == server }
	var pg0, gw0, self0 int64
	scenario := map[string]string{"submit": "submit", "drain": "drain1"}[phase]
	res, err := bench.Run(context.Background(), bench.Config{Addr: addrs[0], Jobs: jobs, Connections: 4, Inflight: 64,
		Workers: 8, Timeout: 10 * time.Minute, NoCleanup: true,
		BeginFunc: func() {
			settle(b, url)
			resetStatements(b, url)
			pg0, gw0, self0 = pgCPU(), cpuTicks(isServer), selfCPU(b)
			if profile != "" {
				profiled.Go(func() {
					saveProfile(b, pprofAddr, filepath.Join(profile, fmt.Sprintf("%s-%s-%d.pprof", filepath.Base(bin), phase, time.Now().Unix())))
				})
			}
		}}, scenario)
	if err != nil {
		b.Fatalf("gearwork bench %s: %v", scenario, err)
	}
	m := measured{elapsed: res.Elapsed, pgTicks: pgCPU() - pg0, serverTicks: cpuTicks(isServer) - gw0, clientNS: selfCPU(b) - self0}
	m.statements, m.dbMS = topStatements(b, url, top, jobs)
	// The backends report their WAL counts when they end.
	stopServers(procs)
	m.wal = walStats(b, url, jobs, res.Elapsed.Seconds())
	execSQL(b, url, "DROP SCHEMA gearwork_bench CASCADE")
	return m
}

// riverBacklog runs riverbench: for "submit" an insert run (InsertManyFast
// in batches of 1,000 from 4 goroutines) into a schema an empty insert run
// created; for "drain" an untimed insert run and then a work run on what
// it queued.
func riverBacklog(b *testing.B, river, url, phase string, jobs, top int, pgCPU func() int64) measured {
	b.Helper()
	insert := []string{"-mode", "insert", "-clients", "4", "-batch", "1000"}
	var m measured
	if phase == "drain" {
		runRiverMode(b, river, url, jobs, insert, nil)
		settle(b, url)
		resetStatements(b, url)
		m = runRiverMode(b, river, url, jobs, []string{"-mode", "work", "-workers", "1000"}, pgCPU)
	} else {
		// The schema and River's migrations first, outside the statistics.
		runRiverMode(b, river, url, 0, insert, nil)
		settle(b, url)
		resetStatements(b, url)
		m = runRiverMode(b, river, url, jobs, append(insert, "-keep"), pgCPU)
	}
	m.statements, m.dbMS = topStatements(b, url, top, jobs)
	m.wal = walStats(b, url, jobs, m.elapsed.Seconds())
	execSQL(b, url, "DROP SCHEMA river_bench CASCADE")
	return m
}

// settle gives every measured part the same start: a checkpoint, so that
// no part pays for writing the pages an earlier one left dirty. Each
// part also drops its schema when it ends, so that autovacuum does not
// clean up after one system in the time of the next (both drains leave
// some 200,000 dead row versions behind).
func settle(b *testing.B, url string) {
	b.Helper()
	execSQL(b, url, "CHECKPOINT")
}

// runRiverMode runs the riverbench binary river with args and returns the
// time it measured (its insert time when it has one, else its total) and,
// when pgCPU is set, the CPU time of its process and of PostgreSQL.
func runRiverMode(b *testing.B, river, url string, jobs int, args []string, pgCPU func() int64) measured {
	b.Helper()
	cmd := exec.Command(river, append([]string{"-url", url, "-jobs", strconv.Itoa(jobs)}, args...)...)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, os.Stderr
	var pg0 int64
	if pgCPU != nil {
		pg0 = pgCPU()
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		b.Fatalf("riverbench %v: %v", args, err)
	}
	var m measured
	if pgCPU != nil {
		m.pgTicks = pgCPU() - pg0
		m.serverTicks = ticksOf(cmd.ProcessState)
	}
	var res riverResult
	if err := json.Unmarshal([]byte(out.String()), &res); err != nil {
		b.Fatalf("riverbench output %q: %v", out.String(), err)
	}
	m.elapsed = time.Duration(cmp.Or(res.InsertSecs, res.TotalSecs) * float64(time.Second))
	return m
}

// saveProfile saves a 2-second CPU profile of the server whose --pprof
// listens on addr into path.
func saveProfile(b *testing.B, addr, path string) {
	resp, err := http.Get("http://" + addr + "/debug/pprof/profile?seconds=2")
	if err != nil {
		b.Logf("profile: %v", err)
		return
	}
	defer resp.Body.Close()
	f, err := os.Create(path)
	if err != nil {
		b.Logf("profile: %v", err)
		return
	}
	defer f.Close()
	if _, err := io.Copy(f, resp.Body); err != nil {
		b.Logf("profile: %v", err)
	}
}

// selfCPU is the CPU time (user + system) of this process in
// nanoseconds.
func selfCPU(b *testing.B) int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatalf("getrusage: %v", err)
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// ticksOf is the CPU time (user + system) of an ended process in clock
// ticks of 10 ms, as cpuTicks counts.
func ticksOf(ps *os.ProcessState) int64 {
	return ticks(ps.UserTime() + ps.SystemTime())
}

// ticks is d in clock ticks of 10 ms.
func ticks(d time.Duration) int64 { return int64(d / (10 * time.Millisecond)) }

// postgresTicks is the CPU time (user + system, clock ticks of 10 ms) of
// the PostgreSQL server whose postmaster is pid: its running processes and
// the backends that have exited (the postmaster's children's times).
func postgresTicks(postmaster int) int64 {
	n := cpuTicks(func(pid int) bool { return pid == postmaster || parentPID(pid) == postmaster })
	if st, err := procstat.ReadStat(postmaster); err == nil {
		n += ticks(st.ChildrenCPU)
	}
	return n
}

// resetStatements clears PostgreSQL's statement and WAL statistics.
func resetStatements(b *testing.B, url string) {
	b.Helper()
	execSQL(b, url, "SELECT pg_stat_statements_reset(), pg_stat_reset_shared('wal')")
}

// walStats sums up pg_stat_wal since the last reset, once no other
// client is connected (a backend reports its counts when it ends, or at
// most once a second): the WAL records and bytes per job, and the WAL
// flushes (fsyncs of the WAL, each one a wait for every commit behind
// it), their count per second of the part and their mean time (the
// database runs with track_wal_io_timing on).
func walStats(b *testing.B, url string, jobs int, secs float64) string {
	b.Helper()
	var out string
	withConn(b, url, func(ctx context.Context, conn *pgx.Conn) error {
		for range 50 {
			var others int
			if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
				WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()`).Scan(&others); err != nil {
				return err
			}
			if others == 0 {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		var recs, fpi, bytes, syncs int64
		var syncMS float64
		if err := conn.QueryRow(ctx, `SELECT wal_records, wal_fpi, wal_bytes::bigint, wal_sync, wal_sync_time
			FROM pg_stat_wal`).Scan(&recs, &fpi, &bytes, &syncs, &syncMS); err != nil {
			return err
		}
		per := float64(jobs)
		mean := 0.0
		if syncs > 0 {
			mean = syncMS / float64(syncs)
		}
		out = fmt.Sprintf("WAL %.2f records (%.3f FPI) and %.0f bytes a job, %d flushes (%.0f/s, %.2f ms each)",
			float64(recs)/per, float64(fpi)/per, float64(bytes)/per, syncs, float64(syncs)/secs, mean)
		return nil
	})
	return out
}

// topStatements lists the top statements by execution time since the
// last reset, and their sum, per job of jobs, and returns the sum of
// their execution times in milliseconds.
func topStatements(b *testing.B, url string, top, jobs int) (string, float64) {
	b.Helper()
	var sb strings.Builder
	var sumMS float64
	withConn(b, url, func(ctx context.Context, conn *pgx.Conn) error {
		rows, err := conn.Query(ctx, `SELECT calls, total_exec_time, total_plan_time, rows, wal_records, wal_bytes::bigint,
				regexp_replace(left(query, 400), '\s+', ' ', 'g')
			FROM pg_stat_statements WHERE query NOT LIKE '%pg_stat_statements%'
			ORDER BY total_exec_time DESC`)
		if err != nil {
			return err
		}
		var sumCalls, sumRecs, sumWAL int64
		var sumPlan float64
		n := 0
		for rows.Next() {
			var calls, rs, recs, wal int64
			var ms, plan float64
			var q string
			if err := rows.Scan(&calls, &ms, &plan, &rs, &recs, &wal, &q); err != nil {
				return err
			}
			sumMS += ms
			sumPlan += plan
			sumCalls += calls
			sumRecs += recs
			sumWAL += wal
			if n < top {
				fmt.Fprintf(&sb, "  %8.1f ms (planning %6.1f ms) %7d calls %8d rows %8d WAL records %10d WAL bytes  %.110s\n", ms, plan, calls, rs, recs, wal, q)
			}
			n++
		}
		if err := rows.Err(); err != nil {
			return err
		}
		per := func(x float64) float64 { return x / float64(jobs) }
		fmt.Fprintf(&sb, "  all %d statements: %.1f ms (%.2f µs/job; planning %.1f ms more), %d calls (%.3f/job), %d WAL records (%.2f/job), %d WAL bytes (%.0f/job)\n",
			n, sumMS, per(sumMS*1e3), sumPlan, sumCalls, per(float64(sumCalls)), sumRecs, per(float64(sumRecs)), sumWAL, per(float64(sumWAL)))
		return nil
	})
	return sb.String(), sumMS
}
