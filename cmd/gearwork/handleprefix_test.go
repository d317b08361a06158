package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/client"
	"github.com/gearwork/gearwork/gearman"
	"github.com/gearwork/gearwork/internal/broker"
	"github.com/gearwork/gearwork/internal/gearmantest"
	"github.com/gearwork/gearwork/internal/testserver"
)

// TestDefaultHandlePrefix: the default handle prefix is "H:<hostname>:"
// while a handle with a number of 17 digits fits the 63 bytes libgearman
// keeps; a longer host name is taken up to its first dot, and cut if that
// is still too long. Handles with the prefix of the whole name, which the
// server gave out before, still name its jobs.
func TestDefaultHandlePrefix(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ host, want string }{
		{"vm", "H:vm:"},
		{"worker-7.example.com", "H:worker-7.example.com:"},
		{"fe80::1", "H:fe80__1:"},
		{strings.Repeat("a", 40), "H:" + strings.Repeat("a", 40) + ":"},
		// Kept whole, as before there was a limit: its handles fit.
		{"queue-0042.eu-central-1.compute.example.net", "H:queue-0042.eu-central-1.compute.example.net:"},
		{"ip-172-31-45-123.ap-southeast-2.compute.internal", "H:ip-172-31-45-123:"},
		{strings.Repeat("b", 50) + ".example.com", "H:" + strings.Repeat("b", 43) + ":"},
		{strings.Repeat("c", 64), "H:" + strings.Repeat("c", 43) + ":"},
		{".leading-dot-" + strings.Repeat("d", 40), "H:.leading-dot-" + strings.Repeat("d", 30) + ":"},
	} {
		got, earlier := defaultHandlePrefix(tc.host)
		require.Equal(t, tc.want, got, tc.host)
		require.LessOrEqual(t, len(got)+17, gearman.MaxHandleSize, tc.host)
		whole := "H:" + strings.ReplaceAll(tc.host, ":", "_") + ":"
		if got == whole {
			require.Empty(t, earlier, tc.host)
			continue
		}
		require.Equal(t, whole, earlier, tc.host)
		prefix, aliases := handlePrefixes("", tc.host)
		require.Equal(t, got, prefix)
		b := broker.New(broker.Config{HandlePrefix: prefix, HandlePrefixAliases: aliases})
		seq, ok := b.ParseHandle([]byte(whole + "1796578622934206"))
		require.True(t, ok, "a handle given out before the prefix was kept short: %s", tc.host)
		require.Equal(t, uint64(1796578622934206), seq)
	}
	prefix, aliases := handlePrefixes("H:given:", "ip-172-31-45-123.ap-southeast-2.compute.internal")
	require.Equal(t, "H:given:", prefix)
	require.Empty(t, aliases, "--handle-prefix names every handle")
}

// TestLongHandlePrefixTaken: a --handle-prefix of 46 bytes, whose handles
// (a number of 16 digits: the start time in microseconds) fit the 63 bytes
// libgearman keeps, is taken as it was before prefixes had a limit; a
// server given one must start and hand out such handles.
func TestLongHandlePrefixTaken(t *testing.T) {
	t.Parallel()
	prefix := "H:" + strings.Repeat("q", 43) + ":"
	require.Len(t, prefix, 46)
	srv := testserver.Start(t, "--store", "memory:", "--handle-prefix", prefix)
	c := gearmantest.NewClient(t, srv.Addr)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	j, err := c.SubmitBackground(ctx, client.Request{Function: "long_prefix"})
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(j.Handle, prefix), j.Handle)
	require.LessOrEqual(t, len(j.Handle), gearman.MaxHandleSize, j.Handle)
}
