package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/gearman"
	"github.com/gearwork/gearwork/internal/gearmantest/wire"
	"github.com/gearwork/gearwork/internal/store/postgres/pgtest"
	"github.com/gearwork/gearwork/internal/testwait"
)

// adminCall sends one admin text command to the server at addr and returns
// the answer's lines: up to the "." line for a listing (list true), else
// the first line and, for "OK <length>" answers of "result", the data.
func adminCall(t *testing.T, addr, cmd string, list bool) []string {
	t.Helper()
	c := wire.Dial(t, addr)
	defer c.NC.Close()
	c.Write([]byte(cmd + "\r\n"))
	if list {
		return c.ReadList()
	}
	lines := []string{strings.TrimRight(c.Line(), "\r\n")}
	if strings.HasPrefix(cmd, "result ") && strings.HasPrefix(lines[0], "OK ") {
		lines = append(lines, strings.TrimSuffix(c.Line(), "\n"))
	}
	return lines
}

// submitBg submits a background job to addr and returns its handle.
func submitBg(t *testing.T, addr, fn, payload string) string {
	t.Helper()
	return submitBgUnique(t, addr, fn, "", payload)
}

// submitBgUnique submits a background job with a unique to addr and
// returns its handle.
func submitBgUnique(t *testing.T, addr, fn, unique, payload string) string {
	t.Helper()
	c := wire.Dial(t, addr)
	defer c.NC.Close()
	c.Send(gearman.SubmitJobBg, fn, unique, payload)
	return c.ExpectCmd(gearman.JobCreated)[0]
}

// workOne registers a worker for fn on addr, waits for one job and ends it
// with end (WORK_COMPLETE or WORK_FAIL) and data; it returns the handle.
func workOne(t *testing.T, addr, fn string, end gearman.Command, data string) string {
	t.Helper()
	c := wire.Dial(t, addr)
	defer c.NC.Close()
	c.Send(gearman.CanDo, fn)
	handle := c.NextJob()[0]
	if end == gearman.WorkComplete {
		c.Send(end, handle, data)
	} else {
		c.Send(end, handle)
	}
	// A round trip, so the result has reached the server.
	c.Send(gearman.EchoReq, "sync")
	c.Expect(gearman.EchoRes, "sync")
	return handle
}

