// Command riverbench measures River (github.com/riverqueue/river), a Go job
// queue on PostgreSQL, doing no-op jobs, and prints JSON. The PostgreSQL
// benchmarks of Gearwork (test/cluster) run it on the same database in the
// same run. It is its own module so that River stays out of Gearwork's
// dependencies.
//
// Modes (-mode):
//
//   - flow (default): clients insert jobs while River's workers run them;
//     it prints the insert and insert+work rates.
//   - insert: clients insert the jobs with InsertManyFast (COPY) in
//     batches of -batch, nobody works them; it prints the insert rate.
//     Like flow it creates the schema afresh, unless -keep is set.
//   - work: a client works the -jobs jobs an insert run left queued in
//     the schema; it prints the rate from Start to the last job run.
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
	mode := flag.String("mode", "flow", "flow, insert or work (see the package comment)")
	keep := flag.Bool("keep", false, "insert: into the schema an earlier insert run created, instead of a fresh one")
	flag.Parse()
	var err error
	switch *mode {
	case "flow":
		err = run(*url, *schema, *jobs, *clients, *batch, *workers)
	case "insert":
		err = insertOnly(*url, *schema, *jobs, *clients, *batch, !*keep)
	case "work":
		err = workOnly(*url, *schema, *jobs, *workers)
	default:
		err = fmt.Errorf("unknown -mode %q", *mode)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "riverbench:", err)
		os.Exit(1)
	}
}

// openPool connects to the database with search_path set to schema, after
// creating the schema afresh and migrating it when fresh is set.
func openPool(ctx context.Context, url, schema string, conns int, fresh bool) (*pgxpool.Pool, error) {
	if fresh {
		admin, err := pgx.Connect(ctx, url)
		if err != nil {
			return nil, err
		}
		ident := pgx.Identifier{schema}.Sanitize()
		_, err = admin.Exec(ctx, "DROP SCHEMA IF EXISTS "+ident+" CASCADE; CREATE SCHEMA "+ident)
		_ = admin.Close(ctx)
		if err != nil {
			return nil, err
		}
	}
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, err
	}
	cfg.ConnConfig.RuntimeParams["search_path"] = schema
	cfg.MaxConns = int32(conns)
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	if fresh {
		migrator, err := rivermigrate.New(riverpgxv5.New(pool), nil)
		if err == nil {
			_, err = migrator.Migrate(ctx, rivermigrate.DirectionUp, nil)
		}
		if err != nil {
			pool.Close()
			return nil, fmt.Errorf("migrate: %w", err)
		}
	}
	return pool, nil
}

// bench is a River client on its own pool whose queue runs up to workers
// no-op jobs at once; all is closed when jobs of them have run.
type bench struct {
	pool   *pgxpool.Pool
	client *river.Client[pgx.Tx]
	done   *atomic.Int64
	all    chan struct{}
}

// open connects (openPool) and makes the client, not started.
func open(ctx context.Context, url, schema string, conns int, fresh bool, jobs, workers int) (*bench, error) {
	pool, err := openPool(ctx, url, schema, conns, fresh)
	if err != nil {
		return nil, err
	}
	b := &bench{pool: pool, done: new(atomic.Int64), all: make(chan struct{})}
	ws := river.NewWorkers()
	river.AddWorker(ws, &noopWorker{done: b.done, all: b.all, n: int64(jobs), once: &sync.Once{}})
	b.client, err = river.NewClient(riverpgxv5.New(pool), &river.Config{
		Queues:  map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: workers}},
		Workers: ws,
		// River's fastest setting: fetch again as soon as 1 ms after the
		// last fetch (default 100 ms, which caps a queue at MaxWorkers
		// jobs per 100 ms).
		FetchCooldown: river.FetchCooldownMin,
	})
	if err != nil {
		pool.Close()
		return nil, err
	}
	return b, nil
}

