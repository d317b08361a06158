package main

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/gearman"
)

// TestDefaultHandlePrefix: the default handle prefix is "H:<hostname>:"
// while a handle with a number of 20 digits fits the 63 bytes libgearman
// keeps; a longer host name is taken up to its first dot, and cut if that
// is still too long.
func TestDefaultHandlePrefix(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ host, want string }{
		{"vm", "H:vm:"},
		{"worker-7.example.com", "H:worker-7.example.com:"},
		{"fe80::1", "H:fe80__1:"},
		{strings.Repeat("a", 40), "H:" + strings.Repeat("a", 40) + ":"},
		{"ip-172-31-45-123.ap-southeast-2.compute.internal", "H:ip-172-31-45-123:"},
		{strings.Repeat("b", 50) + ".example.com", "H:" + strings.Repeat("b", 40) + ":"},
		{strings.Repeat("c", 64), "H:" + strings.Repeat("c", 40) + ":"},
		{".leading-dot-" + strings.Repeat("d", 40), "H:.leading-dot-" + strings.Repeat("d", 27) + ":"},
	} {
		got := defaultHandlePrefix(tc.host)
		require.Equal(t, tc.want, got, tc.host)
		require.LessOrEqual(t, len(got)+20, gearman.MaxHandleSize, tc.host)
	}
}
