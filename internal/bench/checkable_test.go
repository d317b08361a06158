package bench

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/internal/testserver"
)

func TestCheckablePayload(t *testing.T) {
	t.Parallel()
	p := make([]byte, 64)
	fillPayload(p, 12345)
	i, err := checkPayload(p, 64)
	require.NoError(t, err)
	require.Equal(t, uint64(12345), i)

	_, err = checkPayload(p[:63], 64)
	require.ErrorContains(t, err, "payload of 63 bytes, want 64")
	other := make([]byte, 64)
	fillPayload(other, 12346)
	mixed := append(append([]byte{}, p[:32]...), other[32:]...)
	_, err = checkPayload(mixed, 64)
	require.ErrorContains(t, err, "payload of job 12345 differs at byte 32")

	pc := &payloadChecker{size: 64, seen: map[uint64]struct{}{}}
	pc.check(p)
	pc.check(other)
	require.NoError(t, pc.err)
	pc.check(p)
	require.EqualError(t, pc.err, "job 12345 came back twice")
}

func TestQueueRefusedByOtherScenarios(t *testing.T) {
	t.Parallel()
	_, err := Run(context.Background(), Config{Addr: "127.0.0.1:1", Queue: "q"}, "submit")
	require.ErrorContains(t, err, "scenario submit does not take a queue name")
	_, err = Run(context.Background(), Config{Addr: "127.0.0.1:1"}, "verify")
	require.ErrorContains(t, err, "scenario verify needs a queue name")
}

// A queue whose payloads are all on disk (--memory-budget 0) survives a
// restart of the real server, and every job comes back with its own
// payload: memory queues checkable payloads, verify checks a sample after
// the restart and then the rest.
func TestMemoryThenVerifyAcrossRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	args := []string{"--store", "pebble:" + dir, "--memory-budget", "0"}
	srv := testserver.Start(t, args...)
	cfg := tinyConfig(srv.Addr, srv.Pid())
	cfg.Queue, cfg.Payload, cfg.NoCleanup = "verify-q", 1024, true
	res, err := Run(context.Background(), cfg, "memory")
	require.NoError(t, err)
	checkResult(t, cfg, res)
	srv.Stop()

	srv = testserver.Start(t, args...)
	onDisk := fmt.Sprintf("jobs_with_payload_on_disk=%d", cfg.Jobs) // logged just after "listening"
	require.Eventually(t, func() bool { return strings.Contains(srv.Log(), onDisk) }, time.Minute, 10*time.Millisecond,
		"the replayed payloads stay on disk:\n%s", srv.Log())
	cfg.Addr, cfg.PID, cfg.Timeout = srv.Addr, 0, time.Minute
	cfg.Jobs = 200
	res, err = Run(context.Background(), cfg, "verify")
	require.NoError(t, err)
	checkResult(t, cfg, res)
	srv.Stop()

	// Restarted again, the server holds what the sample left (its count is
	// in the "listening" line); verify takes all of it, which leaves the
	// queue empty: no job was lost.
	srv = testserver.Start(t, args...)
	m := regexp.MustCompile(`msg="serve: listening" .* jobs=(\d+)`).FindStringSubmatch(srv.Log())
	require.NotNil(t, m, srv.Log())
	left, err := strconv.Atoi(m[1])
	require.NoError(t, err)
	require.Positive(t, left)
	require.LessOrEqual(t, left, 300, "the sample was taken from the queue")
	cfg.Addr, cfg.Jobs = srv.Addr, left
	res, err = Run(context.Background(), cfg, "verify")
	require.NoError(t, err)
	checkResult(t, cfg, res)
	require.Zero(t, queued(t, srv.Addr, "verify-q"))
}

// queued returns the jobs of fn the server's admin "status" shows.
func queued(t *testing.T, addr, fn string) int {
	t.Helper()
	c, err := dialConn(context.Background(), addr, time.Now().Add(time.Minute), 4<<10)
	require.NoError(t, err)
	defer c.close()
	lines, err := c.adminLines("status")
	require.NoError(t, err)
	for _, l := range lines {
		if f := strings.Split(l, "\t"); len(f) >= 2 && f[0] == fn {
			n, err := strconv.Atoi(f[1])
			require.NoError(t, err)
			return n
		}
	}
	return 0
}
