package broker_test

import (
	"crypto/rand"
	"encoding/hex"
	"strings"
	"testing"

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
