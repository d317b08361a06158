package client_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log"
	"sync/atomic"
	"time"

	"github.com/gearwork/gearwork/client"
	"github.com/gearwork/gearwork/internal/gearmantest"
	"github.com/gearwork/gearwork/worker"
)

// Submit a foreground job and stream its progress while it runs.
func ExampleClient_Do() {
	addr, stop := exampleServer() // your server's address, e.g. "127.0.0.1:4730"
	defer stop()
	// A worker for the example: it reports progress, streams a chunk of
	// output, and returns the upper-cased payload.
	w := exampleWorker(addr, "upper", func(ctx context.Context, j *worker.Job) ([]byte, error) {
		_ = j.SendStatus(1, 2)
		_ = j.SendData([]byte("halfway"))
		_ = j.SendWarning([]byte("this is only an example"))
		_ = j.SendStatus(2, 2)
		return bytes.ToUpper(j.Payload), nil
	})
	defer w.Stop()

	c, err := client.New(client.Config{Servers: []string{addr}})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	result, err := c.Do(ctx, client.Request{
		Function: "upper",
		Payload:  []byte("hello, gearman"),
		Priority: client.PriorityHigh,
		UpdateFunc: func(u client.Update) {
			switch u.Kind {
			case client.UpdateStatus:
				fmt.Printf("progress %d/%d\n", u.Numerator, u.Denominator)
			case client.UpdateData:
				fmt.Printf("data: %s\n", u.Data)
			case client.UpdateWarning:
				fmt.Printf("warning: %s\n", u.Data)
			}
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("result: %s\n", result)
	// Output:
	// progress 1/2
	// data: halfway
	// warning: this is only an example
	// progress 2/2
	// result: HELLO, GEARMAN
}

// Submit a background job, then follow it with status queries until it
// is done.
func ExampleClient_SubmitBackground() {
	addr, stop := exampleServer()
	defer stop()
	c, err := client.New(client.Config{Servers: []string{addr}})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	job, err := c.SubmitBackground(ctx, client.Request{
		Function: "send_email",
		Unique:   "welcome-mail-user-42", // a repeated submit attaches to this job
		Payload:  []byte(`{"to":"user42@example.com"}`),
	})
	if err != nil {
		log.Fatal(err)
	}
	st, err := c.Status(ctx, job)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("known=%v running=%v\n", st.Known, st.Running)

	// A worker comes along and runs it.
	release := make(chan struct{})
	w := exampleWorker(addr, "send_email", func(ctx context.Context, j *worker.Job) ([]byte, error) {
		_ = j.SendStatus(1, 2)
		<-release
		return nil, nil
	})
	defer w.Stop()

	for st.Numerator == 0 {
		time.Sleep(10 * time.Millisecond)
		if st, err = c.StatusUnique(ctx, "welcome-mail-user-42"); err != nil {
			log.Fatal(err)
		}
	}
	fmt.Printf("known=%v running=%v progress=%d/%d waiting=%d\n", st.Known, st.Running, st.Numerator, st.Denominator, st.Waiting)
	close(release)
	for st.Known {
		time.Sleep(10 * time.Millisecond)
		if st, err = c.Status(ctx, job); err != nil {
			log.Fatal(err)
		}
	}
	fmt.Println("done")
	// Output:
	// known=true running=false
	// known=true running=true progress=1/2 waiting=0
	// done
}

// Submit background jobs in a batch whose callback runs once all of them
// are done (a Gearwork extension, docs/batches.md).
func ExampleClient_CreateBatch() {
	addr, stop := exampleServer()
	defer stop()
	done := make(chan string, 1)
	rows := exampleWorker(addr, "import_row", func(context.Context, *worker.Job) ([]byte, error) { return nil, nil })
	defer rows.Stop()
	report := exampleWorker(addr, "import_report", func(_ context.Context, j *worker.Job) ([]byte, error) {
		done <- string(j.Payload) // JSON: the batch, its counts, failures
		return nil, nil
	})
	defer report.Stop()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.New(client.Config{Servers: []string{addr}})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	batch, err := c.CreateBatch(ctx, client.BatchOptions{OnSuccess: "import_report"})
	if err != nil {
		log.Fatal(err)
	}
	for _, row := range []string{"alice", "bob", "carol"} {
		req := client.Request{Function: "import_row", Payload: []byte(row), Unique: client.BatchUnique(batch, row)}
		if _, err := c.SubmitBackground(ctx, req); err != nil {
			log.Fatal(err)
		}
	}
	if err := c.CloseBatch(ctx, batch); err != nil {
		log.Fatal(err)
	}
	var p struct {
		Total     int `json:"total"`
		Succeeded int `json:"succeeded"`
	}
	if err := json.Unmarshal([]byte(<-done), &p); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("report: %d of %d rows imported\n", p.Succeeded, p.Total)
	// Output:
	// report: 3 of 3 rows imported
}

// Submit a background job that runs only once another one, named by its
// function and unique, has completed (a Gearwork extension,
// docs/batches.md, "Dependencies").
func ExampleAfterJobUnique() {
	addr, stop := exampleServer()
	defer stop()
	c := exampleClient(addr) // client.New(client.Config{Servers: ...})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pay := client.Request{Function: "pay", Unique: "order-42", Payload: []byte("order 42")}
	if _, err := c.SubmitBackground(ctx, pay); err != nil {
		log.Fatal(err)
	}
	after, err := client.AfterJobUnique("pay", "order-42", false)
	if err != nil {
		log.Fatal(err)
	}
	ship := client.Request{Function: "ship", Unique: after, Payload: []byte("order 42")}
	if _, err := c.SubmitBackground(ctx, ship); err != nil {
		log.Fatal(err)
	}

	var paid atomic.Bool
	done := make(chan bool, 1)
	shipper := exampleWorker(addr, "ship", func(context.Context, *worker.Job) ([]byte, error) {
		done <- paid.Load()
		return nil, nil
	})
	defer shipper.Stop()
	payer := exampleWorker(addr, "pay", func(context.Context, *worker.Job) ([]byte, error) {
		paid.Store(true)
		return nil, nil
	})
	defer payer.Stop()
	fmt.Println("shipped after the payment:", <-done)
	// Output:
	// shipped after the payment: true
}

// exampleServer starts an in-process Gearwork server on a free loopback
// port, so that the examples run for real.
func exampleServer() (addr string, stop func()) {
	srv, err := gearmantest.NewServer("127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	return srv.Addr(), srv.Close
}

// exampleClient returns a client of the server at addr.
func exampleClient(addr string) *client.Client {
	c, err := client.New(client.Config{Servers: []string{addr}})
	if err != nil {
		log.Fatal(err)
	}
	return c
}

// exampleWorker starts a worker serving one function.
func exampleWorker(addr, name string, f func(context.Context, *worker.Job) ([]byte, error)) *worker.Worker {
	w, err := worker.New(worker.Config{Servers: []string{addr}})
	if err != nil {
		log.Fatal(err)
	}
	w.HandleFunc(name, f)
	if err := w.Start(context.Background()); err != nil {
		log.Fatal(err)
	}
	return w
}
