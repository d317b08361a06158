package gearmanapi

import (
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/gearman"
	"github.com/gearwork/gearwork/internal/broker"
)

// gatedConn (the server's side of a connection) holds its writes while its gate is shut, telling blocked when
// one waits.
type gatedConn struct {
	net.Conn
	mu      sync.Mutex
	shut    chan struct{} // nil: open
	blocked chan struct{}
}

func (g *gatedConn) Write(b []byte) (int, error) {
	g.mu.Lock()
	shut := g.shut
	g.mu.Unlock()
	if shut != nil {
		select {
		case g.blocked <- struct{}{}:
		default:
		}
		<-shut
	}
	return g.Conn.Write(b)
}

// gatedListener gates the first connection it accepts.
type gatedListener struct {
	net.Listener
	first chan *gatedConn
	once  sync.Once
}

func (l *gatedListener) Accept() (net.Conn, error) {
	nc, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	var out net.Conn = nc
	l.once.Do(func() {
		g := &gatedConn{Conn: nc, blocked: make(chan struct{}, 1)}
		l.first <- g
		out = g
	})
	return out, nil
}

// TestAdminListingKeepsEventsAfterIt: a listing passed on in parts, at the
// pace its peer reads, is not cut by the packets of the connection's own
// jobs (abraxas sends admin commands on its binary connections); they
// follow it.
func TestAdminListingKeepsEventsAfterIt(t *testing.T) {
	t.Parallel()
	gl := &gatedListener{first: make(chan *gatedConn, 1)}
	sb := setupServer(t, broker.Config{}, Config{MaxOutput: 16 << 10}, func(ln net.Listener) net.Listener {
		gl.Listener = ln
		return gl
	})
	tb := sb.testBundle
	c := tb.dial(t)
	g := <-gl.first
	const n = 5000
	for i := range n {
		c.Send(gearman.SubmitJobBg, "f", fmt.Sprint("u", i), "")
	}
	for i := range n {
		c.expectCreated(i)
	}
	c.Send(gearman.SubmitJob, "g", "", "x")
	c.expectCreated(n)
	w := tb.dial(t)
	w.Send(gearman.CanDo, "g")
	w.Send(gearman.GrabJob)
	w.Expect(gearman.JobAssign, handle(n), "g", "x")

	shut := make(chan struct{})
	g.mu.Lock()
	g.shut = shut
	g.mu.Unlock()
	_, err := c.NC.Write([]byte("show jobs\n"))
	require.NoError(t, err)
	<-g.blocked // the listing waits for the peer to read
	w.Send(gearman.WorkData, handle(n), "DATA")
	w.echo("e") // the data was passed on to the client's connection
	g.mu.Lock()
	g.shut = nil
	g.mu.Unlock()
	close(shut)
	var got strings.Builder
	for {
		l := c.Line()
		got.WriteString(l)
		if strings.HasSuffix(l, "\n.\n") || l == ".\n" {
			break
		}
	}
	require.NotContains(t, got.String(), "\x00RES", "a binary packet inside the listing")
	c.Expect(gearman.WorkData, handle(n), "DATA")
}
