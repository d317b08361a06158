package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/gearwork/gearwork/gearman"
	"github.com/gearwork/gearwork/internal/gearmantest/wire"
	"github.com/gearwork/gearwork/internal/store/postgres/pgtest"
	"github.com/gearwork/gearwork/internal/testserver"
)

// The PostgreSQL benchmark: durable no-op jobs through 1 and 3 Gearwork
// servers, River and gearmand's own PostgreSQL queue, all on one durable
// (fsync on) PostgreSQL started for the run. Run it with
//
//	go test -run '^$' -bench Postgres -benchtime 1x ./test/cluster/
//
// GEARWORK_BENCH_JOBS sets the jobs per run (default 20000); River is
// skipped when the go tool cannot build test/cluster/riverbench, gearmand
// when /usr/sbin/gearmand is missing.

// durablePG starts a PostgreSQL with fsync on for the benchmark, stopped
// when it ends.
func durablePG(b *testing.B) *pgtest.Server {
	pg, err := pgtest.Start(context.Background(), pgtest.Options{Durable: true})
	if err != nil {
		b.Skip(err.Error())
	}
	b.Cleanup(pg.Stop)
	return pg
}

func benchJobs() int {
	if n, err := strconv.Atoi(os.Getenv("GEARWORK_BENCH_JOBS")); err == nil && n > 0 {
		return n
	}
	return 20000
}

// freshSchema creates (again) a schema and returns a URL using it.
func freshSchema(b *testing.B, url, name string) string {
	b.Helper()
	id := pgx.Identifier{name}.Sanitize()
	execSQL(b, url, "DROP SCHEMA IF EXISTS "+id+" CASCADE; CREATE SCHEMA "+id)
	return pgtest.WithSchema(url, name)
}

// execSQL runs sql on the database at url.
func execSQL(b *testing.B, url, sql string) {
	b.Helper()
	withConn(b, url, func(ctx context.Context, conn *pgx.Conn) error {
		_, err := conn.Exec(ctx, sql)
		return err
	})
}

// withConn runs f on a connection to the database at url; the benchmark
// fails if it cannot connect or f fails.
func withConn(b *testing.B, url string, f func(ctx context.Context, conn *pgx.Conn) error) {
	b.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close(ctx)
	if err := f(ctx, conn); err != nil {
		b.Fatal(err)
	}
}

// load submits jobs background jobs from clients connections (batch
// pipelined submits per round trip) while workers connections run them,
// spread round-robin over addrs, and returns when every job ran.
func load(b *testing.B, addrs []string, jobs, clients, batch, workers int) (insert, total time.Duration) {
	b.Helper()
	var ran atomic.Int64
	all := make(chan struct{})
	var once sync.Once
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	for i := range workers {
		c, err := wire.DialStream(addrs[i%len(addrs)])
		if err != nil {
			b.Fatal(err)
		}
		context.AfterFunc(ctx, func() { c.Close() })
		wg.Go(func() {
			if c.Send(gearman.CanDo, "noop") != nil {
				return
			}
			_ = c.Work(func([]byte) []byte {
				if ran.Add(1) == int64(jobs) {
					once.Do(func() { close(all) })
				}
				return nil
			})
		})
	}
	runID := time.Now().UnixNano() & 0xffffffff
	start := time.Now()
	var next atomic.Int64
	var cw sync.WaitGroup
	errs := make(chan error, clients)
	for i := range clients {
		c, err := wire.DialStream(addrs[i%len(addrs)])
		if err != nil {
			b.Fatal(err)
		}
		cw.Go(func() {
			defer c.Close()
			for {
				first := int(next.Add(int64(batch))) - batch
				if first >= jobs {
					return
				}
				n := min(batch, jobs-first)
				var submits []byte
				for k := range n {
					// A unique per job, as libgearman clients send (a UUID).
					id := first + k
					submits = gearman.AppendPacket(submits, gearman.MagicReq, gearman.SubmitJobBg, []byte("noop"),
						fmt.Appendf(nil, "%08x-0000-4000-8000-%012x", runID, id), strconv.AppendInt(nil, int64(id), 10))
				}
				_ = c.Write(submits) // a failed write shows as a failed read
				for range n {
					p, err := c.Next()
					if err == nil && p.Command != gearman.JobCreated {
						err = fmt.Errorf("submit answered %v %q", p.Command, p.Arg(1))
					}
					if err != nil {
						errs <- err
						return
					}
				}
			}
		})
	}
	cw.Wait()
	insert = time.Since(start)
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	select {
	case <-all:
	case <-time.After(5 * time.Minute):
		b.Fatalf("only %d of %d jobs ran", ran.Load(), jobs)
	}
	total = time.Since(start)
	cancel()
	wg.Wait()
	return insert, total
}

func report(b *testing.B, jobs int, insert, total time.Duration) {
	b.ReportMetric(float64(jobs)/insert.Seconds(), "submits/s")
	b.ReportMetric(float64(jobs)/total.Seconds(), "jobs/s")
	b.ReportMetric(0, "ns/op")
}