// pollAdmin repeats a listing until cond holds or a generous deadline
// passes, and returns the last answer.
func pollAdmin(t *testing.T, addr, cmd, what string, cond func([]string) bool) []string {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		lines := adminCall(t, addr, cmd, true)
		if cond(lines) {
			return lines
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s; %q answers %q", what, cmd, lines)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// startPair starts servers a and b on a new PostgreSQL schema, whose URL
// it returns; they are stopped when the test ends, and their logs shown
// if it failed.
func startPair(t *testing.T) (url string, a, b *server) {
	t.Helper()
	url = pgtest.Schema(t)
	s := startCluster(t, url, 2)
	return url, s[0], s[1]
}

// TestClusterLifecycleAcrossServers runs two servers on one PostgreSQL:
// jobs that die, complete with a retained result or wait on server a are
// seen and handled through server b's admin commands, also after a stopped.
func TestClusterLifecycleAcrossServers(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL and two servers")
	}
	url, a, b := startPair(t)

	// Policies are set for known functions (pause, resume and policy refuse unknown ones).
	require.Equal(t, []string{"OK"}, adminCall(t, a.addr, "create function dl", false))
	require.Equal(t, []string{"OK"}, adminCall(t, a.addr, "create function res", false))
	require.Equal(t, []string{"OK"}, adminCall(t, a.addr, "policy dl max_attempts=1", false))
	require.Equal(t, []string{"OK"}, adminCall(t, a.addr, "policy res result_retention=1h", false))
	dead1 := submitBg(t, a.addr, "dl", "first")
	dead2 := submitBg(t, a.addr, "dl", "second")
	require.Equal(t, dead1, workOne(t, a.addr, "dl", gearman.WorkFail, ""))
	require.Equal(t, dead2, workOne(t, a.addr, "dl", gearman.WorkFail, ""))
	res := submitBg(t, a.addr, "res", "q")
	require.Equal(t, res, workOne(t, a.addr, "res", gearman.WorkComplete, "42"))
	waiting := submitBg(t, a.addr, "idle", "nobody works on me")

	// b lists and counts what a holds in the database.
	pollAdmin(t, b.addr, "deadletters dl", "b lists a's dead letters", func(l []string) bool { return len(l) == 2 })
	pollAdmin(t, b.addr, "status", "b counts the job nobody holds", func(l []string) bool {
		for _, line := range l {
			if line == "idle\t1\t0\t0" {
				return true
			}
		}
		return false
	})

	a.stop()
	lines := adminCall(t, b.addr, "deadletters", true)
	require.Len(t, lines, 2, "a's dead letters outlive it")
	require.True(t, strings.HasPrefix(lines[0], dead1+"\tdl\t"), "listed with a's handle: %q", lines[0])
	show := adminCall(t, b.addr, "deadletter show "+dead1, true)
	require.Contains(t, show, "handle\t"+dead1)
	require.Contains(t, show, "payload\t\"first\"")
	require.Equal(t, []string{"OK 2", "42"}, adminCall(t, b.addr, "result "+res, false),
		"b reads the result a retained")

	// b answers the records of the jobs that ended on a, which stopped.
	rec := adminCall(t, b.addr, "job "+res, true)
	require.Contains(t, rec, "state\tcomplete")
	require.NotContains(t, rec, "submitted\t-", "the record says when the job was submitted")
	require.Contains(t, rec, "result\t\"42\"")
	rec = adminCall(t, b.addr, "job "+dead2, true)
	require.Contains(t, rec, "state\tdead")
	require.Contains(t, rec, "payload\t\"second\"")
	jobs := adminCall(t, b.addr, "jobs function=dl state=dead", true)
	require.Len(t, jobs, 2, "b lists a's records: %q", jobs)

	require.Equal(t, []string{"OK 1"}, adminCall(t, b.addr, "deadletter retry "+dead1, false))
	require.Equal(t, dead1, workOne(t, b.addr, "dl", gearman.WorkComplete, "ok"),
		"b's worker runs the retried job, by its handle")
	require.Equal(t, []string{"OK 1"}, adminCall(t, b.addr, "deadletter purge dl", false))
	require.Empty(t, adminCall(t, b.addr, "deadletters", true))

	// Its dead letter purged, a's dead job runs again on b from its
	// record, as a new job with its payload. (In shared mode the new job
	// does not name the old one: retry_of is not stored with a job.)
	again := adminCall(t, b.addr, "retry job "+dead2, false)
	require.Len(t, again, 1)
	newHandle, ok := strings.CutPrefix(again[0], "OK ")
	require.True(t, ok, "%q", again)
	require.NotEqual(t, dead2, newHandle)
	require.Equal(t, newHandle, workOne(t, b.addr, "dl", gearman.WorkComplete, "ok"))
	rec = pollAdmin(t, b.addr, "job "+newHandle, "the new job's record", func(l []string) bool {
		return slices.Contains(l, "state\tcomplete")
	})
	require.Contains(t, rec, "payload\t\"second\"")

	require.Equal(t, []string{"OK"}, adminCall(t, b.addr, "cancel job "+waiting, false),
		"b cancels a job nobody holds")
	require.Equal(t, []string{"ERR JOB_ENDED The+job+has+already+ended+(cancelled);+job+HANDLE+shows+its+record"},
		adminCall(t, b.addr, "cancel job "+waiting, false), "its record says it was cancelled")
	// A record reads complete as soon as the job ended in b's memory; its
	// row goes with b's next commit round.
	testwait.Until(t, "only the retained result left in the database", func() bool {
		var rows int
		pgtest.QueryRow(t, url, `SELECT count(*) FROM gearwork_jobs WHERE state <> 3`, &rows)
		return rows == 0
	})
}

// callbackLedger records the jobs workers ran: each callback job by batch
// and kind, with its handle and where it ran; the other jobs (rows) by
// payload.
type callbackLedger struct {
	mu sync.Mutex
	// execs are the runs of each callback ("BATCH on_success"), handles
	// the distinct jobs that were run for it.
	execs   map[string][]execution
	handles map[string]map[string]bool
	rows    map[string]int
}

func newCallbackLedger() *callbackLedger {
	return &callbackLedger{execs: map[string][]execution{}, handles: map[string]map[string]bool{}, rows: map[string]int{}}
}

func (l *callbackLedger) run(handle, payload []byte, e execution) {
	var p struct{ Batch, Callback string }
	l.mu.Lock()
	defer l.mu.Unlock()
	if json.Unmarshal(payload, &p) != nil || p.Callback == "" {
		l.rows[string(payload)]++
		return
	}
	k := p.Batch + " " + p.Callback
	l.execs[k] = append(l.execs[k], e)
	if l.handles[k] == nil {
		l.handles[k] = map[string]bool{}
	}
	l.handles[k][string(handle)] = true
}

// counts returns how many callbacks and distinct rows ran.
func (l *callbackLedger) counts() (callbacks, rows int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.execs), len(l.rows)
}

