// Package storetest holds the conformance suites of Gearwork's stores. Run
// is the suite of store.Store that every store passes (the in-memory one,
// the embedded Pebble one and PostgreSQL), with its optional capabilities
// store.PayloadReader, store.LendingLoader, store.MetaStore and
// store.Writer (a store runs the cases of the capabilities it has); RunShared
// is the suite of store.SharedStore, for a store that several servers share. A store that
// passes them can sit under the broker.
//
// API is not stable: this package is internal to Gearwork.
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sync/errgroup"

	"github.com/gearwork/gearwork/internal/store"
)

// OpenFunc opens the store under test. The first call within a test must
// return an empty store. A later call with the same t, made after the
// previous store was closed, must open the same data again (the same
// directory, database or schema), as a restarted server would. The store is
// closed by the suite; OpenFunc may register its own cleanup with t.
type OpenFunc func(t *testing.T) store.Store

// PerTest returns a function that gives each test its own value: the one
// create makes the first time the test asks, and the same one every later
// time. An OpenFunc uses it for the data (a directory, a schema) that a
// second open in the same test must open again.
func PerTest[V any](create func(t *testing.T) V) func(t *testing.T) V {
	var mu sync.Mutex
	values := map[*testing.T]V{}
	return func(t *testing.T) V {
		mu.Lock()
		v, ok := values[t]
		mu.Unlock()
		if !ok {
			v = create(t)
			mu.Lock()
			values[t] = v
			mu.Unlock()
		}
		return v
	}
}

// Run runs the conformance suite against the stores that open returns. Each
// case is a parallel subtest with its own store.
func Run(t *testing.T, open OpenFunc) {
	t.Helper()
	cases := []conformanceCase[OpenFunc]{
		{"SaveLoad", testSaveLoad, nil},
		{"SaveReplaces", testSaveReplaces, nil},
		{"Delete", testDelete, nil},
		{"LoadOrder", testLoadOrder, nil},
		{"LargePayloads", testLargePayloads, nil},
		{"EmptyFields", testEmptyFields, nil},
		{"NoAliasing", testNoAliasing, nil},
		{"ReopenKeepsData", testReopen, nil},
		{"Close", testClose, nil},
		{"ConcurrentSaves", testConcurrentSaves, nil},
		{"LoadStopsOnError", testLoadStopsOnError, nil},
		{"CancelledContext", testCancelledContext, nil},
		{"ReadPayload", testReadPayload, nil},
		{"LoadLending", testLoadLending, has[store.LendingLoader]},
		{"Meta", testMeta, has[store.MetaStore]},
		{"Write", testWrite, has[store.Writer]},
	}
	runCases(t, open, openStore(t, open), cases)
}

// conformanceCase is one case of a suite whose stores open opens.
type conformanceCase[O any] struct {
	name string
	fn   func(t *testing.T, open O)
	// needs, when set, says whether a store has the optional capability
	// the case checks; a store without it does not run it.
	needs func(store.Store) bool
}

// runCases runs each case that probe has the capabilities for as a
// parallel subtest.
func runCases[O any](t *testing.T, open O, probe store.Store, cases []conformanceCase[O]) {
	t.Helper()
	for _, c := range cases {
		if c.needs != nil && !c.needs(probe) {
			continue
		}
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			c.fn(t, open)
		})
	}
}

// has reports whether s has the optional capability T.
func has[T any](s store.Store) bool {
	_, ok := s.(T)
	return ok
}

