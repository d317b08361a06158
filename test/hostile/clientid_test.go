package hostile_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/gearman"
	"github.com/gearwork/gearwork/internal/gearmantest/wire"
)

// TestClientIDsAreCut: a connection keeps its SET_CLIENT_ID for as long
// as it is open, and the packet may be as large as --max-packet: ten idle
// connections with ids of 50 MB took 630 MB. The first 127 bytes are
// kept, as gearmand keeps them.
func TestClientIDsAreCut(t *testing.T) {
	const (
		conns   = 20
		size    = 8 << 20
		ceiling = 96 << 20 // bytes of Go heap
	)
	srv := startHeapMeasured(t)
	id := strings.Repeat("i", size)
	for range conns {
		c := wire.Dial(t, srv.Addr)
		c.Send(gearman.SetClientID, id)
		c.Send(gearman.EchoReq, "sync")
		c.Expect(gearman.EchoRes, "sync")
	}
	heap := waitHeapAtMost(t, srv, ceiling)
	t.Logf("Go heap %.0f MiB with %d connections that sent ids of %d MiB", heap/(1<<20), conns, size>>20)

	adm := wire.Dial(t, srv.Addr)
	kept := 0
	for _, l := range adm.AdminList("workers") {
		if f := strings.Fields(l); len(f) >= 3 && strings.HasPrefix(f[2], "iii") {
			require.Len(t, f[2], gearman.MaxClientIDSize)
			kept++
		}
	}
	require.Equal(t, conns, kept)
}
