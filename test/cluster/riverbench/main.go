// Command riverbench measures River (github.com/riverqueue/river), a Go job
// queue on PostgreSQL, doing no-op jobs: clients insert jobs while River's
// workers run them, and it prints the insert and insert+work rates. The
// PostgreSQL benchmark of Gearwork (test/cluster) runs it on the same
// database in the same run. It is its own module so that River stays out
// of Gearwork's dependencies.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"
)

// NoopArgs are the arguments of a job that does nothing.
type NoopArgs struct{}

// Kind names the job kind.
func (NoopArgs) Kind() string { return "noop" }

// noopWorker counts the jobs it runs.
type noopWorker struct {
	river.WorkerDefaults[NoopArgs]
	done *atomic.Int64
	all  chan struct{}
	n    int64
	once *sync.Once
}

func (w *noopWorker) Work(ctx context.Context, job *river.Job[NoopArgs]) error {
	if w.done.Add(1) == w.n {
		w.once.Do(func() { close(w.all) })
	}
	return nil
}

// Result is printed as JSON.
type Result struct {
	Jobs       int     `json:"jobs"`
	Clients    int     `json:"clients"`
	Batch      int     `json:"batch"`
	Workers    int     `json:"workers"`
	InsertSecs float64 `json:"insert_seconds"`
	TotalSecs  float64 `json:"total_seconds"`
	InsertRate float64 `json:"insert_per_second"`
	Rate       float64 `json:"insert_work_per_second"`
}

func main() {
	url := flag.String("url", "", "PostgreSQL URL")
	schema := flag.String("schema", "river_bench", "schema to create and use")
	jobs := flag.Int("jobs", 20000, "jobs to insert and work")
	clients := flag.Int("clients", 16, "concurrent inserting goroutines")
	batch := flag.Int("batch", 1, "jobs per insert (InsertMany when > 1)")
	workers := flag.Int("workers", 1000, "River MaxWorkers (jobs run at once, each in its own goroutine)")
	flag.Parse()
	if err := run(*url, *schema, *jobs, *clients, *batch, *workers); err != nil {
		fmt.Fprintln(os.Stderr, "riverbench:", err)
		os.Exit(1)
	}
}

func run(url, schema string, jobs, clients, batch, workers int) error {
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	ident := pgx.Identifier{schema}.Sanitize()
	if _, err := admin.Exec(ctx, "DROP SCHEMA IF EXISTS "+ident+" CASCADE; CREATE SCHEMA "+ident); err != nil {
		return err
	}
	_ = admin.Close(ctx)

	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return err
	}
	cfg.ConnConfig.RuntimeParams["search_path"] = schema
	cfg.MaxConns = int32(clients + 8)
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return err
	}
	defer pool.Close()
	migrator, err := rivermigrate.New(riverpgxv5.New(pool), nil)
	if err != nil {
		return err
	}
	if _, err := migrator.Migrate(ctx, rivermigrate.DirectionUp, nil); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}

	var done atomic.Int64
	all := make(chan struct{})
	ws := river.NewWorkers()
	river.AddWorker(ws, &noopWorker{done: &done, all: all, n: int64(jobs), once: &sync.Once{}})
	client, err := river.NewClient(riverpgxv5.New(pool), &river.Config{
		Queues:  map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: workers}},
		Workers: ws,
		// River's fastest setting: fetch again as soon as 1 ms after the
		// last fetch (default 100 ms, which caps a queue at MaxWorkers
		// jobs per 100 ms).
		FetchCooldown: river.FetchCooldownMin,
	})
	if err != nil {
		return err
	}
	if err := client.Start(ctx); err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		_ = client.Stop(sctx)
	}()

	start := time.Now()
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for range clients {
		wg.Go(func() {
			for {
				first := next.Add(int64(batch)) - int64(batch)
				if first >= int64(jobs) {
					return
				}
				n := min(int64(batch), int64(jobs)-first)
				var err error
				if batch == 1 {
					_, err = client.Insert(ctx, NoopArgs{}, nil)
				} else {
					params := make([]river.InsertManyParams, n)
					for i := range params {
						params[i] = river.InsertManyParams{Args: NoopArgs{}}
					}
					_, err = client.InsertMany(ctx, params)
				}
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	inserted := time.Since(start)
	close(errs)
	for err := range errs {
		return fmt.Errorf("insert: %w", err)
	}
	select {
	case <-all:
	case <-time.After(5 * time.Minute):
		return fmt.Errorf("only %d of %d jobs were worked", done.Load(), jobs)
	}
	total := time.Since(start)
	return json.NewEncoder(os.Stdout).Encode(Result{
		Jobs: jobs, Clients: clients, Batch: batch, Workers: workers,
		InsertSecs: inserted.Seconds(), TotalSecs: total.Seconds(),
		InsertRate: float64(jobs) / inserted.Seconds(), Rate: float64(jobs) / total.Seconds(),
	})
}
