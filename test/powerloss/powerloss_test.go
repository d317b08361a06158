package powerloss

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"os"
	"regexp"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/gearwork/gearwork/internal/broker"
	"github.com/gearwork/gearwork/internal/store"
	"github.com/gearwork/gearwork/internal/store/pebble"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// cutsFromEnv is the number of power cuts of a run: POWERLOSS_CUTS, or def.
func cutsFromEnv(t *testing.T, def int) int {
	t.Helper()
	v := os.Getenv("POWERLOSS_CUTS")
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	require.NoError(t, err, "POWERLOSS_CUTS")
	return n
}

// seedFromEnv is the random seed of a run: POWERLOSS_SEED, or the time.
func seedFromEnv(t *testing.T) uint64 {
	t.Helper()
	if v := os.Getenv("POWERLOSS_SEED"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		require.NoError(t, err, "POWERLOSS_SEED")
		return n
	}
	return uint64(time.Now().UnixNano())
}

// TestPowerLoss runs the real broker on the Pebble store on Pebble's
// crashable in-memory file system, under concurrent background submits
// and completions, and cuts the power at random moments: the file system
// is cloned with only what was synced (and, in some cuts, a random part of
// what was not), the server's state on the clone is reopened, and the
// ledger of what clients were told is checked against it (ledgerChecks).
// POWERLOSS_CUTS sets the number of cuts (default 15), POWERLOSS_SEED the
// random seed (logged).
func TestPowerLoss(t *testing.T) {
	t.Parallel()
	r := runCuts(t, pebble.SyncAlways, cutsFromEnv(t, 15), seedFromEnv(t))
	for _, v := range r.violations {
		t.Error(v)
	}
	t.Logf("%d cuts: %d jobs acknowledged, %d completed, %d dead letters retried and %d purged with an OK, "+
		"%d records in the store after the last cut (and %d records of ended jobs), %d acknowledged jobs lost",
		r.cuts, r.acked, r.completed, r.retried, r.purged, r.recovered, r.ended, r.lost)
	t.Logf("records after the last cut: %v", r.states)
	require.Positive(t, r.ended, "completed jobs leave records in the store")
	require.Zero(t, r.lost)
	require.Positive(t, r.acked)
	require.Positive(t, r.completed)
	require.Positive(t, r.retried)
	require.Positive(t, r.purged)
}

// TestPowerLossSeesUnsyncedAcknowledgements runs the same harness with a
// store that acknowledges before the fsync (--sync none): the ledger must
// show lost jobs, or the power-loss test could not see any.
func TestPowerLossSeesUnsyncedAcknowledgements(t *testing.T) {
	t.Parallel()
	r := runCuts(t, pebble.SyncNone, 5, seedFromEnv(t))
	t.Logf("%d cuts with --sync none: %d acknowledged, %d lost", r.cuts, r.acked, r.lost)
	require.Positive(t, r.lost, "acknowledgements before the fsync must show up as lost jobs")
}

// Functions of the load: plain jobs are deleted when they complete; kept
// jobs keep their result (StateDone records); flaky jobs fail their first
// run, become dead letters and are retried by an administrator; doomed
// jobs always fail and their dead letters are purged.
const (
	fnPlain  = "plain"
	fnKept   = "kept"
	fnFlaky  = "flaky"
	fnDoomed = "doomed"
)

var functions = []string{fnPlain, fnKept, fnFlaky, fnDoomed}

// fnMeta has no jobs: an administrator changes its policy and pause.
const fnMeta = "meta"

// pauseBase is the end of fnMeta's first pause (Unix nanoseconds, in
// 2096); each pause ends a little later than the one before.
const pauseBase = int64(4e18)

// loadMeta returns the metadata in st.
func loadMeta(t *testing.T, st *pebble.Store) map[string]string {
	t.Helper()
	meta := map[string]string{}
	require.NoError(t, st.LoadMeta(context.Background(), func(m store.Meta) error {
		meta[m.Key] = string(m.Value)
		return nil
	}), "the metadata does not load after a power cut")
	return meta
}

// keptResults returns the uniques of the retained results among jobs.
func keptResults(jobs []store.Job) map[string]bool {
	kept := map[string]bool{}
	for _, j := range jobs {
		if j.State == store.StateDone {
			kept[j.Unique] = true
		}
	}
	return kept
}

