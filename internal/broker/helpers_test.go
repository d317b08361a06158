package broker

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/internal/clocktest"
)

// recorder is an Outbox that keeps every event, with a copy of its data.
type recorder struct {
	mu     sync.Mutex
	events []Event
}

func (r *recorder) Send(ev Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	ev.Data = slices.Clone(ev.Data)
	r.events = append(r.events, ev)
}

// take returns and forgets the events so far.
func (r *recorder) take() []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	ev := r.events
	r.events = nil
	return ev
}

// testStart is where the broker tests' fake clocks start (2023-11-14
// 22:13:20 UTC) unless a test needs another time.
var testStart = time.Unix(1_700_000_000, 0)

// newTestClock returns a fake clock at testStart.
func newTestClock() *clocktest.Clock { return clocktest.New(testStart) }

type testBundle struct {
	b     *Broker
	clock *clocktest.Clock
}

func setup(t *testing.T, cfg Config) *testBundle {
	t.Helper()
	clock := newTestClock()
	cfg.Clock = clock
	b := New(cfg)
	require.NoError(t, b.Start(context.Background()))
	t.Cleanup(b.Stop)
	return &testBundle{b: b, clock: clock}
}

func (tb *testBundle) session() (*Session, *recorder) {
	r := &recorder{}
	return tb.b.NewSession("127.0.0.1:1", r), r
}

// clientAndWorker returns a client session and a worker session that can
// do fn.
func (tb *testBundle) clientAndWorker(fn string) (client, worker *Session) {
	client, _ = tb.session()
	worker, _ = tb.worker(fn)
	return client, worker
}

// worker returns a session that can do fn, and its recorder.
func (tb *testBundle) worker(fn string) (*Session, *recorder) {
	w, out := tb.session()
	tb.b.CanDo(w, []byte(fn), 0)
	return w, out
}

// grab grabs a job for w and fails the test if there is none.
func (tb *testBundle) grab(t *testing.T, w *Session) Assignment {
	t.Helper()
	a, ok := tb.b.Grab(w)
	require.True(t, ok, "expected a job to grab")
	return a
}

type result struct {
	seq     uint64
	created bool
	err     error
}

func (tb *testBundle) submit(t *testing.T, s *Session, p SubmitParams) result {
	t.Helper()
	var res *result
	tb.b.Submit(s, p, func(seq uint64, created bool, err error) { res = &result{seq, created, err} })
	require.NotNil(t, res, "submit without a store must answer synchronously")
	return *res
}

func bg(fn, unique, payload string, p Priority) SubmitParams {
	return SubmitParams{Function: []byte(fn), Unique: []byte(unique), Payload: []byte(payload), Priority: p, Background: true}
}

func fg(fn, unique, payload string) SubmitParams {
	return SubmitParams{Function: []byte(fn), Unique: []byte(unique), Payload: []byte(payload), Priority: Normal}
}
