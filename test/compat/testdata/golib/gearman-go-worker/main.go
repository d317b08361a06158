// Command gearman-go-worker is a worker and client scenario on
// github.com/mikespook/gearman-go's worker and client packages, run by
// TestGearmanGoWorker against a job server. Its arguments are the
// addresses of two servers; it prints one JSON object of what it saw.
//
// One worker connects to both servers and registers functions that
// complete, stream data, a warning and status, fail, raise an exception
// and answer their unique id. A client on each server runs them, a
// background job and GET_STATUS. Then the scenario prints "restart" on
// stderr and waits for a line on stdin: meanwhile the first server is
// restarted on the same address. The worker reconnects and runs a job
// from a new client there.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/mikespook/gearman-go/client"
	"github.com/mikespook/gearman-go/worker"
)

// events is what one foreground job's client saw, in order.
type events []string

func describe(resp *client.Response) string {
	switch resp.DataType {
	case client.WorkData:
		return "data:" + string(resp.Data)
	case client.WorkWarning:
		return "warning:" + string(resp.Data)
	case client.WorkStatus:
		st, err := resp.Status()
		if err != nil {
			return "status-error:" + err.Error()
		}
		return fmt.Sprintf("status:%d/%d", st.Numerator, st.Denominator)
	case client.WorkComplete:
		return "complete:" + string(resp.Data)
	case client.WorkFail:
		return "fail"
	case client.WorkException:
		return "exception:" + string(resp.Data)
	}
	return fmt.Sprintf("type %d", resp.DataType)
}

// run submits one foreground job and returns the client's events once
// the job ends.
func run(c *client.Client, fn, data, id string) events {
	var mu sync.Mutex
	var got events
	done := make(chan struct{})
	h := func(resp *client.Response) {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, describe(resp))
		switch resp.DataType {
		case client.WorkComplete, client.WorkFail, client.WorkException:
			close(done)
		}
	}
	var err error
	if id == "" {
		_, err = c.Do(fn, []byte(data), client.JobNormal, h)
	} else {
		_, err = c.DoWithId(fn, []byte(data), client.JobHigh, h, id)
	}
	if err != nil {
		return events{"submit-error:" + err.Error()}
	}
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		mu.Lock()
		defer mu.Unlock()
		return append(got, "timeout")
	}
	mu.Lock()
	defer mu.Unlock()
	return got
}

// serverResult is what the clients of one server saw.
type serverResult struct {
	Echo       string            `json:"echo"`
	Jobs       map[string]events `json:"jobs"`
	Background string            `json:"background"`
}