// runBatchWorkers starts two workers on each server that run the row,
// report and notify jobs into l until ctx ends, reconnecting when their
// server goes away; a row takes rowTime. gens[i] counts server i's
// restarts (nil: none).
func runBatchWorkers(ctx context.Context, wg *sync.WaitGroup, servers []*server, gens []*atomic.Int64, rowTime time.Duration, l *callbackLedger) {
	for i, s := range servers {
		for range 2 {
			wg.Go(func() {
				for ctx.Err() == nil {
					c, err := wire.DialStream(s.addr)
					if err != nil {
						time.Sleep(50 * time.Millisecond)
						continue
					}
					stop := context.AfterFunc(ctx, func() { c.Close() })
					for _, fn := range []string{"row", "report", "notify"} {
						_ = c.Send(gearman.CanDo, fn)
					}
					_ = c.WorkHandles(func(h, p []byte) []byte {
						e := execution{server: i}
						if gens != nil {
							e.gen = gens[i].Load()
						}
						if rowTime > 0 && !bytes.HasPrefix(p, []byte("{")) {
							time.Sleep(rowTime)
						}
						l.run(h, p, e)
						return nil
					})
					stop()
					c.Close()
				}
			})
		}
	}
}

// fillBatches creates n batches over the Gearman port, in turn on each
// server, adds perServer row jobs to each through every server, and
// closes each through the next server; it returns their ids.
func fillBatches(t *testing.T, servers []*server, n, perServer int) []string {
	t.Helper()
	var ids []string
	for i := range n {
		created := adminCall(t, servers[i%len(servers)].addr, "batch create on_success=report on_complete=notify", false)
		require.Len(t, created, 1)
		id, ok := strings.CutPrefix(created[0], "OK ")
		require.True(t, ok, "%q", created)
		ids = append(ids, id)
		for _, s := range servers {
			c := wire.Dial(t, s.addr)
			for k := range perServer {
				c.Send(gearman.SubmitJobBg, "row", "batch:"+id, fmt.Sprintf("%s-%s-%d", id, s.addr, k))
				c.ExpectCmd(gearman.JobCreated)
			}
			c.NC.Close()
		}
		require.Equal(t, []string{"OK"}, adminCall(t, servers[(i+1)%len(servers)].addr, "batch close "+id, false))
	}
	return ids
}

// waitBatchesDone waits until every callback of ids and rows distinct
// row jobs ran and no job is left in the database.
func waitBatchesDone(t *testing.T, url string, ids []string, rows int, l *callbackLedger) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		callbacks, ran := l.counts()
		var left int
		pgtest.QueryRow(t, url, `SELECT count(*) FROM gearwork_jobs`, &left)
		if callbacks == 2*len(ids) && ran >= rows && left == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("callbacks run: %d of %d; row jobs run: %d of %d; jobs left: %d", callbacks, 2*len(ids), ran, rows, left)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// requireCallbacksOnce checks that each callback of each batch was
