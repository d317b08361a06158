package gearman_test

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/gearwork/gearwork/gearman"
)

// fuzzMaxBody is the body limit of the fuzzed Reader: headers announcing
// more must be refused before anything is allocated for the body.
const fuzzMaxBody = 4096

// chunkReader returns data in pieces whose sizes (1 to 16 bytes) come from
// sizes, cycling, so that headers, bodies and lines are split at every
// position across reads.
type chunkReader struct {
	data  []byte
	sizes []byte
	i     int
}

func (c *chunkReader) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	n := 1
	if len(c.sizes) > 0 {
		n = int(c.sizes[c.i%len(c.sizes)]%16) + 1
		c.i++
	}
	n = min(n, len(p), len(c.data))
	copy(p, c.data[:n])
	c.data = c.data[n:]
	return n, nil
}

// decoded is what one Next call produced, in a comparable form.
type decoded struct {
	text  bool
	line  string
	cmd   gearman.Command
	magic gearman.Magic
	body  string
	argsN int
	ok    bool
	err   string
}

// decodeAll runs a Reader over r until an error, checking the invariants
// of every frame.
func decodeAll(t *testing.T, r io.Reader, limit int) []decoded {
	rd := gearman.NewReader(r, 16)
	rd.MaxBody = fuzzMaxBody
	// Borrowed bodies are decoded alike, where they are buffered or not.
	rd.Borrow(gearman.EchoReq, gearman.WorkComplete)
	var out []decoded
	for range limit {
		var f gearman.Frame
		err := rd.Next(&f)
		if err != nil {
			if !errors.Is(err, io.EOF) {
				out = append(out, decoded{err: err.Error()})
			}
			return out
		}
		if f.Text {
			if len(f.Line) >= gearman.MaxTextLine || bytes.ContainsAny(f.Line, "\n") {
				t.Fatalf("bad text line %q", f.Line)
			}
			out = append(out, decoded{text: true, line: string(f.Line)})
			continue
		}
		if cap(f.Body) > fuzzMaxBody {
			t.Fatalf("allocated a %d-byte body with MaxBody %d", cap(f.Body), fuzzMaxBody)
		}
		p := f.Packet
		if f.ArgsOK {
			if !p.Command.Valid() || len(p.Args) != p.Command.NumArgs() {
				t.Fatalf("%s: ArgsOK with %d arguments", p.Command, len(p.Args))
			}
			if n := len(p.Args); n > 0 && !bytes.Equal(bytes.Join(p.Args, []byte{0}), f.Body) {
				t.Fatalf("%s: arguments %q do not make up body %q", p.Command, p.Args, f.Body)
			}
		}
		out = append(out, decoded{cmd: p.Command, magic: p.Magic, body: string(f.Body),
			argsN: len(p.Args), ok: f.ArgsOK})
	}
	t.Fatalf("more than %d frames from %d bytes", limit, limit-1)
	return nil
}

// FuzzReader feeds arbitrary bytes to the frame decoder in random small
// chunks. It must never panic, never allocate a body beyond MaxBody, and
// decode the same frames however the input is split.
func FuzzReader(f *testing.F) {
	f.Add([]byte("status\r\n"), []byte{0})
	f.Add(gearman.AppendPacket(nil, gearman.MagicReq, gearman.SubmitJob, []byte("f"), []byte("u"), []byte("x\x00y")), []byte{3, 1, 7})
	f.Add([]byte("\x00REQ\x00\x00\x00\x07\xff\xff\xff\xff"), []byte{11})
	f.Add([]byte("\x00RES\x00\x00\x00\x63\x00\x00\x00\x02ab"), []byte{2, 5})
	f.Fuzz(func(t *testing.T, data, sizes []byte) {
		chunked := decodeAll(t, &chunkReader{data: data, sizes: sizes}, len(data)+1)
		whole := decodeAll(t, bytes.NewReader(data), len(data)+1)
		if len(chunked) != len(whole) {
			t.Fatalf("chunked read gave %d frames, whole read %d", len(chunked), len(whole))
		}
		for i := range whole {
			if chunked[i] != whole[i] {
				t.Fatalf("frame %d: chunked %+v, whole %+v", i, chunked[i], whole[i])
			}
		}
	})
}

// FuzzParseAdmin parses arbitrary admin lines. It must never panic; a
// parsed command has no upper-case ASCII letters and, with its arguments, is exactly the
// words of the line.
func FuzzParseAdmin(f *testing.F) {
	for _, s := range []string{"status", "show unique jobs", "maxqueue fn 1 2 3", "cancel job H:x:1",
		"SHOW\tJOBS", "shutdown graceful", "", " \x00", "drop function"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		cmd, err := gearman.ParseAdmin(line)
		words := strings.Fields(string(bytes.TrimRight(line, "\r\n\x00")))
		if err != nil {
			if len(words) != 0 || !errors.Is(err, gearman.ErrEmptyAdminLine) {
				t.Fatalf("%q: unexpected error %v", line, err)
			}
			return
		}
		if cmd.Name == "" || strings.ContainsFunc(cmd.Name, func(r rune) bool { return r >= 'A' && r <= 'Z' }) {
			t.Fatalf("%q: bad command name %q", line, cmd.Name)
		}
		got := append(strings.Fields(cmd.Name), cmd.Args...)
		if len(got) != len(words) {
			t.Fatalf("%q: parsed %q %q from words %q", line, cmd.Name, cmd.Args, words)
		}
		for i := range words {
			if i < len(strings.Fields(cmd.Name)) {
				if !strings.EqualFold(got[i], words[i]) {
					t.Fatalf("%q: command word %q is not %q", line, got[i], words[i])
				}
			} else if got[i] != words[i] {
				t.Fatalf("%q: argument %q is not %q", line, got[i], words[i])
			}
		}
	})
}
