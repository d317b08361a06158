package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/gearman"
	"github.com/gearwork/gearwork/internal/gearmantest/wire"
	"github.com/gearwork/gearwork/internal/store/postgres/pgtest"
)

// callbackLedger counts the callback jobs workers ran, by batch and kind.
type callbackLedger struct {
	mu   sync.Mutex
	runs map[string]int
	rows int
}

func (l *callbackLedger) run(payload []byte) {
	var p struct{ Batch, Callback string }
	l.mu.Lock()
	defer l.mu.Unlock()
	if json.Unmarshal(payload, &p) == nil && p.Callback != "" {
		l.runs[p.Batch+" "+p.Callback]++
		return
	}
	l.rows++
}

func (l *callbackLedger) snapshot() (map[string]int, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string]int, len(l.runs))
	for k, v := range l.runs {
		out[k] = v
	}
	return out, l.rows
}

// TestClusterBatchCallbacksOnce runs two servers on one PostgreSQL with
// workers on both: batches are created, filled and closed over the Gearman
// port on either server, their jobs run on both, and the ledger of the
// callbacks the workers ran must hold each callback of each batch once.
func TestClusterBatchCallbacksOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL and two servers")
	}
	url := pgtest.Schema(t)
	dir := t.TempDir()
	bin := buildGearwork(t, dir)
	servers := []*server{
		{t: t, bin: bin, store: url, addr: fmt.Sprintf("127.0.0.1:%d", freePort(t)), log: filepath.Join(dir, "a.log")},
		{t: t, bin: bin, store: url, addr: fmt.Sprintf("127.0.0.1:%d", freePort(t)), log: filepath.Join(dir, "b.log")},
	}
	for _, s := range servers {
		s.start()
	}
	l := &callbackLedger{runs: make(map[string]int)}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
		for _, s := range servers {
			s.stop()
		}
		if t.Failed() {
			t.Logf("server a log:\n%s\nserver b log:\n%s", servers[0].logText(), servers[1].logText())
		}
	}()
	for _, s := range servers {
		for range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for ctx.Err() == nil {
					c, err := wire.DialStream(s.addr)
					if err != nil {
						time.Sleep(50 * time.Millisecond)
						continue
					}
					stop := context.AfterFunc(ctx, func() { c.Close() })
					for _, fn := range []string{"row", "report", "notify"} {
						_ = c.Send(gearman.CanDo, fn)
					}
					_ = c.Work(func(p []byte) []byte { l.run(p); return nil })
					stop()
					c.Close()
				}
			}()
		}
	}

	const batches, perServer = 15, 3
	var ids []string
	for i := range batches {
		created := adminCall(t, servers[i%2].addr, "batch create on_success=report on_complete=notify", false)
		require.Len(t, created, 1)
		id, ok := strings.CutPrefix(created[0], "OK ")
		require.True(t, ok, "%q", created)
		ids = append(ids, id)
		for _, s := range servers {
			c := wire.Dial(t, s.addr)
			for k := range perServer {
				c.Send(gearman.SubmitJobBg, "row", "batch:"+id, fmt.Sprintf("%s-%d", id, k))
				c.ExpectCmd(gearman.JobCreated)
			}
			c.NC.Close()
		}
		require.Equal(t, []string{"OK"}, adminCall(t, servers[(i+1)%2].addr, "batch close "+id, false))
	}

	deadline := time.Now().Add(2 * time.Minute)
	for {
		runs, rows := l.snapshot()
		if len(runs) == 2*batches && rows >= batches*2*perServer {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("callbacks run: %v; row jobs run: %d", runs, rows)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Nothing is left to run a callback again.
	pollAdmin(t, servers[0].addr, "status", "every job ran", func(lines []string) bool {
		var n int
		pgtest.QueryRow(t, url, `SELECT count(*) FROM gearwork_jobs`, &n)
		return n == 0
	})
	runs, rows := l.snapshot()
	require.Equal(t, batches*2*perServer, rows, "each job of a batch ran once")
	for _, id := range ids {
		require.Equal(t, 1, runs[id+" on_success"], "batch %s on_success", id)
		require.Equal(t, 1, runs[id+" on_complete"], "batch %s on_complete", id)
	}
	require.Len(t, runs, 2*batches)
	status := adminCall(t, servers[1].addr, "batch "+ids[0], true)
	require.Contains(t, status, "complete\ttrue")
	require.Contains(t, status, fmt.Sprintf("succeeded\t%d", 2*perServer))
}