// submitted as one job (one handle) that ran, and ran again only where
// again is true of one of its runs (a server that ran it was killed).
func requireCallbacksOnce(t *testing.T, ids []string, l *callbackLedger, again func(execution) bool) (reruns int) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	require.Len(t, l.execs, 2*len(ids))
	for _, id := range ids {
		for _, cb := range []string{"on_success", "on_complete"} {
			k := id + " " + cb
			require.Len(t, l.handles[k], 1, "batch %s %s is one job", id, cb)
			if n := len(l.execs[k]); n > 1 {
				require.True(t, slices.ContainsFunc(l.execs[k], again), "batch %s %s ran %d times: %v", id, cb, n, l.execs[k])
				reruns++
			}
		}
	}
	return reruns
}

// lostLease reports of an execution whether its server logged, by now,
// that it lost its lease: the jobs it held went to the other servers, and
// may have run again there.
func lostLease(servers []*server) func(execution) bool {
	lost := make([]bool, len(servers))
	for i, s := range servers {
		lost[i] = strings.Contains(s.logText(), "lease lost")
	}
	return func(e execution) bool { return lost[e.server] }
}

// TestClusterBatchCallbacksOnce runs two servers on one PostgreSQL with
// workers on both: batches are created, filled and closed over the Gearman
// port on either server, their jobs run on both, and the ledger of the
// callbacks the workers ran must hold each callback of each batch once.
func TestClusterBatchCallbacksOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL and two servers")
	}
	url, a, b := startPair(t)
	servers := []*server{a, b}
	l := newCallbackLedger()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	runBatchWorkers(ctx, &wg, servers, nil, 0, l)

	const batches, perServer = 15, 3
	ids := fillBatches(t, servers, batches, perServer)
	waitBatchesDone(t, url, ids, batches*2*perServer, l)
	// Each callback is one job, run once: again only where a server
	// whose lease lapsed under load (it says so in its log) ran it, and
	// gave it to the other.
	requireCallbacksOnce(t, ids, l, lostLease(servers))
	status := adminCall(t, servers[1].addr, "batch "+ids[0], true)
	require.Contains(t, status, "complete\ttrue")
	require.Contains(t, status, fmt.Sprintf("succeeded\t%d", 2*perServer))
}

// TestClusterBatchCallbacksOnceAcrossSIGKILL runs two servers on one
// PostgreSQL (leases of 2 s) and closed batches whose jobs are spread over
// both; while workers on both complete them, server a is killed with
// SIGKILL and started again. Every batch must complete with each of its
// jobs counted once, and each callback must be one job that ran (again
// only if a worker of the killed server had it when it died).
func TestClusterBatchCallbacksOnceAcrossSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL and two servers")
	}
	url := pgtest.Schema(t)
	servers := startCluster(t, url+"&lease_ttl=2s", 2)
	const batches, perServer = 12, 5
	ids := fillBatches(t, servers, batches, perServer)
	rows := batches * 2 * perServer

	l := newCallbackLedger()
	gens := []*atomic.Int64{{}, {}}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	runBatchWorkers(ctx, &wg, servers, gens, 5*time.Millisecond, l)
	deadline := time.Now().Add(time.Minute)
	for _, ran := l.counts(); ran < rows/3; _, ran = l.counts() {
		require.True(t, time.Now().Before(deadline), "the workers ran %d row jobs in a minute", ran)
		time.Sleep(5 * time.Millisecond)
	}
	servers[0].kill()
	killed := gens[0].Add(1) - 1
	callbacks, ran := l.counts()
	t.Logf("killed server a after %d of %d row jobs and %d callbacks", ran, rows, callbacks)
	servers[0].start()
	waitBatchesDone(t, url, ids, rows, l)

	reruns := requireCallbacksOnce(t, ids, l, func(e execution) bool { return e.server == 0 && e.gen == killed })
	t.Logf("%d callbacks ran again after the kill", reruns)
	for _, id := range ids {
		status := adminCall(t, servers[1].addr, "batch "+id, true)
		require.Contains(t, status, "complete\ttrue", id)
		require.Contains(t, status, fmt.Sprintf("total\t%d", 2*perServer), id)
		require.Contains(t, status, fmt.Sprintf("succeeded\t%d", 2*perServer), "batch %s counts each job once", id)
	}
}

