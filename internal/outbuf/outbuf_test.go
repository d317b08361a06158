package outbuf_test

import (
	"errors"
	"io"
	"net"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/internal/outbuf"
)

// conn is a connection's state as a test keeps it.
type conn struct {
	dead   bool
	failed error
}

func (c *conn) Writable() bool { return !c.dead }
func (c *conn) WriteFailed(err error) {
	c.dead, c.failed = true, err
}

func TestConcurrentSendersShareWritesAndLoseNothing(t *testing.T) {
	t.Parallel()
	client, server := net.Pipe()
	defer client.Close()
	var (
		mu  sync.Mutex
		buf outbuf.Buffer
		c   conn
		wg  sync.WaitGroup
	)
	const senders, each = 8, 100
	for s := range senders {
		wg.Go(func() {
			for range each {
				mu.Lock()
				buf.Out = append(buf.Out, byte(s))
				buf.FlushLocked(&mu, client, 0, &c)
				mu.Unlock()
			}
		})
	}
	got := make([]byte, senders*each)
	_, err := io.ReadFull(server, got)
	require.NoError(t, err)
	wg.Wait()
	count := map[byte]int{}
	for _, b := range got {
		count[b]++
	}
	for s := range senders {
		require.Equal(t, each, count[byte(s)], "every byte of sender %d is written once", s)
	}
	require.False(t, c.dead)
}

func TestFailedWriteMarksTheConnectionAndStops(t *testing.T) {
	t.Parallel()
	client, server := net.Pipe()
	server.Close()
	var (
		mu  sync.Mutex
		buf outbuf.Buffer
		c   conn
	)
	mu.Lock()
	buf.Out = append(buf.Out, "packet"...)
	buf.FlushLocked(&mu, client, 0, &c)
	mu.Unlock()
	require.True(t, c.dead, "the write failure reaches the connection")
	require.True(t, errors.Is(c.failed, io.ErrClosedPipe), "%v", c.failed)
}
