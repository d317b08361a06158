package bench

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestResultLine(t *testing.T) {
	t.Parallel()
	r := Result{Scenario: "submit", Server: "127.0.0.1:4730", Jobs: 200000, Payload: 64,
		Connections: 4, Inflight: 64, Elapsed: 1250 * time.Millisecond}
	r.finish()
	require.Equal(t, "scenario=submit server=127.0.0.1:4730 jobs=200000 payload=64 connections=4 inflight=64 "+
		"workers=0 grabs=0 backlog=0 seconds=1.250000 rate=160000.0", r.Line())

	r.LatencyOf = "SUBMIT_JOB_BG→JOB_CREATED"
	r.P50, r.P99 = 123456*time.Nanosecond, 2*time.Millisecond
	r.RSS, r.CPU = 10<<20, 500*time.Millisecond
	r.finish()
	require.Equal(t, "scenario=submit server=127.0.0.1:4730 jobs=200000 payload=64 connections=4 inflight=64 "+
		"workers=0 grabs=0 backlog=0 seconds=1.250000 rate=160000.0 p50_us=123.5 p99_us=2000.0 "+
		"rss_bytes=10485760 cpu_ns_per_job=2500", r.Line())

	m := Result{Scenario: "memory", Server: "h:1", Jobs: 1000, Payload: 64, Elapsed: time.Second,
		RSS: 3 << 20, RSSBefore: 2 << 20, RSSPerJob: 1048.576}
	m.finish()
	require.Equal(t, "scenario=memory server=h:1 jobs=1000 payload=64 connections=0 inflight=0 workers=0 grabs=0 "+
		"backlog=0 seconds=1.000000 rate=1000.0 rss_bytes=3145728 cpu_ns_per_job=0 rss_before_bytes=2097152 "+
		"rss_bytes_per_job=1048.6", m.Line())
}

func TestResultJSON(t *testing.T) {
	t.Parallel()
	r := Result{Scenario: "fg64", Server: `we"ird`, Jobs: 10, Payload: 64, Connections: 64, Inflight: 1,
		Workers: 64, Grabs: 1, Elapsed: 2 * time.Second, LatencyOf: "x", P50: time.Millisecond, P99: 3 * time.Millisecond}
	r.finish()
	b, err := json.Marshal(r)
	require.NoError(t, err)
	require.JSONEq(t, `{"scenario":"fg64","server":"we\"ird","jobs":10,"payload":64,"connections":64,"inflight":1,
		"workers":64,"grabs":1,"backlog":0,"seconds":2.000000,"rate":5.0,"p50_us":1000.0,"p99_us":3000.0}`, string(b))
	// The keys come in the order of Line.
	require.Regexp(t, `^\{"scenario":.*"server":.*"jobs":.*"rate":.*"p99_us":[0-9.]+\}$`, string(b))
}

func TestSummary(t *testing.T) {
	t.Parallel()
	r := Result{Scenario: "drain8", Jobs: 200000, Payload: 64, Workers: 8, Grabs: 8, Backlog: 200000,
		Elapsed: 2 * time.Second, RSS: 64 << 20, CPU: time.Second}
	r.finish()
	require.Equal(t, "drain8  200000 jobs in 2.00s: 100,000 jobs/s (8 workers × 8 grabs in flight, 200000 jobs queued before); "+
		"server RSS 64.0 MiB, CPU 5µs/job", r.Summary())
	i := Result{Scenario: "idle", Server: "h:1", Jobs: 10000, Connections: 10000, Elapsed: time.Second, RSS: 40 << 20,
		RSSBefore: 8 << 20, RSSPerJob: 3355.4, IdleSettle: 5 * time.Second, RSSFile: 20 << 20}
	i.finish()
	require.Equal(t, "scenario=idle server=h:1 jobs=10000 payload=0 connections=10000 inflight=0 workers=0 grabs=0 "+
		"backlog=0 seconds=1.000000 rate=10000.0 rss_bytes=41943040 cpu_ns_per_job=0 rss_before_bytes=8388608 "+
		"rss_bytes_per_job=3355.4 settle_seconds=5.0 rss_file_bytes=20971520", i.Line())
	require.Contains(t, i.Summary(), "3355 bytes of RSS per connection after 5s idle")
	require.Contains(t, i.Summary(), "server RSS 40.0 MiB (20.0 MiB of it file-backed)")
	require.Contains(t, i.Summary(), "10,000 connections/s (10000 connections);")
	require.Contains(t, i.Summary(), "3355 bytes of RSS per connection")
}

func TestThousands(t *testing.T) {
	t.Parallel()
	for in, want := range map[float64]string{0: "0", 999: "999", 1000: "1,000", 1234567.8: "1,234,568", 100000: "100,000"} {
		require.Equal(t, want, thousands(in))
	}
}
