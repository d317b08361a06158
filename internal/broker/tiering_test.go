package broker_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/internal/broker"
	"github.com/gearwork/gearwork/internal/store"
	"github.com/gearwork/gearwork/internal/store/memory"
)

func startBroker(t *testing.T, cfg broker.Config) *broker.Broker {
	t.Helper()
	b := broker.New(cfg)
	require.NoError(t, b.Start(context.Background()))
	t.Cleanup(b.Stop)
	return b
}

// grabAll grabs jobs of function f until there are none and returns their
// payloads by sequence number, finishing each one.
func grabAll(t *testing.T, b *broker.Broker, f string) map[uint64]string {
	t.Helper()
	w := b.NewSession("worker", discard{})
	defer b.CloseSession(w)
	b.CanDo(w, []byte(f), 0)
	got := map[uint64]string{}
	for {
		a, ok := b.Grab(w)
		if !ok {
			return got
		}
		got[a.Seq] = string(a.Payload)
		require.NoError(t, b.Finish(w, a.Seq, broker.Complete, nil))
	}
}

// submitFour submits n background jobs of f with 4-byte payloads and
// returns their payloads by sequence number.
func submitFour(t *testing.T, b *broker.Broker, n int) map[uint64]string {
	t.Helper()
	c := b.NewSession("client", discard{})
	want := map[uint64]string{}
	for i := range n {
		p := fmt.Sprintf("p%03d", i)
		want[submitBg(t, b, c, p)] = p
	}
	return want
}

// requireTiering checks b's TieringStats.
func requireTiering(t *testing.T, b *broker.Broker, inMem int64, onDisk int) {
	t.Helper()
	gotMem, gotDisk := b.TieringStats()
	require.Equal(t, inMem, gotMem, "payload bytes in memory")
	require.Equal(t, onDisk, gotDisk, "payloads on disk only")
}

func TestTieringKeepsPayloadsBeyondBudgetOnDisk(t *testing.T) {
	t.Parallel()
	st := memory.New()
	b := startBroker(t, broker.Config{Store: st, MemoryBudget: 10})
	want := submitFour(t, b, 5)
	requireTiering(t, b, 8, 3) // two 4-byte payloads fit a 10-byte budget

	require.Equal(t, want, grabAll(t, b, "f"), "payloads on disk must be read back when handed out")
	requireTiering(t, b, 0, 0)
}

func TestTieringRetryKeepsPayload(t *testing.T) {
	t.Parallel()
	st := memory.New()
	b := startBroker(t, broker.Config{Store: st, MemoryBudget: -1})
	c := b.NewSession("client", discard{})
	seq := submitBg(t, b, c, "the payload")
	_, onDisk := b.TieringStats()
	require.Equal(t, 1, onDisk)

	w := b.NewSession("w", discard{})
	b.CanDo(w, []byte("f"), 0)
	a, ok := b.Grab(w)
	require.True(t, ok)
	require.Equal(t, "the payload", string(a.Payload))
	b.CloseSession(w) // taken back: the retry record is rewritten
	b.Stop()          // flush the committer

	var rec []store.Job
	require.NoError(t, st.Load(context.Background(), func(j store.Job) error {
		rec = append(rec, j)
		return nil
	}))
	require.Len(t, rec, 1)
	require.Equal(t, seq, rec[0].Seq)
	require.Equal(t, uint32(1), rec[0].Retries)
	require.Equal(t, "the payload", string(rec[0].Payload), "rewriting the retry count must not lose the payload")

	// After a restart with the same budget the job is handed out whole.
	b2 := startBroker(t, broker.Config{Store: st.Reopen(), MemoryBudget: -1})
	_, onDisk = b2.TieringStats()
	require.Equal(t, 1, onDisk)
	require.Equal(t, map[uint64]string{seq: "the payload"}, grabAll(t, b2, "f"))
}

func TestTieringReplayAndUniques(t *testing.T) {
	t.Parallel()
	st := memory.New()
	b := startBroker(t, broker.Config{Store: st, MemoryBudget: 6})
	c := b.NewSession("client", discard{})
	done := make(chan uint64, 2)
	for range 2 {
		b.Submit(c, broker.SubmitParams{Function: []byte("f"), Unique: []byte("u1"), Payload: []byte("abcdefgh"), Background: true},
			func(seq uint64, _ bool, err error) {
				require.NoError(t, err)
				done <- seq
			})
	}
	first, second := <-done, <-done
	require.Equal(t, first, second, "a unique whose payload is on disk must still coalesce")
	b.Stop()

	b2 := startBroker(t, broker.Config{Store: st.Reopen(), MemoryBudget: 6})
	inMem, onDisk := b2.TieringStats()
	require.Zero(t, inMem)
	require.Equal(t, 1, onDisk)
	require.Equal(t, map[uint64]string{first: "abcdefgh"}, grabAll(t, b2, "f"))
}

// failingReader fails ReadPayload for one job.
type failingReader struct {
	*memory.Store
	bad uint64
}

func (f *failingReader) ReadPayload(ctx context.Context, seq uint64) ([]byte, error) {
	if seq == f.bad {
		return nil, errors.New("disk says no")
	}
	return f.Store.ReadPayload(ctx, seq)
}