// ledger is what the clients of all lifetimes were told.
type ledger struct {
	mu sync.Mutex
	// acked: unique -> function, for submits answered JOB_CREATED.
	acked map[string]string
	// completed: uniques whose WORK_COMPLETE the server accepted.
	completed map[string]bool
	// failed: uniques (and seqs) of the jobs whose failure the server
	// accepted, which made them dead letters.
	failed map[string]uint64
	// retried and purged: dead letters whose retry or purge the server
	// answered OK.
	retried, purged map[string]bool
	// purgeAsked: dead letters a purge was sent for, answered or not (one
	// whose answer the cut swallowed may or may not be gone).
	purgeAsked map[string]bool
	// toHandle: failed jobs no retry or purge has been answered for yet,
	// by function.
	toHandle map[string]map[string]uint64
	// policySent and policyOK: the highest max_queue of fnMeta's policy
	// sent and answered (Durable) so far; pauseSent and pauseOK the same
	// for the end of fnMeta's pause, in Unix nanoseconds. Each change is
	// larger than the last, so the stored value must lie between them.
	policySent, policyOK, pauseSent, pauseOK int64
	// metaN counts the changes to fnMeta.
	metaN int64
	// recordsRead: the records of ended jobs that a listing of the store
	// answered in the current lifetime, by seq.
	recordsRead map[uint64]string
	// cut is set just before a power cut: no client hears an answer of
	// the lifetime after it.
	cut bool
}

// readRecords records the records a listing answered.
func (l *ledger) readRecords(recs []store.Record) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cut {
		return
	}
	for _, r := range recs {
		l.recordsRead[r.Seq] = r.State
	}
}

// nextMeta returns the next value of fnMeta's changes.
func (l *ledger) nextMeta() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.metaN++
	return l.metaN
}

// metaSent records that a policy (or pause) change to v is under way.
func (l *ledger) metaSent(pause bool, v int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if pause {
		l.pauseSent = v
	} else {
		l.policySent = v
	}
}

// metaOK records that a policy (or pause) change to v was answered.
func (l *ledger) metaOK(pause bool, v int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cut {
		return
	}
	if pause {
		l.pauseOK = v
	} else {
		l.policyOK = v
	}
}

func newLedger() *ledger {
	return &ledger{acked: map[string]string{}, completed: map[string]bool{}, failed: map[string]uint64{},
		retried: map[string]bool{}, purged: map[string]bool{}, purgeAsked: map[string]bool{},
		toHandle: map[string]map[string]uint64{fnFlaky: {}, fnDoomed: {}}}
}

func (l *ledger) askPurge(unique string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.purgeAsked[unique] = true
}

func (l *ledger) fail(fn, unique string, seq uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.failed[unique] = seq
	if m := l.toHandle[fn]; m != nil {
		m[unique] = seq
	}
}

// failedBefore reports whether a job's failure was accepted before.
func (l *ledger) failedBefore(unique string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	_, ok := l.failed[unique]
	return ok
}

// adminDone records an OK to a retry or purge, or (ok false) that the
// dead letter is not there to act on.
func (l *ledger) adminDone(fn, unique string, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cut {
		return
	}
	delete(l.toHandle[fn], unique)
	switch {
	case !ok:
	case fn == fnFlaky:
		l.retried[unique] = true
	default:
		l.purged[unique] = true
	}
}

// deadToHandle lists the failed jobs of fn that no retry or purge was
// answered for yet.
func (l *ledger) deadToHandle(fn string) map[string]uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return maps.Clone(l.toHandle[fn])
}

func (l *ledger) ack(unique, fn string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.cut {
		l.acked[unique] = fn
	}
}

// complete records a completion. Completions are recorded until after the
// cut: a delete the committer wrote before the cut may be recorded here
// only after it, and counting a job completed only weakens the check.
func (l *ledger) complete(unique string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.completed[unique] = true
}

// backlog is about how many acknowledged jobs have not ended.
func (l *ledger) backlog() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.acked) - len(l.completed) - len(l.purgeAsked)
}

func (l *ledger) ackCount() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.acked)
}

// setCut stops (true) or resumes (false) recording acknowledgements.
func (l *ledger) setCut(cut bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.cut = cut
	if !cut {
		l.recordsRead = map[uint64]string{}
	}
}

