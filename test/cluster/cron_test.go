package cluster

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
	"github.com/gearwork/gearwork/internal/store/postgres/pgtest"
)

// TestClusterCronOncePerTickAcrossSIGKILL runs two servers with the same
// cron schedule (every second, missed ticks all caught up) on one
// PostgreSQL, with a worker on each, and kills one of them with SIGKILL
// now and then, restarting it a moment later, and at last both, which
// catch up the ticks missed meanwhile together. Each tick must be submitted
// as one job (one handle), whichever servers fired it, and no tick
// between the first and the last may be missing: the last tick is shared,
// and the tick's result is retained long enough for the slower server to
// coalesce with it.
func TestClusterCronOncePerTickAcrossSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL and two servers")
	}
	cfg := filepath.Join(t.TempDir(), "gearwork.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte(`functions:
  tick:
    result_retention: 1m
schedules:
  - name: every
    function: tick
    cron: "@every 1s"
    missed: all
`), 0o600))
	url := pgtest.Schema(t)
	servers := startCluster(t, url+"&lease_ttl=2s", 2, "--config", cfg)

	var mu sync.Mutex
	runs := map[string][]string{} // unique (every:TICK) -> handles run
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	for i := range servers {
		wg.Go(func() {
			for ctx.Err() == nil {
				c, err := wire.DialStream(servers[i].addr)
				if err != nil {
					time.Sleep(50 * time.Millisecond)
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
						time.Sleep(20 * time.Millisecond)
						continue
					}
					mu.Lock()
					runs[string(p.Args[2])] = append(runs[string(p.Args[2])], string(p.Args[0]))
					mu.Unlock()
					if c.Send(gearman.WorkComplete, string(p.Args[0]), "done") != nil {
						break
					}
				}
				stop()
				c.Close()
			}
		})
	}
	for k := range 2 {
		time.Sleep(time.Duration(1000+300*k) * time.Millisecond)
		servers[0].kill()
		time.Sleep(time.Duration(300+600*k) * time.Millisecond)
		servers[0].start()
	}
	// Both down for a few ticks: both catch them up when they start.
	servers[0].kill()
	servers[1].kill()
	time.Sleep(2500 * time.Millisecond)
	for _, s := range servers {
		s.start()
	}
	time.Sleep(2 * time.Second)
	cancel()
	wg.Wait()

	mu.Lock()
	defer mu.Unlock()
	var ticks []int64
	for u, handles := range runs {
		tick, err := strconv.ParseInt(strings.TrimPrefix(u, "every:"), 10, 64)
		require.NoError(t, err, "unique %q", u)
		ticks = append(ticks, tick)
		slices.Sort(handles)
		require.Len(t, slices.Compact(handles), 1, "tick %d was submitted as several jobs: %v", tick, handles)
	}
	slices.Sort(ticks)
	require.Greater(t, len(ticks), 5, "ticks run")
	var missing []int64
	for tick := ticks[0]; tick <= ticks[len(ticks)-1]; tick++ {
		if _, ok := slices.BinarySearch(ticks, tick); !ok {
			missing = append(missing, tick)
		}
	}
	require.Empty(t, missing, "ticks never run, between %d and %d", ticks[0], ticks[len(ticks)-1])
	t.Logf("%d ticks, each one job", len(ticks))
}