func exercise(addr, tag string, bgDone <-chan string) (serverResult, error) {
	c, err := client.New("tcp", addr)
	if err != nil {
		return serverResult{}, fmt.Errorf("client on %s: %w", addr, err)
	}
	defer c.Close()
	c.ErrorHandler = func(err error) { fmt.Fprintln(os.Stderr, "client error:", err) }
	res := serverResult{Jobs: map[string]events{}}
	echo, err := c.Echo([]byte("ping " + tag))
	if err != nil {
		return res, err
	}
	res.Echo = string(echo)
	res.Jobs["upper"] = run(c, "upper", "hello "+tag, "")
	res.Jobs["progress"] = run(c, "progress", tag, "")
	res.Jobs["fail"] = run(c, "fail", tag, "")
	res.Jobs["exception"] = run(c, "exception", tag, "")
	res.Jobs["uniq"] = run(c, "uniq", tag, "id-"+tag)
	// Over 1 MiB both ways, many reads of either library (which copies
	// what it has read at each read: a longer payload takes seconds).
	big := strings.Repeat("gearwork", 1<<20/8+1)
	res.Jobs["big"] = run(c, "upper", big, "")
	for i, e := range res.Jobs["big"] {
		if e == "complete:"+strings.ToUpper(big) {
			res.Jobs["big"][i] = "complete:1 MiB upper"
		}
	}
	h, err := c.DoBg("bg", []byte(tag), client.JobLow)
	if err != nil {
		return res, err
	}
	select {
	case res.Background = <-bgDone:
	case <-time.After(30 * time.Second):
		return res, errors.New("the background job did not run")
	}
	// The job is over once the worker's WORK_COMPLETE is in: poll.
	for deadline := time.Now().Add(30 * time.Second); ; {
		st, err := c.Status(h)
		if err != nil {
			return res, err
		}
		if !st.Known {
			break
		}
		if time.Now().After(deadline) {
			return res, fmt.Errorf("background job %s still known", h)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return res, nil
}

func main() {
	if err := mainErr(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "gearman-go-worker:", err)
		os.Exit(1)
	}
}

func mainErr(addrs []string) error {
	if len(addrs) != 2 {
		return errors.New("usage: gearman-go-worker ADDR1 ADDR2")
	}
	// One job at a time: with worker.Unlimited the library writes a
	// job's WORK_DATA, WORK_WARNING and WORK_STATUS without its
	// connection's lock while its main loop writes GRAB_JOB_UNIQ or
	// PRE_SLEEP, and now and then corrupts the stream (against any
	// server). With OneByOne the main loop waits for the job to end.
	w := worker.New(worker.OneByOne)
	defer w.Close()
	reconnected := make(chan error, 1)
	w.ErrorHandler = func(err error) {
		var de *worker.WorkerDisconnectError
		if !errors.As(err, &de) {
			fmt.Fprintln(os.Stderr, "worker error:", err)
			return
		}
		_, addr := de.Server()
		fmt.Fprintln(os.Stderr, "worker disconnected from", addr)
		// Reconnect as the library's users do: retry until the server
		// is back.
		go func() {
			var err error
			for i := 0; i < 600; i++ {
				if err = de.Reconnect(); err == nil {
					break
				}
				time.Sleep(50 * time.Millisecond)
			}
			reconnected <- err
		}()
	}
	bgDone := make(chan string, 1)
	funcs := map[string]worker.JobFunc{
		"upper": func(j worker.Job) ([]byte, error) {
			return []byte(strings.ToUpper(string(j.Data()))), nil
		},
		"progress": func(j worker.Job) ([]byte, error) {
			j.SendData([]byte("part-" + string(j.Data())))
			j.UpdateStatus(1, 2)
			j.SendWarning([]byte("careful"))
			j.UpdateStatus(2, 2)
			return []byte("done"), nil
		},
		"fail": func(j worker.Job) ([]byte, error) {
			return nil, errors.New("no")
		},
		"exception": func(j worker.Job) ([]byte, error) {
			return []byte("broken " + string(j.Data())), errors.New("broken")
		},
		"uniq": func(j worker.Job) ([]byte, error) {
			return []byte(j.Fn() + "/" + j.UniqueId() + "/" + string(j.Data())), nil
		},
		"bg": func(j worker.Job) ([]byte, error) {
			bgDone <- string(j.Data())
			return nil, nil
		},
	}
	for name, f := range funcs {
		if err := w.AddFunc(name, f, worker.Unlimited); err != nil {
			return err
		}
	}
	for _, addr := range addrs {
		if err := w.AddServer("tcp", addr); err != nil {
			return err
		}
	}
	if err := w.Ready(); err != nil {
		return err
	}
	go w.Work()

	out := map[string]any{}
	for i, addr := range addrs {
		r, err := exercise(addr, fmt.Sprint("s", i+1), bgDone)
		if err != nil {
			return err
		}
		out[fmt.Sprint("s", i+1)] = r
	}

	fmt.Fprintln(os.Stderr, "restart")
	if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
		return fmt.Errorf("waiting for the restart: %w", err)
	}
	select {
	case err := <-reconnected:
		if err != nil {
			return fmt.Errorf("reconnecting: %w", err)
		}
	case <-time.After(60 * time.Second):
		return errors.New("the worker saw no disconnect")
	}
	c, err := client.New("tcp", addrs[0])
	if err != nil {
		return err
	}
	defer c.Close()
	out["afterRestart"] = run(c, "upper", "again", "")
	return json.NewEncoder(os.Stdout).Encode(out)
}