// diesOnFirstFailure creates function fn with one attempt for its jobs:
// a job that fails is a dead letter.
func diesOnFirstFailure(t *testing.T, addr, fn string) {
	t.Helper()
	require.Equal(t, []string{"OK"}, adminCall(t, addr, "create function "+fn, false))
	require.Equal(t, []string{"OK"}, adminCall(t, addr, "policy "+fn+" max_attempts=1", false))
}

// seqOf returns the number that ends a handle.
func seqOf(handle string) string { return handle[strings.LastIndexByte(handle, ':')+1:] }

// rowState returns the state of job handle's row, or -1 when it has none.
func rowState(t *testing.T, url, handle string) int {
	t.Helper()
	n := -1
	pgtest.QueryRow(t, url, `SELECT coalesce((SELECT state::int FROM gearwork_jobs WHERE seq = `+seqOf(handle)+`), -1)`, &n)
	return n
}

// TestClusterDependencies runs two servers on one PostgreSQL: jobs
// submitted over server b's Gearman port wait for jobs that workers of
// server a run (a fan-in, then a chain after it), and a failure there
// cancels, with the reason, the jobs waiting on b down a chain, except
// one that runs anyway; a job naming one that failed, or one that never
// existed, is refused with an ERROR packet; a job names one submitted to
// the other server by its unique.
func TestClusterDependencies(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL and two servers")
	}
	url, a, b := startPair(t)
	diesOnFirstFailure(t, a.addr, "fails")
	d1, d2 := submitBg(t, a.addr, "dep", "1"), submitBg(t, a.addr, "dep", "2")
	fanin := submitBgUnique(t, b.addr, "fanin", "after:"+seqOf(d1)+","+seqOf(d2), "w")
	chain := submitBgUnique(t, b.addr, "chain", "after:"+seqOf(fanin), "c")
	f := submitBg(t, a.addr, "fails", "f")
	g := submitBgUnique(t, b.addr, "g", "after:"+seqOf(f), "g")
	h := submitBgUnique(t, b.addr, "h", "after:"+seqOf(g), "h")
	anyway := submitBgUnique(t, b.addr, "anyway", "after-anyway:"+seqOf(f), "k")
	for _, w := range []string{fanin, chain, g, h, anyway} {
		require.Equal(t, 4, rowState(t, url, w), "%s waits in the database", w)
	}

	require.Equal(t, d1, workOne(t, a.addr, "dep", gearman.WorkComplete, ""))
	require.Equal(t, 4, rowState(t, url, fanin), "one of two is not enough")
	require.Equal(t, d2, workOne(t, a.addr, "dep", gearman.WorkComplete, ""))
	require.Equal(t, seqOf(fanin), seqOf(workOne(t, b.addr, "fanin", gearman.WorkComplete, "")),
		"the fan-in runs once both ended on the other server")
	require.Equal(t, seqOf(chain), seqOf(workOne(t, b.addr, "chain", gearman.WorkComplete, "")))

	require.Equal(t, f, workOne(t, a.addr, "fails", gearman.WorkFail, ""))
	require.Equal(t, seqOf(anyway), seqOf(workOne(t, b.addr, "anyway", gearman.WorkComplete, "")))
	for _, c := range []struct{ handle, reason string }{
		{g, "dependency " + f + " dead"},
		{h, "dependency " + g + " cancelled"},
	} {
		var state, by string
		testwait.Until(t, c.handle+"'s record", func() bool {
			pgtest.QueryRow(t, url, `SELECT coalesce((SELECT state || ' ' || (convert_from(data, 'UTF8')::jsonb->>'CancelledBy')
				FROM gearwork_records WHERE seq = `+seqOf(c.handle)+`), '')`, &state)
			return state != ""
		})
		state, by, _ = strings.Cut(state, " ")
		require.Equal(t, "cancelled", state, c.handle)
		require.Equal(t, c.reason, by, c.handle)
		require.Equal(t, -1, rowState(t, url, c.handle), "a cancelled job is gone")
	}

	for _, unique := range []string{"after:" + seqOf(f), "after:" + seqOf(d1) + ",999999999"} {
		c := wire.Dial(t, b.addr)
		c.Send(gearman.SubmitJobBg, "late", unique, "x")
		e := c.ExpectCmd(gearman.Error)
		require.Contains(t, e[1], "dependency refused", fmt.Sprint(e))
		c.NC.Close()
	}
	late := submitBgUnique(t, a.addr, "late", "after:"+seqOf(d1), "x")
	require.Equal(t, seqOf(late), seqOf(workOne(t, b.addr, "late", gearman.WorkComplete, "")),
		"a job after one that completed runs at once")

	// By unique: a job of server b waits for the job with a unique
	// submitted to server a.
	order := submitBgUnique(t, a.addr, "dep", "order-1", "o")
	ship := submitBgUnique(t, b.addr, "ship", "after-unique:dep/order-1", "s")
	require.Equal(t, 4, rowState(t, url, ship))
	require.Equal(t, order, workOne(t, a.addr, "dep", gearman.WorkComplete, ""))
	require.Equal(t, seqOf(ship), seqOf(workOne(t, b.addr, "ship", gearman.WorkComplete, "")))
}

