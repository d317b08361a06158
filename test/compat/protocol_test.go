package compat

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/gearman"
	"github.com/gearwork/gearwork/internal/gearmantest/wire"
)

// Raw-protocol tests: behaviour no client library exposes directly,
// checked byte for byte with the gearman package's codec.

func TestRawEchoAndOptions(t *testing.T) {
	t.Parallel()
	eachServer(t, func(t *testing.T, s *server) {
		c := dialRaw(t, s)
		c.Send(gearman.EchoReq, "ping\x00with NUL")
		c.Expect(gearman.EchoRes, "ping\x00with NUL")
		c.Send(gearman.EchoReq, "")
		c.Expect(gearman.EchoRes, "")
		c.Send(gearman.OptionReq, "exceptions")
		c.Expect(gearman.OptionRes, "exceptions")
		c.Send(gearman.OptionReq, "nonsense")
		c.Expect(gearman.Error, "UNKNOWN_OPTION", "Server does not recognize given option")
		c.Send(gearman.EchoReq, "still open")
		c.Expect(gearman.EchoRes, "still open")
	})
}

// TestRawExceptions: a client that asked for exceptions receives
// WORK_EXCEPTION; one that did not receives WORK_FAIL.
func TestRawExceptions(t *testing.T) {
	t.Parallel()
	eachServer(t, func(t *testing.T, s *server) {
		w := rawWorker(t, s, "exc")
		with := dialRaw(t, s)
		with.Send(gearman.OptionReq, "exceptions")
		with.Expect(gearman.OptionRes, "exceptions")
		without := dialRaw(t, s)

		h := with.submit(gearman.SubmitJob, "exc", "exc-1", "a")
		require.Equal(t, h, without.submit(gearman.SubmitJob, "exc", "exc-1", "a"))
		got, _, _, _ := w.grab()
		require.Equal(t, h, got)
		w.Send(gearman.WorkException, h, "it broke")
		with.Expect(gearman.WorkException, h, "it broke")
		// gearmand 1.1.20 copies the handle's terminating NUL into this
		// WORK_FAIL; gearwork sends the handle alone.
		without.Expect(gearman.WorkFail, pick(s, h, h+"\x00"))

		// WORK_FAIL reaches everyone as WORK_FAIL.
		h = with.submit(gearman.SubmitJob, "exc", "", "b")
		got, _, _, _ = w.grab()
		require.Equal(t, h, got)
		w.Send(gearman.WorkFail, h)
		with.Expect(gearman.WorkFail, h)

		// A result for a job the worker does not hold is an error.
		w.Send(gearman.WorkComplete, h, "late")
		w.Expect(gearman.Error, "JOB_NOT_FOUND", "Job given in work result not found")
	})
}

// TestRawStreaming: WORK_DATA, WORK_WARNING and WORK_STATUS reach every
// attached client in order, and GET_STATUS reports the last status.
func TestRawStreaming(t *testing.T) {
	t.Parallel()
	eachServer(t, func(t *testing.T, s *server) {
		w := rawWorker(t, s, "stream")
		c1, c2 := dialRaw(t, s), dialRaw(t, s)
		h := c1.submit(gearman.SubmitJob, "stream", "s-1", "x")
		require.Equal(t, h, c2.submit(gearman.SubmitJobHigh, "stream", "s-1", "x"))
		w.grab()
		w.Send(gearman.WorkData, h, "d1")
		w.Send(gearman.WorkStatus, h, "1", "3")
		w.Send(gearman.WorkWarning, h, "w1")
		w.Send(gearman.WorkData, h, "")
		w.Send(gearman.EchoReq, "sync")
		w.Expect(gearman.EchoRes, "sync")
		probe := dialRaw(t, s)
		require.Equal(t, []string{"1", "1", "1", "3"}, probe.getStatus(h))
		w.Send(gearman.WorkComplete, h, "done")
		for _, c := range []*rawConn{c1, c2} {
			c.Expect(gearman.WorkData, h, "d1")
			c.Expect(gearman.WorkStatus, h, "1", "3")
			c.Expect(gearman.WorkWarning, h, "w1")
			c.Expect(gearman.WorkData, h, "")
			c.Expect(gearman.WorkComplete, h, "done")
		}
		require.Equal(t, []string{"0", "0", "0", "0"}, probe.getStatus(h))
	})
}

