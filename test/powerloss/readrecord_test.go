package powerloss

import (
	"log/slog"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/internal/broker"
	"github.com/gearwork/gearwork/internal/store"
	"github.com/gearwork/gearwork/internal/store/pebble"
	"github.com/gearwork/gearwork/internal/testwait"
)

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
	const dir = "/data"
	open := func(fs *vfs.MemFS) *pebble.Store {
		st, err := pebble.Open(ctx, dir, pebble.Options{FS: fs, Sync: pebble.SyncAlways, Logger: slog.New(slog.DiscardHandler)})
		require.NoError(t, err)
		return st
	}
	st := open(fs)
	b := broker.New(broker.Config{HandlePrefix: "H:r:", Store: st, RecordPace: time.Hour, Logger: slog.New(slog.DiscardHandler)})
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
