package gearman_test

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/gearman"
)

// splitReader returns its first head bytes in one read, then the rest in
// reads of at most chunk bytes.
type splitReader struct {
	b     []byte
	head  int
	chunk int
}

func (s *splitReader) Read(p []byte) (int, error) {
	if len(s.b) == 0 {
		return 0, io.EOF
	}
	n := s.chunk
	if s.head > 0 {
		n, s.head = s.head, 0
	}
	n = copy(p, s.b[:min(n, len(s.b))])
	s.b = s.b[n:]
	return n, nil
}

// TestReaderFramesSplitAtEveryOffset decodes one stream of frames (small
// bodies decoded in place, borrowed bodies at and past the size borrowed
// in place, a body larger than the read buffer, empty bodies, admin lines)
// with the stream cut at every offset, the reader's buffer grown between
// two frames as a server grows it, and a borrowed body checked to hold
// until the next Next (after the server's HasFrame, Buffered and Grow):
// every frame decodes the same, whatever the cut, the reads and the
// growth.
func TestReaderFramesSplitAtEveryOffset(t *testing.T) {
	t.Parallel()
	var in []byte
	var want []frame
	add := func(c gearman.Command, args ...string) {
		bs := make([][]byte, len(args))
		for i, a := range args {
			bs[i] = []byte(a)
		}
		in = gearman.AppendPacket(in, gearman.MagicReq, c, bs...)
		want = append(want, reqFrame(c, args...))
	}
	add(gearman.EchoReq, "ping")
	add(gearman.WorkComplete, "H:1", strings.Repeat("a", 1020)) // a body of 1,024 bytes: borrowed
	add(gearman.SubmitJobBg, "fn", "", "payload")
	add(gearman.WorkData, "H:2", strings.Repeat("b", 1021)) // 1,025: allocated
	add(gearman.PreSleep)
	add(gearman.GrabJobAll)
	in = append(in, "status\r\n"...)
	want = append(want, frame{text: "status"})
	add(gearman.SubmitJob, "fn", "u", strings.Repeat("c", 5000)) // past the 4 KiB buffer
	add(gearman.EchoReq, "")
	add(gearman.WorkStatus, "H:3", "1", "2")
	add(gearman.WorkFail, "H:4")
	add(gearman.EchoReq, strings.Repeat("d", 700))

	for cut := 0; cut <= len(in); cut++ {
		for _, chunk := range []int{1, 777, len(in)} {
			if chunk == 1 && cut%64 != 0 {
				continue // reads of a byte cut everything everywhere anyway
			}
			growAt := cut % (len(want) + 1)
			r := gearman.NewReader(&splitReader{b: in, head: cut, chunk: chunk}, 4096)
			r.Borrow(gearman.WorkComplete, gearman.WorkException, gearman.WorkFail,
				gearman.WorkStatus, gearman.WorkData, gearman.WorkWarning, gearman.EchoReq)
			var got []frame
			for i := 0; ; i++ {
				var f gearman.Frame
				err := r.Next(&f)
				if errors.Is(err, io.EOF) {
					break
				}
				require.NoError(t, err, "cut %d, reads of %d, frame %d", cut, chunk, i)
				if f.Text {
					got = append(got, frame{text: string(f.Line)})
				} else {
					fr := frame{magic: f.Packet.Magic, cmd: f.Packet.Command, ok: f.ArgsOK}
					for _, a := range f.Packet.Args {
						fr.args = append(fr.args, string(a))
					}
					got = append(got, fr)
				}
				body := bytes.Clone(f.Body)
				// What a server does between two frames.
				r.HasFrame()
				_ = r.Buffered()
				if i == growAt {
					r.Grow(16 << 10)
				}
				r.HasFrame()
				require.Equal(t, body, f.Body, "cut %d, reads of %d: frame %d's body changed before the next Next", cut, chunk, i)
			}
			require.Equal(t, want, got, "cut %d, reads of %d, grown after frame %d", cut, chunk, growAt)
		}
	}
}
