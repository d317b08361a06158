// Package wire is a raw Gearman connection for tests: it sends packets and
// admin lines as a client or worker would and reads the server's answers,
// exactly, so that a test can assert the bytes on the wire. It depends on
// nothing but the gearman codec, so that any package's tests (the Gearman
// front end's own included) can use it.
package wire

import (
	"bufio"
	"encoding/binary"
	"io"
	"net"
	"strings"
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
	nc, err := net.Dial("tcp", addr)
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

// Packet encodes one packet with string arguments.
func Packet(m gearman.Magic, cmd gearman.Command, args ...string) []byte {
	bs := make([][]byte, len(args))
	for i, a := range args {
		bs[i] = []byte(a)
	}
	return gearman.AppendPacket(nil, m, cmd, bs...)
}

// Send sends one request packet.
func (c *Conn) Send(cmd gearman.Command, args ...string) {
	c.T.Helper()
	_, err := c.NC.Write(Packet(gearman.MagicReq, cmd, args...))
	require.NoError(c.T, err)
}

// ReadPacket returns the next packet's exact bytes, or the read error.
func (c *Conn) ReadPacket() ([]byte, error) {
	hdr := make([]byte, gearman.HeaderSize)
	if _, err := io.ReadFull(c.R, hdr); err != nil {
		return nil, err
	}
	body := make([]byte, binary.BigEndian.Uint32(hdr[8:]))
	if _, err := io.ReadFull(c.R, body); err != nil {
		return nil, err
	}
	return append(hdr, body...), nil
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

// Expect reads the next packet and checks its exact bytes.
func (c *Conn) Expect(cmd gearman.Command, args ...string) {
	c.T.Helper()
	got, err := c.ReadPacket()
	require.NoError(c.T, err)
	require.Equal(c.T, string(Packet(gearman.MagicRes, cmd, args...)), string(got))
}

// Line reads one admin text line, line ending included.
func (c *Conn) Line() string {
	c.T.Helper()
	s, err := c.R.ReadString('\n')
	require.NoError(c.T, err)
	return s
}
