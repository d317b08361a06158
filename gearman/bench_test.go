package gearman

import (
	"bytes"
	"testing"
)

// submitArgs are the arguments of a typical SUBMIT_JOB_BG: a function name,
// no unique and a 64-byte payload.
func submitArgs() (fn, unique, payload []byte) {
	return []byte("resize_image"), nil, bytes.Repeat([]byte{'x'}, 64)
}

func BenchmarkAppendPacket(b *testing.B) {
	fn, unique, payload := submitArgs()
	buf := make([]byte, 0, 256)
	b.ReportAllocs()
	b.SetBytes(int64(len(AppendPacket(nil, MagicReq, SubmitJobBg, fn, unique, payload))))
	for b.Loop() {
		buf = AppendPacket(buf[:0], MagicReq, SubmitJobBg, fn, unique, payload)
	}
}

// loopReader serves the same bytes over and over, like a client that
// pipelines submits without end.
type loopReader struct {
	data []byte
	off  int
}

func (l *loopReader) Read(p []byte) (int, error) {
	n := copy(p, l.data[l.off:])
	l.off = (l.off + n) % len(l.data)
	return n, nil
}

func BenchmarkReaderNextPipelinedSubmits(b *testing.B) {
	fn, unique, payload := submitArgs()
	var stream []byte
	for range 1024 {
		stream = AppendPacket(stream, MagicReq, SubmitJobBg, fn, unique, payload)
	}
	r := NewReader(&loopReader{data: stream}, 4096)
	var f Frame
	b.ReportAllocs()
	b.SetBytes(int64(len(stream) / 1024))
	for b.Loop() {
		if err := r.Next(&f); err != nil {
			b.Fatal(err)
		}
		if !f.ArgsOK || f.Packet.Command != SubmitJobBg || len(f.Packet.Args[2]) != len(payload) {
			b.Fatalf("decoded %+v", f.Packet)
		}
	}
}

func BenchmarkReaderNextPipelinedEchoes(b *testing.B) {
	_, _, payload := submitArgs()
	var stream []byte
	for range 1024 {
		stream = AppendPacket(stream, MagicReq, EchoReq, payload)
	}
	r := NewReader(&loopReader{data: stream}, 16<<10)
	r.Borrow(EchoReq)
	var f Frame
	b.ReportAllocs()
	b.SetBytes(int64(len(stream) / 1024))
	for b.Loop() {
		if err := r.Next(&f); err != nil {
			b.Fatal(err)
		}
		if !f.ArgsOK || f.Packet.Command != EchoReq || len(f.Packet.Args[0]) != len(payload) {
			b.Fatalf("decoded %+v", f.Packet)
		}
	}
}
