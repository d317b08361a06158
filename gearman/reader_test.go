package gearman_test

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/gearman"
)

// frame is a decoded frame in a comparable form.
type frame struct {
	text  string // admin line, when set
	magic gearman.Magic
	cmd   gearman.Command
	args  []string
	ok    bool
}

// readAll decodes every frame of b, fed one byte at a time so that every
// header, body and line is split across reads.
func readAll(t *testing.T, b []byte, maxBody int) ([]frame, error) {
	t.Helper()
	r := gearman.NewReader(iotest.OneByteReader(bytes.NewReader(b)), 16)
	r.MaxBody = maxBody
	var out []frame
	for {
		var f gearman.Frame
		err := r.Next(&f)
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		if f.Text {
			out = append(out, frame{text: string(f.Line)})
			continue
		}
		fr := frame{magic: f.Packet.Magic, cmd: f.Packet.Command, ok: f.ArgsOK}
		for _, a := range f.Packet.Args {
			fr.args = append(fr.args, string(a))
		}
		out = append(out, fr)
	}
}

func reqFrame(c gearman.Command, args ...string) frame {
	return frame{magic: gearman.MagicReq, cmd: c, args: args, ok: true}
}

func resFrame(c gearman.Command, args ...string) frame {
	return frame{magic: gearman.MagicRes, cmd: c, args: args, ok: true}
}

// TestReaderEveryCommand encodes each packet type 1–42 with its arguments
// (the last one holding NULs where it is data) and decodes it again.
func TestReaderEveryCommand(t *testing.T) {
	t.Parallel()
	for c := gearman.Command(1); c <= 42; c++ {
		n := specArgs[c].args
		args := make([]string, n)
		raw := make([][]byte, n)
		for i := range args {
			args[i] = strings.Repeat(string(rune('a'+i)), i+1)
			if i == n-1 && n > 1 {
				args[i] += "\x00tail\x00"
			}
			raw[i] = []byte(args[i])
		}
		wire := gearman.AppendPacket(nil, gearman.MagicReq, c, raw...)
		got, err := readAll(t, wire, 0)
		require.NoError(t, err, "%s", c)
		want := reqFrame(c, args...)
		if n == 0 {
			want.args = nil
		}
		require.Equal(t, []frame{want}, got, "%s", c)

		// One NUL too few: the arguments are incomplete.
		if n >= 2 {
			short := gearman.AppendPacket(nil, gearman.MagicReq, c, raw[:n-1]...)
			if n == 2 {
				short = gearman.AppendPacket(nil, gearman.MagicReq, c, []byte("no-nul"))
			}
			got, err = readAll(t, short, 0)
			require.NoError(t, err)
			require.Len(t, got, 1)
			require.False(t, got[0].ok, "%s with %d arguments", c, n-1)
		}
	}
}

func TestReaderTextLines(t *testing.T) {
	t.Parallel()
	in := "status\r\n" + "workers\n" + "show  unique\tjobs\r\n" +
		string(gearman.AppendPacket(nil, gearman.MagicReq, gearman.EchoReq, []byte("x"))) +
		"version\n"
	got, err := readAll(t, []byte(in), 0)
	require.NoError(t, err)
	require.Equal(t, []frame{
		{text: "status"}, {text: "workers"}, {text: "show  unique\tjobs"},
		reqFrame(gearman.EchoReq, "x"), {text: "version"},
	}, got)

	// A line cut off by the end of the stream is truncated, not a line.
	_, err = readAll(t, []byte("status"), 0)
	require.ErrorIs(t, err, io.ErrUnexpectedEOF)

	// The longest accepted line, then one byte more.
	long := strings.Repeat("x", gearman.MaxTextLine-1) + "\n"
	got, err = readAll(t, []byte(long), 0)
	require.NoError(t, err)
	require.Len(t, got[0].text, gearman.MaxTextLine-1)
	_, err = readAll(t, []byte("x"+long), 0)
	require.ErrorIs(t, err, gearman.ErrLineTooLong)
}