func TestTieringReadFailureFailsOnlyThatJob(t *testing.T) {
	t.Parallel()
	st := &failingReader{Store: memory.New()}
	b := startBroker(t, broker.Config{Store: st, MemoryBudget: -1})
	c := b.NewSession("client", discard{})
	bad := submitBg(t, b, c, "bad")
	good := submitBg(t, b, c, "good")
	st.bad = bad
	require.Equal(t, map[uint64]string{good: "good"}, grabAll(t, b, "f"))
	require.Zero(t, b.JobCount())
	b.Stop()
	_, err := st.Store.ReadPayload(context.Background(), bad)
	require.NoError(t, err, "a job whose payload could not be read stays in the store")
}

func TestTieringDeadLetterShowsPayload(t *testing.T) {
	t.Parallel()
	st := memory.New()
	b := startBroker(t, broker.Config{Store: st, MemoryBudget: -1, DefaultPolicy: broker.Policy{MaxAttempts: 1}})
	seq := submitBg(t, b, b.NewSession("client", discard{}), "dead payload")
	w := b.NewSession("w", discard{})
	b.CanDo(w, []byte("f"), 0)
	a, ok := b.Grab(w)
	require.True(t, ok)
	require.NoError(t, b.Finish(w, a.Seq, broker.Fail, nil))
	dead, err := b.DeadLetters(context.Background(), "f", 0)
	require.NoError(t, err)
	require.Len(t, dead, 1)
	require.Equal(t, seq, dead[0].Seq)
	require.Equal(t, "dead payload", string(dead[0].Payload), "a dead letter's payload on disk is read back")
}

// TestTieringAndMaxQueuedBytes: payloads kept on disk do not count against
// MaxQueuedBytes, which bounds the memory live jobs take.
func TestTieringAndMaxQueuedBytes(t *testing.T) {
	t.Parallel()
	b := startBroker(t, broker.Config{Store: memory.New(), MemoryBudget: -1, MaxQueuedBytes: 100})
	c := b.NewSession("client", discard{})
	want := map[uint64]string{}
	for i := range 10 {
		p := fmt.Sprintf("%050d", i)
		want[submitBg(t, b, c, p)] = p
	}
	require.Equal(t, want, grabAll(t, b, "f"))
	submitBg(t, b, c, fmt.Sprintf("%090d", 0))
}

// lendingStore lends payloads at replay (store.LendingLoader) as a store
// that reuses its read buffer would: it overwrites each payload once each
// returns, so a payload the broker kept without copying it is garbled.
type lendingStore struct {
	*memory.Store
	lent int
}

func (l *lendingStore) LoadLending(ctx context.Context, each func(store.Job) error) error {
	return l.Load(ctx, func(j store.Job) error {
		l.lent++
		err := each(j)
		for i := range j.Payload {
			j.Payload[i] = 'X'
		}
		return err
	})
}

func TestTieringReplayCopiesOnlyKeptLentPayloads(t *testing.T) {
	t.Parallel()
	st := memory.New()
	b := startBroker(t, broker.Config{Store: st, MemoryBudget: 10})
	want := submitFour(t, b, 5)
	b.Stop()

	ls := &lendingStore{Store: st.Reopen()}
	b2 := startBroker(t, broker.Config{Store: ls, MemoryBudget: 10})
	require.Equal(t, 5, ls.lent, "replay must load through LoadLending")
	requireTiering(t, b2, 8, 3)
	require.Equal(t, want, grabAll(t, b2, "f"), "payloads kept in memory must be copies of the lent ones")
}

// TestTieringFailedJobRecordKeepsPayloadSize: the record of a job whose
// payload was on disk only when it ended says how long the payload was,
// and a retry of it is refused with an error that says why. (Its function
// keeps no dead letters: a dead letter is retried from the store.)
func TestTieringFailedJobRecordKeepsPayloadSize(t *testing.T) {
	t.Parallel()
	b := startBroker(t, broker.Config{Store: memory.New(), MemoryBudget: -1,
		Policies: map[string]broker.Policy{"f": {MaxDeadLetters: -1}}})
	c := b.NewSession("client", discard{})
	seq := submitBg(t, b, c, "the payload")
	requireTiering(t, b, 0, 1)

	w := b.NewSession("w", discard{})
	b.CanDo(w, []byte("f"), 0)
	a, ok := b.Grab(w)
	require.True(t, ok)
	require.Equal(t, "the payload", string(a.Payload))
	require.NoError(t, b.Finish(w, a.Seq, broker.Fail, nil))
	requireTiering(t, b, 0, 0)

	rec, ok := b.Job(context.Background(), seq)
	require.True(t, ok)
	require.Equal(t, broker.FinalDead, rec.State)
	require.Equal(t, len("the payload"), rec.PayloadSize)

	_, _, err := b.RetryJob(context.Background(), []byte(b.Handle(seq)), "test")
	require.ErrorIs(t, err, broker.ErrPayloadNotKept)
	require.Contains(t, err.Error(), "on disk")
}
