package httpapi

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/internal/broker"
	"github.com/gearwork/gearwork/internal/store"
	"github.com/gearwork/gearwork/internal/store/postgres"
	"github.com/gearwork/gearwork/internal/store/postgres/pgtest"
	"github.com/gearwork/gearwork/internal/testwait"
)

var (
	errOutage = errors.New("the database is away")
	quiet     = slog.New(slog.DiscardHandler)
)

// outageStore plays a PostgreSQL that goes away: while down, commit
// rounds and probes fail.
type outageStore struct {
	*postgres.Store
	down atomic.Bool
}

func (s *outageStore) Commit(ctx context.Context, p store.CommitParams) (store.Committed, error) {
	if s.down.Load() {
		return store.Committed{}, errOutage
	}
	return s.Store.Commit(ctx, p)
}

func (s *outageStore) Ping(ctx context.Context) error {
	if s.down.Load() {
		return errOutage
	}
	return s.Store.Ping(ctx)
}

// A submit with ?wait= whose job ends while the database is away cannot
// say the end is stored; the job is, so the answer is 202 (the job goes
// on being known), not an error that a client would take for a submit to
// send again. Once the database is back, the end is stored.
func TestSubmitWaitWhoseEndCannotBeStoredAnswers202(t *testing.T) {
	t.Parallel()
	st, err := postgres.Open(context.Background(), postgres.Config{URL: pgtest.Schema(t), Name: "a", Logger: quiet})
	require.NoError(t, err)
	t.Cleanup(func() { _ = st.Close() })
	os := &outageStore{Store: st}
	tb := setupBroker(t, broker.Config{Shared: os, Logger: quiet})
	w := newTestWorker(t, tb.b, "echo")
	done := make(chan struct{})
	go func() {
		defer close(done)
		a := w.grab(t)
		os.down.Store(true)
		_ = tb.b.Finish(w.sess, a.Seq, broker.Complete, []byte("done"))
	}()
	resp := tb.do(t, "POST", "/v1/functions/echo/jobs?wait=30s", strings.NewReader("hi"))
	<-done
	require.Equal(t, http.StatusAccepted, resp.StatusCode)
	loc := resp.Header.Get("Location")
	require.NotEmpty(t, loc)
	require.Equal(t, "echo", decode[jobJSON](t, resp).Function)

	os.down.Store(false)
	testwait.Until(t, "the job's end to be stored", func() bool {
		return tb.b.Durable(context.Background()) == nil
	})
	resp = tb.do(t, "GET", loc, nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, "complete", decode[jobJSON](t, resp).State)
}
