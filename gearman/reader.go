package gearman

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
)

// MaxTextLine is the longest admin text line a Reader accepts, newline
// included.
const MaxTextLine = 8192

// ErrLineTooLong is returned by Reader.Next when an admin text line exceeds
// MaxTextLine bytes without a newline.
var ErrLineTooLong = errors.New("gearman: admin text line too long")

// Frame is one unit read from a connection: a binary packet, or an admin
// text line when the first byte was not NUL.
type Frame struct {
	// Text is set for an admin text line; Line then holds it without the
	// line ending.
	Text bool
	Line []byte
	// Packet is the binary packet when Text is false. Its Args alias Body.
	Packet Packet
	// Body is the packet body. It is freshly allocated and never reused
	// by the Reader, so callers may keep slices of it, unless its command
	// is borrowed (Reader.Borrow): then it is valid only until the next
	// call to Next.
	Body []byte
	// Borrowed is true when Body is borrowed (Reader.Borrow): valid only
	// until the next call to Next.
	Borrowed bool
	// ArgsOK is false when the body had fewer arguments than the command
	// requires (or the command is unknown).
	ArgsOK bool
}

// Reader decodes frames from a byte stream. It is not safe for concurrent
// use.
type Reader struct {
	br *bufio.Reader
	// src is what br reads from (Grow makes a new br over it).
	src io.Reader
	// MaxBody is the largest packet body accepted; 0 means no limit.
	MaxBody int
	hdr     [HeaderSize]byte
	args    [8][]byte
	line    []byte
	// borrow has bit c set for each borrowed command c (Borrow); scratch
	// holds their bodies.
	borrow  uint64
	scratch []byte
}

// maxBorrowed is the largest body read into the Reader's reusable buffer;
// a larger one is allocated as if its command were not borrowed, so the
// buffer stays small.
const maxBorrowed = 1 << 10

// Borrow makes the bodies of cmds (numbered below 64) borrowed: Next
// returns a body of at most 1 KiB where it is buffered, or reads it into
// a buffer it reuses, valid until its next call, instead of allocating
// it. It is for a caller that keeps no slice of those bodies, and saves
// an allocation per such packet (a caller that copies part of a body, as
// a server keeps a result's data, saves the allocation of the rest).
func (r *Reader) Borrow(cmds ...Command) {
	for _, c := range cmds {
		if c < 64 {
			r.borrow |= 1 << c
		}
	}
}

// NewReader returns a Reader over r with the given read buffer size.
func NewReader(r io.Reader, bufSize int) *Reader {
	return &Reader{br: bufio.NewReaderSize(r, bufSize), src: r}
}

// Size returns the size of the read buffer.
func (r *Reader) Size() int { return r.br.Size() }

// Grow gives the Reader a read buffer of size bytes if its buffer is
// smaller, with what the old one held still buffered. Frames read before
// stay valid: the old buffer is dropped, not reused. A server grows the
// buffer of a connection whose reads fill it, a peer that pipelines more
// than it holds, so that one read takes in a whole burst of requests and
// one write answers it.
func (r *Reader) Grow(size int) {
	if r.br.Size() >= size {
		return
	}
	n := r.br.Buffered()
	old, _ := r.br.Peek(n)
	p := &prefixReader{pre: old, r: r.src}
	r.br = bufio.NewReaderSize(p, size)
	if n > 0 {
		// Moves the old bytes over (the new buffer holds them all), with
		// no read from src.
		_, _ = r.br.Peek(n)
	}
	p.pre = nil
}

// prefixReader reads pre, then r.
type prefixReader struct {
	pre []byte
	r   io.Reader
}

func (p *prefixReader) Read(b []byte) (int, error) {
	if len(p.pre) > 0 {
		n := copy(b, p.pre)
		p.pre = p.pre[n:]
		return n, nil
	}
	return p.r.Read(b)
}

// Buffered returns the number of bytes that can be read without blocking.
func (r *Reader) Buffered() int { return r.br.Buffered() }

