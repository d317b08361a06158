package main

import (
	"errors"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestLimitListener: with two slots, a third connection is accepted only
// once one of the first two closes (closing twice frees one slot), and
// Close ends an Accept that waits for a slot.
func TestLimitListener(t *testing.T) {
	t.Parallel()
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ln := newLimitListener(raw, 2)
	defer ln.Close()
	accepted := make(chan net.Conn, 4)
	acceptErr := make(chan error, 1)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				acceptErr <- err
				return
			}
			accepted <- c
		}
	}()
	for range 3 {
		c, err := net.Dial("tcp", raw.Addr().String())
		require.NoError(t, err)
		defer c.Close()
	}
	first := <-accepted
	<-accepted
	select {
	case <-accepted:
		t.Fatal("a third connection was accepted while two were open")
	case <-time.After(100 * time.Millisecond): // a negative check: nothing to wait on
	}
	require.NoError(t, first.Close())
	_ = first.Close()
	<-accepted
	// Two are open again (the second and third): a fourth waits, which it
	// would not if closing the first twice had given back two slots.
	c, err := net.Dial("tcp", raw.Addr().String())
	require.NoError(t, err)
	defer c.Close()
	select {
	case <-accepted:
		t.Fatal("a connection closed twice gave back two slots")
	case <-time.After(100 * time.Millisecond): // a negative check: nothing to wait on
	}
	require.NoError(t, ln.Close())
	require.True(t, errors.Is(<-acceptErr, net.ErrClosed), "Close ends an Accept that waits for a slot")
}
