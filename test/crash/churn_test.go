package crash

import (
	"context"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/gearman"
	"github.com/gearwork/gearwork/internal/gearmantest/wire"
	"github.com/gearwork/gearwork/internal/testserver"
	"github.com/gearwork/gearwork/internal/testwait"
)

// churnPayload is the payload of the job with unique u: u and a space,
// then 8 KiB that do not compress, derived from u, so that a worker can
// tell the job and check what it got.
func churnPayload(u string) []byte {
	h := fnv.New64a()
	h.Write([]byte(u))
	rng := rand.New(rand.NewPCG(h.Sum64(), 3))
	b := make([]byte, 8<<10)
	for i := 0; i < len(b); i += 8 {
		v := rng.Uint64()
		for k := range 8 {
			b[i+k] = byte(v >> (8 * k))
		}
	}
	return append([]byte(u+" "), b...)
}

// TestCrashDuringFlushesAndExpiry kills the server with SIGKILL while the
// store is busy with its own work: jobs with 8 KiB payloads that do not
// compress are submitted in pipelined batches and completed fast enough
// that Pebble's memtables fill and are flushed into tables, and compacted,
// many times per lifetime; every payload stays on disk (--memory-budget 0)
// and is read back when its job is handed out; and the function keeps at
// most 300 records of ended jobs, so that the store expires blocks of
// records every second. Every acknowledged job must be completed, with the
// payload it was submitted with, never twice in one lifetime; every start
// must open the directory; and the records are trimmed to history_max at
// the end.
func TestCrashDuringFlushesAndExpiry(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test skipped in -short mode")
	}
	const historyMax = 300
	dir := filepath.Join(t.TempDir(), "data")
	args := []string{"--store", "pebble:" + dir, "--handle-prefix", "H:churn:", "--memory-budget", "0"}

	var (
		mu    sync.Mutex
		gen   int
		addr  string
		acked = map[string]int{}   // unique -> lifetime that acknowledged it
		runs  = map[string][]int{} // unique -> lifetimes that completed it
		bad   []string             // payloads that did not match
	)
	var srv *testserver.Server
	start := func() {
		srv = testserver.Start(t, args...)
		mu.Lock()
		gen++
		addr = srv.Addr
		mu.Unlock()
	}
	start()
	c := dialFeatures(t, srv)
	c.ok("create function churn")
	c.ok("policy churn history_max=" + strconv.Itoa(historyMax))
	c.NC.Close()

	current := func() (string, int) {
		mu.Lock()
		defer mu.Unlock()
		return addr, gen
	}
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	var wg sync.WaitGroup
	wg.Go(func() { // the submitter: 64 jobs per batch
		n := 0
		for ctx.Err() == nil {
			a, g := current()
			s, err := wire.DialStream(a)
			if err != nil {
				time.Sleep(20 * time.Millisecond)
				continue
			}
			for ctx.Err() == nil {
				var batch []byte
				var us []string
				for range 64 {
					n++
					u := "c" + strconv.Itoa(n)
					us = append(us, u)
					batch = append(batch, wire.Request(gearman.SubmitJobBg, "churn", u, string(churnPayload(u)))...)
				}
				_ = s.NC.SetDeadline(time.Now().Add(30 * time.Second))
				if s.Write(batch) != nil {
					break
				}
				i := 0
				for ; i < len(us); i++ {
					p, err := s.Next()
					if err != nil {
						break
					}
					if p.Command == gearman.JobCreated {
						mu.Lock()
						acked[us[i]] = g
						mu.Unlock()
					}
				}
				if i < len(us) {
					break
				}
			}
			s.Close()
		}
	})
	workCtx, stopWork := context.WithCancel(context.Background())
	defer stopWork()
	var workers sync.WaitGroup
	for range 2 {
		workers.Go(func() {
			for workCtx.Err() == nil {
				a, g := current()
				s, err := wire.DialStream(a)
				if err != nil {
					time.Sleep(20 * time.Millisecond)
					continue
				}
				stopConn := context.AfterFunc(workCtx, func() { s.Close() })
				_ = s.Send(gearman.CanDo, "churn")
				_ = s.Work(func(payload []byte) []byte {
					u, _, _ := strings.Cut(string(payload), " ")
					mu.Lock()
					runs[u] = append(runs[u], g)
					if string(payload) != string(churnPayload(u)) && len(bad) < 10 {
						bad = append(bad, fmt.Sprintf("%q… (%d bytes)", payload[:min(len(payload), 20)], len(payload)))
					}
					mu.Unlock()
					return nil
				})
				stopConn()
				s.Close()
			}
		})
	}

	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 5))
	for i := range 3 {
		time.Sleep(700*time.Millisecond + time.Duration(rng.Int64N(int64(800*time.Millisecond))))
		mu.Lock()
		n := len(acked)
		mu.Unlock()
		srv.Kill()
		t.Logf("kill %d: %d acknowledged so far", i+1, n)
		start()
	}
	time.Sleep(500 * time.Millisecond)
	stop()
	wg.Wait()
	missing := func() []string {
		mu.Lock()
		defer mu.Unlock()
		var out []string
		for u := range acked {
			if len(runs[u]) == 0 {
				out = append(out, u)
			}
		}
		return out
	}
	testwait.Until(t, "every acknowledged job to be handed out", func() bool { return len(missing()) == 0 })
	stopWork()
	workers.Wait()

	mu.Lock()
	require.Empty(t, bad, "jobs handed out with another payload than they were submitted with")
	later := 0
	for u, gens := range runs {
		for i := 1; i < len(gens); i++ {
			require.NotEqual(t, gens[i-1], gens[i], "job %s handed out twice in lifetime %d: %v", u, gens[i], gens)
		}
		if g, ok := acked[u]; ok && gens[len(gens)-1] > g {
			later++
		}
	}
	require.Positive(t, later, "no acknowledged job was handed out by a later lifetime than the one that acknowledged it")
	t.Logf("%d acknowledged, %d handed out, %d by a later lifetime", len(acked), len(runs), later)
	mu.Unlock()

	// The records are trimmed to history_max (within the second that
	// expiry takes).
	c = dialFeatures(t, srv)
	testwait.Until(t, "the records to be trimmed to history_max", func() bool {
		return len(c.AdminList("jobs function=churn state=complete limit=1000")) <= historyMax
	})
}