// TestRawBackgroundStatus: GET_STATUS of a background job while queued,
// while running with a status, and after it finished.
func TestRawBackgroundStatus(t *testing.T) {
	t.Parallel()
	eachServer(t, func(t *testing.T, s *server) {
		c := dialRaw(t, s)
		h := c.submit(gearman.SubmitJobBg, "bgs", "", "x")
		require.Equal(t, []string{"1", "0", "0", "0"}, c.getStatus(h))
		w := rawWorker(t, s, "bgs")
		w.grab()
		require.Equal(t, []string{"1", "1", "0", "0"}, c.getStatus(h))
		w.Send(gearman.WorkStatus, h, "42", "100")
		w.Send(gearman.EchoReq, "sync")
		w.Expect(gearman.EchoRes, "sync")
		require.Equal(t, []string{"1", "1", "42", "100"}, c.getStatus(h))
		w.Send(gearman.WorkComplete, h, "")
		w.Send(gearman.EchoReq, "sync")
		w.Expect(gearman.EchoRes, "sync")
		require.Equal(t, []string{"0", "0", "0", "0"}, c.getStatus(h))
		c.Send(gearman.GetStatus, "H:nope:1")
		c.Expect(gearman.StatusRes, "H:nope:1", "0", "0", "0", "0")
	})
}

// TestRawCanDoTimeout: a job held past its worker's CAN_DO_TIMEOUT fails,
// as the protocol says: the waiting client gets WORK_FAIL after the
// timeout, the job does not run again, and the silent worker's late result
// is accepted without an answer and changes nothing. Gearwork only: gearmand 1.1.20 takes the job back and hands
// it out again instead (and keeps one timeout timer per connection, fixed
// upstream after 1.1.20, so it was seen to leave the job with the silent
// worker now and then).
func TestRawCanDoTimeout(t *testing.T) {
	t.Parallel()
	s := startGearwork(t)
	stuck := dialRaw(t, s)
	stuck.Send(gearman.CanDoTimeout, "slow", "1000")
	client := dialRaw(t, s)
	h := client.submit(gearman.SubmitJob, "slow", "", "fail me")
	asked := time.Now() // before the assignment
	_, _, _, payload := stuck.grab()
	require.Equal(t, "fail me", payload)

	client.Expect(gearman.WorkFail, h)
	require.GreaterOrEqual(t, time.Since(asked), time.Second, "failed only after the timeout")
	waitStatus(t, s, "slow", funcStatus{Workers: 1})

	stuck.Send(gearman.WorkComplete, h, "too late")
	stuck.Send(gearman.GrabJobUniq)
	stuck.Expect(gearman.NoJob) // no ERROR before it
	require.Equal(t, []string{"0", "0", "0", "0"}, client.getStatus(h), "the late result brought nothing back")
}

// TestRawCanDoTimeoutNotANumber: a CAN_DO_TIMEOUT whose timeout is not a
// decimal number registers the function without a timeout, as gearmand's
// atoi reads it. The npm package gearman 2.1.0 sends the timeout as a
// 32-bit big-endian binary number; a worker on it must still get its jobs.
func TestRawCanDoTimeoutNotANumber(t *testing.T) {
	t.Parallel()
	eachServer(t, func(t *testing.T, s *server) {
		w := dialRaw(t, s)
		w.Send(gearman.CanDoTimeout, "bin", "\x00\x00\x00\x05")
		w.Send(gearman.CanDoTimeout, "word", "soon")
		w.Send(gearman.EchoReq, "registered")
		w.Expect(gearman.EchoRes, "registered")
		waitStatus(t, s, "bin", funcStatus{Workers: 1})
		waitStatus(t, s, "word", funcStatus{Workers: 1})
		client := dialRaw(t, s)
		for _, fn := range []string{"bin", "word"} {
			h := client.submit(gearman.SubmitJob, fn, "", "run me")
			got, gotFn, _, payload := w.grab()
			require.Equal(t, []string{h, fn, "run me"}, []string{got, gotFn, payload})
			w.Send(gearman.WorkComplete, h, "ran")
			client.Expect(gearman.WorkComplete, h, "ran")
		}
	})
}

