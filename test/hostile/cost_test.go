package hostile_test

import (
	"bufio"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/internal/testserver"
)

// TestHostileConnectionsAllocateLittle runs the hostile attack (1,000 or
// more slow and malformed connections) against an otherwise idle server
// and checks what the server allocated meanwhile, read from its runtime
// statistics: every byte allocated is garbage the collector must find
// while good clients wait. A malformed header is refused from the
// connection's 16-byte buffer, a connection joins the broker only with a
// valid frame, and a large claimed body grows as its bytes arrive, so a
// hostile connection costs a few kilobytes (about 4.5 KB; 15.5 KB before
// those changes).
func TestHostileConnectionsAllocateLittle(t *testing.T) {
	if testing.Short() {
		t.Skip("hostile load test skipped in -short mode")
	}
	const perConn = 8 << 10
	nice := testserver.NeedCommand(t, "nice")
	srv := testserver.Start(t, "--read-timeout", "2s", "--pprof", "127.0.0.1:0")
	pprof := pprofAddr(t, srv)
	before := memStats(t, pprof)
	n := startAttacker(t, nice, srv.Addr).finish(t)
	after := memStats(t, pprof)
	allocated := after["TotalAlloc"] - before["TotalAlloc"]
	t.Logf("%d hostile connections: %d bytes (%d objects) allocated, %d bytes each; %d collections",
		n, allocated, after["Mallocs"]-before["Mallocs"], allocated/uint64(n), after["NumGC"]-before["NumGC"])
	require.Less(t, allocated/uint64(n), uint64(perConn), "a hostile connection must cost the server little garbage")
}

// pprofAddr returns the address of srv's profiling endpoints, which it
// logs when started with --pprof.
func pprofAddr(t *testing.T, srv *testserver.Server) string {
	t.Helper()
	m := regexp.MustCompile(`msg="serve: profiling endpoints" addr=(\S+)`).FindStringSubmatch(srv.Log())
	require.NotNil(t, m, "the server logs its profiling address")
	return m[1]
}

// memStats reads the runtime statistics at the end of the server's
// /debug/pprof/heap?debug=1 page ("# TotalAlloc = 123" lines).
func memStats(t *testing.T, pprofAddr string) map[string]uint64 {
	t.Helper()
	resp, err := http.Get("http://" + pprofAddr + "/debug/pprof/heap?debug=1")
	require.NoError(t, err)
	defer resp.Body.Close()
	st := make(map[string]uint64)
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		name, value, ok := strings.Cut(strings.TrimPrefix(sc.Text(), "# "), " = ")
		if !ok || !strings.HasPrefix(sc.Text(), "# ") {
			continue
		}
		if v, err := strconv.ParseUint(value, 10, 64); err == nil {
			st[name] = v
		}
	}
	require.NoError(t, sc.Err())
	require.Contains(t, st, "TotalAlloc")
	return st
}
