package broker

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
)

type discardOutbox struct{}

func (discardOutbox) Send(Event) {}

// hotPathJob readies br with a client and a worker that can do "fn", and
// returns one trip of a job down the hot path: a background Submit, then
// the worker's Grab and Finish of it.
func hotPathJob(tb testing.TB, br *Broker) func() {
	return roundTrip(tb, br, true, nil)
}

// roundTrip readies br with a client and a worker that can do "fn", and
// returns one trip of a job: the client's Submit (background or not),
// the worker's Grab and its Finish with result.
func roundTrip(tb testing.TB, br *Broker, background bool, result []byte) func() {
	client := br.NewSession("c", discardOutbox{})
	worker := br.NewSession("w", discardOutbox{})
	br.CanDo(worker, []byte("fn"), 0)
	payload := []byte("payload")
	fn := []byte("fn")
	done := func(uint64, bool, error) {}
	return func() {
		br.Submit(client, SubmitParams{Function: fn, Payload: payload, Background: background}, done)
		a, ok := br.Grab(worker)
		if !ok {
			tb.Fatal("no job")
		}
		if err := br.Finish(worker, a.Seq, Complete, result); err != nil {
			tb.Fatal(err)
		}
	}
}

// BenchmarkHotPathNoPolicy measures Submit → Grab → Finish of a background
// job of a function without any lifecycle policy, in memory: the path that
// lifecycle features must not slow down.
func BenchmarkHotPathNoPolicy(b *testing.B) {
	benchHotPath(b, New(Config{}))
}

// benchHotPath measures one trip of a job down br's hot path (hotPathJob).
func benchHotPath(b *testing.B, br *Broker) {
	job := hotPathJob(b, br)
	b.ReportAllocs()
	for b.Loop() {
		job()
	}
}

// The lifecycle features cost the no-policy hot path no allocation: a
// background Submit → Grab → Finish allocates the job and its extra
// record, nothing else.
func TestHotPathAllocations(t *testing.T) {
	allocs := testing.AllocsPerRun(1000, hotPathJob(t, New(Config{})))
	if allocs > 2 {
		t.Fatalf("hot path allocates %v times per job, want at most 2", allocs)
	}
}

// BenchmarkHotPathHistory is BenchmarkHotPathNoPolicy with the history at
// its default (every ended job's record kept, 10,000 per function) and
// off (history 0): what one record per job costs the hot path.
func BenchmarkHotPathHistory(b *testing.B) {
	for _, mode := range []string{"default", "off"} {
		b.Run("history="+mode, func(b *testing.B) {
			var p Policy
			if mode == "off" {
				if err := p.Set("history", "0"); err != nil {
					b.Fatal(err)
				}
			}
			benchHotPath(b, New(Config{DefaultPolicy: p}))
		})
	}
}

// Without a store, the extra of a job its worker completed serves the
// next job that starts: a background Submit → Grab → Finish allocates the
// job alone.
func TestHotPathReusesExtras(t *testing.T) {
	allocs := testing.AllocsPerRun(1000, hotPathJob(t, New(Config{})))
	if allocs > 1 {
		t.Fatalf("hot path allocates %v times per job, want 1 (the job)", allocs)
	}
}

// foregroundJob readies br with a client and a worker that can do "fn",
// and returns one round trip of a foreground job: the client's Submit, the
// worker's Grab and its Finish with a result, which the client receives.
func foregroundJob(tb testing.TB, br *Broker) func() {
	return roundTrip(tb, br, false, []byte("result"))
}

// BenchmarkHotPathForeground measures the broker's part of a foreground
// round trip (SUBMIT_JOB → grab → WORK_COMPLETE forwarded to the client),
// the record of the ended job included.
func BenchmarkHotPathForeground(b *testing.B) {
	job := foregroundJob(b, New(Config{}))
	b.ReportAllocs()
	for b.Loop() {
		job()
	}
}

// Without a store, a foreground job takes the extra (and the room for its
// client) that a completed job left, and its record needs no extra to say
// it ran in the foreground: the round trip allocates the job alone.
func TestForegroundReusesExtras(t *testing.T) {
	br := New(Config{})
	job := foregroundJob(t, br)
	for range 20000 { // the history at its count: records are reused too
		job()
	}
	allocs := testing.AllocsPerRun(1000, job)
	if allocs > 1 {
		t.Fatalf("foreground round trip allocates %v times per job, want 1 (the job)", allocs)
	}
	// The kept records still say how their jobs ran, and for whom.
	for _, seq := range []uint64{br.nextSeq - 1, br.nextSeq - 1000} {
		snap, ok := br.Job(context.Background(), seq)
		require.True(t, ok)
		require.True(t, snap.Final)
		require.False(t, snap.Background, "job %d ran in the foreground", seq)
		require.Equal(t, []byte("result"), snap.Result)
	}
}