// TestRawEpoch: a SUBMIT_JOB_EPOCH job is not handed out before its time;
// gearwork wakes a sleeping worker when it is due.
func TestRawEpoch(t *testing.T) {
	t.Parallel()
	eachServer(t, func(t *testing.T, s *server) {
		w := rawWorker(t, s, "ep")
		c := dialRaw(t, s)
		at := time.Now().Unix() + 2
		h := c.submit(gearman.SubmitJobEpoch, "ep", "", strconv.FormatInt(at, 10)+"\x00later")
		w.Send(gearman.GrabJobUniq)
		p, raw := w.Next()
		if p.Command == gearman.JobAssignUniq {
			// Only possible on a machine so slow that the time has come.
			require.GreaterOrEqual(t, time.Now().Unix(), at, "handed out before its time: %s", wire.Readable(raw))
			return
		}
		require.Equal(t, gearman.NoJob, p.Command, wire.Readable(raw))
		if s.isGearwork() {
			// Until its time the job is known but not runnable.
			require.Equal(t, []string{"1", "0", "0", "0"}, c.getStatus(h))
			prio := dialRaw(t, s).adminExact("prioritystatus")
			if time.Now().Unix() < at {
				require.Equal(t, "ep\t0\t0\t0\t1\n.\n", prio)
			}
			// A sleeping worker is woken when it is due.
			w.Send(gearman.PreSleep)
			w.Expect(gearman.Noop)
		}
		got, _, _, payload := w.grabWhenReady()
		require.GreaterOrEqual(t, time.Now().Unix(), at, "ran before its time")
		require.Equal(t, h, got)
		require.Equal(t, "later", payload)
		w.Send(gearman.WorkComplete, h, "")
		if s.isGearwork() {
			// After the year 9999 no job record could write the time
			// (gearmand takes any 64-bit epoch).
			c.Send(gearman.SubmitJobEpoch, "ep", "", "253402300800", "too late")
			c.Expect(gearman.Error, "QUEUE_ERROR", "the run time is after 9999-12-31T23:59:59Z: 253402300800")
		}
	})
}

// TestRawWakeOnlyNeeded: one new job wakes one of three sleeping workers
// in gearwork; gearmand 1.1.20 wakes all of them.
func TestRawWakeOnlyNeeded(t *testing.T) {
	t.Parallel()
	eachServer(t, func(t *testing.T, s *server) {
		var ws []*rawConn
		for range 3 {
			w := rawWorker(t, s, "wake")
			w.Send(gearman.PreSleep)
			w.Send(gearman.EchoReq, "asleep")
			w.Expect(gearman.EchoRes, "asleep")
			ws = append(ws, w)
		}
		c := dialRaw(t, s)
		c.submit(gearman.SubmitJobBg, "wake", "", "x")
		// NOOPs are queued while the submit is handled, so each worker
		// sees its NOOP (if any) before the answer to a later ECHO.
		woken := 0
		for _, w := range ws {
			w.Send(gearman.EchoReq, "after")
			p, raw := w.Next()
			if p.Command == gearman.Noop {
				woken++
				p, raw = w.Next()
			}
			require.Equal(t, gearman.EchoRes, p.Command, wire.Readable(raw))
		}
		t.Logf("%s woke %d of 3 sleeping workers for one job", s.kind, woken)
		require.Equal(t, map[bool]int{true: 1, false: 3}[s.isGearwork()], woken)
	})
}