// TestReaderOversizeHeader: the size is checked before the body is read,
// so a huge size costs nothing.
func TestReaderOversizeHeader(t *testing.T) {
	t.Parallel()
	hdr := []byte("\x00REQ\x00\x00\x00\x07\xff\xff\xff\xff")
	tail := []byte("rest of the stream")
	src := bytes.NewReader(append(append([]byte{}, hdr...), tail...))
	r := gearman.NewReader(src, 16)
	r.MaxBody = 1 << 20
	var f gearman.Frame
	err := r.Next(&f)
	var he *gearman.HeaderError
	require.True(t, errors.As(err, &he), "%v", err)
	require.Equal(t, "ARGUMENT_TOO_LARGE", he.Code)
	require.Nil(t, f.Body)

	// Exactly MaxBody is accepted.
	ok := gearman.AppendPacket(nil, gearman.MagicReq, gearman.EchoReq, bytes.Repeat([]byte("z"), 64))
	r = gearman.NewReader(bytes.NewReader(ok), 16)
	r.MaxBody = 64
	require.NoError(t, r.Next(&f))
	require.Len(t, f.Body, 64)
}

func TestReaderBadFrames(t *testing.T) {
	t.Parallel()
	var he *gearman.HeaderError
	_, err := readAll(t, []byte("\x00BAD\x00\x00\x00\x01\x00\x00\x00\x00"), 0)
	require.True(t, errors.As(err, &he))
	require.Equal(t, "INVALID_MAGIC", he.Code)

	// A truncated header or body.
	_, err = readAll(t, []byte("\x00REQ\x00\x00"), 0)
	require.ErrorIs(t, err, io.ErrUnexpectedEOF)
	_, err = readAll(t, []byte("\x00REQ\x00\x00\x00\x10\x00\x00\x00\x05abc"), 0)
	require.ErrorIs(t, err, io.ErrUnexpectedEOF)

	// An unknown packet type is read whole (so the stream stays in step)
	// and reported without arguments.
	in := append(gearman.AppendPacket(nil, gearman.MagicReq, 77, []byte("skip\x00me")),
		gearman.AppendPacket(nil, gearman.MagicReq, gearman.EchoReq, []byte("next"))...)
	got, err := readAll(t, in, 0)
	require.NoError(t, err)
	require.Equal(t, []frame{{magic: gearman.MagicReq, cmd: 77}, reqFrame(gearman.EchoReq, "next")}, got)
}

// TestReaderBodyOwnership: each frame's body is freshly allocated, so the
// arguments of one frame survive reading the next.
func TestReaderBodyOwnership(t *testing.T) {
	t.Parallel()
	in := append(gearman.AppendPacket(nil, gearman.MagicReq, gearman.CanDo, []byte("first")),
		gearman.AppendPacket(nil, gearman.MagicReq, gearman.CanDo, []byte("other"))...)
	r := gearman.NewReader(bytes.NewReader(in), 16)
	var f1, f2 gearman.Frame
	require.NoError(t, r.Next(&f1))
	first := f1.Packet.Arg(0)
	require.NoError(t, r.Next(&f2))
	require.Equal(t, "first", string(first))
	require.Equal(t, "other", string(f2.Packet.Arg(0)))
	require.Nil(t, f2.Packet.Arg(5))
}

