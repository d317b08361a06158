package powerloss

import (
	"context"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/internal/broker"
	"github.com/gearwork/gearwork/internal/store"
	"github.com/gearwork/gearwork/internal/store/pebble"
	"github.com/gearwork/gearwork/internal/testwait"
)

// readWait is how long the reads here wait for the commit round of what
// they answer (broker.Config.RecordReadWait): past it they would answer
// from memory, which a machine slow enough would make look like the
// defect these tests look for.
const readWait = testwait.Timeout

// TestPowerLossAfterReadingAJobRecord reads the record of a job that just
// completed through the broker, as GET /v1/jobs/{handle}, the admin
// command job and the listings do, while the record still waits in memory
// for its commit round (held back here by a long RecordPace), and cuts
// the power right after the answer. The record said complete, final, an
// outcome that never changes: it must be on disk, and the job must not
// be queued to run again. Before, a record that waited for its round was
// answered from memory, and a SIGKILL right after the answer queued the
// job again (about one read in twenty in a crash test).
func TestPowerLossAfterReadingAJobRecord(t *testing.T) {
	t.Parallel()
	ctx := testwait.Context(t)
	fs := vfs.NewCrashableMem()
	open := func(fs *vfs.MemFS) *pebble.Store { return openSynced(ctx, t, fs) }
	st := open(fs)
	b := broker.New(broker.Config{HandlePrefix: "H:r:", Store: st, RecordPace: time.Hour, RecordReadWait: readWait, Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, b.Start(ctx))
	client := b.NewSession("client", nopOutbox{})
	worker := b.NewSession("worker", nopOutbox{})
	b.CanDo(worker, []byte("f"), 0)
	run := func() uint64 {
		t.Helper()
		done := make(chan error, 1)
		var seq uint64
		b.Submit(client, broker.SubmitParams{Function: []byte("f"), Payload: []byte("x"), Background: true},
			func(s uint64, _ bool, err error) { seq = s; done <- err })
		require.NoError(t, <-done)
		a, ok := b.Grab(worker)
		require.True(t, ok)
		require.Equal(t, seq, a.Seq)
		require.NoError(t, b.Finish(worker, a.Seq, broker.Complete, []byte("done")))
		return seq
	}
	// The first round of records is not held back: the pace counts from
	// the last round that wrote records.
	first := run()
	testwait.Until(t, "the first record in the store", func() bool {
		_, err := st.Record(ctx, first)
		return err == nil
	})

	read := run()
	snap, ok := b.Job(ctx, read)
	require.True(t, ok)
	require.True(t, snap.Final)
	require.Equal(t, broker.FinalComplete, snap.State)
	listed := run()
	page, err := b.ListJobs(ctx, broker.JobQuery{Function: "f", State: broker.FinalComplete, Limit: 1})
	require.NoError(t, err)
	require.Len(t, page.Jobs, 1)
	require.Equal(t, listed, page.Jobs[0].Seq)
	clone := fs.CrashClone(vfs.CrashCloneCfg{})
	b.Stop()
	require.NoError(t, st.Close())

	st = open(clone)
	defer st.Close()
	var queued []uint64
	require.NoError(t, st.Load(ctx, func(j store.Job) error {
		queued = append(queued, j.Seq)
		return nil
	}))
	for _, seq := range []uint64{read, listed} {
		require.NotContains(t, queued, seq, "job %d, read complete before the power cut, is queued again", seq)
		r, err := st.Record(ctx, seq)
		require.NoError(t, err, "the record of job %d, read before the power cut", seq)
		require.Equal(t, "complete", r.State)
	}
}

// gatedWrites is a Pebble store whose atomic writes (store.Writer) wait,
// once armed, until open is closed.
type gatedWrites struct {
	*pebble.Store
	armed atomic.Bool
	open  chan struct{}
}

func (g *gatedWrites) Write(ctx context.Context, w store.Write) error {
	if g.armed.Load() {
		<-g.open
	}
	return g.Store.Write(ctx, w)
}

// TestPowerLossAfterReadingARetainedResult reads a retained result (the
// admin command result) and dead letters (deadletters, deadletter show)
// while the write that stores them is held, and cuts the power as soon
// as they are answered: they must be on disk, not the job queued to run
// again. Before, both were answered from memory as soon as the worker's
// WORK_COMPLETE or WORK_FAIL came, before their write; here the answer
// came while the write was held, and the cut found the job queued.
func TestPowerLossAfterReadingARetainedResult(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		policy broker.Policy
		end    broker.Outcome
		want   store.JobState
		read   func(ctx context.Context, b *broker.Broker, seq uint64) (string, error)
	}{
		{"result", broker.Policy{ResultRetention: time.Hour}, broker.Complete, store.StateDone,
			func(ctx context.Context, b *broker.Broker, seq uint64) (string, error) {
				r, _, err := b.Result(ctx, []byte(b.Handle(seq)))
				return string(r.Data), err
			}},
		{"result by unique", broker.Policy{ResultRetention: time.Hour}, broker.Complete, store.StateDone,
			func(ctx context.Context, b *broker.Broker, _ uint64) (string, error) {
				r, _, err := b.ResultByUnique(ctx, "f", "k")
				return string(r.Data), err
			}},
		{"dead letters", broker.Policy{MaxAttempts: 1}, broker.Fail, store.StateDead,
			func(ctx context.Context, b *broker.Broker, _ uint64) (string, error) {
				dls, err := b.DeadLetters(ctx, "f", 0)
				if len(dls) != 1 {
					return "", err
				}
				return dls[0].Handle, err
			}},
		{"dead letter", broker.Policy{MaxAttempts: 1}, broker.Fail, store.StateDead,
			func(ctx context.Context, b *broker.Broker, seq uint64) (string, error) {
				dl, _, err := b.DeadLetterByHandle(ctx, []byte(b.Handle(seq)))
				return dl.Handle, err
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			readDuringHeldWrite(t, tc.policy, tc.end, tc.want, tc.read)
		})
	}
}

