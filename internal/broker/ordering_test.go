package broker

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func orderedPolicy() Policy {
	return Policy{MaxAttempts: 2, Ordering: OrderingUniquePrefix, Backoff: noJitter(10 * time.Second)}
}

// Jobs sharing an ordering key run one at a time in submission order; a
// failing head blocks its key, not the others, until it succeeds or dies.
func TestOrderedQueue(t *testing.T) {
	t.Parallel()
	tb := setupLC(t, lcOpts{cfg: Config{Policies: policies("fn", orderedPolicy())}, can: []string{"fn"}})
	a1 := tb.submit(t, lcBG("fn", "acct-1:1", "a1"))
	a2 := tb.submit(t, lcBG("fn", "acct-1:2", "a2"))
	b1 := tb.submit(t, lcBG("fn", "acct-2:1", "b1"))
	a3 := tb.submit(t, lcBG("fn", "acct-1:3", "a3"))
	free := tb.submit(t, lcBG("fn", "nokey", "free"))

	// Only the heads of each key and the unordered job are runnable.
	g1 := tb.grab(t)
	g2 := tb.grab(t)
	g3 := tb.grab(t)
	require.Equal(t, []uint64{a1, b1, free}, []uint64{g1.Seq, g2.Seq, g3.Seq})
	tb.noJob(t)

	// acct-1's head fails: its key stays blocked while it waits to retry;
	// acct-2 goes on.
	require.NoError(t, tb.b.Finish(tb.worker, a1, Fail, nil))
	require.NoError(t, tb.b.Finish(tb.worker, b1, Complete, nil))
	require.NoError(t, tb.b.Finish(tb.worker, free, Complete, nil))
	tb.noJob(t)
	b2 := tb.submit(t, lcBG("fn", "acct-2:2", "b2"))
	require.Equal(t, b2, tb.grab(t).Seq)
	require.NoError(t, tb.b.Finish(tb.worker, b2, Complete, nil))

	infos := tb.b.Orderings("fn")
	require.Len(t, infos, 1)
	require.Equal(t, OrderingInfo{Function: "fn", Key: "acct-1", Head: a1, HeadState: "retry-wait", Waiting: 2}, infos[0])

	// The head runs again after its backoff and dies: the next one runs.
	tb.advance(10 * time.Second)
	require.Equal(t, a1, tb.grab(t).Seq)
	tb.noJob(t)
	require.NoError(t, tb.b.Finish(tb.worker, a1, Fail, nil))
	require.Len(t, mustDeadLetters(t, tb.b, "fn"), 1)
	require.Equal(t, a2, tb.grab(t).Seq)
	tb.noJob(t)
	require.NoError(t, tb.b.Finish(tb.worker, a2, Complete, nil))
	require.Equal(t, a3, tb.grab(t).Seq)
	require.NoError(t, tb.b.Finish(tb.worker, a3, Complete, nil))
	require.Empty(t, tb.b.Orderings(""))
	require.Zero(t, tb.b.JobCount())
}

// An explicit ordering key (HTTP API) works without any policy, and a
// cancelled blocked job leaves its line.
func TestExplicitOrderingKeyAndCancel(t *testing.T) {
	t.Parallel()
	tb := setupLC(t, lcOpts{can: []string{"fn"}})
	p := lcBG("fn", "", "1")
	p.OrderingKey = "k"
	j1 := tb.submit(t, p)
	p.Payload = []byte("2")
	j2 := tb.submit(t, p)
	p.Payload = []byte("3")
	j3 := tb.submit(t, p)
	require.NoError(t, tb.b.CancelJob(context.Background(), []byte(tb.b.Handle(j2))))
	require.Equal(t, j1, tb.grab(t).Seq)
	tb.noJob(t)
	require.NoError(t, tb.b.Finish(tb.worker, j1, Complete, nil))
	require.Equal(t, j3, tb.grab(t).Seq)
	require.NoError(t, tb.b.Finish(tb.worker, j3, Complete, nil))
	require.Zero(t, tb.b.JobCount())
}

func TestOrderingKeyDerivation(t *testing.T) {
	t.Parallel()
	p := Policy{Ordering: OrderingUniquePrefix}
	require.Equal(t, "cust:42", p.orderingKey([]byte("cust:42:7")))
	require.Equal(t, "", p.orderingKey([]byte("plain")))
	require.Equal(t, "", p.orderingKey([]byte(":x")))
	p.OrderingSeparator = "/"
	require.Equal(t, "a", p.orderingKey([]byte("a/b")))
	require.Equal(t, "", Policy{}.orderingKey([]byte("a:b")))
}

// Dropping a function drops its blocked ordered jobs too, whatever their
// priority.
func TestDropFunctionWithOrderedJobs(t *testing.T) {
	t.Parallel()
	tb := setupLC(t, lcOpts{cfg: Config{Policies: policies("fn", orderedPolicy())}})
	tb.submit(t, lcBG("fn", "k:1", "low-head"))
	hi := lcBG("fn", "k:2", "high-behind")
	hi.Priority = High
	tb.submit(t, hi)
	require.Equal(t, 2, tb.b.JobCount())
	require.NoError(t, tb.b.DropFunction(context.Background(), "fn"))
	require.Zero(t, tb.b.JobCount())
	require.Empty(t, tb.b.Orderings(""))
}