// recovered returns the ledger as a recovery is checked against it.
func (l *ledger) recovered() recovered {
	l.mu.Lock()
	defer l.mu.Unlock()
	return recovered{acked: maps.Clone(l.acked), completed: maps.Clone(l.completed),
		retried: maps.Clone(l.retried), purged: maps.Clone(l.purged), purgeAsked: maps.Clone(l.purgeAsked),
		policySent: l.policySent, policyOK: l.policyOK, pauseSent: l.pauseSent, pauseOK: l.pauseOK,
		recordsRead: maps.Clone(l.recordsRead)}
}

// recovered is what a reopened store holds, with the ledger it is checked
// against.
type recovered struct {
	// acked: every job acknowledged before the cut (unique -> function).
	acked map[string]string
	// completed: every job completed before (or after) the cut.
	completed map[string]bool
	// retried and purged: dead letters whose retry or purge was answered
	// OK before the cut.
	retried, purged map[string]bool
	// purgeAsked: dead letters a purge was sent for, answered or not.
	purgeAsked map[string]bool
	// jobs: the records in the reopened store.
	jobs []store.Job
	// ended: the records of ended jobs in the reopened store.
	ended []store.Record
	// policySent, policyOK, pauseSent, pauseOK: as in ledger.
	policySent, policyOK, pauseSent, pauseOK int64
	// recordsRead: the records a listing answered in the lifetime the
	// cut ended (seq -> state).
	recordsRead map[uint64]string
	// meta: the metadata in the reopened store.
	meta map[string]string
	// keptBefore: the retained results the previous recovery found.
	// Their retention (an hour, set at run time) outlasts the test, so
	// each must still be there, stored as a retained result.
	keptBefore map[string]bool
}

// ledgerCheck returns the violations it finds in one recovery.
type ledgerCheck struct {
	name  string
	check func(r recovered) []string
}

// lostJobs lists the jobs acknowledged and never completed (nor purged)
// that the store does not hold.
func lostJobs(r recovered) []string {
	have := map[string]bool{}
	for _, j := range r.jobs {
		have[j.Unique] = true
	}
	var out []string
	for u := range r.acked {
		if !have[u] && !r.completed[u] && !r.purgeAsked[u] {
			out = append(out, u)
		}
	}
	slices.Sort(out)
	return out
}