// TestRawGrabVariants: GRAB_JOB, GRAB_JOB_UNIQ, GRAB_JOB_ALL and the
// reducer of SUBMIT_REDUCE_JOB_BACKGROUND, with JOB_ASSIGN_ALL's layout
// (handle, function, unique, reducer, payload), the same in both servers.
func TestRawGrabVariants(t *testing.T) {
	t.Parallel()
	eachServer(t, func(t *testing.T, s *server) {
		c := dialRaw(t, s)
		w := rawWorker(t, s, "g")
		h1 := c.submit(gearman.SubmitJobBg, "g", "u-1", "one")
		h2 := c.submit(gearman.SubmitJobBg, "g", "u-2", "two")
		h3 := c.submit(gearman.SubmitJobBg, "g", "u-3", "three")
		c.Send(gearman.SubmitReduceJobBg, "g", "u-4", "red", "", "four")
		h4 := c.ExpectCmd(gearman.JobCreated)[0]
		h5 := c.submit(gearman.SubmitJobBg, "g", "-", "five")

		w.Send(gearman.GrabJob)
		w.Expect(gearman.JobAssign, h1, "g", "one")
		w.Send(gearman.GrabJobUniq)
		w.Expect(gearman.JobAssignUniq, h2, "g", "u-2", "two")
		w.Send(gearman.GrabJobAll)
		w.Expect(gearman.JobAssignUniq, h3, "g", "u-3", "three")
		w.Send(gearman.GrabJobAll)
		w.Expect(gearman.JobAssignAll, h4, "g", "u-4", "red", "four")
		w.Send(gearman.GrabJobUniq)
		w.Expect(gearman.JobAssignUniq, h5, "g", "-", "five")
		w.Send(gearman.GrabJob)
		w.Expect(gearman.NoJob)
	})
}

// TestRawUniqueHash: the unique "-" coalesces jobs with equal payloads.
func TestRawUniqueHash(t *testing.T) {
	t.Parallel()
	eachServer(t, func(t *testing.T, s *server) {
		c := dialRaw(t, s)
		h1 := c.submit(gearman.SubmitJobBg, "hash", "-", "same payload")
		require.Equal(t, h1, c.submit(gearman.SubmitJobBg, "hash", "-", "same payload"))
		require.NotEqual(t, h1, c.submit(gearman.SubmitJobBg, "hash", "-", "other payload"))
		require.Equal(t, "hash\t2\t0\t0\n.\n", dialRaw(t, s).adminExact("status"))
	})
}

// TestRawDeliberateDifferences shows packets that gearwork answers
// differently from gearmand 1.1.20, as docs/protocol.md describes.
func TestRawDeliberateDifferences(t *testing.T) {
	t.Parallel()
	eachServer(t, func(t *testing.T, s *server) {
		c := dialRaw(t, s)
		c.Send(gearman.AllYours)
		if !s.isGearwork() {
			c.Expect(gearman.Error, "INVALID_COMMAND", "Command not expected")
		}
		c.Send(gearman.SubmitJobSched, "f", "", "1", "2", "3", "4", "", "x")
		if s.isGearwork() {
			require.Regexp(t, "^"+handlePrefix, c.ExpectCmd(gearman.JobCreated)[0])
		} else {
			c.Expect(gearman.Error, "INVALID_COMMAND", "Command not expected")
		}
		c.Send(gearman.EchoReq, "alive")
		c.Expect(gearman.EchoRes, "alive")
	})
}

