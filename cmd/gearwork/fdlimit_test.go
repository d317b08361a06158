package main

import (
	"bytes"
	"log/slog"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestShareFiles(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		maxConns, maxHTTP int
		httpOn            bool
		limit             uint64
		want              fileBudget
		capped            bool
		err               string
	}{
		{maxConns: 10000, limit: 256, want: fileBudget{conns: 128, storeFiles: 96}, capped: true},
		{maxConns: 0, limit: 256, want: fileBudget{conns: 128, storeFiles: 96}, capped: true},
		{maxConns: 100, limit: 256, want: fileBudget{conns: 100, storeFiles: 96}},
		{maxConns: 10000, limit: 4096, want: fileBudget{conns: 3072, storeFiles: 992}, capped: true},
		{maxConns: 10000, limit: 20000, want: fileBudget{conns: 10000, storeFiles: 992}},
		{maxConns: 10000, limit: 1 << 20, want: fileBudget{conns: 10000, storeFiles: 992}},
		{maxConns: 0, limit: 1 << 20, want: fileBudget{conns: 1<<20 - 1024, storeFiles: 992}, capped: true},
		{maxConns: 10000, limit: 0, want: fileBudget{conns: 10000}},
		{maxConns: 10, limit: 128, err: "the open file limit (128) leaves no descriptors for connections beyond the 128 kept for the store: raise it (ulimit -n)"},
		// The HTTP API's connections come out of the same room, a quarter
		// of it at most.
		{maxConns: 10000, maxHTTP: 1000, httpOn: true, limit: 256, want: fileBudget{conns: 96, httpConns: 32, storeFiles: 96}, capped: true},
		{maxConns: 50, maxHTTP: 20, httpOn: true, limit: 256, want: fileBudget{conns: 50, httpConns: 20, storeFiles: 96}},
		{maxConns: 10000, maxHTTP: 1000, httpOn: true, limit: 1 << 20, want: fileBudget{conns: 10000, httpConns: 1000, storeFiles: 992}},
		{maxConns: 0, maxHTTP: 0, httpOn: true, limit: 1 << 20, want: fileBudget{conns: (1<<20 - 1024) - (1<<20-1024)/4, httpConns: (1<<20 - 1024) / 4, storeFiles: 992}, capped: true},
		{maxConns: 10000, maxHTTP: 1000, httpOn: false, limit: 256, want: fileBudget{conns: 128, storeFiles: 96}, capped: true},
		{maxConns: 10000, maxHTTP: 1000, httpOn: true, limit: 0, want: fileBudget{conns: 10000, httpConns: 1000}},
		// A room of one descriptor cannot hold both ports' connections: the
		// Gearman limit would be 0, which means no limit.
		{maxConns: 10, maxHTTP: 1000, httpOn: true, limit: 129, err: "the open file limit (129) leaves no descriptors for Gearman connections beyond the 128 kept for the store and the 1 for HTTP connections: raise it (ulimit -n)"},
		{maxConns: 10, maxHTTP: 1000, httpOn: true, limit: 130, want: fileBudget{conns: 1, httpConns: 1, storeFiles: 96}, capped: true},
	} {
		var logs bytes.Buffer
		got, err := shareFiles(tc.maxConns, tc.maxHTTP, tc.httpOn, tc.limit, slog.New(slog.NewTextHandler(&logs, nil)))
		if tc.err != "" {
			require.EqualError(t, err, tc.err)
			continue
		}
		require.NoError(t, err)
		require.Equal(t, tc.want, got, "%+v", tc)
		if tc.limit != 0 {
			require.Contains(t, logs.String(), "max_connections=")
			require.Equal(t, tc.httpOn, bytes.Contains(logs.Bytes(), []byte("http_max_connections=")), logs.String())
		}
		require.Equal(t, tc.capped, bytes.Contains(logs.Bytes(), []byte("capped")), logs.String())
	}
}
