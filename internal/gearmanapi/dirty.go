package gearmanapi

import (
	"io"
	"os"
	"syscall"
)

// Event output for a connection whose reader is not in the middle of a
// burst is written by whichever goroutine caused it, right after it
// releases the broker's lock (Broker.OnUnlock runs flushDirty): a worker's
// WORK_COMPLETE reaches the waiting client, and a submit's NOOP reaches
// the sleeping worker, without a hand-off to another goroutine. The write
// is a single non-blocking attempt; what does not fit in the socket buffer
// goes to a flusher goroutine, so a slow peer never holds anyone up.

// markDirty records that c has output and no writer. Called with c.mu held
// (and the broker's lock): c.flushing is already set.
func (s *Server) markDirty(c *conn) {
	s.dirtyMu.Lock()
	s.dirty = append(s.dirty, c)
	s.dirtyN.Store(int32(len(s.dirty)))
	s.dirtyMu.Unlock()
}

// flushDirty writes the output of every dirty connection. It is the
// broker's unlock hook: cheap when nothing is dirty.
func (s *Server) flushDirty() {
	if s.dirtyN.Load() == 0 {
		return
	}
	s.dirtyMu.Lock()
	list := s.dirty
	s.dirty = s.spareD[:0]
	s.spareD = nil
	s.dirtyN.Store(0)
	s.dirtyMu.Unlock()
	for i, c := range list {
		c.flushNow()
		list[i] = nil
	}
	s.dirtyMu.Lock()
	if s.spareD == nil && cap(list) <= 1024 {
		s.spareD = list[:0]
	}
	s.dirtyMu.Unlock()
}

// flushNow tries one non-blocking write of c's output and leaves the rest
// to a flusher goroutine. The caller's markDirty set c.flushing.
func (c *conn) flushNow() {
	c.mu.Lock()
	if c.dead || len(c.out) == 0 {
		c.flushing = false
		c.flushed.Broadcast()
		c.mu.Unlock()
		return
	}
	if c.raw != nil {
		n, err := c.tryWrite(c.out)
		switch {
		case err != nil:
			c.markDeadLocked()
			c.out = nil
			c.flushing = false
			c.flushed.Broadcast()
			c.mu.Unlock()
			c.closeNet()
			return
		case n == len(c.out):
			c.out = c.out[:0]
			c.flushing = false
			c.flushed.Broadcast()
			c.mu.Unlock()
			return
		default:
			c.out = c.out[:copy(c.out, c.out[n:])]
		}
	}
	c.mu.Unlock()
	go c.flushLoop()
}

// maxRawWrite bounds one raw write attempt: the kernel copies it while the
// goroutine keeps its processor (sysWrite), so a large backlog is left to
// the writer that waits for the socket instead.
const maxRawWrite = 64 << 10

// tryWrite makes one non-blocking write attempt of at most maxRawWrite
// bytes. A full socket buffer is not an error: it reports how much was
// written. Writers take turns (c.flushing), so they share c.wio.
func (c *conn) tryWrite(b []byte) (int, error) {
	c.wio.b = b[:min(len(b), maxRawWrite)]
	err := c.raw.Write(c.wio.write)
	n, werr := c.wio.n, c.wio.err
	c.wio = rawCall{write: c.wio.write}
	if err != nil {
		return 0, err
	}
	if werr != 0 && werr != syscall.EAGAIN && werr != syscall.EINTR {
		return n, os.NewSyscallError("write", werr)
	}
	return n, nil
}

// read reads from the connection like its Read, but on a plain socket
// through sysRead: the read is tried first, and only when it finds
// nothing does the goroutine wait for the socket to become readable (or
// its read deadline to pass). Called by the reader goroutine only.
func (c *conn) read(p []byte) (int, error) {
	if c.raw == nil {
		return c.nc.Read(p)
	}
	c.rio.b = p
	err := c.raw.Read(c.rio.read)
	n, rerr := c.rio.n, c.rio.err
	c.rio = rawCall{read: c.rio.read}
	switch {
	case err != nil:
		return 0, err
	case rerr != 0:
		return 0, os.NewSyscallError("read", rerr)
	case n == 0 && len(p) > 0:
		return 0, io.EOF
	}
	return n, nil
}

// rawCall is one raw read or write: its buffer and its outcome. Its
// callbacks for syscall.RawConn are made once per connection
// (newRawCalls), so that a call allocates nothing.
type rawCall struct {
	b           []byte
	n           int
	err         syscall.Errno
	read, write func(fd uintptr) bool
}

// newRawCalls sets up c's raw read and write.
func (c *conn) newRawCalls() {
	r, w := &c.rio, &c.wio
	r.read = func(fd uintptr) bool {
		for {
			r.n, r.err = sysRead(fd, r.b)
			if r.err != syscall.EINTR {
				return r.err != syscall.EAGAIN
			}
		}
	}
	w.write = func(fd uintptr) bool {
		w.n, w.err = sysWrite(fd, w.b)
		return true
	}
}