// stopClient stops client, waiting at most 10 seconds for running jobs.
func stopClient(ctx context.Context, client *river.Client[pgx.Tx]) {
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_ = client.Stop(sctx)
}

// start starts the client; stop stops it and closes the pool.
func (b *bench) start(ctx context.Context) error { return b.client.Start(ctx) }

func (b *bench) stop(ctx context.Context) {
	stopClient(ctx, b.client)
	b.pool.Close()
}

// waitAll waits until all jobs ran, at most 5 minutes.
func (b *bench) waitAll(jobs int) error {
	select {
	case <-b.all:
		return nil
	case <-time.After(5 * time.Minute):
		return fmt.Errorf("only %d of %d jobs were worked", b.done.Load(), jobs)
	}
}

// insertAll inserts jobs no-op jobs from clients goroutines, batch per
// call: Insert when batch is 1, else InsertMany, or InsertManyFast (COPY)
// when fast is set.
func insertAll(ctx context.Context, client *river.Client[pgx.Tx], jobs, clients, batch int, fast bool) error {
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
				if batch == 1 && !fast {
					_, err = client.Insert(ctx, NoopArgs{}, nil)
				} else {
					params := make([]river.InsertManyParams, n)
					for i := range params {
						params[i] = river.InsertManyParams{Args: NoopArgs{}}
					}
					if fast {
						_, err = client.InsertManyFast(ctx, params)
					} else {
						_, err = client.InsertMany(ctx, params)
					}
				}
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		return fmt.Errorf("insert: %w", err)
	}
	return nil
}

func run(url, schema string, jobs, clients, batch, workers int) error {
	ctx := context.Background()
	b, err := open(ctx, url, schema, clients+8, true, jobs, workers)
	if err != nil {
		return err
	}
	defer b.stop(ctx)
	if err := b.start(ctx); err != nil {
		return err
	}
	start := time.Now()
	if err := insertAll(ctx, b.client, jobs, clients, batch, false); err != nil {
		return err
	}
	inserted := time.Since(start)
	if err := b.waitAll(jobs); err != nil {
		return err
	}
	total := time.Since(start)
	return json.NewEncoder(os.Stdout).Encode(Result{
		Jobs: jobs, Clients: clients, Batch: batch, Workers: workers,
		InsertSecs: inserted.Seconds(), TotalSecs: total.Seconds(),
		InsertRate: float64(jobs) / inserted.Seconds(), Rate: float64(jobs) / total.Seconds(),
	})
}

// insertOnly inserts jobs with InsertManyFast into the schema (a fresh
// one when fresh is set) and leaves them queued.
func insertOnly(url, schema string, jobs, clients, batch int, fresh bool) error {
	ctx := context.Background()
	b, err := open(ctx, url, schema, clients+2, fresh, jobs, 1)
	if err != nil {
		return err
	}
	defer b.pool.Close()
	start := time.Now()
	if err := insertAll(ctx, b.client, jobs, clients, batch, true); err != nil {
		return err
	}
	inserted := time.Since(start)
	return json.NewEncoder(os.Stdout).Encode(Result{
		Jobs: jobs, Clients: clients, Batch: batch,
		InsertSecs: inserted.Seconds(), InsertRate: float64(jobs) / inserted.Seconds(),
	})
}

// workOnly works the jobs queued in schema, timed from the client's Start
// to the last job's end.
func workOnly(url, schema string, jobs, workers int) error {
	ctx := context.Background()
	b, err := open(ctx, url, schema, 16, false, jobs, workers)
	if err != nil {
		return err
	}
	defer b.stop(ctx)
	start := time.Now()
	if err := b.start(ctx); err != nil {
		return err
	}
	if err := b.waitAll(jobs); err != nil {
		return err
	}
	total := time.Since(start)
	return json.NewEncoder(os.Stdout).Encode(Result{
		Jobs: jobs, Workers: workers,
		TotalSecs: total.Seconds(), Rate: float64(jobs) / total.Seconds(),
	})
}