// TestReaderCapturedClients decodes what real clients sent to (and
// received from) gearwork, captured on the wire: Debian's gearman tool in
// worker and client mode, PHP's gearman extension, Perl's Gearman::Worker
// and an admin session.
func TestReaderCapturedClients(t *testing.T) {
	t.Parallel()
	uuid := "a0e8fb82-eaab-11f1-afe7-02fc00000001"
	tests := map[string][]frame{
		"gearman-cli-worker.req": {
			reqFrame(gearman.CanDo, "rev"), reqFrame(gearman.GrabJobAll), reqFrame(gearman.PreSleep),
			reqFrame(gearman.GrabJobAll), reqFrame(gearman.WorkComplete, "H:gw:1", "HELLO"),
			reqFrame(gearman.GrabJobAll), reqFrame(gearman.PreSleep), reqFrame(gearman.GrabJobAll),
			reqFrame(gearman.WorkComplete, "H:gw:3", "PHP"),
		},
		"gearman-cli-worker.res": {
			resFrame(gearman.NoJob), resFrame(gearman.Noop),
			resFrame(gearman.JobAssignUniq, "H:gw:1", "rev", "key-1", "hello"),
			resFrame(gearman.NoJob), resFrame(gearman.Noop),
			resFrame(gearman.JobAssignUniq, "H:gw:3", "rev", uuid, "php"),
		},
		"gearman-cli-client.req": {
			reqFrame(gearman.SubmitJob, "rev", "key-1", "hello"),
		},
		"php-client.req": {
			reqFrame(gearman.OptionReq, "exceptions"),
			reqFrame(gearman.SubmitJobHighBg, "bgfn", "u-2", "bg-payload"),
			reqFrame(gearman.GetStatus, "H:gw:2"),
			reqFrame(gearman.SubmitJob, "rev", uuid, "php"),
		},
		"php-client.res": {
			resFrame(gearman.OptionRes, "exceptions"), resFrame(gearman.JobCreated, "H:gw:2"),
			resFrame(gearman.StatusRes, "H:gw:2", "1", "0", "0", "0"),
			resFrame(gearman.JobCreated, "H:gw:3"), resFrame(gearman.WorkComplete, "H:gw:3", "PHP"),
		},
		// Gearman::Worker 2.004 sends WORK_STATUS without the denominator
		// and an empty WORK_COMPLETE without the NUL after the handle.
		"perl-worker.req": {
			reqFrame(gearman.SetClientID, "fnxkkslweplydjpqrequbwrymcmcgf"),
			reqFrame(gearman.CanDoTimeout, "bgfn", "5"), reqFrame(gearman.GrabJob),
			{magic: gearman.MagicReq, cmd: gearman.WorkStatus, args: []string{"H:gw:2"}},
			reqFrame(gearman.WorkData, "H:gw:2", "d"),
			{magic: gearman.MagicReq, cmd: gearman.WorkComplete},
		},
		"admin.req": {{text: "status"}, {text: "show jobs"}},
		"admin.res": {{text: "bgfn\t0\t0\t0"}, {text: "rev\t0\t0\t0"}, {text: "."}, {text: "."}},
	}
	for name, want := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			b, err := os.ReadFile(filepath.Join("testdata", t.Name()[:strings.IndexByte(t.Name(), '/')], name))
			require.NoError(t, err)
			got, err := readAll(t, b, 1<<20)
			require.NoError(t, err)
			require.Equal(t, want, got)
		})
	}
}

