package main

import (
	"bytes"
	"context"
	"flag"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/client"
	"github.com/gearwork/gearwork/internal/broker"
	"github.com/gearwork/gearwork/internal/gearmantest"
	"github.com/gearwork/gearwork/internal/testserver"
	"github.com/gearwork/gearwork/internal/testwait"
	"github.com/gearwork/gearwork/worker"
)

// metricValue returns the value of the unlabelled metric name in srv's
// /metrics.
func metricValue(t *testing.T, srv *testserver.Server, name string) float64 {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + name + ` (\S+)$`).FindStringSubmatch(httpGet(t, "http://"+srv.HTTPAddr(t)+"/metrics"))
	require.NotNil(t, m, "%s in /metrics", name)
	v, err := strconv.ParseFloat(m[1], 64)
	require.NoError(t, err)
	return v
}

// A server on the memory store keeps the records of ended jobs within
// --max-record-bytes across functions: past it the records of the jobs
// that ended first are forgotten (their lookup answers 404), the newest
// are kept, and /metrics says how many went.
func TestServeBoundsTheMemoryOfRecords(t *testing.T) {
	t.Parallel()
	const most = 1 << 20
	srv := testserver.Start(t, "--http", "127.0.0.1:0", "--max-record-bytes", "1MiB")
	result := bytes.Repeat([]byte("r"), 4000)
	w := gearmantest.NewWorker(t, worker.Config{Servers: []string{srv.Addr}, Concurrency: 4})
	for _, fn := range []string{"a", "b"} {
		w.Handle(fn, worker.HandlerFunc(func(context.Context, *worker.Job) ([]byte, error) { return result, nil }))
	}
	require.NoError(t, w.Start(context.Background()))
	c := gearmantest.NewClient(t, srv.Addr)
	var handles []string
	for i := range 600 { // about 2.5 MB of records
		fn := []string{"a", "b"}[i%2]
		out, err := c.Do(testwait.Context(t), client.Request{Function: fn, Payload: []byte("p")})
		require.NoError(t, err)
		require.Equal(t, result, out)
		j, err := c.SubmitBackground(testwait.Context(t), client.Request{Function: fn, Payload: []byte("q")})
		require.NoError(t, err)
		handles = append(handles, j.Handle)
	}
	base := "http://" + srv.HTTPAddr(t) + "/v1/jobs/"
	last := handles[len(handles)-1]
	testwait.Until(t, "the last job's record", func() bool {
		resp, err := http.Get(base + url.PathEscape(last))
		require.NoError(t, err)
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	require.Positive(t, metricValue(t, srv, "gearwork_job_records_evicted_total"))
	require.LessOrEqual(t, metricValue(t, srv, "gearwork_job_records_memory_bytes"), float64(most))
	resp, err := http.Get(base + url.PathEscape(handles[0]))
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusNotFound, resp.StatusCode, "the first job's record was forgotten")
}

// --max-record-bytes 0 is no bound; the default is the broker's.
func TestRecordBytesFlag(t *testing.T) {
	t.Parallel()
	require.Equal(t, int64(-1), noLimit(int64(0)))
	require.Equal(t, int64(5<<20), noLimit(int64(5<<20)))
	var sc securityConfig
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	sc.register(fs)
	require.Equal(t, int64(broker.DefaultMaxRecordBytes), sc.maxRecordBytes)
	require.NoError(t, fs.Parse([]string{"--max-record-bytes", "0"}))
	_, err := sc.load("")
	require.NoError(t, err, "0 is accepted")
	require.NoError(t, fs.Parse([]string{"--max-record-bytes", "512KiB"}))
	_, err = sc.load("")
	require.ErrorContains(t, err, "invalid --max-record-bytes 512KiB: must be 0 (no bound) or at least 1MiB")
}
