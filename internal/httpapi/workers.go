package httpapi

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/gearwork/gearwork/internal/broker"
)

// An HTTP worker has no connection to hold a job by, so each grab gets a
// broker session of its own. While it polls, the session is a sleeping
// worker for the function (the broker wakes it with a NOOP); once it has a
// job, it holds that job under a lease: the function's worker timeout is
// the lease, so when the lease runs out the broker takes the job back and
// queues it again, exactly as for a Gearman worker that timed out. A
// finished lease closes its session.

// lease is one job held by an HTTP worker.
type lease struct {
	id      string
	seq     uint64
	sess    *broker.Session
	expires time.Time
}

// leases holds the jobs that HTTP workers run, by job seq.
type leases struct {
	b *broker.Broker
	// mu guards m. Lock order: leases.mu is never held while calling the
	// broker.
	mu sync.Mutex
	m  map[uint64]*lease
	// polls counts long polls in progress, for metrics.
	polls int
}

func newLeases(b *broker.Broker) *leases {
	return &leases{b: b, m: make(map[uint64]*lease)}
}

func newLeaseID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// grabbedJSON is a job handed to an HTTP worker.
type grabbedJSON struct {
	Handle   string `json:"handle"`
	Function string `json:"function"`
	Unique   string `json:"unique,omitempty"`
	// Payload is base64; PayloadText repeats it when it is valid UTF-8.
	Payload     []byte    `json:"payload"`
	PayloadText *string   `json:"payload_text,omitempty"`
	Lease       string    `json:"lease"`
	Expires     time.Time `json:"lease_expires"`
}

// handleGrab serves POST /v1/functions/{fn}/grab?wait=30s&lease=5m: it
// answers 200 with a job as soon as one is runnable, or 204 after wait.
func (s *Server) handleGrab(w http.ResponseWriter, r *http.Request) error {
	fn := r.PathValue("fn")
	if err := checkFunction(fn); err != nil {
		return err
	}
	if _, err := io.Copy(io.Discard, r.Body); err != nil {
		return fmt.Errorf("reading the body: %w", err)
	}
	wait := 30 * time.Second
	if v := r.URL.Query().Get("wait"); v != "" {
		d, err := s.parseWait(v)
		if err != nil {
			return err
		}
		wait = d
	}
	leaseFor := s.cfg.DefaultLease
	if v := r.URL.Query().Get("lease"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < time.Second {
			return errorf(http.StatusBadRequest, "invalid-option", "lease %q: use a Go duration of at least 1s, such as 5m", v)
		}
		leaseFor = min(d, s.cfg.MaxLease)
	}
	// With too many requests waiting, the poll looks once and answers.
	if release, ok := s.longRequest(w, wait); ok {
		defer release()
	} else {
		wait = 0
	}
	wake := make(broker.NoopSignal, 1)
	sess := s.b.NewSession(r.RemoteAddr, wake)
	// The client id names the worker in the attempts of the jobs it runs
	// (as a Gearman worker's address does) and in the workers listing,
	// whose fields are separated by spaces: an address has none.
	s.b.SetClientID(sess, "http-worker@"+r.RemoteAddr)
	if err := s.b.CanDoLease(sess, []byte(fn), leaseFor); err != nil {
		s.b.CloseSession(sess)
		return err
	}
	s.leases.mu.Lock()
	s.leases.polls++
	s.leases.mu.Unlock()
	defer func() {
		s.leases.mu.Lock()
		s.leases.polls--
		s.leases.mu.Unlock()
	}()
	t := time.NewTimer(wait)
	defer t.Stop()
	for {
		if a, ok := s.b.Grab(sess); ok {
			s.lease(w, fn, sess, a, leaseFor)
			return nil
		}
		s.b.PreSleep(sess)
		select {
		case <-wake:
			continue
		case <-t.C:
			// One last try: a job may have come with the timer.
			if a, ok := s.b.Grab(sess); ok {
				s.lease(w, fn, sess, a, leaseFor)
				return nil
			}
			s.b.CloseSession(sess)
			return noContent(w)
		case <-r.Context().Done():
		case <-s.stop:
		}
		s.b.CloseSession(sess)
		return noContent(w)
	}
}

// lease records a grabbed job's lease and answers with the job.
func (s *Server) lease(w http.ResponseWriter, fn string, sess *broker.Session, a broker.Assignment, d time.Duration) {
	// Stop being a worker: the session now only holds this job.
	s.b.CantDo(sess, []byte(fn))
	l := &lease{id: newLeaseID(), seq: a.Seq, sess: sess, expires: time.Now().Add(d)}
	s.leases.mu.Lock()
	s.leases.m[a.Seq] = l
	s.leases.mu.Unlock()
	payload := nonNil(a.Payload)
	writeJSON(w, http.StatusOK, grabbedJSON{Handle: s.b.Handle(a.Seq), Function: a.Function, Unique: a.Unique,
		Payload: payload, PayloadText: textOf(payload), Lease: l.id, Expires: l.expires.UTC()})
}

func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

// release ends a lease: the session closes, and a job it still holds goes
// back to its queue.
func (l *leases) release(seq uint64, le *lease) {
	l.mu.Lock()
	if l.m[seq] == le {
		delete(l.m, seq)
	}
	l.mu.Unlock()
	l.b.CloseSession(le.sess)
}

