package broker_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/internal/broker"
	"github.com/gearwork/gearwork/internal/store/pebble"
	"github.com/gearwork/gearwork/internal/store/postgres/pgtest"
)

// listBenchOthers is how many jobs of another function end after the
// jobs of the batch that BenchmarkListBatchJobs lists: the default
// history_max of one function.
const listBenchOthers = broker.DefaultHistoryMax

// BenchmarkListBatchJobs lists the 100 completed jobs of a batch, one
// page (ListJobs, as GET /v1/batches/{id}/jobs?state=complete&limit=100
// does), after 10,000 jobs of another function completed, on each store:
// in memory and on Pebble the listing reads the newer records down to the
// batch's; PostgreSQL selects them through its index by batch.
func BenchmarkListBatchJobs(b *testing.B) {
	for _, kind := range []string{"memory", "pebble", "postgres"} {
		b.Run(kind, func(b *testing.B) {
			var br *broker.Broker
			switch kind {
			case "memory":
				br = startBenchBroker(b, broker.Config{Logger: quiet})
			case "pebble":
				st, err := pebble.Open(context.Background(), b.TempDir(), pebble.Options{})
				require.NoError(b, err)
				b.Cleanup(func() { _ = st.Close() })
				br = startBenchBroker(b, broker.Config{Logger: quiet, Store: st})
			case "postgres":
				br, _ = openSharedConfig(b, pgtest.Schema(b), "a", 0, broker.Config{})
			}
			id, err := br.CreateBatch(context.Background(), broker.BatchParams{})
			require.NoError(b, err)
			runJobs(b, br, "row", id, 100)
			runJobs(b, br, "other", 0, listBenchOthers)
			want := func() bool {
				page, err := br.ListJobs(context.Background(), broker.JobQuery{Batch: id, State: broker.FinalComplete, Limit: 100})
				require.NoError(b, err)
				return len(page.Jobs) == 100
			}
			// Records reach the store a commit round after their jobs end.
			deadline := time.Now().Add(time.Minute)
			for !want() {
				require.True(b, time.Now().Before(deadline), "the batch's 100 records were never all listed")
				time.Sleep(10 * time.Millisecond)
			}
			b.ResetTimer()
			for range b.N {
				if !want() {
					b.Fatal("the page lacks records of the batch")
				}
			}
		})
	}
}

func startBenchBroker(b *testing.B, cfg broker.Config) *broker.Broker {
	br := broker.New(cfg)
	require.NoError(b, br.Start(context.Background()))
	b.Cleanup(br.Stop)
	return br
}

// runJobs submits n background jobs of fn (to batch, unless 0) and
// completes them with one worker.
func runJobs(b *testing.B, br *broker.Broker, fn string, batch uint64, n int) {
	c := br.NewSession("client", newOutbox())
	w, out := newWorker(b, br, "worker", fn)
	var acked sync.WaitGroup
	acked.Add(n)
	for range n {
		p := bgJob(fn, "", "x")
		p.Batch = batch
		br.Submit(c, p, func(_ uint64, _ bool, err error) {
			if err != nil {
				b.Error(err)
			}
			acked.Done()
		})
	}
	deadline := time.Now().Add(2 * time.Minute)
	for done := 0; done < n; {
		a, ok := br.Grab(w)
		if !ok {
			require.True(b, time.Now().Before(deadline), "%d of %d jobs of %s ran", done, n, fn)
			br.PreSleep(w)
			select {
			case <-out.signal:
			case <-time.After(10 * time.Millisecond):
			}
			continue
		}
		require.NoError(b, br.Finish(w, a.Seq, broker.Complete, nil))
		done++
	}
	acked.Wait()
	br.CloseSession(w)
	br.CloseSession(c)
}
