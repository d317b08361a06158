package compat

import (
	"crypto/sha256"
	"encoding/hex"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/gearman"
	"github.com/gearwork/gearwork/internal/gearmantest/wire"
)

// rawConn speaks the binary protocol byte by byte, for checks that no
// client library exposes, with what the transcripts need besides.
type rawConn struct {
	*wire.Conn
	// queued holds packets read ahead by sync (transcripts).
	queued [][]byte
	// lenient: transcripts against gearmand wait at most lenientWait for
	// an answer and record its absence instead of failing.
	lenient bool
}

// lenientWait is how long a transcript waits for an answer from gearmand,
// which may send none where gearwork does.
const lenientWait = 2 * time.Second

func dialRaw(t *testing.T, s *server) *rawConn {
	t.Helper()
	return &rawConn{Conn: wire.Dial(t, s.addr)}
}

// rawWorker registers fns, optionally with a CAN_DO_TIMEOUT in ms.
func rawWorker(t *testing.T, s *server, fns ...string) *rawConn {
	t.Helper()
	w := dialRaw(t, s)
	for _, fn := range fns {
		w.Send(gearman.CanDo, fn)
	}
	return w
}

// grab sends GRAB_JOB_UNIQ and requires a JOB_ASSIGN_UNIQ; it returns
// handle, function, unique and payload.
func (c *rawConn) grab() (handle, fn, unique, payload string) {
	c.T.Helper()
	c.Send(gearman.GrabJobUniq)
	a := c.ExpectCmd(gearman.JobAssignUniq)
	return a[0], a[1], a[2], a[3]
}

// grabWhenReady polls GRAB_JOB_UNIQ until a job is assigned.
func (c *rawConn) grabWhenReady() (handle, fn, unique, payload string) {
	c.T.Helper()
	deadline := time.Now().Add(waitTimeout)
	a := c.grabUntil(func() {
		if time.Now().After(deadline) {
			c.T.Fatal("no job became available")
		}
		time.Sleep(5 * time.Millisecond)
	})
	return a[0], a[1], a[2], a[3]
}

// grabAfterSleep sends GRAB_JOB_UNIQ until a job is assigned and returns
// its handle, function, unique and payload; while there is none it sleeps
// (PRE_SLEEP) until the server wakes it with NOOP, so a job that becomes
// runnable later must wake the worker.
func (c *rawConn) grabAfterSleep() []string {
	c.T.Helper()
	return c.grabUntil(func() {
		c.Send(gearman.PreSleep)
		c.Expect(gearman.Noop)
	})
}

// grabUntil sends GRAB_JOB_UNIQ, calling wait after each NO_JOB, until a
// JOB_ASSIGN_UNIQ comes, whose arguments it returns.
func (c *rawConn) grabUntil(wait func()) []string {
	c.T.Helper()
	for {
		c.Send(gearman.GrabJobUniq)
		p, raw := c.Next()
		switch p.Command {
		case gearman.JobAssignUniq:
			return []string{string(p.Args[0]), string(p.Args[1]), string(p.Args[2]), string(p.Args[3])}
		case gearman.NoJob:
		default:
			c.T.Fatalf("unexpected answer to GRAB_JOB_UNIQ: %s", wire.Readable(raw))
		}
		wait()
	}
}

// submit sends a submit packet and returns the handle from JOB_CREATED.
func (c *rawConn) submit(cmd gearman.Command, fn, unique, payload string) string {
	c.T.Helper()
	c.Send(cmd, fn, unique, payload)
	return c.ExpectCmd(gearman.JobCreated)[0]
}

// getStatus sends GET_STATUS and returns the STATUS_RES arguments after
// the handle: known, running, numerator, denominator.
func (c *rawConn) getStatus(handle string) []string {
	c.T.Helper()
	c.Send(gearman.GetStatus, handle)
	a := c.ExpectCmd(gearman.StatusRes)
	require.Equal(c.T, handle, a[0])
	return a[1:]
}

// TestRawUniqueOf64Bytes: a unique of 64 bytes (a SHA-256 digest in hex,
// as clients that hash their payloads send) is taken by gearmand and by
// gearwork, which keeps all 64 (a second submit joins the job, and
// GET_STATUS_UNIQUE finds it); 65 bytes are refused by both.
func TestRawUniqueOf64Bytes(t *testing.T) {
	t.Parallel()
	eachServer(t, func(t *testing.T, s *server) {
		sum := sha256.Sum256([]byte("payload"))
		unique := hex.EncodeToString(sum[:])
		c := dialRaw(t, s)
		h := c.submit(gearman.SubmitJobBg, "u64", unique, "payload")
		again := c.submit(gearman.SubmitJobBg, "u64", unique, "payload")
		if s.isGearwork() {
			// gearmand keeps 63 of the 64 bytes, so the same unique
			// again makes a second job there.
			require.Equal(t, h, again, "the same unique joins the job")
			c.Send(gearman.GetStatusUnique, unique)
			require.Equal(t, []string{unique, "1", "0", "0", "0", "0"}, c.ExpectCmd(gearman.StatusResUnique))
		}
		c.Send(gearman.SubmitJobBg, "u64", unique+"x", "payload")
		c.Expect(gearman.Error, "ARGUMENT_TOO_LARGE", "Unique value too large")
	})
}
