package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/gearwork/gearwork/gearman"
)

// ServerError is an ERROR packet (or an ERR admin line) the server sent.
type ServerError struct {
	Code string
	Text string
}

func (e *ServerError) Error() string {
	return fmt.Sprintf("server answered ERROR %s: %s", e.Code, e.Text)
}

// conn is one raw protocol connection. Output is buffered in out and
// written when the caller is about to wait for input, so pipelined requests
// go out in bursts. It is used by one goroutine at a time.
type conn struct {
	nc  net.Conn
	r   *gearman.Reader
	out []byte
	f   gearman.Frame
}

func dialConn(ctx context.Context, addr string, deadline time.Time, bufSize int) (*conn, error) {
	d := net.Dialer{Deadline: deadline}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%w to %s: %w", ErrConnect, addr, err)
	}
	if err := nc.SetDeadline(deadline); err != nil {
		nc.Close()
		return nil, fmt.Errorf("set deadline: %w", err)
	}
	return &conn{nc: nc, r: gearman.NewReader(nc, bufSize)}, nil
}

// send queues one request packet.
func (c *conn) send(cmd gearman.Command, args ...[]byte) {
	c.out = gearman.AppendPacket(c.out, gearman.MagicReq, cmd, args...)
}

// flush writes the queued output.
func (c *conn) flush() error {
	if len(c.out) == 0 {
		return nil
	}
	_, err := c.nc.Write(c.out)
	c.out = c.out[:0]
	if err != nil {
		return fmt.Errorf("write: %w", err)
	}
	return nil
}

// next flushes queued output unless a whole packet is already buffered,
// then reads the next binary packet. An ERROR packet is returned as a
// *ServerError. The packet is valid until the next call; its arguments
// stay valid (the reader never reuses a body).
func (c *conn) next() (*gearman.Packet, error) {
	if !c.r.HasFrame() {
		if err := c.flush(); err != nil {
			return nil, err
		}
	}
	if err := c.r.Next(&c.f); err != nil {
		return nil, fmt.Errorf("read: %w", err)
	}
	if c.f.Text {
		return nil, fmt.Errorf("unexpected text line %q", c.f.Line)
	}
	p := &c.f.Packet
	if p.Magic != gearman.MagicRes {
		return nil, fmt.Errorf("unexpected request packet %s from the server", p.Command)
	}
	if !c.f.ArgsOK {
		return nil, fmt.Errorf("malformed %s packet", p.Command)
	}
	if p.Command == gearman.Error {
		return nil, &ServerError{Code: string(p.Arg(0)), Text: string(p.Arg(1))}
	}
	return p, nil
}

// expect reads the next packet and checks its type.
func (c *conn) expect(cmd gearman.Command) (*gearman.Packet, error) {
	p, err := c.next()
	if err != nil {
		return nil, err
	}
	if p.Command != cmd {
		return nil, fmt.Errorf("got %s, want %s", p.Command, cmd)
	}
	return p, nil
}

// echo sends an ECHO_REQ and waits for its answer. Since a server handles
// one connection's packets in order, the answer also means every earlier
// packet on this connection was processed.
func (c *conn) echo() error {
	c.send(gearman.EchoReq, []byte("bench"))
	if _, err := c.expect(gearman.EchoRes); err != nil {
		return fmt.Errorf("echo: %w", err)
	}
	return nil
}

// adminLines sends one admin text command and returns the lines of its
// answer up to the terminating ".". The connection must not have binary
// packets in flight.
func (c *conn) adminLines(cmd string) ([]string, error) {
	c.out = append(c.out, cmd+"\n"...)
	if err := c.flush(); err != nil {
		return nil, err
	}
	var lines []string
	for {
		if err := c.r.Next(&c.f); err != nil {
			return nil, fmt.Errorf("read %q answer: %w", cmd, err)
		}
		if !c.f.Text {
			return nil, fmt.Errorf("%q: got a binary %s packet, want text", cmd, c.f.Packet.Command)
		}
		line := string(c.f.Line)
		if line == "." {
			return lines, nil
		}
		if len(lines) == 0 && len(line) > 4 && line[:4] == "ERR " {
			return nil, &ServerError{Code: "ERR", Text: line[4:]}
		}
		lines = append(lines, line)
	}
}

// adminLine sends an admin command that answers one line ("OK", "ERR
// ...") and returns that line.
func (c *conn) adminLine(cmd string) (string, error) {
	c.out = append(c.out, cmd+"\n"...)
	if err := c.flush(); err != nil {
		return "", err
	}
	if err := c.r.Next(&c.f); err != nil {
		return "", fmt.Errorf("read %q answer: %w", cmd, err)
	}
	if !c.f.Text {
		return "", fmt.Errorf("%q: got a binary %s packet, want text", cmd, c.f.Packet.Command)
	}
	return string(c.f.Line), nil
}

// isDeadline reports whether err is a read or write failure caused by a
// deadline: the scenario's timeout, or one set in the past to stop a
// connection's user.
func isDeadline(err error) bool {
	return errors.Is(err, os.ErrDeadlineExceeded)
}

func (c *conn) close() { c.nc.Close() }
