package broker

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// A background job's result is kept for the retention; a re-submit of its
// unique answers with the finished job and runs nothing.
func TestResultRetention(t *testing.T) {
	t.Parallel()
	pol := Policy{ResultRetention: time.Hour}
	tb := setupLC(t, lcOpts{cfg: Config{Policies: policies("fn", pol)}, can: []string{"fn"}})
	seq := tb.submit(t, lcBG("fn", "order-7", "p"))
	a := tb.grab(t)
	require.NoError(t, tb.b.Finish(tb.worker, a.Seq, Complete, []byte("result!")))
	require.Zero(t, tb.b.JobCount())

	r, ok := mustResult(t, tb.b, []byte(tb.b.Handle(seq)))
	require.True(t, ok)
	require.Equal(t, []byte("result!"), r.Data)
	require.Equal(t, "order-7", r.Unique)
	r, ok = mustResultByUnique(t, tb.b, "", "order-7")
	require.True(t, ok)
	require.Equal(t, seq, r.Seq)

	// Background re-submit: same handle, nothing queued.
	again := tb.submit(t, lcBG("fn", "order-7", "p"))
	require.Equal(t, seq, again)
	tb.noJob(t)
	// Foreground re-submit: the handle, then the result at once.
	fg := SubmitParams{Function: []byte("fn"), Unique: []byte("order-7"), Payload: []byte("p")}
	require.Equal(t, seq, tb.submit(t, fg))
	evs := tb.cout.take()
	require.Equal(t, []EventKind{EventComplete}, kinds(evs))
	require.Equal(t, []byte("result!"), evs[0].Data)
	require.Zero(t, tb.b.JobCount())

	// After the retention the result is gone and the unique runs again.
	tb.advance(time.Hour)
	_, ok = mustResult(t, tb.b, []byte(tb.b.Handle(seq)))
	require.False(t, ok)
	seq2 := tb.submit(t, lcBG("fn", "order-7", "p"))
	require.NotEqual(t, seq, seq2)
	require.Equal(t, seq2, tb.grab(t).Seq)
}

// Without retention nothing is kept (gearmand).
func TestNoRetentionByDefault(t *testing.T) {
	t.Parallel()
	tb := setupLC(t, lcOpts{can: []string{"fn"}})
	seq := tb.submit(t, lcBG("fn", "u", "p"))
	require.NoError(t, tb.b.Finish(tb.worker, tb.grab(t).Seq, Complete, []byte("r")))
	_, ok := mustResult(t, tb.b, []byte(tb.b.Handle(seq)))
	require.False(t, ok)
	require.NotEqual(t, seq, tb.submit(t, lcBG("fn", "u", "p")))
}

func TestDeadLetterRetryAndPurge(t *testing.T) {
	t.Parallel()
	tb := setupLC(t, lcOpts{can: []string{"fn", "other"}})
	var dead []uint64
	for _, fn := range []string{"fn", "fn", "fn", "other"} {
		seq := tb.submit(t, lcBG(fn, "", fn))
		a := tb.grab(t)
		require.Equal(t, seq, a.Seq)
		require.NoError(t, tb.b.Finish(tb.worker, a.Seq, Exception, []byte("err "+fn)))
		dead = append(dead, seq)
	}
	require.Len(t, mustDeadLetters(t, tb.b, ""), 4)
	require.Len(t, mustDeadLetters(t, tb.b, "fn"), 3)

	// Retry one: same handle, runs again, dead letter gone.
	require.NoError(t, tb.b.RetryDeadLetter(context.Background(), []byte(tb.b.Handle(dead[0]))))
	require.ErrorIs(t, tb.b.RetryDeadLetter(context.Background(), []byte(tb.b.Handle(dead[0]))), ErrJobNotFound)
	a := tb.grab(t)
	require.Equal(t, dead[0], a.Seq)
	require.NoError(t, tb.b.Finish(tb.worker, a.Seq, Complete, nil))
	require.Len(t, mustDeadLetters(t, tb.b, "fn"), 2)

	// Retry all of a function.
	require.Equal(t, 2, mustRetryDeadLetters(t, tb.b, "fn"))
	require.Equal(t, dead[1], tb.grab(t).Seq)
	require.Equal(t, dead[2], tb.grab(t).Seq)
	tb.noJob(t)
	require.Empty(t, mustDeadLetters(t, tb.b, "fn"))
	// They fail again and come back with their history.
	require.NoError(t, tb.b.Finish(tb.worker, dead[1], Fail, nil))
	dl, ok := mustDeadLetterByHandle(t, tb.b, []byte(tb.b.Handle(dead[1])))
	require.True(t, ok)
	require.Len(t, dl.History, 2)
	require.Equal(t, "failed", dl.LastError)

	require.Equal(t, 1, mustPurgeDeadLetters(t, tb.b, "other"))
	require.Zero(t, mustPurgeDeadLetters(t, tb.b, "other"))
	require.Len(t, mustDeadLetters(t, tb.b, ""), 1)
}

func TestDeadLetterLimit(t *testing.T) {
	t.Parallel()
	tb := setupLC(t, lcOpts{cfg: Config{Policies: policies("fn", Policy{MaxDeadLetters: 2})}, can: []string{"fn", "drop"}})
	tb.b.SetPolicy("drop", Policy{MaxDeadLetters: -1})
	var seqs []uint64
	for i := range 3 {
		seq := tb.submit(t, lcBG("fn", "", string(rune('a'+i))))
		require.NoError(t, tb.b.Finish(tb.worker, tb.grab(t).Seq, Fail, nil))
		seqs = append(seqs, seq)
	}
	dl := mustDeadLetters(t, tb.b, "fn")
	require.Len(t, dl, 2)
	require.Equal(t, []uint64{seqs[1], seqs[2]}, []uint64{dl[0].Seq, dl[1].Seq})
	tb.submit(t, lcBG("drop", "", "x"))
	require.NoError(t, tb.b.Finish(tb.worker, tb.grab(t).Seq, Fail, nil))
	require.Empty(t, mustDeadLetters(t, tb.b, "drop"))
}