var ledgerChecks = []ledgerCheck{
	{"no acknowledged job is lost", func(r recovered) []string {
		var out []string
		for _, u := range lostJobs(r) {
			out = append(out, fmt.Sprintf("lost: job %s of %s was acknowledged, never completed, and is not in the store", u, r.acked[u]))
		}
		return out
	}},
	{"one record per job: never both completed and queued", func(r recovered) []string {
		seen := map[string]store.Job{}
		var out []string
		for _, j := range r.jobs {
			if prev, ok := seen[j.Unique]; ok {
				out = append(out, fmt.Sprintf("job %s has two records: seq %d (%s) and seq %d (%s)",
					j.Unique, prev.Seq, prev.State, j.Seq, j.State))
			}
			seen[j.Unique] = j
		}
		return out
	}},
	{"a kept result belongs to a job that completed", func(r recovered) []string {
		var out []string
		for _, j := range r.jobs {
			if j.State == store.StateDone && !r.completed[j.Unique] {
				out = append(out, fmt.Sprintf("job %s (seq %d) is stored as completed, but it never completed", j.Unique, j.Seq))
			}
			if j.State == store.StateDone && j.Function != fnKept {
				out = append(out, fmt.Sprintf("job %s of %s keeps a result its policy does not keep", j.Unique, j.Function))
			}
		}
		return out
	}},
	{"a completed job's record and its queued job are never both stored", func(r recovered) []string {
		live := map[uint64]store.Job{}
		for _, j := range r.jobs {
			if j.State == store.StateQueued || j.State == store.StateRetryWait {
				live[j.Seq] = j
			}
		}
		var out []string
		for _, e := range r.ended {
			if j, ok := live[e.Seq]; ok && e.State == "complete" {
				out = append(out, fmt.Sprintf("job %s (seq %d) is stored as %s and has a record of its completion", j.Unique, j.Seq, j.State))
			}
		}
		return out
	}},
	{"an acknowledged retry of a dead letter is never taken back", func(r recovered) []string {
		var out []string
		for _, j := range r.jobs {
			if j.State == store.StateDead && r.retried[j.Unique] {
				out = append(out, fmt.Sprintf("job %s (seq %d) is a dead letter again after its retry was answered OK", j.Unique, j.Seq))
			}
		}
		return out
	}},
	{"an acknowledged purge of a dead letter is never taken back", func(r recovered) []string {
		var out []string
		for _, j := range r.jobs {
			if r.purged[j.Unique] {
				out = append(out, fmt.Sprintf("job %s (seq %d) is back as %s after its purge was answered OK", j.Unique, j.Seq, j.State))
			}
		}
		return out
	}},
	{"a record of an ended job that was read survives", func(r recovered) []string {
		have := map[uint64]string{}
		for _, e := range r.ended {
			have[e.Seq] = e.State
		}
		live := map[uint64]bool{}
		for _, j := range r.jobs {
			live[j.Seq] = true
		}
		var out []string
		for seq, state := range r.recordsRead {
			switch {
			case have[seq] == state:
			case state == "dead" && (live[seq] || have[seq] != ""):
				// A dead letter queued again loses its record and gets a
				// new one when it ends again (docs/durability.md).
			default:
				out = append(out, fmt.Sprintf("the record of job %d (%s) was read before the cut and is %q after it (live: %v)",
					seq, state, have[seq], live[seq]))
			}
		}
		slices.Sort(out)
		return out
	}},
	{"a retained result stays until its retention ends", func(r recovered) []string {
		kept := map[string]bool{}
		for _, j := range r.jobs {
			if j.State == store.StateDone {
				kept[j.Unique] = true
			}
		}
		var out []string
		for u := range r.keptBefore {
			if !kept[u] {
				out = append(out, fmt.Sprintf("the retained result of job %s is gone before its retention ended", u))
			}
		}
		slices.Sort(out)
		return out
	}},
	{"an acknowledged policy or pause is never taken back", func(r recovered) []string {
		var out []string
		for _, m := range []struct {
			key      string
			re       *regexp.Regexp
			ok, sent int64
		}{
			{"policy/" + fnMeta, regexp.MustCompile(`(?:^| )max_queue=(\d+)`), r.policyOK, r.policySent},
			{"pause/" + fnMeta, regexp.MustCompile(`^(\d+)$`), r.pauseOK, r.pauseSent},
		} {
			v, stored := r.meta[m.key]
			var got int64
			if match := m.re.FindStringSubmatch(v); match != nil {
				got, _ = strconv.ParseInt(match[1], 10, 64)
			}
			switch {
			case !stored && m.ok > 0:
				out = append(out, fmt.Sprintf("%s is not stored, but %d was answered", m.key, m.ok))
			case stored && (got < m.ok || got > m.sent):
				out = append(out, fmt.Sprintf("%s is %q: %d was answered, at most %d sent", m.key, v, m.ok, m.sent))
			}
		}
		return out
	}},
	{"only acknowledged or unanswered submits are stored", func(r recovered) []string {
		var out []string
		for _, j := range r.jobs {
			if !slices.Contains(functions, j.Function) {
				out = append(out, fmt.Sprintf("seq %d has unknown function %q", j.Seq, j.Function))
			}
			if j.Unique == "" {
				out = append(out, fmt.Sprintf("seq %d has no unique", j.Seq))
			}
		}
		return out
	}},
}

// result sums up a run.
type result struct {
	cuts, acked, completed, retried, purged, recovered, ended, lost int
	violations                                                      []string
	// states counts the records after the last cut by function/state.
	states map[string]int
}

