// Package wire is a raw Gearman connection for tests: it sends packets and
// admin lines as a client or worker would and reads the server's answers,
// exactly, so that a test can assert the bytes on the wire. It depends on
// nothing but the gearman codec, so that any package's tests (the Gearman
// front end's own included) can use it.
//
// A Conn fails its test on any error; a Stream returns its errors, for
// clients and workers that run beside a test (in goroutines, across server
// restarts, in benchmarks or helper processes).
package wire

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/gearman"
)

// Deadline bounds every read and write of a Conn: it only catches a server
// that never answers.
const Deadline = time.Minute

// Conn is one raw Gearman connection. Its methods fail the test on any
// error. It is not safe for concurrent use.
type Conn struct {
	T  testing.TB
	NC net.Conn
	R  *bufio.Reader
}

// Dial connects to addr over TCP; the connection is closed when the test
// ends.
func Dial(t testing.TB, addr string) *Conn {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, Deadline)
	require.NoError(t, err)
	return New(t, nc)
}

// New wraps a connection dialed elsewhere (over TLS, say); it is closed
// when the test ends.
func New(t testing.TB, nc net.Conn) *Conn {
	t.Helper()
	t.Cleanup(func() { nc.Close() })
	require.NoError(t, nc.SetDeadline(time.Now().Add(Deadline)))
	return &Conn{T: t, NC: nc, R: bufio.NewReader(nc)}
}

// Pair returns the two ends of a loopback TCP connection, the one that
// dialed first; both close when the test ends.
func Pair(t testing.TB) (dialed, accepted net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	dialed, err = net.DialTimeout("tcp", ln.Addr().String(), Deadline)
	require.NoError(t, err)
	t.Cleanup(func() { dialed.Close() })
	accepted, err = ln.Accept()
	require.NoError(t, err)
	t.Cleanup(func() { accepted.Close() })
	return dialed, accepted
}

// Packet encodes one packet with string arguments.
func Packet(m gearman.Magic, cmd gearman.Command, args ...string) []byte {
	bs := make([][]byte, len(args))
	for i, a := range args {
		bs[i] = []byte(a)
	}
	return gearman.AppendPacket(nil, m, cmd, bs...)
}

// Request encodes one request packet (client or worker to server).
func Request(cmd gearman.Command, args ...string) []byte {
	return Packet(gearman.MagicReq, cmd, args...)
}

// Response encodes one response packet (server to client or worker).
func Response(cmd gearman.Command, args ...string) []byte {
	return Packet(gearman.MagicRes, cmd, args...)
}

// ReadPacket reads one packet from r and returns its exact bytes.
func ReadPacket(r io.Reader) ([]byte, error) {
	hdr := make([]byte, gearman.HeaderSize)
	if _, err := io.ReadFull(r, hdr); err != nil {
		return nil, fmt.Errorf("reading a packet header: %w", err)
	}
	p := make([]byte, gearman.HeaderSize+int(binary.BigEndian.Uint32(hdr[8:])))
	copy(p, hdr)
	if _, err := io.ReadFull(r, p[gearman.HeaderSize:]); err != nil {
		return nil, fmt.Errorf("reading a %s body: %w", gearman.Command(binary.BigEndian.Uint32(hdr[4:8])), err)
	}
	return p, nil
}

// Decode splits a packet's exact bytes into its magic, command and
// arguments (which alias raw). It fails on a bad header and on a packet
// with fewer arguments than its command has.
func Decode(raw []byte) (gearman.Packet, error) {
	m, cmd, size, err := gearman.ParseHeader(raw, 0)
	if err != nil {
		return gearman.Packet{}, err
	}
	if len(raw) != gearman.HeaderSize+size {
		return gearman.Packet{}, fmt.Errorf("%s of %d bytes says its body has %d", cmd, len(raw), size)
	}
	args, ok := gearman.SplitArgs(nil, raw[gearman.HeaderSize:], cmd.NumArgs())
	if !ok {
		return gearman.Packet{}, fmt.Errorf("%s with too few arguments: %s", cmd, Readable(raw))
	}
	return gearman.Packet{Magic: m, Command: cmd, Args: args}, nil
}

// Readable shows a packet as "RES JOB_CREATED [9] H:x:1", NUL bytes as \0
// and a long body cut at 200 bytes, for failure messages that can be read.
func Readable(b []byte) string {
	if len(b) < gearman.HeaderSize {
		return fmt.Sprintf("%q", b)
	}
	m, cmd, size, err := gearman.ParseHeader(b, 0)
	if err != nil {
		return fmt.Sprintf("%q", b)
	}
	dir := "REQ"
	if m == gearman.MagicRes {
		dir = "RES"
	}
	body := strings.ReplaceAll(string(b[gearman.HeaderSize:]), "\x00", `\0`)
	if len(body) > 200 {
		body = body[:200] + fmt.Sprintf("...(%d bytes)", len(b)-gearman.HeaderSize)
	}
	return fmt.Sprintf("%s %s [%d] %s", dir, cmd, size, body)
}

// Send sends one request packet.
func (c *Conn) Send(cmd gearman.Command, args ...string) {
	c.T.Helper()
	c.Write(Request(cmd, args...))
}

// Write sends bytes as they are: several packets at once, an admin line,
// or a packet malformed on purpose.
func (c *Conn) Write(b []byte) {
	c.T.Helper()
	require.NoError(c.T, c.NC.SetWriteDeadline(time.Now().Add(Deadline)))
	_, err := c.NC.Write(b)
	require.NoError(c.T, err)
}