// TestRawSubmitJobSched: SUBMIT_JOB_SCHED creates a background job that
// waits for the next time its five fields match (here noon UTC on the
// first of January): it is known but not runnable, it survives a restart
// of a server with the Pebble store, and it can be cancelled for good.
// Fields that are not a schedule get an ERROR. (That the job runs once at
// its time is TestSubmitWhenRunsOnceAtNextMatch in internal/broker, on a
// clock the test moves.)
func TestRawSubmitJobSched(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	start := func() *server { return startGearwork(t, "--store", "pebble:"+dir) }
	s := start()
	c := dialRaw(t, s)
	c.Send(gearman.SubmitJobSched, "new-year", "ny-1", "0", "12", "1", "1", "", "fireworks")
	h := c.ExpectCmd(gearman.JobCreated)[0]
	c.Send(gearman.GetStatus, h)
	c.Expect(gearman.StatusRes, h, "1", "0", "0", "0")
	require.Equal(t, []string{"new-year\t1\t0\t0"}, admin(t, s, "status"), "counted")
	require.Equal(t, []string{"new-year\t0\t0\t0\t0"}, admin(t, s, "prioritystatus"), "not runnable")
	w := rawWorker(t, s, "new-year")
	w.Send(gearman.GrabJob)
	w.Expect(gearman.NoJob)

	for _, bad := range []struct{ fields []string }{
		{[]string{"61", "", "", "", ""}},
		{[]string{"0 1", "", "", "", ""}},
		{[]string{"", "", "", "feb-", ""}},
	} {
		c.Send(gearman.SubmitJobSched, append(append([]string{"new-year", ""}, bad.fields...), "x")...)
		got := c.ExpectCmd(gearman.Error)
		require.Equal(t, "INVALID_PACKET", got[0], "fields %q", bad.fields)
		require.Contains(t, got[1], "SUBMIT_JOB_SCHED", "fields %q", bad.fields)
	}
	c.Send(gearman.SubmitJobSched, "new-year", "", "0", "0", "31", "2", "", "x")
	c.Expect(gearman.Error, "QUEUE_ERROR", `no time within five years matches the schedule: "0 0 31 2 *"`)

	s.stop(t)
	s = start()
	c = dialRaw(t, s)
	c.Send(gearman.GetStatus, h)
	c.Expect(gearman.StatusRes, h, "1", "0", "0", "0")
	require.Equal(t, []string{"OK"}, admin(t, s, "cancel job "+h))
	c.Send(gearman.GetStatus, h)
	c.Expect(gearman.StatusRes, h, "0", "0", "0", "0")

	s.stop(t)
	s = start()
	c = dialRaw(t, s)
	c.Send(gearman.GetStatus, h)
	c.Expect(gearman.StatusRes, h, "0", "0", "0", "0")
	require.Empty(t, admin(t, s, "show jobs"))
}

