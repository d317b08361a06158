package crash

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/internal/testserver"
	"github.com/gearwork/gearwork/internal/testwait"
)

// httpLedger records what HTTP clients and workers were answered, per
// server lifetime.
type httpLedger struct {
	mu   sync.Mutex
	base string // the current server's HTTP API, "" between lifetimes
	gen  int
	// acked: uniques answered 202 (or a batch line with a handle), with
	// the lifetime that answered.
	acked map[string]int
	// runs: for each unique, the lifetimes in which a worker's complete
	// was answered 204.
	runs map[string][]int
}

func (l *httpLedger) current() (string, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.base, l.gen
}

// TestCrashHTTPSubmitsAndWorkers runs the crash test's load over the HTTP
// API: clients submit background jobs one at a time and in NDJSON
// batches, HTTP workers grab and complete them, and the server is killed
// with SIGKILL, once in the middle of a graceful stop (SIGTERM, then
// SIGKILL a moment later), and restarted. Every job answered 202 (or a
// batch line with its handle) must be completed, and no job completed
// twice within one lifetime.
func TestCrashHTTPSubmitsAndWorkers(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test skipped in -short mode")
	}
	dir := filepath.Join(t.TempDir(), "data")
	args := []string{"--store", "pebble:" + dir, "--handle-prefix", "H:http:", "--http", "127.0.0.1:0"}
	l := &httpLedger{acked: map[string]int{}, runs: map[string][]int{}}
	var srv *testserver.Server
	start := func() {
		srv = testserver.Start(t, args...)
		base := "http://" + srv.HTTPAddr(t)
		l.mu.Lock()
		l.base = base
		l.gen++
		l.mu.Unlock()
	}
	start()
	client := &http.Client{Timeout: 30 * time.Second}
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	var wg sync.WaitGroup
	for id := range 2 {
		wg.Go(func() { httpSubmitLoop(ctx, client, l, id) })
	}
	workCtx, stopWork := context.WithCancel(context.Background())
	defer stopWork()
	var workers sync.WaitGroup
	for range 2 {
		workers.Go(func() { httpWorkLoop(workCtx, client, l) })
	}

	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 11))
	for i := range 3 {
		time.Sleep(300*time.Millisecond + time.Duration(rng.Int64N(int64(500*time.Millisecond))))
		l.mu.Lock()
		l.base = ""
		pending := 0
		for u := range l.acked {
			if len(l.runs[u]) == 0 {
				pending++
			}
		}
		l.mu.Unlock()
		if i == 1 {
			// A graceful stop cut short.
			require.NoError(t, syscall.Kill(srv.Pid(), syscall.SIGTERM))
			time.Sleep(time.Duration(rng.Int64N(int64(30 * time.Millisecond))))
		}
		srv.Kill()
		t.Logf("kill %d: %d acknowledged jobs not completed", i+1, pending)
		start()
	}
	stop()
	wg.Wait()
	testwait.Until(t, "every acknowledged job to be completed", func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		for u := range l.acked {
			if len(l.runs[u]) == 0 {
				return false
			}
		}
		return true
	})
	stopWork()
	workers.Wait()

	l.mu.Lock()
	defer l.mu.Unlock()
	require.NotEmpty(t, l.acked)
	later := 0
	for u, gens := range l.runs {
		for i := 1; i < len(gens); i++ {
			require.NotEqual(t, gens[i-1], gens[i], "job %s completed twice in lifetime %d: %v", u, gens[i], gens)
		}
		if g, ok := l.acked[u]; ok && gens[len(gens)-1] > g {
			later++
		}
	}
	require.Positive(t, later, "no acknowledged job was completed by a later lifetime than the one that acknowledged it")
	t.Logf("%d acknowledged, %d completed by a later lifetime", len(l.acked), later)
}

// httpSubmitLoop submits jobs with a unique each until ctx ends: one at a
// time, and every fourth round eight in an NDJSON batch.
func httpSubmitLoop(ctx context.Context, client *http.Client, l *httpLedger, id int) {
	n := 0
	for ctx.Err() == nil {
		base, gen := l.current()
		if base == "" {
			time.Sleep(10 * time.Millisecond)
			continue
		}
		n++
		if n%4 != 0 {
			u := fmt.Sprintf("h%d-%d", id, n)
			resp, err := client.Post(base+"/v1/functions/web/jobs?unique="+u, "application/octet-stream", bytes.NewBufferString(u))
			if err != nil {
				continue
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusAccepted {
				l.mu.Lock()
				l.acked[u] = gen
				l.mu.Unlock()
			}
			continue
		}
		var body bytes.Buffer
		var us []string
		for k := range 8 {
			u := fmt.Sprintf("h%d-%d-%d", id, n, k)
			us = append(us, u)
			fmt.Fprintf(&body, `{"function":"web","unique":%q,"payload":%q}`+"\n", u, u)
		}
		resp, err := client.Post(base+"/v1/jobs:batch", "application/x-ndjson", &body)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			var line struct {
				Line   int    `json:"line"`
				Handle string `json:"handle"`
			}
			if json.Unmarshal(sc.Bytes(), &line) == nil && line.Handle != "" && line.Line >= 1 && line.Line <= len(us) {
				l.mu.Lock()
				l.acked[us[line.Line-1]] = gen
				l.mu.Unlock()
			}
		}
		resp.Body.Close()
	}
}

// httpWorkLoop grabs jobs and completes them until ctx ends, recording
// every complete answered 204.
func httpWorkLoop(ctx context.Context, client *http.Client, l *httpLedger) {
	for ctx.Err() == nil {
		base, gen := l.current()
		if base == "" {
			time.Sleep(10 * time.Millisecond)
			continue
		}
		req, _ := http.NewRequestWithContext(ctx, "POST", base+"/v1/functions/web/grab?wait=1s&lease=1m", nil)
		resp, err := client.Do(req)
		if err != nil {
			continue
		}
		var job struct {
			Handle  string `json:"handle"`
			Payload []byte `json:"payload"`
			Lease   string `json:"lease"`
		}
		ok := resp.StatusCode == http.StatusOK && json.NewDecoder(resp.Body).Decode(&job) == nil
		resp.Body.Close()
		if !ok {
			continue
		}
		time.Sleep(2 * time.Millisecond) // the "work"
		resp, err = client.Post(base+"/v1/jobs/"+job.Handle+"/complete?lease="+job.Lease, "application/octet-stream", nil)
		if err != nil {
			continue
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusNoContent {
			l.mu.Lock()
			u := string(job.Payload)
			l.runs[u] = append(l.runs[u], gen)
			l.mu.Unlock()
		}
	}
}
