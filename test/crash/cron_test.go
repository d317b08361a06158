package crash

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/gearman"
	"github.com/gearwork/gearwork/internal/gearmantest/wire"
	"github.com/gearwork/gearwork/internal/testserver"
)

// TestCrashCronOncePerTick runs a schedule that ticks every second (missed
// ticks all caught up) with a worker that completes each tick's job at
// once, and kills the server with SIGKILL right after a completion, when
// the tick's job has ended but the schedule's last tick may not be
// stored yet, several times. Each tick between the first and the last
// must run, and as one job: a tick submitted again after a restart is a
// second job with a handle of its own.
func TestCrashCronOncePerTick(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test skipped in -short mode")
	}
	cfg := filepath.Join(t.TempDir(), "gearwork.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte(`schedules:
  - name: every
    function: tick
    cron: "@every 1s"
    missed: all
`), 0o600))
	dir := filepath.Join(t.TempDir(), "data")
	args := []string{"--store", "pebble:" + dir, "--handle-prefix", "H:cron:", "--config", cfg}

	var mu sync.Mutex
	runs := map[string][]string{}       // unique (every:TICK) -> handles run
	completed := make(chan string, 100) // the uniques completed
	var srv *testserver.Server
	addr := make(chan string, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	wg.Go(func() {
		for ctx.Err() == nil {
			var a string
			select {
			case a = <-addr:
			case <-ctx.Done():
				return
			}
			c, err := wire.DialStream(a)
			if err != nil {
				continue
			}
			stop := context.AfterFunc(ctx, func() { c.Close() })
			_ = c.Send(gearman.CanDo, "tick")
			for ctx.Err() == nil {
				if err := c.Send(gearman.GrabJobUniq); err != nil {
					break
				}
				p, err := c.Next()
				if err != nil {
					break
				}
				if p.Command != gearman.JobAssignUniq {
					time.Sleep(5 * time.Millisecond)
					continue
				}
				if c.Send(gearman.WorkComplete, string(p.Args[0]), "done") != nil {
					break
				}
				mu.Lock()
				runs[string(p.Args[2])] = append(runs[string(p.Args[2])], string(p.Args[0]))
				mu.Unlock()
				select {
				case completed <- string(p.Args[2]):
				default:
				}
			}
			stop()
			c.Close()
		}
	})
	start := func() {
		srv = testserver.Start(t, args...)
		addr <- srv.Addr
	}
	start()
	seen := map[string]bool{}
	for range 5 {
		// Right after the completion of a tick not run before.
		for {
			select {
			case u := <-completed:
				if seen[u] {
					continue
				}
				seen[u] = true
			case <-time.After(time.Minute):
				t.Fatal("no new tick ran within a minute")
			}
			break
		}
		srv.Kill()
		start()
	}
	time.Sleep(2500 * time.Millisecond)
	cancel()
	srv.Kill()
	wg.Wait()

	mu.Lock()
	defer mu.Unlock()
	var ticks []int64
	var twice []string
	for u, handles := range runs {
		tick, err := strconv.ParseInt(strings.TrimPrefix(u, "every:"), 10, 64)
		require.NoError(t, err, "unique %q", u)
		ticks = append(ticks, tick)
		slices.Sort(handles)
		if len(slices.Compact(handles)) > 1 {
			twice = append(twice, u+": "+strings.Join(handles, " "))
		}
	}
	require.Empty(t, twice, "ticks submitted as several jobs")
	slices.Sort(ticks)
	var missing []int64
	for tick := ticks[0]; tick <= ticks[len(ticks)-1]; tick++ {
		if _, ok := slices.BinarySearch(ticks, tick); !ok {
			missing = append(missing, tick)
		}
	}
	require.Empty(t, missing, "ticks never run, between %d and %d", ticks[0], ticks[len(ticks)-1])
	t.Logf("%d ticks, each one job", len(ticks))
}
