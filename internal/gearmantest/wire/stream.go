package wire

import (
	"bufio"
	"fmt"
	"net"

	"github.com/gearwork/gearwork/gearman"
)

// Stream is one raw Gearman connection whose methods return their errors
// instead of failing a test: for clients and workers that run beside the
// test, reconnect when a server goes away, drive a benchmark or run in a
// helper process. It sets no deadlines: close it to stop one that waits.
// It is not safe for concurrent use.
type Stream struct {
	NC net.Conn
	R  *bufio.Reader
}

// DialStream connects to addr over TCP.
func DialStream(addr string) (*Stream, error) {
	nc, err := net.DialTimeout("tcp", addr, Deadline)
	if err != nil {
		return nil, err
	}
	return NewStream(nc), nil
}

// NewStream wraps a connection dialed elsewhere.
func NewStream(nc net.Conn) *Stream { return &Stream{NC: nc, R: bufio.NewReader(nc)} }

// Close closes the connection.
func (s *Stream) Close() error { return s.NC.Close() }

// Write sends bytes as they are, such as several packets at once.
func (s *Stream) Write(b []byte) error {
	_, err := s.NC.Write(b)
	return err
}

// Send sends one request packet.
func (s *Stream) Send(cmd gearman.Command, args ...string) error {
	return s.Write(Request(cmd, args...))
}

// Next reads the next packet and returns it decoded (see Decode).
func (s *Stream) Next() (gearman.Packet, error) {
	raw, err := ReadPacket(s.R)
	if err != nil {
		return gearman.Packet{}, err
	}
	return Decode(raw)
}

// NextJob asks for a job with GRAB_JOB until it gets one, sleeping with
// PRE_SLEEP until the server's NOOP while there is none, and returns the
// JOB_ASSIGN. A NOOP before the answer to GRAB_JOB is a late wake-up and
// passed over; any other answer is an error.
func (s *Stream) NextJob() (gearman.Packet, error) { return s.nextJob(nil) }

// nextJob is NextJob sending before (the last job's result, say) in the
// same write as its first GRAB_JOB.
func (s *Stream) nextJob(before []byte) (gearman.Packet, error) {
	grab := append(before, Request(gearman.GrabJob)...)
	for {
		if err := s.Write(grab); err != nil {
			return gearman.Packet{}, err
		}
		grab = Request(gearman.GrabJob)
		p, err := s.Next()
		for err == nil && p.Command == gearman.Noop {
			p, err = s.Next()
		}
		if err != nil {
			return p, err
		}
		switch p.Command {
		case gearman.JobAssign:
			return p, nil
		case gearman.NoJob:
		default:
			return p, fmt.Errorf("worker: %s answers GRAB_JOB", p.Command)
		}
		if err := s.Send(gearman.PreSleep); err != nil {
			return p, err
		}
		if p, err = s.Next(); err != nil {
			return p, err
		}
		if p.Command != gearman.Noop {
			return p, fmt.Errorf("worker: %s wakes a sleeping worker", p.Command)
		}
	}
}

// Work runs the jobs of the functions the connection can do until it
// fails (or is closed): each JOB_ASSIGN's payload goes to run, and its
// result back to the server in a WORK_COMPLETE, sent with the next
// GRAB_JOB.
func (s *Stream) Work(run func(payload []byte) (result []byte)) error {
	return s.WorkHandles(func(_, payload []byte) []byte { return run(payload) })
}

// WorkHandles is Work whose run is also given each job's handle.
func (s *Stream) WorkHandles(run func(handle, payload []byte) (result []byte)) error {
	var done []byte
	for {
		job, err := s.nextJob(done)
		if err != nil {
			return err
		}
		done = gearman.AppendPacket(nil, gearman.MagicReq, gearman.WorkComplete, job.Args[0], run(job.Args[0], job.Args[2]))
	}
}
