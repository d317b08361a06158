package broker

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/internal/store/memory"
)

// requireUniqueIndex checks the broker's index of uniques against the
// functions' own: the same jobs, each under a key that is its own unique
// (not a view of memory the job has let go).
func requireUniqueIndex(t *testing.T, b *Broker) {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	want := map[*job]bool{}
	for _, f := range b.functions {
		for u, j := range f.uniques {
			require.Equal(t, u, j.unique)
			want[j] = true
			require.NotNil(t, b.uniques.get(u), "unique %q of %q", u, f.name)
		}
	}
	got := map[*job]bool{}
	b.uniques.all(func(j *job) {
		require.False(t, got[j], "a job indexed twice")
		got[j] = true
	})
	require.Equal(t, want, got)
	for k, j := range b.uniques.first {
		require.Same(t, unsafe.StringData(j.unique), unsafe.StringData(k), "the key of %q is the job's own unique", k)
	}
	for k, js := range b.uniques.more {
		require.NotEmpty(t, js)
		require.NotNil(t, b.uniques.first[k])
		require.Same(t, unsafe.StringData(js[0].unique), unsafe.StringData(k), "the key of %q is a job's own unique", k)
	}
}

// GET_STATUS_UNIQUE finds a job of any function, through one index: the
// same unique in two functions stays findable until the last of its jobs
// is gone.
func TestStatusUniqueOfEveryFunction(t *testing.T) {
	t.Parallel()
	tb := setup(t, Config{})
	c, _ := tb.session()
	w, _ := tb.session()
	tb.b.CanDo(w, []byte("a"), 0)
	tb.b.CanDo(w, []byte("b"), 0)
	ja := tb.submit(t, c, bg("a", "u", "1", Normal))
	jb := tb.submit(t, c, bg("b", "u", "2", Normal))
	require.NotEqual(t, ja.seq, jb.seq, "uniques coalesce per function")
	require.Equal(t, ja.seq, tb.submit(t, c, bg("a", "u", "3", Normal)).seq)
	tb.submit(t, c, bg("a", "v", "4", Normal))
	requireUniqueIndex(t, tb.b)
	require.Equal(t, []string{"u", "u", "v"}, tb.b.Uniques())

	seen := map[uint64]bool{}
	for range 2 {
		st := tb.b.GetStatusUnique([]byte("u"))
		require.True(t, st.Known)
		require.Contains(t, []uint64{ja.seq, jb.seq}, st.Seq)
		require.False(t, seen[st.Seq], "a finished job is not found again")
		seen[st.Seq] = true
		a := tb.grab(t, w)
		for a.Seq != st.Seq { // the job of "v" comes first or second
			require.NoError(t, tb.b.Finish(w, a.Seq, Complete, nil))
			a = tb.grab(t, w)
		}
		require.NoError(t, tb.b.Finish(w, a.Seq, Complete, nil))
		requireUniqueIndex(t, tb.b)
	}
	require.False(t, tb.b.GetStatusUnique([]byte("u")).Known)
	require.NotContains(t, tb.b.Uniques(), "u")
}

// A tiered job's unique is copied off the packet (ownUniqueLocked); the
// index keys by the copy, and after a restart by the replayed jobs.
func TestUniqueIndexFollowsTieredUniques(t *testing.T) {
	t.Parallel()
	st := memory.New()
	b := New(Config{Store: st, MemoryBudget: 6, Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, b.Start(context.Background()))
	c := b.NewSession("client", &recorder{})
	done := make(chan error, 4)
	for i := range 4 {
		body := []byte(fmt.Sprintf("f\x00u%d\x00payload-%d", i%2, i))
		b.Submit(c, SubmitParams{Function: body[:1], Unique: body[2:4], Payload: body[5:], Background: true},
			func(_ uint64, _ bool, err error) { done <- err })
	}
	for range 4 {
		require.NoError(t, <-done)
	}
	requireUniqueIndex(t, b)
	require.True(t, b.GetStatusUnique([]byte("u1")).Known)
	b.Stop()

	b2 := New(Config{Store: st.Reopen(), MemoryBudget: 6, Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, b2.Start(context.Background()))
	t.Cleanup(b2.Stop)
	requireUniqueIndex(t, b2)
	require.Equal(t, []string{"u0", "u1"}, b2.Uniques())
	require.True(t, b2.GetStatusUnique([]byte("u0")).Known)
}