// ReadPacket returns the next packet's exact bytes, or the read error.
func (c *Conn) ReadPacket() ([]byte, error) {
	if err := c.NC.SetReadDeadline(time.Now().Add(Deadline)); err != nil {
		return nil, err
	}
	return ReadPacket(c.R)
}

// Read returns the next packet's command and arguments: as many as the
// command has (the last one keeps any NUL bytes), none for an empty body.
func (c *Conn) Read() (gearman.Command, []string) {
	c.T.Helper()
	p, err := c.ReadPacket()
	require.NoError(c.T, err)
	cmd := gearman.Command(binary.BigEndian.Uint32(p[4:8]))
	body := p[gearman.HeaderSize:]
	if len(body) == 0 {
		return cmd, nil
	}
	return cmd, strings.SplitN(string(body), "\x00", max(cmd.NumArgs(), 1))
}

// Call sends one request packet and returns the next packet's command and
// arguments, as Read does.
func (c *Conn) Call(cmd gearman.Command, args ...string) (gearman.Command, []string) {
	c.T.Helper()
	c.Send(cmd, args...)
	return c.Read()
}

// Next reads the next packet and returns it decoded, with its exact bytes;
// it fails the test on a packet that does not decode (see Decode).
func (c *Conn) Next() (gearman.Packet, []byte) {
	c.T.Helper()
	p, raw, err := c.NextWithin(Deadline)
	require.NoError(c.T, err)
	return p, raw
}

// NextWithin is Next waiting at most d, returning the error instead of
// failing the test: for a server that may not answer, or may close the
// connection. After a timeout the connection may stand in the middle of a
// packet.
func (c *Conn) NextWithin(d time.Duration) (gearman.Packet, []byte, error) {
	if err := c.NC.SetReadDeadline(time.Now().Add(d)); err != nil {
		return gearman.Packet{}, nil, err
	}
	raw, err := ReadPacket(c.R)
	if err != nil {
		return gearman.Packet{}, nil, err
	}
	p, err := Decode(raw)
	return p, raw, err
}

// Expect reads the next packet and checks its exact bytes.
func (c *Conn) Expect(cmd gearman.Command, args ...string) {
	c.T.Helper()
	got, err := c.ReadPacket()
	require.NoError(c.T, err)
	want := Response(cmd, args...)
	require.Equal(c.T, string(want), string(got), "want %s\ngot  %s", Readable(want), Readable(got))
}

// ExpectCmd reads the next packet, checks that it is a cmd, and returns its
// arguments.
func (c *Conn) ExpectCmd(cmd gearman.Command) []string {
	c.T.Helper()
	p, raw := c.Next()
	require.Equal(c.T, cmd, p.Command, "got %s", Readable(raw))
	args := make([]string, len(p.Args))
	for i, a := range p.Args {
		args[i] = string(a)
	}
	return args
}

// Line reads one admin text line, line ending included.
func (c *Conn) Line() string {
	c.T.Helper()
	require.NoError(c.T, c.NC.SetReadDeadline(time.Now().Add(Deadline)))
	s, err := c.R.ReadString('\n')
	require.NoError(c.T, err)
	return s
}

// Admin sends the admin text command cmd (a line ending is added) and
// returns the first line of its answer without the line ending.
func (c *Conn) Admin(cmd string) string {
	c.T.Helper()
	c.Write([]byte(cmd + "\n"))
	return strings.TrimRight(c.Line(), "\r\n")
}

// AdminList sends the admin text command cmd (a line ending is added) and
// returns the lines of its list answer (see ReadList).
func (c *Conn) AdminList(cmd string) []string {
	c.T.Helper()
	c.Write([]byte(cmd + "\n"))
	return c.ReadList()
}

// ReadList reads the lines of an admin list answer up to the closing
// ".\n" and returns them without their "\n"; anything else on a line (a
// "\r", say) is kept for the test to see.
func (c *Conn) ReadList() []string {
	c.T.Helper()
	var lines []string
	for {
		l := c.Line()
		if l == ".\n" {
			return lines
		}
		lines = append(lines, strings.TrimSuffix(l, "\n"))
	}
}

// ExpectClosed reads until the server closes the connection (end of stream,
// or a reset) and checks that it sent exactly before first ("" for
// nothing). Any other end of the read fails the test: a timeout, or an
// error that does not say the server closed (a TLS error, say, or this
// end closed).
func (c *Conn) ExpectClosed(before string) {
	c.T.Helper()
	require.NoError(c.T, c.NC.SetReadDeadline(time.Now().Add(Deadline)))
	got, err := io.ReadAll(c.R)
	var ne net.Error
	switch {
	case err == nil || errors.Is(err, syscall.ECONNRESET): // io.ReadAll ends at io.EOF without an error
	case errors.As(err, &ne) && ne.Timeout():
		c.T.Fatalf("the server did not close the connection within %v", Deadline)
	default:
		c.T.Fatalf("reading until the server closes the connection: %v: not a close", err)
	}
	require.Equal(c.T, before, string(got), "what the server sent before it closed the connection")
}

// NextJob asks for a job with GRAB_JOB until it gets one, sleeping with
// PRE_SLEEP until the server's NOOP while there is none, and returns the
// JOB_ASSIGN's arguments: handle, function and payload.
func (c *Conn) NextJob() []string {
	c.T.Helper()
	job, err := c.stream().NextJob()
	require.NoError(c.T, err)
	return []string{string(job.Args[0]), string(job.Args[1]), string(job.Args[2])}
}

// stream is c as a Stream, for the exchanges both kinds share; it bounds
// them by the Deadline.
func (c *Conn) stream() *Stream {
	c.T.Helper()
	require.NoError(c.T, c.NC.SetDeadline(time.Now().Add(Deadline)))
	return &Stream{NC: c.NC, R: c.R}
}