// readDuringHeldWrite runs a job of a function with policy, ends it with
// end while the store's writes are held, reads it with read, and cuts the
// power as soon as read answers (or, if read waits for the write, once
// the write was let go and read answered): the job must be stored in
// state want.
func readDuringHeldWrite(t *testing.T, policy broker.Policy, end broker.Outcome, want store.JobState,
	read func(ctx context.Context, b *broker.Broker, seq uint64) (string, error)) {
	ctx := testwait.Context(t)
	fs := vfs.NewCrashableMem()
	open := func(fs *vfs.MemFS) *pebble.Store { return openSynced(ctx, t, fs) }
	st := &gatedWrites{Store: open(fs), open: make(chan struct{})}
	b := broker.New(broker.Config{HandlePrefix: "H:k:", Store: st, RecordReadWait: readWait, Logger: slog.New(slog.DiscardHandler),
		Policies: map[string]broker.Policy{"f": policy}})
	require.NoError(t, b.Start(ctx))
	client := b.NewSession("client", nopOutbox{})
	worker := b.NewSession("worker", nopOutbox{})
	b.CanDo(worker, []byte("f"), 0)
	done := make(chan error, 1)
	var seq uint64
	b.Submit(client, broker.SubmitParams{Function: []byte("f"), Unique: []byte("k"), Payload: []byte("x"), Background: true},
		func(s uint64, _ bool, err error) { seq = s; done <- err })
	require.NoError(t, <-done)
	a, ok := b.Grab(worker)
	require.True(t, ok)

	st.armed.Store(true)
	require.NoError(t, b.Finish(worker, a.Seq, end, []byte("the result")))
	got, clone, err := readThenCut(fs, st, func() (string, error) { return read(ctx, b, seq) })
	require.NoError(t, err)
	require.NotEmpty(t, got, "the read found nothing")
	b.Stop()
	require.NoError(t, st.Close())

	rst := open(clone)
	defer rst.Close()
	var state store.JobState
	require.NoError(t, rst.Load(ctx, func(j store.Job) error {
		if j.Seq == seq {
			state = j.State
		}
		return nil
	}))
	require.Equal(t, want, state, "job %d, read as %s before the power cut, is stored %s", seq, want, state)
}