// shapes are the client loads measured: one job per request from 16 and
// from 64 concurrent clients, and batches of 100 jobs per request.
var shapes = []struct {
	name             string
	clients, batch   int
	workers          int
	gearmandFraction int // gearmand runs jobs/fraction (it is slow)
}{
	{"clients=16/batch=1", 16, 1, 16, 10},
	{"clients=64/batch=1", 64, 1, 16, 10},
	{"clients=4/batch=100", 4, 100, 16, 10},
}

func BenchmarkPostgres(b *testing.B) {
	pg := durablePG(b)
	jobs := benchJobs()
	bin := testserver.PlainBinary(b)
	for _, sh := range shapes {
		for _, n := range []int{1, 3} {
			b.Run(fmt.Sprintf("gearwork/servers=%d/%s", n, sh.name), func(b *testing.B) {
				for range b.N {
					url := freshSchema(b, pg.URL, "gearwork_bench")
					addrs, procs := startServers(b, bin, url, n)
					ins, tot := load(b, addrs, jobs, sh.clients, sh.batch, sh.workers)
					report(b, jobs, ins, tot)
					stopServers(procs)
				}
			})
		}
		b.Run("river/"+sh.name, func(b *testing.B) {
			for range b.N {
				out, err := runRiver(pg.URL, jobs, sh.clients, sh.batch, 1000)
				if err != nil {
					b.Skip("riverbench: ", err)
				}
				report(b, jobs, time.Duration(out.InsertSecs*float64(time.Second)), time.Duration(out.TotalSecs*float64(time.Second)))
			}
		})
		b.Run("gearmand-libpq/"+sh.name, func(b *testing.B) {
			if _, err := os.Stat("/usr/sbin/gearmand"); err != nil {
				b.Skip("no /usr/sbin/gearmand")
			}
			for range b.N {
				dropTable(b, pg.URL, "gearmand_queue")
				addr := fmt.Sprintf("127.0.0.1:%d", freePort(b))
				host, _ := hostOf(pg.URL)
				cmd := exec.Command("/usr/sbin/gearmand", "--listen=127.0.0.1", "--port="+portOf(addr),
					"-q", "Postgres", "--libpq-conninfo", "host="+host+" user=postgres dbname=postgres",
					"--libpq-table", "gearmand_queue", "--log-file=none", "--threads=2")
				cmd.Stderr = os.Stderr
				if err := cmd.Start(); err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
				waitListening(b, addr)
				n := jobs / sh.gearmandFraction
				ins, tot := load(b, []string{addr}, n, sh.clients, sh.batch, sh.workers)
				report(b, n, ins, tot)
			}
		})
	}
}

// startServers starts n Gearwork servers (bin) on the store url, each on
// a free loopback port and with the extra arguments of serve, killed when
// the benchmark ends if still running.
func startServers(b *testing.B, bin, url string, n int, extra ...string) ([]string, []*exec.Cmd) {
	b.Helper()
	var addrs []string
	var procs []*exec.Cmd
	for range n {
		addr := fmt.Sprintf("127.0.0.1:%d", freePort(b))
		cmd := exec.Command(bin, append([]string{"serve", "--listen", addr, "--http", "off", "--store", url, "--log-level", "warn"}, extra...)...)
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		procs = append(procs, cmd)
		waitListening(b, addr)
		addrs = append(addrs, addr)
	}
	return addrs, procs
}

// stopServers stops servers gracefully and waits for them.
func stopServers(procs []*exec.Cmd) {
	for _, p := range procs {
		_ = p.Process.Signal(os.Interrupt)
		_ = p.Wait()
	}
}

type riverResult struct {
	InsertSecs float64 `json:"insert_seconds"`
	TotalSecs  float64 `json:"total_seconds"`
}

// runRiver runs test/cluster/riverbench (its own module) on the database.
func runRiver(url string, jobs, clients, batch, workers int) (riverResult, error) {
	var res riverResult
	cmd := exec.Command("go", "run", ".", "-url", url, "-jobs", strconv.Itoa(jobs),
		"-clients", strconv.Itoa(clients), "-batch", strconv.Itoa(batch), "-workers", strconv.Itoa(workers))
	cmd.Dir = "riverbench"
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return res, fmt.Errorf("%w: %s", err, errb.String())
	}
	err := json.Unmarshal(out.Bytes(), &res)
	return res, err
}

func waitListening(b *testing.B, addr string) {
	deadline := time.Now().Add(time.Minute)
	for {
		c, err := wire.DialStream(addr)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("%s does not listen: %v", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// hostOf returns the host (or socket directory) of a PostgreSQL URL.
func hostOf(url string) (string, error) {
	cfg, err := pgconn.ParseConfig(url)
	if err != nil {
		return "", err
	}
	return cfg.Host, nil
}

func portOf(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}

// dropTable drops a table of the public schema if it exists.
func dropTable(b *testing.B, url, name string) {
	b.Helper()
	execSQL(b, url, "DROP TABLE IF EXISTS public."+pgx.Identifier{name}.Sanitize())
}
