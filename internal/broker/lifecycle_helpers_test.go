package broker

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/internal/clocktest"
	"github.com/gearwork/gearwork/internal/store/memory"
)

func newLCClock() *clocktest.Clock {
	return clocktest.New(time.Date(2026, 1, 5, 10, 0, 0, 0, time.UTC))
}

func kinds(evs []Event) []EventKind {
	out := make([]EventKind, len(evs))
	for i, e := range evs {
		out[i] = e.Kind
	}
	return out
}

// lcBundle is one broker under test with a client and a worker session.
type lcBundle struct {
	b      *Broker
	clock  *clocktest.Clock
	store  *memory.Store // nil without a store
	client *Session
	cout   *recorder
	worker *Session
	wout   *recorder
}

type lcOpts struct {
	cfg   Config
	store *memory.Store
	clock *clocktest.Clock
	// functions the worker registers.
	can []string
}

// setupLC starts a broker with a fake clock (replaying the store, if any)
// and stops it at cleanup. Tests fire timers themselves with RunTimers
// after moving the clock; the broker's own timer goroutine, which may fire
// them too, sleeps by the real clock.
func setupLC(t *testing.T, o lcOpts) *lcBundle {
	t.Helper()
	tb := &lcBundle{clock: o.clock, store: o.store}
	if tb.clock == nil {
		tb.clock = newLCClock()
	}
	cfg := o.cfg
	cfg.Clock = tb.clock
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.RandFunc == nil {
		cfg.RandFunc = func() float64 { return 0 }
	}
	if o.store != nil {
		cfg.Store = o.store
	}
	tb.b = New(cfg)
	require.NoError(t, tb.b.Start(context.Background()))
	t.Cleanup(tb.b.Stop)
	tb.cout, tb.wout = &recorder{}, &recorder{}
	tb.client = tb.b.NewSession("127.0.0.1:1000", tb.cout)
	tb.worker = tb.b.NewSession("127.0.0.1:1001", tb.wout)
	for _, fn := range o.can {
		tb.b.CanDo(tb.worker, []byte(fn), 0)
	}
	return tb
}

// submit submits a job and waits until it is acknowledged (durable).
func (tb *lcBundle) submit(t *testing.T, p SubmitParams) uint64 {
	t.Helper()
	seq, err := tb.trySubmit(t, p)
	require.NoError(t, err)
	return seq
}

func (tb *lcBundle) trySubmit(t *testing.T, p SubmitParams) (uint64, error) {
	t.Helper()
	type res struct {
		seq uint64
		err error
	}
	ch := make(chan res, 1)
	tb.b.Submit(tb.client, p, func(seq uint64, _ bool, err error) { ch <- res{seq, err} })
	select {
	case r := <-ch:
		return r.seq, r.err
	case <-time.After(30 * time.Second):
		t.Fatal("submit was not acknowledged")
		return 0, nil
	}
}

func lcBG(fn, unique, payload string) SubmitParams {
	p := SubmitParams{Function: []byte(fn), Payload: []byte(payload), Priority: Normal, Background: true}
	if unique != "" {
		p.Unique = []byte(unique)
	}
	return p
}

// grab grabs a job for the worker and fails the test if there is none.
func (tb *lcBundle) grab(t *testing.T) Assignment {
	t.Helper()
	a, ok := tb.b.Grab(tb.worker)
	require.True(t, ok, "expected a job to grab")
	return a
}

func (tb *lcBundle) noJob(t *testing.T) {
	t.Helper()
	a, ok := tb.b.Grab(tb.worker)
	require.False(t, ok, "expected no job, got %s %q", tb.b.Handle(a.Seq), a.Payload)
}

// advance moves the clock and fires due timers.
func (tb *lcBundle) advance(d time.Duration) {
	tb.clock.Add(d)
	tb.b.RunTimers()
}

// restart stops the broker, then starts a new one on the same store and
// clock.
func (tb *lcBundle) restart(t *testing.T, o lcOpts) *lcBundle {
	t.Helper()
	require.NotNil(t, tb.store)
	tb.b.Stop()
	o.store = tb.store
	o.clock = tb.clock
	return setupLC(t, o)
}

func policies(name string, p Policy) map[string]Policy { return map[string]Policy{name: p} }

// noJitter is a backoff without randomness, for exact waits.
func noJitter(initial time.Duration) Backoff {
	return Backoff{Initial: initial, Max: time.Hour, Multiplier: 2, Jitter: -1}
}

// The helpers below call the broker's lifecycle reads and writes and fail
// the test on an error.

func mustDeadLetters(t testing.TB, b *Broker, function string) []DeadLetter {
	t.Helper()
	dl, err := b.DeadLetters(context.Background(), function, 0)
	require.NoError(t, err)
	return dl
}

// onlyDeadLetter checks that no job is left and that function has one
// dead letter, which ended after attempts with lastError, and returns it.
func (tb *lcBundle) onlyDeadLetter(t *testing.T, function, lastError string, attempts uint32) DeadLetter {
	t.Helper()
	require.Zero(t, tb.b.JobCount())
	dl := mustDeadLetters(t, tb.b, function)
	require.Len(t, dl, 1)
	require.Equal(t, lastError, dl[0].LastError)
	require.Equal(t, attempts, dl[0].Attempts)
	return dl[0]
}

func mustDeadLetterByHandle(t testing.TB, b *Broker, handle []byte) (DeadLetter, bool) {
	t.Helper()
	dl, ok, err := b.DeadLetterByHandle(context.Background(), handle)
	require.NoError(t, err)
	return dl, ok
}

func mustResult(t testing.TB, b *Broker, handle []byte) (Result, bool) {
	t.Helper()
	r, ok, err := b.Result(context.Background(), handle)
	require.NoError(t, err)
	return r, ok
}

func mustResultByUnique(t testing.TB, b *Broker, function, unique string) (Result, bool) {
	t.Helper()
	r, ok, err := b.ResultByUnique(context.Background(), function, unique)
	require.NoError(t, err)
	return r, ok
}

func mustRetryDeadLetters(t testing.TB, b *Broker, function string) int {
	t.Helper()
	n, err := b.RetryDeadLetters(context.Background(), function)
	require.NoError(t, err)
	return n
}

func mustPurgeDeadLetters(t testing.TB, b *Broker, function string) int {
	t.Helper()
	n, err := b.PurgeDeadLetters(context.Background(), function)
	require.NoError(t, err)
	return n
}
