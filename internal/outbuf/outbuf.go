// Package outbuf is the outgoing side of a Gearman connection that the Go
// client and worker share: packets that any goroutine queues are written
// in bursts, by one goroutine at a time, so that callers sending at the
// same moment share one write.
package outbuf

import (
	"net"
	"runtime"
	"sync"
	"time"
)

// Conn is what a Buffer writes for: the connection's state, read and
// changed with the Buffer's lock held.
type Conn interface {
	// Writable reports whether the connection may still be written to.
	Writable() bool
	// WriteFailed records that a write failed: the connection is dead.
	WriteFailed(err error)
}

// Buffer holds a connection's queued output. Its owner's mutex guards it.
type Buffer struct {
	// Out holds the packets waiting to be written: append to it with the
	// lock held.
	Out []byte
	// spare is the last written buffer, reused for Out.
	spare    []byte
	flushing bool
}

// FlushLocked writes Out to nc until it is empty or c is no longer
// writable, unless another goroutine is already doing so (that one writes
// what was queued meanwhile too). mu guards the Buffer and c: it is held
// on entry and on return, and released while writing, after letting the
// goroutines about to send join the write. Each write must end within
// timeout (when positive); a failed write is reported to c, with mu held.
func (b *Buffer) FlushLocked(mu sync.Locker, nc net.Conn, timeout time.Duration, c Conn) {
	if b.flushing {
		return
	}
	b.flushing = true
	// Let other goroutines that are about to send join this write.
	mu.Unlock()
	runtime.Gosched()
	mu.Lock()
	for len(b.Out) > 0 && c.Writable() {
		buf := b.Out
		b.Out = b.spare[:0]
		b.spare = nil
		mu.Unlock()
		if timeout > 0 {
			_ = nc.SetWriteDeadline(time.Now().Add(timeout))
		}
		_, err := nc.Write(buf)
		mu.Lock()
		if cap(buf) <= 1<<20 {
			b.spare = buf[:0]
		}
		if err != nil {
			c.WriteFailed(err)
		}
	}
	b.flushing = false
}
