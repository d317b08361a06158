package postgres_test

import (
	"context"
	"strconv"
	"testing"

	"github.com/gearwork/gearwork/internal/store"
	"github.com/gearwork/gearwork/internal/store/postgres"
	"github.com/gearwork/gearwork/internal/store/postgres/pgtest"
)

// BenchmarkCommitInsert measures commit rounds of new background jobs as
// a busy server writes them: rounds of 256 jobs without a unique (as
// Gearman clients submit by default) and with one, unclaimed. Set
// GEARWORK_TEST_POSTGRES to a PostgreSQL with fsync on to include the
// commit's flush; on a shared machine, compare the database's CPU time
// (test/cluster's BenchmarkPostgresBacklog) rather than the wall time.
func BenchmarkCommitInsert(b *testing.B) {
	for _, uniq := range []bool{false, true} {
		b.Run("unique="+strconv.FormatBool(uniq), func(b *testing.B) {
			ctx := context.Background()
			u := pgtest.Schema(b)
			s, err := postgres.Open(ctx, postgres.Config{URL: u, Logger: quiet})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			const round = 256
			payload := make([]byte, 64)
			n := 0
			b.ResetTimer()
			for range b.N {
				jobs := make([]store.Job, round)
				for i := range jobs {
					jobs[i] = store.Job{Function: "f", Payload: payload}
					if uniq {
						jobs[i].Unique = strconv.Itoa(n)
					}
					n++
				}
				if _, err := s.Commit(ctx, store.CommitParams{Insert: store.InsertParams{Jobs: jobs, HandlePrefix: "H:"}}); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*round), "ns/job")
		})
	}
}

// BenchmarkCommitRoundAllocs reports the allocations of a small commit
// round that names no batch and no job to wait for (the ends of eight
// jobs: their deletes and records), the common round of a working server.
func BenchmarkCommitRoundAllocs(b *testing.B) {
	ctx := context.Background()
	s, err := postgres.Open(ctx, postgres.Config{URL: pgtest.Schema(b), Logger: quiet})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	p := store.CommitParams{Delete: make([]uint64, 8), Records: make([]store.Record, 8)}
	seq := uint64(1 << 40)
	b.ReportAllocs()
	for b.Loop() {
		for i := range p.Delete {
			seq++
			p.Delete[i] = seq
			p.Records[i] = store.Record{Seq: seq, Function: "f", State: "complete", Finished: int64(seq), Data: []byte("r")}
		}
		if _, err := s.Commit(ctx, p); err != nil {
			b.Fatal(err)
		}
	}
}
