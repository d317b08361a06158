package compat

import (
	"bufio"
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

// rawConn speaks the binary protocol byte by byte, for checks that no
// client library exposes. It encodes with the gearman package and checks
// what it reads against exact bytes.
type rawConn struct {
	t  *testing.T
	nc net.Conn
	br *bufio.Reader
	// queued holds packets read ahead by sync (transcripts).
	queued [][]byte
	// lenient: transcripts against gearmand wait at most lenientWait for
	// an answer and record its absence instead of failing.
	lenient bool
}

// lenientWait is how long a transcript waits for an answer from gearmand,
// which may send none where gearwork does.
const lenientWait = 2 * time.Second

func dialRaw(t *testing.T, s *server) *rawConn {
	t.Helper()
	nc, err := net.DialTimeout("tcp", s.addr, ioTimeout)
	require.NoError(t, err)
	t.Cleanup(func() { nc.Close() })
	return &rawConn{t: t, nc: nc, br: bufio.NewReaderSize(nc, 64<<10)}
}

// requireClosed fails unless err says the server closed the connection
// (end of stream or a reset): a read that timed out is not a close.
func requireClosed(t *testing.T, err error) {
	t.Helper()
	require.Error(t, err, "the connection is closed")
	if !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("want the connection closed by the server (EOF or reset), got: %v", err)
	}
}

// send writes one request packet.
func (c *rawConn) send(cmd gearman.Command, args ...string) {
	c.t.Helper()
	c.sendBytes(req(cmd, args...))
}

func (c *rawConn) sendBytes(b []byte) {
	c.t.Helper()
	_ = c.nc.SetWriteDeadline(time.Now().Add(ioTimeout))
	_, err := c.nc.Write(b)
	require.NoError(c.t, err)
}

// req encodes a request packet.
func req(cmd gearman.Command, args ...string) []byte {
	return gearman.AppendPacket(nil, gearman.MagicReq, cmd, strArgs(args)...)
}

// res encodes a response packet.
func res(cmd gearman.Command, args ...string) []byte {
	return gearman.AppendPacket(nil, gearman.MagicRes, cmd, strArgs(args)...)
}

func strArgs(args []string) [][]byte {
	out := make([][]byte, len(args))
	for i, a := range args {
		out[i] = []byte(a)
	}
	return out
}

// next reads one packet and returns it decoded with its exact bytes.
func (c *rawConn) next() (gearman.Packet, []byte) {
	c.t.Helper()
	p, raw, err := c.tryNext(ioTimeout)
	require.NoError(c.t, err)
	return p, raw
}

func (c *rawConn) tryNext(timeout time.Duration) (gearman.Packet, []byte, error) {
	_ = c.nc.SetReadDeadline(time.Now().Add(timeout))
	hdr := make([]byte, gearman.HeaderSize)
	if _, err := io.ReadFull(c.br, hdr); err != nil {
		return gearman.Packet{}, nil, fmt.Errorf("reading header: %w", err)
	}
	m, cmd, size, err := gearman.ParseHeader(hdr, 0)
	if err != nil {
		return gearman.Packet{}, hdr, err
	}
	raw := make([]byte, gearman.HeaderSize+size)
	copy(raw, hdr)
	if _, err := io.ReadFull(c.br, raw[gearman.HeaderSize:]); err != nil {
		return gearman.Packet{}, nil, fmt.Errorf("reading %s body: %w", cmd, err)
	}
	args, ok := gearman.SplitArgs(nil, raw[gearman.HeaderSize:], cmd.NumArgs())
	if !ok {
		return gearman.Packet{}, raw, fmt.Errorf("%s with too few arguments: %q", cmd, raw)
	}
	return gearman.Packet{Magic: m, Command: cmd, Args: args}, raw, nil
}

// expect reads one packet and requires its exact bytes to be the response
// cmd with args.
func (c *rawConn) expect(cmd gearman.Command, args ...string) {
	c.t.Helper()
	_, raw := c.next()
	require.Equal(c.t, readable(res(cmd, args...)), readable(raw))
}

// expectCmd reads one packet, requires its type, and returns its arguments
// as strings.
func (c *rawConn) expectCmd(cmd gearman.Command) []string {
	c.t.Helper()
	p, raw := c.next()
	require.Equal(c.t, cmd, p.Command, "got %s", readable(raw))
	out := make([]string, len(p.Args))
	for i, a := range p.Args {
		out[i] = string(a)
	}
	return out
}

// readable shows a packet as "RES JOB_CREATED H:x:1" with NULs as \0, for
// failure messages that can be read.
func readable(b []byte) string {
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

// rawWorker registers fns, optionally with a CAN_DO_TIMEOUT in ms.
func rawWorker(t *testing.T, s *server, fns ...string) *rawConn {
	t.Helper()
	w := dialRaw(t, s)
	for _, fn := range fns {
		w.send(gearman.CanDo, fn)
	}
	return w
}

// grab sends GRAB_JOB_UNIQ and requires a JOB_ASSIGN_UNIQ; it returns
// handle, function, unique and payload.
func (c *rawConn) grab() (handle, fn, unique, payload string) {
	c.t.Helper()
	c.send(gearman.GrabJobUniq)
	a := c.expectCmd(gearman.JobAssignUniq)
	return a[0], a[1], a[2], a[3]
}

// grabWhenReady polls GRAB_JOB_UNIQ until a job is assigned.
func (c *rawConn) grabWhenReady() (handle, fn, unique, payload string) {
	c.t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		c.send(gearman.GrabJobUniq)
		p, raw := c.next()
		switch p.Command {
		case gearman.JobAssignUniq:
			return string(p.Args[0]), string(p.Args[1]), string(p.Args[2]), string(p.Args[3])
		case gearman.NoJob:
		default:
			c.t.Fatalf("unexpected answer to GRAB_JOB_UNIQ: %s", readable(raw))
		}
		if time.Now().After(deadline) {
			c.t.Fatal("no job became available")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// submit sends a submit packet and returns the handle from JOB_CREATED.
func (c *rawConn) submit(cmd gearman.Command, fn, unique, payload string) string {
	c.t.Helper()
	c.send(cmd, fn, unique, payload)
	return c.expectCmd(gearman.JobCreated)[0]
}

// getStatus sends GET_STATUS and returns the STATUS_RES arguments after
// the handle: known, running, numerator, denominator.
func (c *rawConn) getStatus(handle string) []string {
	c.t.Helper()
	c.send(gearman.GetStatus, handle)
	a := c.expectCmd(gearman.StatusRes)
	require.Equal(c.t, handle, a[0])
	return a[1:]
}
