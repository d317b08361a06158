package worker_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"os/signal"
	"time"

	"github.com/gearwork/gearwork/client"
	"github.com/gearwork/gearwork/internal/gearmantest"
	"github.com/gearwork/gearwork/worker"
)

// A worker that resizes images four at a time and reports its progress.
func ExampleWorker() {
	addr, stop := exampleServer() // your server's address, e.g. "127.0.0.1:4730"
	defer stop()

	w, err := worker.New(worker.Config{Servers: []string{addr}, Concurrency: 4})
	if err != nil {
		log.Fatal(err)
	}
	w.Register(worker.Function{
		Name:    "resize",
		Timeout: time.Minute, // the server fails the job after this
		Handler: worker.HandlerFunc(func(ctx context.Context, j *worker.Job) ([]byte, error) {
			for step := uint32(1); step <= 3; step++ {
				if err := ctx.Err(); err != nil {
					return nil, err // timed out or stopped: the job runs again elsewhere
				}
				_ = j.SendStatus(step, 3)
			}
			if len(j.Payload) == 0 {
				return nil, &worker.Exception{Data: []byte("empty image")}
			}
			return []byte("resized " + string(j.Payload)), nil
		}),
	})
	if err := w.Start(context.Background()); err != nil {
		log.Fatal(err)
	}
	defer w.Stop()

	// A client submits a job and watches it.
	c, err := client.New(client.Config{Servers: []string{addr}})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	res, err := c.Do(ctx, client.Request{Function: "resize", Payload: []byte("cat.png"),
		UpdateFunc: func(u client.Update) { fmt.Printf("%d/%d\n", u.Numerator, u.Denominator) }})
	fmt.Println(string(res), err)
	_, err = c.Do(ctx, client.Request{Function: "resize"})
	var exc *client.ExceptionError
	if errors.As(err, &exc) {
		fmt.Printf("exception: %s\n", exc.Data)
	}
	// Output:
	// 1/3
	// 2/3
	// 3/3
	// resized cat.png <nil>
	// exception: empty image
}

// Stop a worker gracefully: it takes no new jobs, lets the running ones
// finish and sends their results, then disconnects.
func ExampleWorker_Shutdown() {
	addr, stop := exampleServer()
	defer stop()

	started := make(chan struct{})
	w, err := worker.New(worker.Config{Servers: []string{addr}})
	if err != nil {
		log.Fatal(err)
	}
	w.HandleFunc("report", func(ctx context.Context, j *worker.Job) ([]byte, error) {
		close(started)
		time.Sleep(50 * time.Millisecond) // some work that should not be cut short
		return []byte("report ready"), nil
	})
	// Cancelling this context would stop the worker at once; a signal
	// starts a graceful shutdown instead.
	if err := w.Start(context.Background()); err != nil {
		log.Fatal(err)
	}

	c, err := client.New(client.Config{Servers: []string{addr}})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	task, err := c.Submit(context.Background(), client.Request{Function: "report"})
	if err != nil {
		log.Fatal(err)
	}

	// In a real program: wait for SIGTERM or SIGINT.
	sig, stopSignals := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stopSignals()
	select {
	case <-started: // for the example: shut down while the job runs
	case <-sig.Done():
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := w.Shutdown(ctx); err != nil {
		log.Printf("shutdown deadline passed; unfinished jobs will run again: %v", err)
	}
	fmt.Println("worker stopped")

	res, err := task.Wait(ctx)
	fmt.Println(string(res), err)
	// Output:
	// worker stopped
	// report ready <nil>
}

func exampleServer() (addr string, stop func()) {
	srv, err := gearmantest.NewServer("127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	return srv.Addr(), srv.Close
}