// runCuts runs cuts lifetimes of the server on one crashable file system,
// each ended by a power cut, and checks every recovery.
func runCuts(t *testing.T, mode pebble.SyncMode, cuts int, seed uint64) result {
	t.Helper()
	t.Logf("seed %d (POWERLOSS_SEED=%d repeats the random choices of this run)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	fs := vfs.NewCrashableMem()
	const dir = "/data"
	led := newLedger()
	var res result
	var keptBefore map[string]bool
	for cut := range cuts {
		// Reopen what the last cut left: the store must open every time.
		st, err := pebble.Open(context.Background(), dir, pebble.Options{FS: fs, Sync: mode, Interval: time.Hour,
			MemTableSize: 256 << 10, CacheSize: 1 << 20, Logger: slog.New(slog.DiscardHandler)})
		require.NoError(t, err, "cut %d: the store does not open after a power cut", cut)
		rec := led.recovered()
		require.NoError(t, st.Load(context.Background(), func(j store.Job) error {
			rec.jobs = append(rec.jobs, j)
			return nil
		}), "cut %d: the store does not load after a power cut", cut)
		rec.ended, err = st.Records(context.Background(), store.RecordQuery{Limit: 1 << 30})
		require.NoError(t, err, "cut %d: the job records do not read after a power cut", cut)
		rec.meta = loadMeta(t, st)
		rec.keptBefore = keptBefore
		keptBefore = keptResults(rec.jobs)
		res.recovered = len(rec.jobs)
		for _, c := range ledgerChecks {
			for _, v := range c.check(rec) {
				if len(res.violations) < 20 {
					res.violations = append(res.violations, fmt.Sprintf("cut %d: %s: %s", cut, c.name, v))
				}
			}
		}
		fs = runLifetime(t, st, fs, led, cut, rng)
		res.cuts++
	}
	// A last reopen checks the state the last cut left.
	st, err := pebble.Open(context.Background(), dir, pebble.Options{FS: fs, Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err, "the store does not open after the last power cut")
	rec := led.recovered()
	require.NoError(t, st.Load(context.Background(), func(j store.Job) error {
		rec.jobs = append(rec.jobs, j)
		return nil
	}))
	rec.ended, err = st.Records(context.Background(), store.RecordQuery{Limit: 1 << 30})
	require.NoError(t, err)
	rec.meta = loadMeta(t, st)
	rec.keptBefore = keptBefore
	require.NoError(t, st.Close())
	for _, c := range ledgerChecks {
		for _, v := range c.check(rec) {
			if len(res.violations) < 20 {
				res.violations = append(res.violations, fmt.Sprintf("after the last cut: %s: %s", c.name, v))
			}
		}
	}
	res.lost = len(lostJobs(rec))
	res.recovered = len(rec.jobs)
	res.ended = len(rec.ended)
	res.states = map[string]int{}
	for _, j := range rec.jobs {
		res.states[j.Function+"/"+j.State.String()]++
	}
	res.acked, res.completed, res.retried, res.purged = len(rec.acked), len(rec.completed), len(rec.retried), len(rec.purged)
	return res
}

// runLifetime starts a broker on st, runs the load until a random moment,
// cuts the power there and returns the file system as the cut left it.
func runLifetime(t *testing.T, st *pebble.Store, fs *vfs.MemFS, led *ledger, cut int, rng *rand.Rand) *vfs.MemFS {
	t.Helper()
	b := broker.New(broker.Config{
		HandlePrefix: "H:p:",
		Store:        st,
		Logger:       slog.New(slog.DiscardHandler),
		Policies: map[string]broker.Policy{
			fnFlaky:  {MaxAttempts: 1},
			fnDoomed: {MaxAttempts: 1},
		},
	})
	require.NoError(t, b.Start(context.Background()), "cut %d: the broker does not start on the recovered store", cut)
	if cut == 0 {
		// Kept results are kept by a policy set at run time, which each
		// restart must apply before it replays them.
		b.SetPolicy(fnKept, broker.Policy{ResultRetention: time.Hour})
		require.NoError(t, b.Durable(context.Background()))
	}
	led.setCut(false)

	stop := make(chan struct{})
	// quiet holds the submitters and administrators off before some
	// cuts, so that the commit rounds before the cut write only ends of
	// jobs, which are not fsynced until someone reads them.
	var quiet atomic.Bool
	var wg sync.WaitGroup
	// Submitters: each submits, waits for the answer, and records
	// JOB_CREATED in the ledger.
	for g := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sess := b.NewSession("submitter", nopOutbox{})
			defer b.CloseSession(sess)
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if led.backlog() > 1000 || quiet.Load() {
					// Let the workers catch up, so that a long run stays
					// quick to replay.
					select {
					case <-stop:
						return
					case <-time.After(time.Millisecond):
						continue
					}
				}
				fn := []string{fnPlain, fnPlain, fnKept, fnFlaky, fnDoomed}[i%5]
				unique := fmt.Sprintf("c%d-g%d-%d", cut, g, i)
				done := make(chan error, 1)
				b.Submit(sess, broker.SubmitParams{Function: []byte(fn), Unique: []byte(unique), Payload: []byte(unique),
					Background: true}, func(_ uint64, _ bool, err error) { done <- err })
				if err := <-done; err != nil {
					return // the broker is stopping
				}
				led.ack(unique, fn)
			}
		}()
	}
	// Workers: take jobs and complete them, recording each completion.
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			wake := make(broker.NoopSignal, 1)
			sess := b.NewSession("worker", wake)
			defer b.CloseSession(sess)
			for _, fn := range functions {
				b.CanDo(sess, []byte(fn), 0)
			}
			for {
				a, ok := b.Grab(sess)
				if !ok {
					b.PreSleep(sess)
					select {
					case <-wake:
						continue
					case <-stop:
						return
					}
				}
				if a.Function == fnDoomed || (a.Function == fnFlaky && !led.failedBefore(a.Unique)) {
					if err := b.Finish(sess, a.Seq, broker.Fail, nil); err == nil {
						led.fail(a.Function, a.Unique, a.Seq)
					}
					continue
				}
				if err := b.Finish(sess, a.Seq, broker.Complete, []byte("done")); err == nil {
					led.complete(a.Unique)
				}
			}
		}()
	}
	// An administrator retries the flaky jobs' dead letters and purges
	// the doomed ones', one by one, recording each OK.
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			for fn, retry := range map[string]bool{fnFlaky: true, fnDoomed: false} {
				if quiet.Load() {
					break
				}
				for u, seq := range led.deadToHandle(fn) {
					select {
					case <-stop:
						return
					default:
					}
					h := []byte(b.Handle(seq))
					var err error
					if retry {
						err = b.RetryDeadLetter(context.Background(), h)
					} else {
						led.askPurge(u)
						err = b.PurgeDeadLetter(context.Background(), h)
					}
					switch {
					case err == nil:
						led.adminDone(fn, u, true)
					case errors.Is(err, broker.ErrJobNotFound):
						// Not a dead letter in this lifetime: retried or
						// purged before a cut that swallowed the answer.
						led.adminDone(fn, u, false)
					}
				}
			}
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
		}
	}()

	// A reader lists the newest records of ended jobs now and then,
	// recording what the store answered.
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
			recs, err := st.Records(context.Background(), store.RecordQuery{Limit: 20})
			if err == nil {
				led.readRecords(recs)
			}
		}
	}()
	// Another administrator changes fnMeta's policy and pause, each time
	// to a larger value, recording what was sent and what answered.
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
			if quiet.Load() {
				continue
			}
			pause := i%2 == 1
			v := led.nextMeta()
			if pause {
				v += pauseBase
				led.metaSent(true, v)
				if b.Pause(fnMeta, time.Unix(0, v)) != nil {
					continue
				}
			} else {
				led.metaSent(false, v)
				b.SetPolicy(fnMeta, broker.Policy{MaxQueue: [3]int{int(v), int(v), int(v)}})
			}
			if b.Durable(context.Background()) == nil {
				led.metaOK(pause, v)
			}
		}
	}()

	// Cut the power at a random moment: after a random number of new
	// acknowledgements, or a random time.
	target := led.ackCount() + 5 + rng.IntN(200)
	deadline := time.Now().Add(time.Duration(1+rng.IntN(50)) * time.Millisecond)
	for time.Now().Before(deadline) && led.ackCount() < target {
		time.Sleep(time.Millisecond)
	}
	if rng.IntN(2) == 0 {
		quiet.Store(true)
		time.Sleep(time.Duration(2+rng.IntN(10)) * time.Millisecond)
	}
	cfg := vfs.CrashCloneCfg{}
	if rng.IntN(2) == 0 {
		// Some of what was not synced made it to the disk.
		cfg = vfs.CrashCloneCfg{UnsyncedDataPercent: 1 + rng.IntN(99), RNG: rand.New(rand.NewPCG(rng.Uint64(), rng.Uint64()))} //nolint:gosec // test randomness
	}
	// Every acknowledgement in the ledger was sent before the power went.
	led.setCut(true)
	clone := fs.CrashClone(cfg)

	close(stop)
	b.Stop() // answers the submitters still waiting
	wg.Wait()
	_ = st.Close()
	return clone
}

// nopOutbox drops a submitter's events.
type nopOutbox struct{}

func (nopOutbox) Send(broker.Event) {}
