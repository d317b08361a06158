package broker

import (
	"bytes"
	"log/slog"
	"testing"
)

// benchOutbox drops every event, as a connection that is never read would
// not: it measures the broker alone.
type benchOutbox struct{}

func (benchOutbox) Send(Event) {}

type benchBundle struct {
	b      *Broker
	client *Session
	worker *Session
	params SubmitParams
	done   DoneFunc
}

// newBenchBundle returns a started broker (memory only) with a client and a
// worker session for function "bench", and the params of a 64-byte
// background job.
func newBenchBundle(b *testing.B) *benchBundle {
	b.Helper()
	br := New(Config{Logger: slog.New(slog.DiscardHandler)})
	if err := br.Start(b.Context()); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(br.Stop)
	bb := &benchBundle{
		b:      br,
		client: br.NewSession("client", benchOutbox{}),
		worker: br.NewSession("worker", benchOutbox{}),
		params: SubmitParams{Function: []byte("bench"), Payload: bytes.Repeat([]byte{'x'}, 64),
			Priority: Normal, Background: true},
		done: func(uint64, bool, error) {},
	}
	br.CanDo(bb.worker, []byte("bench"), 0)
	return bb
}

// submit queues n jobs.
func (bb *benchBundle) submit(n int) {
	for range n {
		bb.b.Submit(bb.client, bb.params, bb.done)
	}
}

// submitLoop submits one job per iteration of b's loop and, untimed, works
// off the queued jobs every drainEvery submits.
func (bb *benchBundle) submitLoop(b *testing.B) {
	n := 0
	for b.Loop() {
		bb.b.Submit(bb.client, bb.params, bb.done)
		if n++; n == drainEvery {
			b.StopTimer()
			bb.work(b, n)
			n = 0
			b.StartTimer()
		}
	}
}

// work grabs and completes n queued jobs.
func (bb *benchBundle) work(b *testing.B, n int) {
	for range n {
		a, ok := bb.b.Grab(bb.worker)
		if !ok {
			b.Fatal("no job to grab")
		}
		if err := bb.b.Finish(bb.worker, a.Seq, Complete, nil); err != nil {
			b.Fatal(err)
		}
	}
}

// drainEvery is how many submits run between untimed drains, which keep
// the queue (and memory) bounded however large b.N grows.
const drainEvery = 4096

func BenchmarkSubmitBackground(b *testing.B) {
	bb := newBenchBundle(b)
	b.ReportAllocs()
	bb.submitLoop(b)
}

func BenchmarkSubmitGrabFinish(b *testing.B) {
	bb := newBenchBundle(b)
	b.ReportAllocs()
	for b.Loop() {
		bb.b.Submit(bb.client, bb.params, bb.done)
		bb.work(b, 1)
	}
}

// BenchmarkSubmitDeepQueue submits with a million jobs queued; jobs are
// taken from the front between timed stretches so the depth stays at a
// million. Compare with BenchmarkSubmitBackground: a queue's depth should
// not change the cost of adding to it.
func BenchmarkSubmitDeepQueue(b *testing.B) {
	const depth = 1_000_000
	bb := newBenchBundle(b)
	bb.submit(depth)
	b.ReportAllocs()
	bb.submitLoop(b)
	if got := bb.b.JobCount(); got < depth {
		b.Fatalf("%d jobs queued, want at least %d", got, depth)
	}
}

// BenchmarkGrabFinishDeepQueue grabs and completes jobs with a million
// queued, as a drain of a deep queue does; jobs are submitted at the back
// between timed stretches so the depth stays at a million.
func BenchmarkGrabFinishDeepQueue(b *testing.B) {
	const depth = 1_000_000
	bb := newBenchBundle(b)
	bb.submit(depth)
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		bb.work(b, 1)
		if n++; n == drainEvery {
			b.StopTimer()
			bb.submit(n)
			n = 0
			b.StartTimer()
		}
	}
}