// openStore opens a store and closes it when the test ends.
func openStore(t *testing.T, open OpenFunc) store.Store {
	t.Helper()
	s := open(t)
	require.NotNil(t, s, "OpenFunc returned nil")
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// loadAll returns every stored job in the order Load gave them, with empty
// payloads normalised to nil.
func loadAll(t *testing.T, s store.Store) []store.Job {
	t.Helper()
	var out []store.Job
	err := s.Load(context.Background(), func(j store.Job) error {
		out = append(out, normalize(j))
		return nil
	})
	require.NoError(t, err)
	return out
}

func normalize(j store.Job) store.Job {
	if len(j.Payload) == 0 {
		j.Payload = nil
	}
	if len(j.Result) == 0 {
		j.Result = nil
	}
	if len(j.History) == 0 {
		j.History = nil
	}
	return j
}

func normalizeAll(jobs []store.Job) []store.Job {
	out := make([]store.Job, len(jobs))
	for i, j := range jobs {
		out[i] = normalize(j)
	}
	return out
}

// job returns a job with every field set, derived from seq.
func job(seq uint64) store.Job {
	return store.Job{
		Seq:       seq,
		Handle:    fmt.Sprintf("H:test:%d", seq),
		Function:  fmt.Sprintf("fn%d", seq%3),
		Unique:    fmt.Sprintf("u-%d", seq),
		Reducer:   "reduce",
		Payload:   fmt.Appendf(nil, "payload of job %d", seq),
		Priority:  uint8(seq % 3),
		RunAt:     1700000000 + int64(seq),
		Retries:   uint32(seq % 5),
		State:     store.JobState(seq % 4),
		Attempts:  uint32(seq % 7),
		NotBefore: 1700000000e9 + int64(seq),
		LastError: fmt.Sprintf("error %d", seq),
		History: []store.Attempt{
			{Start: int64(seq), End: int64(seq) + 5, Outcome: "failed", Error: "boom", Worker: "127.0.0.1:4730"},
			{Start: int64(seq) + 10, End: int64(seq) + 20, Outcome: "timeout"},
		},
		Result:      fmt.Appendf(nil, "result %d", seq),
		FinishedAt:  int64(seq) * 1000,
		OrderingKey: fmt.Sprintf("order-%d", seq%2),
		MaxAttempts: -1,
		Timeout:     int64(seq) * 1e9,
		Schedule:    "every-minute",
		Tick:        1700000060,
	}
}

func jobs(seqs ...uint64) []store.Job {
	out := make([]store.Job, len(seqs))
	for i, s := range seqs {
		out[i] = job(s)
	}
	return out
}

func seqsOf(jobs []store.Job) []uint64 {
	out := make([]uint64, len(jobs))
	for i, j := range jobs {
		out[i] = j.Seq
	}
	return out
}

func testSaveLoad(t *testing.T, open OpenFunc) {
	s := openStore(t, open)
	ctx := context.Background()
	require.Empty(t, loadAll(t, s), "a new store must be empty")
	want := jobs(1, 2, 3)
	want[1].Unique = "\x00-binary\xff"
	want[2].RunAt = -5
	want[2].Priority = 255
	want[2].Retries = 1<<32 - 1
	require.NoError(t, s.Save(ctx, want))
	require.Equal(t, normalizeAll(want), loadAll(t, s))
}

func testSaveReplaces(t *testing.T, open OpenFunc) {
	s := openStore(t, open)
	ctx := context.Background()
	require.NoError(t, s.Save(ctx, jobs(4, 5, 6)))
	v2 := job(5)
	v2.Retries = 7
	v2.Payload = []byte("second version, longer than the first one was")
	v2.Unique = ""
	require.NoError(t, s.Save(ctx, []store.Job{v2}))
	require.Equal(t, []store.Job{job(4), v2, job(6)}, loadAll(t, s))

	// A batch that names one Seq twice keeps the later record.
	v3 := v2
	v3.Retries = 8
	require.NoError(t, s.Save(ctx, []store.Job{v2, v3}))
	require.Equal(t, []store.Job{job(4), v3, job(6)}, loadAll(t, s))
}

func testDelete(t *testing.T, open OpenFunc) {
	s := openStore(t, open)
	ctx := context.Background()
	require.NoError(t, s.Save(ctx, jobs(1, 2, 3, 4, 5, 6, 7)))
	require.NoError(t, s.Delete(ctx, []uint64{2, 4, 99, 6}), "deleting an unknown Seq is not an error")
	require.Equal(t, jobs(1, 3, 5, 7), loadAll(t, s))
	require.NoError(t, s.Delete(ctx, []uint64{2}), "deleting twice is not an error")
	require.NoError(t, s.Delete(ctx, nil), "an empty delete is not an error")
	require.NoError(t, s.Save(ctx, nil), "an empty save is not an error")
	require.Equal(t, jobs(1, 3, 5, 7), loadAll(t, s))
	require.NoError(t, s.Delete(ctx, []uint64{1, 3, 5, 7}))
	require.Empty(t, loadAll(t, s))
	// A deleted Seq can be saved again.
	require.NoError(t, s.Save(ctx, jobs(3)))
	require.Equal(t, jobs(3), loadAll(t, s))
}

func testLoadOrder(t *testing.T, open OpenFunc) {
	s := openStore(t, open)
	ctx := context.Background()
	// Values whose byte order differs from their numeric order in naive
	// encodings (little endian, decimal text).
	seqs := []uint64{1, 2, 9, 10, 11, 99, 100, 255, 256, 257, 1000, 65535, 65536,
		1 << 24, 1<<32 - 1, 1 << 32, 1 << 40, 1<<63 - 1, 1 << 63, 1<<64 - 1}
	for i := range 300 {
		seqs = append(seqs, uint64(3000+i*7))
	}
	shuffled := append([]uint64(nil), seqs...)
	rng := rand.New(rand.NewPCG(1, 2))
	rng.Shuffle(len(shuffled), func(a, b int) { shuffled[a], shuffled[b] = shuffled[b], shuffled[a] })
	for len(shuffled) > 0 {
		n := min(len(shuffled), 1+rng.IntN(40))
		require.NoError(t, s.Save(ctx, jobs(shuffled[:n]...)))
		shuffled = shuffled[n:]
	}
	got := seqsOf(loadAll(t, s))
	want := append([]uint64(nil), seqs...)
	slices.Sort(want)
	require.Equal(t, want, got, "Load must give jobs in ascending Seq order")
}

func testLargePayloads(t *testing.T, open OpenFunc) {
	s := openStore(t, open)
	ctx := context.Background()
	rng := rand.NewChaCha8([32]byte{3, 4})
	big := func(n int) []byte {
		b := make([]byte, n)
		_, _ = rng.Read(b)
		return b
	}
	want := jobs(1, 2, 3, 4)
	want[0].Payload = big(16 << 20)
	want[1].Payload = big(1 << 20)
	want[2].Payload = big(1<<20 + 1)
	want[3].Payload = big(70000)
	require.NoError(t, s.Save(ctx, want[:1]))
	require.NoError(t, s.Save(ctx, want[1:]))
	got := loadAll(t, s)
	require.Len(t, got, len(want))
	for i := range want {
		require.Equal(t, want[i].Seq, got[i].Seq)
		require.True(t, bytes.Equal(want[i].Payload, got[i].Payload), "payload of job %d differs", want[i].Seq)
	}
}

func testEmptyFields(t *testing.T, open OpenFunc) {
	s := openStore(t, open)
	ctx := context.Background()
	want := []store.Job{
		{Seq: 1},
		{Seq: 2, Payload: []byte{}, Result: []byte{}, History: []store.Attempt{}},
		{Seq: 3, Function: "f", Payload: nil, Handle: "H:x:3"},
	}
	require.NoError(t, s.Save(ctx, want))
	require.Equal(t, normalizeAll(want), loadAll(t, s), "empty payloads load as empty")
}

func testNoAliasing(t *testing.T, open OpenFunc) {
	s := openStore(t, open)
	ctx := context.Background()
	j := job(1)
	j.Payload = []byte("original")
	require.NoError(t, s.Save(ctx, []store.Job{j}))
	copy(j.Payload, "MUTATED!")
	require.Equal(t, []byte("original"), loadAll(t, s)[0].Payload, "Save must not keep the caller's payload memory")

	// Payloads handed to Load's callback stay valid after Load returns.
	require.NoError(t, s.Save(ctx, jobs(2, 3, 4, 5)))
	var kept [][]byte
	require.NoError(t, s.Load(ctx, func(j store.Job) error {
		kept = append(kept, j.Payload)
		return nil
	}))
	require.NoError(t, s.Save(ctx, jobs(6, 7)))
	require.Equal(t, []byte("original"), kept[0])
	for i, seq := range []uint64{2, 3, 4, 5} {
		require.Equal(t, job(seq).Payload, kept[i+1])
	}
}

func testReopen(t *testing.T, open OpenFunc) {
	ctx := context.Background()
	s := open(t)
	require.NoError(t, s.Save(ctx, jobs(1, 2, 3, 4)))
	v2 := job(2)
	v2.Retries = 9
	require.NoError(t, s.Save(ctx, []store.Job{v2}))
	require.NoError(t, s.Delete(ctx, []uint64{3}))
	require.NoError(t, s.Close())

	s = openStore(t, open)
	want := []store.Job{job(1), v2, job(4)}
	require.Equal(t, want, loadAll(t, s), "a reopened store must hold what was saved")
	require.NoError(t, s.Save(ctx, jobs(5)))
	require.NoError(t, s.Delete(ctx, []uint64{1}))
	require.Equal(t, []store.Job{v2, job(4), job(5)}, loadAll(t, s))
}

func testClose(t *testing.T, open OpenFunc) {
	ctx := context.Background()
	s := open(t)
	require.NoError(t, s.Save(ctx, jobs(1)))
	require.NoError(t, s.Close())
	require.NoError(t, s.Close(), "Close is idempotent")
	require.ErrorIs(t, s.Save(ctx, jobs(2)), store.ErrClosed)
	require.ErrorIs(t, s.Delete(ctx, []uint64{1}), store.ErrClosed)
	require.ErrorIs(t, s.Load(ctx, func(store.Job) error { return nil }), store.ErrClosed)
	if pr, ok := s.(store.PayloadReader); ok {
		_, err := pr.ReadPayload(ctx, 1)
		require.ErrorIs(t, err, store.ErrClosed)
	}
}

func testConcurrentSaves(t *testing.T, open OpenFunc) {
	s := openStore(t, open)
	ctx := context.Background()
	const writers, rounds, per = 6, 30, 8
	var g errgroup.Group
	for w := range writers {
		g.Go(func() error {
			for r := range rounds {
				base := uint64(w*rounds*per + r*per + 1)
				batch := make([]uint64, per)
				for i := range batch {
					batch[i] = base + uint64(i)
				}
				if err := s.Save(ctx, jobs(batch...)); err != nil {
					return err
				}
				// Delete the odd ones again, concurrently with other saves.
				var odd []uint64
				for _, q := range batch {
					if q%2 == 1 {
						odd = append(odd, q)
					}
				}
				if err := s.Delete(ctx, odd); err != nil {
					return err
				}
			}
			return nil
		})
	}
	require.NoError(t, g.Wait())
	var want []uint64
	for q := uint64(1); q <= writers*rounds*per; q++ {
		if q%2 == 0 {
			want = append(want, q)
		}
	}
	got := loadAll(t, s)
	require.Equal(t, want, seqsOf(got))
	for _, j := range got {
		require.Equal(t, job(j.Seq), j)
	}
}

func testLoadStopsOnError(t *testing.T, open OpenFunc) {
	s := openStore(t, open)
	ctx := context.Background()
	require.NoError(t, s.Save(ctx, jobs(1, 2, 3, 4, 5)))
	stop := errors.New("stop here")
	var seen []uint64
	err := s.Load(ctx, func(j store.Job) error {
		seen = append(seen, j.Seq)
		if j.Seq == 2 {
			return stop
		}
		return nil
	})
	require.ErrorIs(t, err, stop)
	require.Equal(t, []uint64{1, 2}, seen, "Load must stop at the first error")
}

func testCancelledContext(t *testing.T, open OpenFunc) {
	s := openStore(t, open)
	require.NoError(t, s.Save(context.Background(), jobs(1)))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	require.ErrorIs(t, s.Save(ctx, jobs(2)), context.Canceled)
	require.ErrorIs(t, s.Delete(ctx, []uint64{1}), context.Canceled)
	require.ErrorIs(t, s.Load(ctx, func(store.Job) error { return nil }), context.Canceled)
	require.Equal(t, jobs(1), loadAll(t, s), "a cancelled call must change nothing")
}

func testReadPayload(t *testing.T, open OpenFunc) {
	s := openStore(t, open)
	pr, ok := s.(store.PayloadReader)
	if !ok {
		t.Skip("the store does not implement ReadPayload")
	}
	ctx := context.Background()
	want := jobs(1, 2, 3)
	want[1].Payload = nil
	want[2].Payload = bytes.Repeat([]byte("x"), 1<<20)
	require.NoError(t, s.Save(ctx, want))
	for _, j := range want {
		got, err := pr.ReadPayload(ctx, j.Seq)
		require.NoError(t, err)
		require.True(t, bytes.Equal(j.Payload, got), "payload of job %d", j.Seq)
	}
	_, err := pr.ReadPayload(ctx, 42)
	require.ErrorIs(t, err, store.ErrNotFound)
	require.NoError(t, s.Delete(ctx, []uint64{1}))
	_, err = pr.ReadPayload(ctx, 1)
	require.ErrorIs(t, err, store.ErrNotFound)
}

// testLoadLending: LoadLending yields the jobs Load yields, in the same
// order, each payload whole while each runs.
func testLoadLending(t *testing.T, open OpenFunc) {
	s, ll := openAs[store.LendingLoader](t, open, "LoadLending")
	t.Cleanup(func() { _ = s.Close() })
	ctx := context.Background()
	want := jobs(1, 2, 3, 4)
	want[1].Payload = nil
	want[2].Payload = bytes.Repeat([]byte("y"), 1<<20)
	require.NoError(t, s.Save(ctx, want))
	var got []store.Job
	require.NoError(t, ll.LoadLending(ctx, func(j store.Job) error {
		j.Payload = bytes.Clone(j.Payload) // lent only until each returns
		got = append(got, normalize(j))
		return nil
	}))
	require.Equal(t, loadAll(t, s), got)
	require.Equal(t, normalizeAll(want), got)
}

// openAs opens a store and returns it also as the capability T, which Run
// checked the store has.
func openAs[T any](t *testing.T, open OpenFunc, capability string) (store.Store, T) {
	s := open(t)
	c, ok := s.(T)
	if !ok {
		_ = s.Close()
		t.Fatal("the store does not implement " + capability)
	}
	return s, c
}

// loadMeta returns a store's metadata entries by key.
func loadMeta(t *testing.T, m store.MetaStore) map[string]string {
	got := map[string]string{}
	require.NoError(t, m.LoadMeta(context.Background(), func(e store.Meta) error {
		got[e.Key] = string(e.Value)
		return nil
	}))
	return got
}

func testMeta(t *testing.T, open OpenFunc) {
	ctx := context.Background()
	s, m := openAs[store.MetaStore](t, open, "MetaStore")
	load := func(m store.MetaStore) map[string]string { return loadMeta(t, m) }
	require.Empty(t, load(m))
	require.NoError(t, m.PutMeta(ctx, []store.Meta{
		{Key: "cron/a", Value: []byte("1")}, {Key: "pause/f", Value: []byte("2")},
		{Key: "cron/a", Value: []byte("3")}, {Key: "gone", Value: nil},
	}))
	require.NoError(t, s.Save(ctx, jobs(1)))
	require.Equal(t, map[string]string{"cron/a": "3", "pause/f": "2"}, load(m), "a later entry for a key wins")
	require.NoError(t, m.PutMeta(ctx, []store.Meta{{Key: "pause/f", Value: nil}}))
	require.NoError(t, s.Close())
	s = openStore(t, open)
	require.Equal(t, map[string]string{"cron/a": "3"}, load(s.(store.MetaStore)), "metadata survives a reopen")
	require.Equal(t, jobs(1), loadAll(t, s), "metadata is not a job")
}

// testWrite checks a Writer: one write saves, writes metadata and deletes
// (a job saved and deleted in it ends up deleted), and jobs of a batch
// keep their batch across a reopen.
func testWrite(t *testing.T, open OpenFunc) {
	ctx := context.Background()
	s, w := openAs[store.Writer](t, open, "Writer")
	inBatch := jobs(1, 2, 3, 4)
	for i := range inBatch {
		inBatch[i].Batch = 1<<40 + uint64(i%2)
	}
	inBatch[2].After, inBatch[2].AfterAnyway = []uint64{1, 1 << 50}, true
	inBatch[3].After, inBatch[3].Batch = []uint64{2}, 0
	require.NoError(t, s.Save(ctx, inBatch[:2]))
	require.NoError(t, w.Write(ctx, store.Write{
		Save:   append([]store.Job{job(9)}, inBatch[2:]...),
		Meta:   []store.Meta{{Key: "batch/1", Value: []byte("{}")}},
		Delete: []uint64{1, 9},
	}))
	require.NoError(t, w.Write(ctx, store.Write{}), "an empty write is not an error")
	require.NoError(t, s.Close())
	s = openStore(t, open)
	require.Equal(t, normalizeAll(inBatch[1:]), loadAll(t, s))
	if pr, ok := s.(store.PayloadReader); ok {
		got, err := pr.ReadPayload(ctx, 3)
		require.NoError(t, err)
		require.Equal(t, inBatch[2].Payload, got, "the payload of a job of a batch")
	}
	require.Equal(t, map[string]string{"batch/1": "{}"}, loadMeta(t, s.(store.MetaStore)))
}
