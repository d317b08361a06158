package broker

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
	"unsafe"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/internal/store/memory"
)

// requireUniqueIndex checks the broker's index of uniques against the
// functions' own: the same jobs, live ones, each under a key that is its
// own unique (not a view of memory the job has let go).
func requireUniqueIndex(t *testing.T, b *Broker) {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	want := map[*job]bool{}
	for _, f := range b.functions {
		for u, j := range f.uniques {
			require.Same(t, unsafe.StringData(j.unique), unsafe.StringData(u), "the key of %q of %q is the job's own unique", u, f.name)
			require.Same(t, f, j.fn)
			want[j] = true
			require.NotNil(t, b.uniques.get(u), "unique %q of %q", u, f.name)
		}
	}
	got := map[*job]bool{}
	b.uniques.all(func(j *job) {
		require.False(t, got[j], "a job indexed twice")
		got[j] = true
		require.NotContains(t, []jobState{stateGone, stateDead}, j.state, "an indexed job has ended")
		require.Same(t, j, b.jobs.get(j.seq), "an indexed job is live")
	})
	require.Equal(t, want, got)
	for k, j := range b.uniques.first {
		require.Same(t, unsafe.StringData(j.unique), unsafe.StringData(k), "the key of %q is the job's own unique", k)
	}
	for k, js := range b.uniques.more {
		require.NotEmpty(t, js)
		require.NotNil(t, b.uniques.first[k])
		own := false
		for _, j := range js {
			require.Equal(t, k, j.unique)
			own = own || unsafe.StringData(j.unique) == unsafe.StringData(k)
		}
		require.True(t, own, "the key of %q is the unique of one of its jobs", k)
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

// The index stays exact through every way a job with a unique comes and
// goes: submits that coalesce or not (the same unique in several
// functions, "-" for the payload's hash, views of the packet), foreground
// and scheduled jobs, results kept, retries and dead letters queued
// again, jobs run again, cancels, a function dropped, tiering and
// restarts.
func TestUniqueIndexStaysExact(t *testing.T) {
	t.Parallel()
	for seed := range uint64(40) {
		r := rand.New(rand.NewPCG(seed, 1))
		pol := Policy{MaxAttempts: 2, ResultRetention: time.Minute, Backoff: Backoff{Initial: time.Second, Jitter: -1},
			Ordering: OrderingUniquePrefix}
		opts := lcOpts{cfg: Config{MemoryBudget: 20, Policies: map[string]Policy{"a": pol, "b": {MaxAttempts: 2}}},
			store: memory.New(), can: []string{"a", "b", "c"}}
		tb := setupLC(t, opts)
		ctx := context.Background()
		var handles [][]byte
		var held []Assignment
		for range 300 {
			switch r.IntN(9) {
			case 0, 1, 2: // "d" has no worker, so that it can be dropped
				fn := []string{"a", "b", "c", "d"}[r.IntN(4)]
				u := fmt.Sprintf("u%d:x", r.IntN(4))
				if r.IntN(5) == 0 {
					u = "-"
				}
				body := []byte(fn + "\x00" + u + "\x00" + fmt.Sprint("p", r.IntN(3)))
				p := SubmitParams{Function: body[:len(fn)], Unique: body[len(fn)+1 : len(fn)+1+len(u)],
					Payload: body[len(fn)+len(u)+2:], Background: r.IntN(4) != 0, Priority: Normal}
				if r.IntN(6) == 0 {
					p.RunAt = tb.clock.Now().Unix() + 5
				}
				if p.Background {
					handles = append(handles, []byte(tb.b.Handle(tb.submit(t, p))))
				} else {
					tb.b.Submit(tb.client, p, func(uint64, bool, error) {})
				}
			case 3, 4:
				if a, ok := tb.b.Grab(tb.worker); ok {
					held = append(held, a)
				}
			case 5:
				if len(held) > 0 {
					i := r.IntN(len(held))
					_ = tb.b.Finish(tb.worker, held[i].Seq, []Outcome{Complete, Fail, Exception}[r.IntN(3)], []byte("r"))
					held = slices.Delete(held, i, i+1)
				}
			case 6:
				if len(handles) > 0 {
					h := handles[r.IntN(len(handles))]
					switch r.IntN(3) {
					case 0:
						_ = tb.b.CancelJob(ctx, h)
					case 1:
						_ = tb.b.RetryDeadLetter(ctx, h)
					case 2:
						_, _, _ = tb.b.RetryJob(ctx, h, "test")
					}
				}
			case 7:
				tb.advance(time.Duration(r.IntN(4)) * time.Second)
			case 8:
				switch r.IntN(4) {
				case 0:
					held = nil
					tb = tb.restart(t, opts)
				case 1:
					_ = tb.b.DropFunction(context.Background(), "d")
				default:
					_, _ = tb.b.RetryDeadLetters(ctx, []string{"a", "b", "c"}[r.IntN(3)])
				}
			}
			requireUniqueIndex(t, tb.b)
		}
	}
}