// TestClusterBatchDeadLetterQueuedAgain runs two servers on one
// PostgreSQL: the only job of a closed batch dies on server a, which
// completes the batch (its on_complete runs); queued again with
// "deadletter retry" on server b, it counts as pending again, and once it
// completes there the batch counts it as succeeded and submits its
// on_success, once, and not its on_complete again.
func TestClusterBatchDeadLetterQueuedAgain(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL and two servers")
	}
	url, a, b := startPair(t)
	diesOnFirstFailure(t, a.addr, "fails")
	created := adminCall(t, a.addr, "batch create on_success=report on_complete=notify", false)
	id, ok := strings.CutPrefix(created[0], "OK ")
	require.True(t, ok, "%q", created)
	h := submitBgUnique(t, b.addr, "fails", "batch:"+id, "x")
	require.Equal(t, []string{"OK"}, adminCall(t, b.addr, "batch close "+id, false))
	require.Equal(t, seqOf(h), seqOf(workOne(t, a.addr, "fails", gearman.WorkFail, "")))
	pollAdmin(t, b.addr, "batch "+id, "the batch completes with its dead job", func(l []string) bool {
		return slices.Contains(l, "complete\ttrue") && slices.Contains(l, "dead\t1")
	})
	workOne(t, a.addr, "notify", gearman.WorkComplete, "")

	require.Equal(t, []string{"OK 1"}, adminCall(t, b.addr, "deadletter retry "+h, false))
	status := adminCall(t, a.addr, "batch "+id, true)
	require.Subset(t, status, []string{"complete\ttrue", "pending\t1", "dead\t0"}, "pending again")
	require.Equal(t, seqOf(h), seqOf(workOne(t, b.addr, "fails", gearman.WorkComplete, "")))
	status = pollAdmin(t, a.addr, "batch "+id, "its new end counted", func(l []string) bool {
		return slices.Contains(l, "succeeded\t1") && slices.Contains(l, "on_success\treport\tfired")
	})
	require.Subset(t, status, []string{"total\t1", "pending\t0", "failed\t0", "dead\t0", "on_complete\tnotify\tfired"})
	report := workOne(t, a.addr, "report", gearman.WorkComplete, "")
	var more int
	pgtest.QueryRow(t, url, `SELECT count(*) FROM gearwork_jobs WHERE function IN ('report', 'notify')
		AND seq <> `+seqOf(report), &more)
	require.Zero(t, more, "one on_success, no second on_complete")
}
