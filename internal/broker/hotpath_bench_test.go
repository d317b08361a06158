package broker

import "testing"

type discardOutbox struct{}

func (discardOutbox) Send(Event) {}

// BenchmarkHotPathNoPolicy measures Submit → Grab → Finish of a background
// job of a function without any lifecycle policy, in memory: the path that
// lifecycle features must not slow down.
func BenchmarkHotPathNoPolicy(b *testing.B) {
	br := New(Config{})
	client := br.NewSession("c", discardOutbox{})
	worker := br.NewSession("w", discardOutbox{})
	br.CanDo(worker, []byte("fn"), 0)
	payload := []byte("payload")
	fn := []byte("fn")
	done := func(uint64, bool, error) {}
	b.ReportAllocs()
	for b.Loop() {
		br.Submit(client, SubmitParams{Function: fn, Payload: payload, Background: true}, done)
		a, ok := br.Grab(worker)
		if !ok {
			b.Fatal("no job")
		}
		if err := br.Finish(worker, a.Seq, Complete, nil); err != nil {
			b.Fatal(err)
		}
	}
}

// The lifecycle features cost the no-policy hot path no allocation: a
// background Submit → Grab → Finish allocates the job and its extra
// record, nothing else.
func TestHotPathAllocations(t *testing.T) {
	br := New(Config{})
	client := br.NewSession("c", discardOutbox{})
	worker := br.NewSession("w", discardOutbox{})
	br.CanDo(worker, []byte("fn"), 0)
	payload := []byte("payload")
	fn := []byte("fn")
	done := func(uint64, bool, error) {}
	allocs := testing.AllocsPerRun(1000, func() {
		br.Submit(client, SubmitParams{Function: fn, Payload: payload, Background: true}, done)
		a, ok := br.Grab(worker)
		if !ok {
			t.Fatal("no job")
		}
		if err := br.Finish(worker, a.Seq, Complete, nil); err != nil {
			t.Fatal(err)
		}
	})
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
			br := New(Config{DefaultPolicy: p})
			client := br.NewSession("c", discardOutbox{})
			worker := br.NewSession("w", discardOutbox{})
			br.CanDo(worker, []byte("fn"), 0)
			payload := []byte("payload")
			fn := []byte("fn")
			done := func(uint64, bool, error) {}
			b.ReportAllocs()
			for b.Loop() {
				br.Submit(client, SubmitParams{Function: fn, Payload: payload, Background: true}, done)
				a, ok := br.Grab(worker)
				if !ok {
					b.Fatal("no job")
				}
				if err := br.Finish(worker, a.Seq, Complete, nil); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// Without a store, the extra of a job its worker completed serves the
// next job that starts: a background Submit → Grab → Finish allocates the
// job alone.
func TestHotPathReusesExtras(t *testing.T) {
	br := New(Config{})
	client := br.NewSession("c", discardOutbox{})
	worker := br.NewSession("w", discardOutbox{})
	br.CanDo(worker, []byte("fn"), 0)
	payload := []byte("payload")
	fn := []byte("fn")
	done := func(uint64, bool, error) {}
	allocs := testing.AllocsPerRun(1000, func() {
		br.Submit(client, SubmitParams{Function: fn, Payload: payload, Background: true}, done)
		a, ok := br.Grab(worker)
		if !ok {
			t.Fatal("no job")
		}
		if err := br.Finish(worker, a.Seq, Complete, nil); err != nil {
			t.Fatal(err)
		}
	})
	if allocs > 1 {
		t.Fatalf("hot path allocates %v times per job, want 1 (the job)", allocs)
	}
}
