package broker_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/internal/broker"
	"github.com/gearwork/gearwork/internal/store"
	"github.com/gearwork/gearwork/internal/store/postgres"
	"github.com/gearwork/gearwork/internal/store/postgres/pgtest"
	"github.com/gearwork/gearwork/internal/testwait"
)

// burstStore plays a burst of claims that lasts until the lease is
// renewed, as a deep queue drained by fast workers makes one: once
// armed, every Claim answers each request in full with the row of a job
// the server runs already (which it counts and skips), so the claim loop
// claims again at once. The burst ends at the first Claim after a renewal
// (or, failing that, after testwait.Timeout), and burstEnded says how many
// claims it had and how many renewals were answered meanwhile.
type burstStore struct {
	*postgres.Store
	renewals atomic.Int64

	mu       sync.Mutex
	armed    bool
	seq      uint64 // the job the server runs
	started  bool
	base     int64 // renewals when the burst began
	claims   int
	deadline time.Time
	ended    chan burstEnd
}

type burstEnd struct{ claims, renewals int }

func (s *burstStore) Renew(ctx context.Context) (bool, error) {
	lost, err := s.Store.Renew(ctx)
	s.renewals.Add(1)
	return lost, err
}

func (s *burstStore) arm(seq uint64) {
	s.mu.Lock()
	s.armed, s.seq = true, seq
	s.mu.Unlock()
}

func (s *burstStore) Claim(ctx context.Context, req []store.ClaimRequest) ([]store.Job, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.armed {
		return s.Store.Claim(ctx, req)
	}
	if !s.started {
		s.started, s.base, s.deadline = true, s.renewals.Load(), time.Now().Add(testwait.Timeout)
	}
	s.claims++
	if renewed := s.renewals.Load() - s.base; renewed > 0 || time.Now().After(s.deadline) {
		s.armed = false
		s.ended <- burstEnd{claims: s.claims, renewals: int(renewed)}
		return nil, nil
	}
	var out []store.Job
	for _, r := range req {
		for range r.Max {
			out = append(out, store.Job{Seq: s.seq, Function: r.Function})
		}
	}
	return out, nil
}

// A long burst of claims does not hold the lease's renewal back: the
// renewal comes during the burst (docs/postgres.md, "Leases": a live
// server's renewals are answered less than half a lease apart).
func TestSharedRenewsTheLeaseDuringALongClaimBurst(t *testing.T) {
	t.Parallel()
	url := pgtest.Schema(t)
	st, err := postgres.Open(context.Background(), postgres.Config{URL: url, Name: "a",
		LeaseTTL: 400 * time.Millisecond, Logger: quiet})
	require.NoError(t, err)
	bs := &burstStore{Store: st, ended: make(chan burstEnd, 1)}
	b := broker.New(broker.Config{Shared: bs, HandlePrefix: "H:a:", Logger: quiet})
	require.NoError(t, b.Start(context.Background()))
	t.Cleanup(func() {
		b.Stop()
		_ = st.Close()
	})

	w, out := newWorker(t, b, "w", "f")
	r := submit(t, b, b.NewSession("c", newOutbox()), bgJob("f", "", "x"))
	require.NoError(t, r.err)
	a := grab(t, b, w, out)
	require.Equal(t, r.seq, a.Seq)
	// The claim loop asks for more for the worker's function (at the
	// latest at its next poll), and the burst begins.
	bs.arm(a.Seq)
	var end burstEnd
	select {
	case end = <-bs.ended:
	case <-time.After(2 * testwait.Timeout):
		t.Fatal("the burst of claims never ended")
	}
	require.Greater(t, end.claims, 1, "a burst of claims")
	require.Positive(t, end.renewals, "no renewal of the lease during a burst of %d claims", end.claims)
	require.NoError(t, b.Finish(w, a.Seq, broker.Complete, nil))
}