// HasFrame reports whether a whole frame is buffered, so that Next will
// not block. A server flushes its answers before it would block.
func (r *Reader) HasFrame() bool {
	n := r.br.Buffered()
	if n == 0 {
		return false
	}
	b, _ := r.br.Peek(n)
	if b[0] != 0 {
		return bytes.IndexByte(b, '\n') >= 0
	}
	if n < HeaderSize {
		return false
	}
	size := uint64(b[8])<<24 | uint64(b[9])<<16 | uint64(b[10])<<8 | uint64(b[11])
	return uint64(n) >= HeaderSize+size
}

// Next reads the next frame. A *HeaderError means the header was rejected
// (only the header was consumed); the stream cannot be resynchronised and
// the caller should report the error and close the connection.
func (r *Reader) Next(f *Frame) error {
	*f = Frame{}
	// Most packets of a busy connection are buffered whole: they are
	// decoded where they are, with one look at the buffer (Peek does not
	// read when enough is buffered, and what it returns stays in place
	// until the buffer is next filled, after the body is taken).
	var hdr, rest []byte
	if n := r.br.Buffered(); n >= HeaderSize {
		if b, _ := r.br.Peek(n); b[0] == 0 {
			hdr, rest = b[:HeaderSize], b[HeaderSize:]
			_, _ = r.br.Discard(HeaderSize)
		}
	}
	if hdr == nil {
		first, err := r.br.Peek(1)
		if err != nil {
			return err
		}
		if first[0] != 0 {
			return r.readLine(f)
		}
		if _, err := io.ReadFull(r.br, r.hdr[:]); err != nil {
			return noEOF(err)
		}
		hdr = r.hdr[:]
	}
	m, c, size, err := ParseHeader(hdr, r.MaxBody)
	if err != nil {
		return err
	}
	var body []byte
	f.Borrowed = c < 64 && r.borrow&(1<<c) != 0 && size > 0 && size <= maxBorrowed
	switch {
	case f.Borrowed && size <= len(rest):
		body = rest[:size:size]
		_, _ = r.br.Discard(size)
	case f.Borrowed:
		if cap(r.scratch) < size {
			r.scratch = make([]byte, maxBorrowed)
		}
		body = r.scratch[:size:size]
		_, err = io.ReadFull(r.br, body)
	case size > 0 && size <= len(rest):
		body = make([]byte, size)
		_, _ = r.br.Read(body) // a copy of what is buffered, no read
	default:
		body, err = r.readBody(size)
	}
	if err != nil {
		return noEOF(err)
	}
	f.Body = body
	f.Packet.Magic = m
	f.Packet.Command = c
	if !c.Valid() {
		return nil
	}
	f.Packet.Args, f.ArgsOK = SplitArgs(r.args[:0], body, c.NumArgs())
	return nil
}

// eagerBody is the largest body allocated in full from its header alone.
// Larger bodies grow as their bytes arrive, from growBody bytes (or what is
// already buffered) by doubling, so a header that claims a large size costs
// memory only in proportion to what the peer really sends.
const (
	eagerBody = 64 << 10
	growBody  = 4 << 10
)

// readBody reads a packet body of size bytes.
func (r *Reader) readBody(size int) ([]byte, error) {
	if size == 0 {
		return nil, nil
	}
	if size <= eagerBody {
		body := make([]byte, size)
		_, err := io.ReadFull(r.br, body)
		return body, err
	}
	body := make([]byte, 0, max(growBody, r.br.Buffered()))
	for len(body) < size {
		if len(body) == cap(body) {
			body = slices.Grow(body, min(cap(body), size-len(body)))
		}
		n, err := r.br.Read(body[len(body):min(cap(body), size)])
		body = body[:len(body)+n]
		if err != nil && len(body) < size {
			return nil, err
		}
	}
	return body, nil
}

func (r *Reader) readLine(f *Frame) error {
	r.line = r.line[:0]
	for {
		chunk, err := r.br.ReadSlice('\n')
		// A line of MaxTextLine bytes without its newline can only grow
		// too long: refuse it now rather than wait for more.
		if n := len(r.line) + len(chunk); n > MaxTextLine || err != nil && n >= MaxTextLine {
			return ErrLineTooLong
		}
		r.line = append(r.line, chunk...)
		if err == nil {
			break
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		return noEOF(err)
	}
	f.Text = true
	f.Line = bytes.TrimRight(r.line, "\r\n")
	return nil
}

func noEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return fmt.Errorf("gearman: truncated frame: %w", io.ErrUnexpectedEOF)
	}
	return err
}