// held returns the lease of job seq if id matches it.
func (l *leases) held(seq uint64, id string) (*lease, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	le := l.m[seq]
	switch {
	case le == nil:
		return nil, errorf(http.StatusConflict, "no-lease",
			"no HTTP worker holds this job: its lease ran out (the job was queued again), it was finished already, or it was never grabbed over HTTP")
	case id == "":
		return nil, errorf(http.StatusBadRequest, "lease-required", "give the lease from the grab as ?lease= or the Gearwork-Lease header")
	case id != le.id:
		return nil, errorf(http.StatusConflict, "lease-mismatch", "the job is held under another lease; this worker's lease ran out")
	}
	return le, nil
}

// expire closes the sessions of leases that ran out (the broker has
// already taken their jobs back) and of polls that ended.
func (l *leases) expire(now time.Time) {
	var gone []*lease
	l.mu.Lock()
	for seq, le := range l.m {
		if now.After(le.expires.Add(time.Second)) {
			delete(l.m, seq)
			gone = append(gone, le)
		}
	}
	l.mu.Unlock()
	for _, le := range gone {
		l.b.CloseSession(le.sess)
	}
}

// closeAll ends every lease (at shutdown): held jobs go back to their
// queues.
func (l *leases) closeAll() {
	l.mu.Lock()
	all := l.m
	l.m = make(map[uint64]*lease)
	l.mu.Unlock()
	for _, le := range all {
		l.b.CloseSession(le.sess)
	}
}

// count returns the number of leases and long polls in progress.
func (l *leases) count() (held, polls int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.m), l.polls
}

// workUpdate finds the lease a work update names (the handle in the path,
// the lease in ?lease= or the Gearwork-Lease header) and reads its body.
func (s *Server) workUpdate(r *http.Request) (*lease, []byte, error) {
	seq, _, err := s.handleParam(r)
	if err != nil {
		return nil, nil, err
	}
	le, err := s.leases.held(seq, cmpOr(r.URL.Query().Get("lease"), r.Header.Get("Gearwork-Lease")))
	if err != nil {
		return nil, nil, err
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return nil, nil, fmt.Errorf("reading the body: %w", err)
	}
	return le, body, nil
}

// leaseError turns the broker's "not held" into why the worker lost the
// job, a 409 whose problem type says which: the job was cancelled, it
// timed out (a policy's timeout shorter than the lease: the job failed
// or runs again, and the update changed nothing), or the lease ran out.
// A Gearman worker's packet is accepted without an answer in the first
// two cases (internal/gearmanapi's workResult); an HTTP worker is told.
func leaseError(err error) error {
	switch {
	case errors.Is(err, broker.ErrJobCancelled):
		return errorf(http.StatusConflict, "job-cancelled", "the job was cancelled while this worker held it; drop it")
	case errors.Is(err, broker.ErrJobTimedOut):
		return errorf(http.StatusConflict, "timed-out", "the job's timeout ran out while this worker held it: the job failed or runs again, and this update changed nothing; drop it")
	case errors.Is(err, broker.ErrJobNotFound):
		return errorf(http.StatusConflict, "no-lease", "the lease ran out and the job was taken back")
	}
	return err
}

// handleFinish serves POST /v1/jobs/{handle}/complete and .../fail. The
// body of complete is the result. A fail with a body reports an exception
// (WORK_EXCEPTION) with the body as its data; without one, WORK_FAIL.
func (s *Server) handleFinish(outcome broker.Outcome) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		le, data, err := s.workUpdate(r)
		if err != nil {
			return err
		}
		o := outcome
		if o == broker.Fail && len(data) > 0 {
			o = broker.Exception
		}
		if err := s.b.Finish(le.sess, le.seq, o, data); err != nil {
			s.leases.release(le.seq, le)
			return leaseError(err)
		}
		s.leases.release(le.seq, le)
		return noContent(w)
	}
}

// statusBody is the body of a status update.
type statusBody struct {
	Numerator   uint32 `json:"numerator"`
	Denominator uint32 `json:"denominator"`
}

// handleWorkStatus serves POST /v1/jobs/{handle}/status.
func (s *Server) handleWorkStatus(w http.ResponseWriter, r *http.Request) error {
	le, body, err := s.workUpdate(r)
	if err != nil {
		return err
	}
	var st statusBody
	if err := decodeStrict(body, &st); err != nil {
		return err
	}
	if err := s.b.WorkStatus(le.sess, le.seq, st.Numerator, st.Denominator); err != nil {
		return leaseError(err)
	}
	return noContent(w)
}

// handleWorkData serves POST /v1/jobs/{handle}/data (?warning=true, or
// ?warning, for a warning): the body is forwarded to the job's clients
// and event streams.
func (s *Server) handleWorkData(w http.ResponseWriter, r *http.Request) error {
	le, data, err := s.workUpdate(r)
	if err != nil {
		return err
	}
	warning, _, err := queryBool(r, "warning")
	if err != nil {
		return err
	}
	if err := s.b.WorkData(le.sess, le.seq, data, warning); err != nil {
		return leaseError(err)
	}
	return noContent(w)
}
