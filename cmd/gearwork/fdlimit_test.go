package main

import (
	"bytes"
	"log/slog"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestCapConnections(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		maxConns   int
		limit      uint64
		want       int
		storeFiles int
		capped     bool
		err        string
	}{
		{maxConns: 10000, limit: 256, want: 128, storeFiles: 96, capped: true},
		{maxConns: 0, limit: 256, want: 128, storeFiles: 96, capped: true},
		{maxConns: 100, limit: 256, want: 100, storeFiles: 96},
		{maxConns: 10000, limit: 4096, want: 3072, storeFiles: 992, capped: true},
		{maxConns: 10000, limit: 20000, want: 10000, storeFiles: 992},
		{maxConns: 10000, limit: 1 << 20, want: 10000, storeFiles: 992},
		{maxConns: 0, limit: 1 << 20, want: 1<<20 - 1024, storeFiles: 992, capped: true},
		{maxConns: 10000, limit: 0, want: 10000},
		{maxConns: 10, limit: 128, err: "the open file limit (128) leaves no descriptors for connections beyond the 128 kept for the store: raise it (ulimit -n)"},
	} {
		var logs bytes.Buffer
		got, storeFiles, err := capConnections(tc.maxConns, tc.limit, slog.New(slog.NewTextHandler(&logs, nil)))
		if tc.err != "" {
			require.EqualError(t, err, tc.err)
			continue
		}
		require.NoError(t, err)
		require.Equal(t, tc.want, got, "max %d, limit %d", tc.maxConns, tc.limit)
		require.Equal(t, tc.storeFiles, storeFiles, "max %d, limit %d", tc.maxConns, tc.limit)
		if tc.limit != 0 {
			require.Contains(t, logs.String(), "max_connections=")
		}
		require.Equal(t, tc.capped, bytes.Contains(logs.Bytes(), []byte("capped")), logs.String())
	}
}
