package broker_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/gearman"
	"github.com/gearwork/gearwork/internal/broker"
	"github.com/gearwork/gearwork/internal/store/postgres/pgtest"
)

// A unique is at most 64 bytes, on every front end: PostgreSQL indexes
// live jobs by (unique, function) and refuses an index entry beyond a few
// kilobytes, which failed the whole write the job was part of. A submit
// with a 12 KB unique over HTTP made the server answer 503 store-failed to
// every other submit of its round, and refuse background submits until
// the store answered again.
func TestLongUniqueDoesNotFailOtherSubmits(t *testing.T) {
	t.Parallel()
	url := pgtest.Schema(t)
	b, _ := openShared(t, url, "a", 0)
	c := b.NewSession("client", newOutbox())

	random := func(n int) string {
		p := make([]byte, (n+1)/2)
		_, _ = rand.Read(p)
		return hex.EncodeToString(p)[:n] // random, so that PostgreSQL cannot compress it
	}
	var others []<-chan submitResult
	for i := range 20 {
		if i == 10 {
			others = append(others, submitAsync(b, c, bgJob("f", random(12_000), "long")))
			continue
		}
		others = append(others, submitAsync(b, c, bgJob("f", "", "other")))
	}
	for i, ch := range others {
		r := answer(t, ch)
		if i == 10 {
			require.ErrorIs(t, r.err, broker.ErrUniqueTooLong)
			continue
		}
		require.NoError(t, r.err, "submit %d", i)
	}
	require.NoError(t, submit(t, b, c, bgJob("f", "", "after")).err)

	// The longest unique and function name are stored.
	longest := bgJob(strings.Repeat("n", gearman.MaxFunctionSize), random(gearman.MaxUniqueSize), "longest")
	require.NoError(t, submit(t, b, c, longest).err)
	var n int
	pgtest.QueryRow(t, url, `SELECT count(*) FROM gearwork_jobs`, &n)
	require.Equal(t, 21, n)
}

// A worker's exception text may hold any bytes, NUL among them; the
// attempts of a job waiting to be retried are stored as JSON (jsonb),
// which PostgreSQL refuses with \u0000 in it. One WORK_EXCEPTION of
// "bad\x00error" made every write of the server fail from then on, each
// retry of the round with it, so that the server refused every background
// submit until it was restarted.
func TestExceptionWithNULDoesNotStopTheStore(t *testing.T) {
	t.Parallel()
	url := pgtest.Schema(t)
	pol := broker.Policy{MaxAttempts: 3, Backoff: broker.Backoff{Initial: time.Hour, Max: time.Hour}}
	b, _ := openSharedPolicy(t, url, "a", 0, map[string]broker.Policy{"f": pol})
	c := b.NewSession("client", newOutbox())
	w, out := newWorker(t, b, "worker", "f")

	seq := submit(t, b, c, bgJob("f", "", "p")).seq
	a := grab(t, b, w, out)
	require.Equal(t, seq, a.Seq)
	require.NoError(t, b.Finish(w, a.Seq, broker.Exception, []byte("bad\x00error\xff")))
	require.NoError(t, b.Durable(context.Background()), "the retry-wait is stored")
	require.NoError(t, submit(t, b, c, bgJob("other", "", "after")).err)

	// The attempt's error is stored, NUL and invalid bytes as U+FFFD (JSON
	// cannot carry them); the job's last error keeps every byte.
	var lastError []byte
	var history string
	pgtest.QueryRow(t, url, `SELECT last_error, history::text FROM gearwork_jobs WHERE function = 'f'`, &lastError, &history)
	require.Equal(t, "bad\x00error\xff", string(lastError))
	require.Contains(t, history, "bad\uFFFDerror\uFFFD")
}