// TestRawBadInput: malformed packets get an ERROR with a code and text;
// a broken frame closes only that connection.
func TestRawBadInput(t *testing.T) {
	t.Parallel()
	s := startGearwork(t, "--max-packet", "1024")
	bystander := dialRaw(t, s)

	cases := []struct {
		name  string
		send  []byte
		want  []byte
		close bool
	}{
		{"unknown packet type", gearman.AppendPacket(nil, gearman.MagicReq, 99, []byte("x")),
			wire.Response(gearman.Error, "INVALID_COMMAND", "Invalid command expected"), false},
		{"response magic", wire.Response(gearman.EchoReq, "x"),
			wire.Response(gearman.Error, "INVALID_MAGIC", "Request magic expected"), false},
		{"too few arguments", wire.Request(gearman.SubmitJob, "only-function"),
			wire.Response(gearman.Error, "INVALID_PACKET", "SUBMIT_JOB needs 3 NUL-separated arguments"), false},
		{"unique too long", wire.Request(gearman.SubmitJob, "f", strings.Repeat("u", 65), ""),
			wire.Response(gearman.Error, "ARGUMENT_TOO_LARGE", "Unique value too large"), false},
		{"empty function", wire.Request(gearman.SubmitJobBg, "", "", "x"),
			wire.Response(gearman.Error, "INVALID_FUNCTION_NAME", "function name must be 1 to 511 bytes"), false},
		{"server-only packet", wire.Request(gearman.JobCreated, "H:x:1"),
			wire.Response(gearman.Error, "INVALID_COMMAND", "Command not expected"), false},
		{"bad magic", []byte("\x00BAD\x00\x00\x00\x10\x00\x00\x00\x00"),
			wire.Response(gearman.Error, "INVALID_MAGIC", `bad packet magic "\x00BAD"`), true},
		{"oversize body", []byte("\x00REQ\x00\x00\x00\x10\x00\x00\x04\x01"),
			wire.Response(gearman.Error, "ARGUMENT_TOO_LARGE", "packet body of 1025 bytes exceeds the limit of 1024 bytes"), true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := dialRaw(t, s)
			c.Write(tc.send)
			_, raw := c.Next()
			require.Equal(t, wire.Readable(tc.want), wire.Readable(raw))
			if tc.close {
				c.ExpectClosed("")
				return
			}
			c.Send(gearman.EchoReq, "ok")
			c.Expect(gearman.EchoRes, "ok")
		})
	}
	t.Run("admin line too long", func(t *testing.T) {
		c := dialRaw(t, s)
		c.Write([]byte(strings.Repeat("x", 8193) + "\n"))
		require.Equal(t, "ERR LINE_TOO_LONG Admin+line+exceeds+8192+bytes\r\n", c.Line())
		c.ExpectClosed("")
	})
	bystander.Send(gearman.EchoReq, "unaffected")
	bystander.Expect(gearman.EchoRes, "unaffected")
}

// TestRawHugeAndEmptyPayloads: a 16 MiB payload and an empty one pass
// through unchanged in both directions.
func TestRawHugeAndEmptyPayloads(t *testing.T) {
	t.Parallel()
	eachServer(t, func(t *testing.T, s *server) {
		big := make([]byte, 16<<20)
		for i := range big {
			big[i] = byte(i*7 + i>>13)
		}
		w := rawWorker(t, s, "big")
		c := dialRaw(t, s)
		h := c.submit(gearman.SubmitJob, "big", "", string(big))
		w.Send(gearman.GrabJob)
		p, _ := w.Next()
		require.Equal(t, gearman.JobAssign, p.Command)
		require.Equal(t, h, string(p.Args[0]))
		require.True(t, string(p.Args[2]) == string(big), "payload changed in transit")
		w.Send(gearman.WorkComplete, h, string(big))
		p, _ = c.Next()
		require.Equal(t, gearman.WorkComplete, p.Command)
		require.True(t, string(p.Args[1]) == string(big), "result changed in transit")

		h = c.submit(gearman.SubmitJob, "big", "", "")
		w.Send(gearman.GrabJob)
		w.Expect(gearman.JobAssign, h, "big", "")
		w.Send(gearman.WorkComplete, h, "")
		c.Expect(gearman.WorkComplete, h, "")
	})
}

// TestRawShortWorkUpdates: work updates missing their trailing arguments
// (as Perl's Gearman::Worker sends an empty result or a status) are taken
// as empty, not refused.
func TestRawShortWorkUpdates(t *testing.T) {
	t.Parallel()
	s := startGearwork(t)
	w := rawWorker(t, s, "short")
	c := dialRaw(t, s)
	h := c.submit(gearman.SubmitJob, "short", "", "x")
	w.grab()
	w.Write(gearman.AppendPacket(nil, gearman.MagicReq, gearman.WorkStatus, []byte(h), []byte("1")))
	w.Write(gearman.AppendPacket(nil, gearman.MagicReq, gearman.WorkData, []byte(h)))
	w.Write(gearman.AppendPacket(nil, gearman.MagicReq, gearman.WorkComplete, []byte(h)))
	c.Expect(gearman.WorkStatus, h, "1", "0")
	c.Expect(gearman.WorkData, h, "")
	c.Expect(gearman.WorkComplete, h, "")
	w.Send(gearman.EchoReq, "no error before this")
	w.Expect(gearman.EchoRes, "no error before this")
}

