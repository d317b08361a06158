package bench

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/internal/testlog"
	"github.com/gearwork/gearwork/internal/testwait"
)

func TestProgressLine(t *testing.T) {
	t.Parallel()
	require.Equal(t, "echo measuring  [###############...............]  50% 500/1000  50/s  elapsed 10s  eta 10s",
		progressLine("echo", "measuring", 500, 1000, 10*time.Second))
	require.Equal(t, "fg1  loading    [..............................]   0% 0/10  0/s  elapsed 0s  eta ?",
		progressLine("fg1 ", "loading", 0, 10, 0))
	require.Equal(t, "drain8 cleanup    [##############################] 100% 12/10  6/s  elapsed 2s  eta 0s",
		progressLine("drain8", "cleanup", 12, 10, 2*time.Second))
}

// The bar is redrawn in place (carriage return, erase to the end of the
// line) and erased when the scenario ends.
func TestProgressDrawsAndErases(t *testing.T) {
	t.Parallel()
	var w testlog.Buffer
	p := newProgress(&w, "echo")
	p.start("measuring", 100)
	p.add(40)
	testwait.Until(t, "the progress line to show 40/100", func() bool { return strings.Contains(w.String(), "40/100") })
	p.stop()
	out := w.String()
	require.True(t, strings.HasPrefix(out, "\recho measuring  ["), out)
	require.Contains(t, out, " 40% 40/100  ")
	require.True(t, strings.HasSuffix(out, "\r\x1b[K"), "erased at the end: %q", out)
}