// TestBorrowedBodies reads borrowed commands without allocating, where
// they are buffered whole or else into one reused buffer, each valid
// until the next frame is read, and every other body, and any borrowed
// body over 1 KiB, into a fresh one that later frames leave alone.
func TestBorrowedBodies(t *testing.T) {
	large := strings.Repeat("x", 2000)
	var in []byte
	in = gearman.AppendPacket(in, gearman.MagicReq, gearman.WorkComplete, []byte("H:1"), []byte("one"))
	in = gearman.AppendPacket(in, gearman.MagicReq, gearman.SubmitJobBg, []byte("f"), nil, []byte("kept"))
	in = gearman.AppendPacket(in, gearman.MagicReq, gearman.WorkComplete, []byte("H:2"), []byte(large))
	in = gearman.AppendPacket(in, gearman.MagicReq, gearman.WorkComplete, []byte("H:3"), []byte("two"))
	for _, split := range []bool{false, true} {
		var src io.Reader = bytes.NewReader(in)
		if split {
			// Every body arrives in parts: borrowed ones go to the
			// reused buffer.
			src = iotest.OneByteReader(src)
		}
		r := gearman.NewReader(src, 4096)
		r.Borrow(gearman.WorkComplete, gearman.WorkFail)
		var frames [4]gearman.Frame
		var bodies [4]string
		for i := range frames {
			require.NoError(t, r.Next(&frames[i]))
			require.True(t, frames[i].ArgsOK)
			bodies[i] = string(frames[i].Body)
		}
		require.Equal(t, [4]string{"H:1\x00one", "f\x00\x00kept", "H:2\x00" + large, "H:3\x00two"}, bodies, "split %v", split)
		// (Args are the Reader's, so earlier frames' bodies are compared.)
		require.Equal(t, "f\x00\x00kept", string(frames[1].Body), "a body that is not borrowed is not reused")
		require.Equal(t, "H:2\x00"+large, string(frames[2].Body), "a large body is not reused")
		require.Equal(t, []bool{true, false, false, true},
			[]bool{frames[0].Borrowed, frames[1].Borrowed, frames[2].Borrowed, frames[3].Borrowed}, "which bodies are borrowed")
	}

	// Reading a borrowed command allocates nothing, whether its body is
	// buffered whole or arrives in parts.
	one := gearman.AppendPacket(nil, gearman.MagicReq, gearman.WorkComplete, []byte("H:1"), []byte("result"))
	var src bytes.Reader
	for _, split := range []bool{false, true} {
		var rd io.Reader = &src
		if split {
			rd = iotest.OneByteReader(rd)
		}
		r := gearman.NewReader(rd, 4096)
		r.Borrow(gearman.WorkComplete)
		var f gearman.Frame
		allocs := testing.AllocsPerRun(100, func() {
			src.Reset(one)
			if err := r.Next(&f); err != nil || string(f.Packet.Args[1]) != "result" {
				t.Fatalf("Next: %v, %q", err, f.Packet.Args)
			}
		})
		require.Zero(t, allocs, "split %v", split)
	}
}

// TestReaderGrow grows the buffer between frames, with part of the next
// frame (and whole frames after it) buffered: every frame still decodes,
// and nothing is read from the source to move the buffered bytes.
func TestReaderGrow(t *testing.T) {
	t.Parallel()
	var in []byte
	var want []frame
	for i := range 40 {
		p := strings.Repeat(string(rune('a'+i%26)), 1+i*7%50)
		in = gearman.AppendPacket(in, gearman.MagicReq, gearman.EchoReq, []byte(p))
		want = append(want, reqFrame(gearman.EchoReq, p))
		if i == 20 {
			in = append(in, "status\n"...)
			want = append(want, frame{text: "status"})
		}
	}
	for _, at := range []int{0, 1, 2, 5, 20} {
		src := &countingReader{r: bytes.NewReader(in)}
		r := gearman.NewReader(src, 64)
		r.Borrow(gearman.EchoReq)
		require.Equal(t, 64, r.Size())
		var got []frame
		for i := 0; ; i++ {
			if i == at {
				before, buffered := src.reads, r.Buffered()
				r.Grow(1024)
				require.Equal(t, 1024, r.Size())
				require.Equal(t, buffered, r.Buffered(), "what was buffered stays buffered")
				require.Equal(t, before, src.reads, "growing reads nothing")
				r.Grow(512)
				require.Equal(t, 1024, r.Size(), "Grow never shrinks")
			}
			var f gearman.Frame
			err := r.Next(&f)
			if errors.Is(err, io.EOF) {
				break
			}
			require.NoError(t, err)
			if f.Text {
				got = append(got, frame{text: string(f.Line)})
				continue
			}
			fr := frame{magic: f.Packet.Magic, cmd: f.Packet.Command, ok: f.ArgsOK}
			for _, a := range f.Packet.Args {
				fr.args = append(fr.args, string(a))
			}
			got = append(got, fr)
		}
		require.Equal(t, want, got, "grown before frame %d", at)
	}
}

// countingReader counts the reads made of r.
type countingReader struct {
	r     io.Reader
	reads int
}

func (c *countingReader) Read(p []byte) (int, error) {
	c.reads++
	return c.r.Read(p)
}
