package gearman

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"runtime"
	"testing"

	"github.com/stretchr/testify/require"
)

// header returns a request header claiming size bytes of body.
func header(c Command, size uint32) []byte {
	h := append([]byte(nil), magicReq[:]...)
	h = binary.BigEndian.AppendUint32(h, uint32(c))
	return binary.BigEndian.AppendUint32(h, size)
}

func TestReaderRejectsOversizedHeaderBeforeReadingBody(t *testing.T) {
	t.Parallel()
	in := bytes.NewReader(append(header(EchoReq, 1<<32-1), "body"...))
	r := NewReader(in, 64)
	r.MaxBody = 1 << 20
	var f Frame
	err := r.Next(&f)
	var he *HeaderError
	require.ErrorAs(t, err, &he)
	require.Equal(t, "ARGUMENT_TOO_LARGE", he.Code)
	require.Nil(t, f.Body)
}

// TestReaderGrowsLargeBodiesAsTheyArrive checks that a header claiming a
// large body (within the limit) costs memory in proportion to the bytes
// that really arrive, not to the claim: a few kilobytes when only a few
// bytes came (a slow sender), not a large first chunk.
func TestReaderGrowsLargeBodiesAsTheyArrive(t *testing.T) {
	for _, tc := range []struct {
		arrived   int
		allocated uint64
	}{{arrived: 100 << 10, allocated: 1 << 20}, {arrived: 100, allocated: 16 << 10}} {
		in := io.MultiReader(bytes.NewReader(header(EchoReq, 60<<20)), bytes.NewReader(make([]byte, tc.arrived)))
		r := NewReader(in, 4096)
		r.MaxBody = 64 << 20
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		var f Frame
		err := r.Next(&f)
		runtime.ReadMemStats(&after)
		require.ErrorIs(t, err, io.ErrUnexpectedEOF)
		require.Less(t, after.TotalAlloc-before.TotalAlloc, tc.allocated,
			"%d bytes of a 60 MiB claim must cost less than %d bytes", tc.arrived, tc.allocated)
	}
}

func TestReaderReadsLargeBodiesWhole(t *testing.T) {
	t.Parallel()
	for _, size := range []int{0, 1, eagerBody, eagerBody + 1, 3*eagerBody + 17, 1 << 20} {
		body := make([]byte, size)
		for i := range body {
			body[i] = byte(i * 7)
		}
		in := append(header(EchoReq, uint32(size)), body...)
		// A reader that returns little at a time exercises the growth.
		r := NewReader(&dribble{r: bytes.NewReader(in), n: 1000}, 4096)
		var f Frame
		require.NoError(t, r.Next(&f), "size %d", size)
		require.Equal(t, size, len(f.Body))
		require.True(t, bytes.Equal(body, f.Body), "size %d", size)
		require.ErrorIs(t, r.Next(&f), io.EOF)
	}
}

type dribble struct {
	r io.Reader
	n int
}

func (d *dribble) Read(p []byte) (int, error) {
	n, err := d.r.Read(p[:min(len(p), d.n)])
	if errors.Is(err, io.EOF) && n > 0 {
		return n, nil
	}
	return n, err
}

func TestReaderRefusesAdminLineOfMaxSizeWithoutNewline(t *testing.T) {
	t.Parallel()
	// No more input follows: the reader must not wait for a newline that
	// could not make the line valid anyway.
	pr, pw := io.Pipe()
	go func() { _, _ = pw.Write(bytes.Repeat([]byte("s"), MaxTextLine)) }()
	defer pw.Close()
	var f Frame
	require.ErrorIs(t, NewReader(pr, 4096).Next(&f), ErrLineTooLong)

	ok := append(bytes.Repeat([]byte("s"), MaxTextLine-2), "\r\n"...)
	r := NewReader(bytes.NewReader(ok), 4096)
	require.NoError(t, r.Next(&f))
	require.True(t, f.Text)
	require.Len(t, f.Line, MaxTextLine-2)
}