// TestPowerLossAfterReadingABatch reads a batch's status (GET
// /v1/batches/{id}, the admin command batch) right after its last job
// completed, while the write that stores the batch's end is held, and
// cuts the power as soon as it is answered: the restarted broker must
// tell the same, the batch complete and its callback submitted.
func TestPowerLossAfterReadingABatch(t *testing.T) {
	t.Parallel()
	ctx := testwait.Context(t)
	fs := vfs.NewCrashableMem()
	open := func(fs *vfs.MemFS) *pebble.Store { return openSynced(ctx, t, fs) }
	st := &gatedWrites{Store: open(fs), open: make(chan struct{})}
	b := broker.New(broker.Config{HandlePrefix: "H:b:", Store: st, RecordReadWait: readWait, Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, b.Start(ctx))
	id, err := b.CreateBatch(ctx, broker.BatchParams{OnComplete: broker.Callback{Function: "cb", Payload: []byte("done")}})
	require.NoError(t, err)
	client := b.NewSession("client", nopOutbox{})
	done := make(chan error, 1)
	b.Submit(client, broker.SubmitParams{Function: []byte("f"), Payload: []byte("x"), Background: true, Batch: id},
		func(_ uint64, _ bool, err error) { done <- err })
	require.NoError(t, <-done)
	require.NoError(t, b.CloseBatch(ctx, id))
	worker := b.NewSession("worker", nopOutbox{})
	b.CanDo(worker, []byte("f"), 0)
	a, ok := b.Grab(worker)
	require.True(t, ok)

	st.armed.Store(true)
	require.NoError(t, b.Finish(worker, a.Seq, broker.Complete, nil))
	got, clone, err := readThenCut(fs, st, func() (broker.BatchStatus, error) { return b.Batch(ctx, id) })
	require.NoError(t, err)
	require.True(t, got.Complete, "the batch, read after its last job completed")
	b.Stop()
	require.NoError(t, st.Close())

	rst := open(clone)
	defer rst.Close()
	rb := broker.New(broker.Config{HandlePrefix: "H:b:", Store: rst, Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, rb.Start(ctx))
	defer rb.Stop()
	after, err := rb.Batch(ctx, id)
	require.NoError(t, err)
	require.True(t, after.Complete, "batch %d, read complete before the power cut", id)
	require.True(t, after.CompleteFired, "batch %d's callback, submitted before the power cut", id)
}

// openSynced opens the Pebble store of the tests in /data on fs, syncing
// every write.
func openSynced(ctx context.Context, t *testing.T, fs *vfs.MemFS) *pebble.Store {
	t.Helper()
	st, err := pebble.Open(ctx, "/data", pebble.Options{FS: fs, Sync: pebble.SyncAlways, Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	return st
}

// readThenCut runs read while st holds its writes and takes what a power
// cut leaves of fs as soon as read answers: at once when it answers while
// the write is held, or, when it waits for the write (as it should), once
// the write was let go and it answered.
func readThenCut[T any](fs *vfs.MemFS, st *gatedWrites, read func() (T, error)) (T, *vfs.MemFS, error) {
	type answer struct {
		got T
		err error
	}
	answered := make(chan answer, 1)
	go func() {
		got, err := read()
		answered <- answer{got, err}
	}()
	var got answer
	var clone *vfs.MemFS
	select {
	case got = <-answered:
		// Answered while the write is held: the cut comes now.
		clone = fs.CrashClone(vfs.CrashCloneCfg{})
		close(st.open)
	case <-time.After(100 * time.Millisecond):
		// The answer waits for the write: let it go.
		close(st.open)
		got = <-answered
		clone = fs.CrashClone(vfs.CrashCloneCfg{})
	}
	return got.got, clone, got.err
}
