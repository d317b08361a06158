package gearman

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
)

// Magic identifies the direction of a binary packet.
type Magic uint8

// The two packet magics. MagicReq is "\0REQ" (to a server), MagicRes is
// "\0RES" (from a server).
const (
	MagicReq Magic = 1
	MagicRes Magic = 2
)

// HeaderSize is the size of a binary packet header: magic, type, length.
const HeaderSize = 12

var (
	magicReq = [4]byte{0, 'R', 'E', 'Q'}
	magicRes = [4]byte{0, 'R', 'E', 'S'}
)

// The magics as big-endian words, as ParseHeader compares them.
const (
	magicReqWord = 'R'<<16 | 'E'<<8 | 'Q'
	magicResWord = 'R'<<16 | 'E'<<8 | 'S'
)

// Protocol limits, as in gearmand (each size excludes the terminating NUL).
// gearmand takes a unique of up to 64 bytes (GEARMAN_MAX_UNIQUE_SIZE), a
// SHA-256 digest in hex among them, and keeps 63 of them; Gearwork keeps
// all 64.
const (
	MaxHandleSize   = 63
	MaxUniqueSize   = 64
	MaxFunctionSize = 511
	// MaxClientIDSize is the most bytes of a SET_CLIENT_ID kept (the
	// rest is dropped), as gearmand keeps.
	MaxClientIDSize = 127
)

// ErrFunctionNameSize is the error of CheckFunctionName.
var ErrFunctionNameSize = errors.New("function name must be 1 to 511 bytes")

// CheckFunctionName returns ErrFunctionNameSize unless name is 1 to
// MaxFunctionSize bytes: the rule of function names on the Gearman port,
// gearmand's. Any bytes are taken, control characters too (a name may
// hold a tab or a newline), so whatever shows names in a text of fields
// and lines must escape them, as the admin protocol does.
func CheckFunctionName[S string | []byte](name S) error {
	if len(name) == 0 || len(name) > MaxFunctionSize {
		return ErrFunctionNameSize
	}
	return nil
}

// Packet is one binary Gearman packet. Args alias the body they were decoded
// from; callers that keep an argument beyond the next read must copy it.
type Packet struct {
	Magic   Magic
	Command Command
	Args    [][]byte
}

// Arg returns argument i, or nil when the packet has fewer arguments.
func (p *Packet) Arg(i int) []byte {
	if i < len(p.Args) {
		return p.Args[i]
	}
	return nil
}

// AppendPacket appends the encoding of one packet to dst and returns the
// extended buffer. Arguments are joined with NUL bytes.
func AppendPacket(dst []byte, m Magic, c Command, args ...[]byte) []byte {
	size := 0
	for i, a := range args {
		size += len(a)
		if i > 0 {
			size++
		}
	}
	if m == MagicReq {
		dst = append(dst, magicReq[:]...)
	} else {
		dst = append(dst, magicRes[:]...)
	}
	dst = binary.BigEndian.AppendUint32(dst, uint32(c))
	dst = binary.BigEndian.AppendUint32(dst, uint32(size))
	for i, a := range args {
		if i > 0 {
			dst = append(dst, 0)
		}
		dst = append(dst, a...)
	}
	return dst
}

// HeaderError describes a packet header that cannot be accepted.
type HeaderError struct {
	// Code is the Gearman error code to report, such as "INVALID_MAGIC".
	Code string
	// Text is a readable explanation.
	Text string
}

func (e *HeaderError) Error() string { return e.Code + ": " + e.Text }

// ParseHeader decodes a 12-byte packet header. It checks the magic and the
// size (against maxBody, if positive) but not whether the command is known,
// so that the caller can skip the body of an unknown packet.
func ParseHeader(h []byte, maxBody int) (Magic, Command, int, error) {
	if len(h) < HeaderSize {
		return 0, 0, 0, &HeaderError{"INVALID_PACKET", "short header"}
	}
	var m Magic
	switch binary.BigEndian.Uint32(h[:4]) {
	case magicReqWord:
		m = MagicReq
	case magicResWord:
		m = MagicRes
	default:
		return 0, 0, 0, &HeaderError{"INVALID_MAGIC", fmt.Sprintf("bad packet magic %q", h[:4])}
	}
	c := Command(binary.BigEndian.Uint32(h[4:8]))
	size := binary.BigEndian.Uint32(h[8:12])
	if maxBody > 0 && uint64(size) > uint64(maxBody) {
		return m, c, int(size), &HeaderError{"ARGUMENT_TOO_LARGE",
			fmt.Sprintf("packet body of %d bytes exceeds the limit of %d bytes", size, maxBody)}
	}
	return m, c, int(size), nil
}

// SplitArgs splits a packet body into n arguments; the last argument is the
// rest of the body. It reports false when the body has fewer than n-1 NUL
// separators. Zero-argument commands accept (and ignore) any body.
func SplitArgs(dst [][]byte, body []byte, n int) ([][]byte, bool) {
	dst = dst[:0]
	if n == 0 {
		return dst, true
	}
	for i := 0; i < n-1; i++ {
		j := bytes.IndexByte(body, 0)
		if j < 0 {
			return dst, false
		}
		dst = append(dst, body[:j:j])
		body = body[j+1:]
	}
	return append(dst, body), true
}