// TestRawRequeueOrder: a job taken back from a vanished worker goes to the
// front of its queue in gearwork; gearmand 1.1.20 appends it.
func TestRawRequeueOrder(t *testing.T) {
	t.Parallel()
	eachServer(t, func(t *testing.T, s *server) {
		c := dialRaw(t, s)
		first := c.submit(gearman.SubmitJobBg, "rq", "", "first")
		second := c.submit(gearman.SubmitJobBg, "rq", "", "second")
		w := rawWorker(t, s, "rq")
		got, _, _, _ := w.grab()
		require.Equal(t, first, got)
		w.NC.Close()
		waitStatus(t, s, "rq", funcStatus{Total: 2})

		w2 := rawWorker(t, s, "rq")
		got, _, _, _ = w2.grab()
		require.Equal(t, pick(s, first, second), got)
	})
}

// TestRawJobRetries: with --job-retries 2 a job whose worker vanishes twice
// fails: its client receives WORK_FAIL and the job is forgotten.
func TestRawJobRetries(t *testing.T) {
	t.Parallel()
	for _, start := range []func(*testing.T, ...string) *server{startGearwork, startGearmand} {
		s := start(t, "--job-retries", "2")
		t.Run(s.kind, func(t *testing.T) {
			c := dialRaw(t, s)
			h := c.submit(gearman.SubmitJob, "jr", "", "doomed")
			for attempt := 1; attempt <= 2; attempt++ {
				w := rawWorker(t, s, "jr")
				got, _, _, _ := w.grabWhenReady()
				require.Equal(t, h, got)
				w.NC.Close()
			}
			c.Expect(gearman.WorkFail, h)
			waitStatus(t, s, "jr", funcStatus{})
		})
	}
}

// TestRawWorkStatusText: a WORK_STATUS reaches the job's client with its
// numbers as the worker wrote them, a fraction ("0.5" of "1", as Python's
// and abraxas's workers send), a decimal point or spaces too, as gearmand
// forwards them; GET_STATUS answers their leading digits on both servers.
func TestRawWorkStatusText(t *testing.T) {
	t.Parallel()
	eachServer(t, func(t *testing.T, s *server) {
		w := rawWorker(t, s, "frac")
		c := dialRaw(t, s)
		h := c.submit(gearman.SubmitJob, "frac", "", "x")
		w.grab()
		for _, tc := range []struct{ num, den, getNum, getDen string }{
			{"0.5", "1", "0", "1"},
			{"33.3", "100", "33", "100"},
			{"2", "4.0", "2", "4"},
			{" 7", "9 ", "7", "9"},
			{"3", "10", "3", "10"},
		} {
			w.Send(gearman.WorkStatus, h, tc.num, tc.den)
			c.Expect(gearman.WorkStatus, h, tc.num, tc.den)
			c.Send(gearman.GetStatus, h)
			c.Expect(gearman.StatusRes, h, "1", "1", tc.getNum, tc.getDen)
		}
		w.Send(gearman.WorkComplete, h, "done")
		c.Expect(gearman.WorkComplete, h, "done")
	})
}

// TestRawEpochFraction: a SUBMIT_JOB_EPOCH time with a fraction of a
// second (as a client computing it from Python's time.time() may send)
// is read as its whole seconds, as gearmand reads it: the job is created
// and waits for its time.
func TestRawEpochFraction(t *testing.T) {
	t.Parallel()
	eachServer(t, func(t *testing.T, s *server) {
		c := dialRaw(t, s)
		at := time.Now().Unix() + 3600
		h := c.submit(gearman.SubmitJobEpoch, "epf", "", strconv.FormatInt(at, 10)+".75\x00later")
		require.Equal(t, []string{"1", "0", "0", "0"}, c.getStatus(h))
		w := rawWorker(t, s, "epf")
		w.Send(gearman.GrabJob)
		w.Expect(gearman.NoJob)
	})
}
