package broker_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/internal/broker"
	"github.com/gearwork/gearwork/internal/store/postgres/pgtest"
)

// batchJob is a background job of fn in batch id.
func batchJob(fn string, id uint64) broker.SubmitParams {
	p := bgJob(fn, "", "x")
	p.Batch = id
	return p
}

// waitBatch polls b until batch id is complete.
func waitBatch(t *testing.T, b *broker.Broker, id uint64) broker.BatchStatus {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		st, err := b.Batch(context.Background(), id)
		require.NoError(t, err)
		if st.Complete {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("batch %d never completed: %+v", id, st)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// callbackRows counts the stored jobs of function fn, and the distinct
// batches their payloads name.
func callbackRows(t *testing.T, url, fn string) (rows, batches int) {
	t.Helper()
	pgtest.QueryRow(t, url, fmt.Sprintf(`SELECT count(*) FROM gearwork_jobs WHERE function = '%s'`, fn), &rows)
	pgtest.QueryRow(t, url, fmt.Sprintf(`SELECT count(DISTINCT convert_from(payload, 'UTF8')::jsonb->>'batch')
		FROM gearwork_jobs WHERE function = '%s'`, fn), &batches)
	return rows, batches
}

// A batch created on one server takes jobs on both, is closed and read on
// either, counts the ends of its jobs wherever they ran, and submits its
// callback once, which any server's worker runs.
func TestSharedBatchAcrossServers(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url, a, b := openPair(t)
	ca, cb := a.NewSession("ca", newOutbox()), b.NewSession("cb", newOutbox())
	id, err := a.CreateBatch(ctx, broker.BatchParams{
		OnSuccess:  broker.Callback{Function: "report", Payload: []byte("import 42")},
		OnComplete: broker.Callback{Function: "done"}})
	require.NoError(t, err)

	p := batchJob("row", id)
	p.Background = false
	require.ErrorIs(t, submit(t, a, ca, p).err, broker.ErrBatchForeground)
	require.ErrorIs(t, submit(t, b, cb, batchJob("row", id+1000)).err, broker.ErrBatchNotFound)
	for _, s := range []struct {
		b *broker.Broker
		c *broker.Session
	}{{a, ca}, {b, cb}, {b, cb}} {
		require.NoError(t, submit(t, s.b, s.c, batchJob("row", id)).err)
	}
	st, err := b.Batch(ctx, id)
	require.NoError(t, err)
	require.Equal(t, uint64(3), st.Total)
	require.Equal(t, uint64(3), st.Pending)
	require.NoError(t, b.CloseBatch(ctx, id))

	// Whichever server holds them: two complete, the last fails and is kept as a dead letter.
	wa, _ := newWorker(a, "wa", "row")
	wb, _ := newWorker(b, "wb", "row")
	var lastSeq uint64
	for n := 0; n < 3; {
		for _, w := range []struct {
			b *broker.Broker
			s *broker.Session
		}{{a, wa}, {b, wb}} {
			j, ok := w.b.Grab(w.s)
			if !ok {
				continue
			}
			n++
			res := broker.Complete
			if n == 3 {
				res, lastSeq = broker.Fail, j.Seq
			}
			require.NoError(t, w.b.Finish(w.s, j.Seq, res, nil))
		}
		time.Sleep(5 * time.Millisecond)
	}

	st = waitBatch(t, a, id)
	require.Equal(t, []uint64{3, 2, 0, 1, 0}, []uint64{st.Total, st.Succeeded, st.Failed, st.Dead, st.Pending})
	// The handle its submitter was given.
	require.Len(t, st.Failures, 1)
	require.Contains(t, []string{a.Handle(lastSeq), b.Handle(lastSeq)}, st.Failures[0])
	require.True(t, st.CompleteFired)
	require.False(t, st.SuccessFired, "a batch with a failed job submits no on_success")
	require.Equal(t, "import 42", string(st.OnSuccess.Payload))
	require.ErrorIs(t, submit(t, a, ca, batchJob("row", id)).err, broker.ErrBatchComplete)
	require.NoError(t, a.CloseBatch(ctx, id), "closing twice changes nothing")
	require.ErrorIs(t, a.CloseBatch(ctx, id+1000), broker.ErrBatchNotFound)
	list, err := b.Batches(ctx, 10)
	require.NoError(t, err)
	require.Len(t, list, 1)
	require.Equal(t, id, list[0].ID)

	wd, outD := newWorker(a, "wd", "done")
	got := drain(t, a, wd, outD, 1)
	require.JSONEq(t, fmt.Sprintf(`{"batch":"%d","callback":"on_complete","total":3,"succeeded":2,"failed":0,"dead":1,
		"failures":[%q]}`, id, st.Failures[0]), got[0])
	rows, _ := callbackRows(t, url, "report")
	require.Zero(t, rows)
}

// Two servers finish the last two jobs of one batch at the same moment,
// many times: each batch submits each callback exactly once.
func TestSharedBatchCallbacksOnceWhenServersFinishTogether(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url, a, b := openPair(t)
	ca, cb := a.NewSession("ca", newOutbox()), b.NewSession("cb", newOutbox())
	wa, outA := newWorker(a, "wa", "row")
	wb, outB := newWorker(b, "wb", "row")
	const rounds = 25
	ids := make([]uint64, rounds)
	for i := range rounds {
		id, err := a.CreateBatch(ctx, broker.BatchParams{OnSuccess: broker.Callback{Function: "report"},
			OnComplete: broker.Callback{Function: "done"}})
		require.NoError(t, err)
		ids[i] = id
		require.NoError(t, submit(t, a, ca, batchJob("row", id)).err)
		require.NoError(t, submit(t, b, cb, batchJob("row", id)).err)
		require.NoError(t, b.CloseBatch(ctx, id))
		ja, jb := grab(t, a, wa, outA), grab(t, b, wb, outB)
		var wg sync.WaitGroup
		start := make(chan struct{})
		errs := make([]error, 2)
		for k, f := range []func() error{
			func() error { return a.Finish(wa, ja.Seq, broker.Complete, nil) },
			func() error { return b.Finish(wb, jb.Seq, broker.Complete, nil) },
		} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				errs[k] = f()
			}()
		}
		close(start)
		wg.Wait()
		require.NoError(t, errs[0])
		require.NoError(t, errs[1])
	}
	for _, id := range ids {
		st := waitBatch(t, b, id)
		require.Equal(t, []uint64{2, 2}, []uint64{st.Total, st.Succeeded})
		require.True(t, st.SuccessFired && st.CompleteFired)
	}
	for _, fn := range []string{"report", "done"} {
		rows, batches := callbackRows(t, url, fn)
		require.Equal(t, rounds, rows, "%s callbacks", fn)
		require.Equal(t, rounds, batches, "%s: one callback per batch", fn)
	}
}
