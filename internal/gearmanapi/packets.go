package gearmanapi

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/gearwork/gearwork/gearman"
	"github.com/gearwork/gearwork/internal/auth"
	"github.com/gearwork/gearwork/internal/broker"
)

var (
	zero = []byte("0")
	one  = []byte("1")
)

// packet handles one binary request.
func (c *conn) packet(ctx context.Context, f *gearman.Frame) {
	p := &f.Packet
	// A refused packet's ERROR takes its place among the answers, after
	// those of earlier submits.
	if p.Magic != gearman.MagicReq {
		c.waitAcks()
		c.errorPacket("INVALID_MAGIC", "Request magic expected")
		return
	}
	if !p.Command.Valid() {
		c.waitAcks()
		c.errorPacket("INVALID_COMMAND", "Invalid command expected")
		return
	}
	if !f.ArgsOK && !padWorkArgs(p, f.Body) {
		c.waitAcks()
		c.errorPacket("INVALID_PACKET", p.Command.String()+" needs "+
			strconv.Itoa(p.Command.NumArgs())+" NUL-separated arguments")
		return
	}
	switch p.Command {
	case gearman.SubmitJob, gearman.SubmitJobBg, gearman.SubmitJobHigh, gearman.SubmitJobHighBg,
		gearman.SubmitJobLow, gearman.SubmitJobLowBg, gearman.SubmitJobEpoch, gearman.SubmitJobSched,
		gearman.SubmitReduceJob, gearman.SubmitReduceJobBg:
		c.submit(ctx, p)
		return
	}
	c.waitAcks()
	b := c.srv.b
	switch p.Command {
	case gearman.EchoReq:
		c.packetOut(gearman.EchoRes, p.Args[0])
	case gearman.CanDo, gearman.CanDoTimeout:
		name := trimNUL(p.Args[0])
		if err := gearman.CheckFunctionName(name); err != nil {
			// No ERROR, as for a CAN_DO the broker refuses (below):
			// Perl's Gearman::Worker, which checks no name, would die on
			// it and stop serving the functions it did register.
			c.srv.limited.log(c.srv.log, slog.LevelWarn, "gearmanapi: CAN_DO ignored",
				slog.String("remote", c.remote), slog.Int("function_bytes", len(name)),
				slog.String("error", err.Error()))
			return
		}
		if !c.allowed(auth.ActionServe, string(name)) {
			c.errorPacket("PERMISSION_DENIED", c.deniedText(auth.ActionServe, string(name)))
			return
		}
		var timeout time.Duration
		if p.Command == gearman.CanDoTimeout {
			// Read like gearmand's atoi: the leading decimal digits
			// count. A timeout without them (a negative one, or a binary
			// number, which npm's gearman 2.1.0 sends) is 0, none: the
			// function is registered all the same, so its worker gets jobs.
			ms, _ := parseUint32(bytes.TrimPrefix(bytes.TrimLeft(p.Args[1], " \t\n\v\f\r"), []byte("+")))
			if ms > 0 {
				// gearmand clamps the timeout to at least one second.
				timeout = time.Duration(max(ms, 1000)) * time.Millisecond
			}
		}
		if err := b.CanDo(c.sess, name, timeout); err != nil {
			// CAN_DO has no answer, and libgearman's worker exits on an
			// ERROR it did not ask for, so that it would stop serving the
			// functions it did register: a refused one is ignored (the
			// broker counts it) and logged, and the worker goes on with
			// the functions it has.
			c.srv.limited.log(c.srv.log, slog.LevelWarn, "gearmanapi: CAN_DO ignored",
				slog.String("remote", c.remote), slog.String("function", string(name)),
				slog.String("error", err.Error()))
		}
	case gearman.CantDo:
		b.CantDo(c.sess, trimNUL(p.Args[0]))
	case gearman.ResetAbilities:
		b.ResetAbilities(c.sess)
	case gearman.PreSleep:
		b.PreSleep(c.sess)
	case gearman.GrabJob, gearman.GrabJobUniq, gearman.GrabJobAll:
		c.grab(p.Command)
	case gearman.WorkStatus:
		seq, ok := b.ParseHandle(trimNUL(p.Args[0]))
		num, _ := parseUint32(bytes.TrimLeft(p.Args[1], " \t\n\v\f\r+"))
		den, _ := parseUint32(bytes.TrimLeft(p.Args[2], " \t\n\v\f\r+"))
		text := statusText(p.Args[1], p.Args[2], num, den)
		c.workResult(ok, func() error { return b.WorkStatusText(c.sess, seq, num, den, text) })
	case gearman.WorkData, gearman.WorkWarning:
		seq, ok := b.ParseHandle(p.Args[0])
		c.workResult(ok, func() error {
			return b.WorkData(c.sess, seq, ownData(f, p.Args[1]), p.Command == gearman.WorkWarning)
		})
	case gearman.WorkComplete:
		seq, ok := b.ParseHandle(p.Args[0])
		c.workResult(ok, func() error { return b.Finish(c.sess, seq, broker.Complete, ownData(f, p.Args[1])) })
	case gearman.WorkException:
		seq, ok := b.ParseHandle(p.Args[0])
		c.workResult(ok, func() error { return b.Finish(c.sess, seq, broker.Exception, ownData(f, p.Args[1])) })
	case gearman.WorkFail:
		seq, ok := b.ParseHandle(trimNUL(p.Args[0]))
		c.workResult(ok, func() error { return b.Finish(c.sess, seq, broker.Fail, nil) })
	case gearman.GetStatus:
		h := trimNUL(p.Args[0])
		st := b.GetStatus(h)
		c.packetOut(gearman.StatusRes, h, flag(st.Known), flag(st.Running),
			strconv.AppendUint(nil, uint64(st.Numerator), 10),
			strconv.AppendUint(nil, uint64(st.Denominator), 10))
	case gearman.GetStatusUnique:
		u := trimNUL(p.Args[0])
		st := b.GetStatusUnique(u)
		c.packetOut(gearman.StatusResUnique, u, flag(st.Known), flag(st.Running),
			strconv.AppendUint(nil, uint64(st.Numerator), 10),
			strconv.AppendUint(nil, uint64(st.Denominator), 10),
			strconv.AppendUint(nil, uint64(st.Waiting), 10))
	case gearman.OptionReq:
		opt := trimNUL(p.Args[0])
		if !bytes.EqualFold(opt, []byte("exceptions")) {
			c.errorPacket("UNKNOWN_OPTION", "Server does not recognize given option")
			return
		}
		b.SetExceptions(c.sess)
		c.packetOut(gearman.OptionRes, opt)
	case gearman.SetClientID:
		// Cut as gearmand cuts it: a connection keeps its id for as long
		// as it is open, and the packet may be as large as --max-packet.
		id := trimNUL(p.Args[0])
		b.SetClientID(c.sess, adminText(string(id[:min(len(id), gearman.MaxClientIDSize)])))
	case gearman.AllYours:
		// A worker's promise to use only this server; nothing to do.
	default:
		c.errorPacket("INVALID_COMMAND", "Command not expected")
	}
}

// workResult runs a worker's WORK_* packet and answers its error:
//   - none for a job the worker lost to its timeout (broker.ErrJobTimedOut)
//     or that was cancelled while it ran it (broker.ErrJobCancelled): the
//     packet changes nothing, and an ERROR in answer would kill Perl's
//     Gearman::Worker, which dies on any ERROR it reads while it waits for
//     its next job (the HTTP API answers these 409, internal/httpapi's
//     leaseError);
//   - ERROR JOB_NOT_FOUND for any other job the connection does not hold;
//   - ERROR UNKNOWN_ERROR otherwise.
func (c *conn) workResult(handleOK bool, call func() error) {
	if !handleOK {
		c.errorPacket("JOB_NOT_FOUND", "Job given in work result not found")
		return
	}
	err := call()
	switch {
	case err == nil, errors.Is(err, broker.ErrJobTimedOut), errors.Is(err, broker.ErrJobCancelled):
	case errors.Is(err, broker.ErrJobNotFound):
		c.errorPacket("JOB_NOT_FOUND", "Job given in work result not found")
	default:
		c.errorPacket("UNKNOWN_ERROR", err.Error())
	}
}

func (c *conn) grab(cmd gearman.Command) {
	a, ok := c.srv.b.Grab(c.sess)
	if !ok {
		c.packetOut(gearman.NoJob)
		return
	}
	var hb [64]byte
	h := c.srv.b.AppendHandle(hb[:0], a.Seq)
	// The arguments are written straight into the output buffer: a job
	// assignment is the hottest answer and needs no allocation.
	strs := [3]string{a.Function}
	n := 1
	resp := gearman.JobAssign
	switch {
	case cmd == gearman.GrabJobAll && a.Reducer != "":
		resp, strs[1], strs[2], n = gearman.JobAssignAll, a.Unique, a.Reducer, 3
	case cmd == gearman.GrabJobUniq || cmd == gearman.GrabJobAll:
		resp, strs[1], n = gearman.JobAssignUniq, a.Unique, 2
	}
	size := len(h) + 1 + len(a.Payload)
	for _, s := range strs[:n] {
		size += len(s) + 1
	}
	c.mu.Lock()
	c.out = appendHeader(c.out, resp, size)
	c.out = append(append(c.out, h...), 0)
	for _, s := range strs[:n] {
		c.out = append(append(c.out, s...), 0)
	}
	c.out = append(c.out, a.Payload...)
	c.mu.Unlock()
}

// appendHeader appends a response header for a body of size bytes.
func appendHeader(dst []byte, cmd gearman.Command, size int) []byte {
	dst = append(dst, 0, 'R', 'E', 'S')
	dst = binary.BigEndian.AppendUint32(dst, uint32(cmd))
	return binary.BigEndian.AppendUint32(dst, uint32(size))
}

func (c *conn) submit(ctx context.Context, p *gearman.Packet) {
	params := broker.SubmitParams{Function: p.Args[0], Unique: p.Args[1], Priority: broker.Normal}
	switch p.Command {
	case gearman.SubmitJobHigh, gearman.SubmitJobHighBg:
		params.Priority = broker.High
	case gearman.SubmitJobLow, gearman.SubmitJobLowBg:
		params.Priority = broker.Low
	}
	switch p.Command {
	case gearman.SubmitJobBg, gearman.SubmitJobHighBg, gearman.SubmitJobLowBg,
		gearman.SubmitJobEpoch, gearman.SubmitJobSched, gearman.SubmitReduceJobBg:
		params.Background = true
	}
	switch p.Command {
	case gearman.SubmitJobEpoch:
		at, err := parseEpoch(p.Args[2])
		if err != nil || at < 0 {
			c.waitAcks()
			c.errorPacket("INVALID_PACKET", "SUBMIT_JOB_EPOCH needs a Unix time in seconds")
			return
		}
		params.RunAt = at
		params.Payload = p.Args[3]
	case gearman.SubmitJobSched:
		when, err := schedFields(p.Args[2:7])
		if err != nil {
			c.waitAcks()
			c.errorPacket("INVALID_PACKET", err.Error())
			return
		}
		params.When = &when
		params.Payload = p.Args[7]
	case gearman.SubmitReduceJob, gearman.SubmitReduceJobBg:
		params.Reducer = p.Args[2]
		params.Payload = p.Args[4]
	default:
		params.Payload = p.Args[2]
	}
	// The limit holds for the whole unique, a batch's or dependencies'
	// prefix included, as gearmand's does.
	if len(params.Unique) > gearman.MaxUniqueSize {
		c.waitAcks()
		c.errorPacket("ARGUMENT_TOO_LARGE", "Unique value too large")
		return
	}
	if id, unique, ok := batchOfUnique(params.Unique); ok {
		params.Batch, params.Unique = id, unique
	} else if after, anyway, unique, ok := afterOfUnique(params.Unique); ok {
		params.After, params.AfterAnyway, params.Unique = after, anyway, unique
	} else if dep, anyway, ok := afterUniqueOfUnique(params.Unique); ok {
		params.AfterUnique, params.AfterAnyway, params.Unique = []broker.UniqueDep{dep}, anyway, nil
	}
	switch {
	case gearman.CheckFunctionName(params.Function) != nil:
		c.waitAcks()
		c.errorPacket("INVALID_FUNCTION_NAME", gearman.CheckFunctionName(params.Function).Error())
		return
	case len(params.Reducer) > 0 && gearman.CheckFunctionName(params.Reducer) != nil:
		// The reducer is a function name that the job keeps (and stores)
		// beside its payload; --max-queued-bytes does not count it.
		c.waitAcks()
		c.errorPacket("INVALID_FUNCTION_NAME", "reducer: "+gearman.CheckFunctionName(params.Reducer).Error())
		return
	case c.grant != nil && !c.allowed(auth.ActionSubmit, string(params.Function)):
		c.waitAcks()
		c.errorPacket("PERMISSION_DENIED", c.deniedText(auth.ActionSubmit, string(params.Function)))
		return
	case c.grant != nil && params.Batch != 0:
		denied, err := c.batchCallbackDenied(ctx, params.Batch)
		switch {
		case err != nil:
			c.waitAcks()
			c.errorPacket("QUEUE_ERROR", "batch "+strconv.FormatUint(params.Batch, 10)+
				": its callbacks could not be read to check the submit's permission: "+err.Error())
			return
		case denied != "":
			c.waitAcks()
			c.errorPacket("PERMISSION_DENIED", c.deniedText(auth.ActionSubmit, denied)+
				" (a callback of batch "+strconv.FormatUint(params.Batch, 10)+")")
			return
		}
	}
	if !params.Background {
		// A foreground job's events may follow its JOB_CREATED at once, so
		// that answer must not be held behind an earlier submit waiting
		// for the store.
		c.waitAcks()
	}
	c.mu.Lock()
	done := c.newAckLocked()
	c.mu.Unlock()
	c.srv.b.Submit(c.sess, params, done)
}

// batchCallbackDenied returns the function of a callback of batch id
// that the connection may not submit to, or "" when it may submit to all
// of them (or the batch is unknown: the submit is refused for that). A job
// that joins a batch decides with the batch's other jobs whether and when
// its callbacks are submitted, so it needs what closing the batch needs
// (adminBatchClose): otherwise a peer allowed to submit to any function
// could keep another's batch from succeeding, or from ever completing.
// It fails closed: an error reading the batch (a shared store that is
// down) is returned, and the submit refused.
func (c *conn) batchCallbackDenied(ctx context.Context, id uint64) (string, error) {
	s, err := c.srv.b.Batch(ctx, id)
	switch {
	case errors.Is(err, broker.ErrBatchNotFound):
		return "", nil
	case err != nil:
		return "", err
	}
	for _, fn := range callbackFunctions(s.OnSuccess, s.OnComplete) {
		if !c.allowed(auth.ActionSubmit, fn) {
			return fn, nil
		}
	}
	return "", nil
}

// schedFields reads the five time fields of a SUBMIT_JOB_SCHED (minute,
// hour, day of month, month, day of week) as a cron schedule in UTC. An
// empty field means any value; a field may also use cron's lists, ranges
// and steps.
func schedFields(fields [][]byte) (broker.Cron, error) {
	spec := make([]string, len(fields))
	for i, f := range fields {
		f = bytes.TrimSpace(trimNUL(f))
		switch {
		case len(f) == 0:
			spec[i] = "*"
		case bytes.ContainsAny(f, " \t\r\n"):
			return broker.Cron{}, fmt.Errorf("SUBMIT_JOB_SCHED time field %d %q contains a space", i+1, f)
		default:
			spec[i] = string(f)
		}
	}
	when, err := broker.ParseCron(strings.Join(spec, " "), time.UTC)
	if err != nil {
		return broker.Cron{}, fmt.Errorf("SUBMIT_JOB_SCHED time fields: %w", err)
	}
	return when, nil
}

func flag(b bool) []byte {
	if b {
		return one
	}
	return zero
}

// trimNUL drops trailing NUL bytes that some clients send after a final
// argument.
func trimNUL(b []byte) []byte {
	for len(b) > 0 && b[len(b)-1] == 0 {
		b = b[:len(b)-1]
	}
	return b
}

// parseUint32 parses a decimal number leniently, like atoi: leading digits
// count, anything after them is ignored.
func parseUint32(b []byte) (uint32, bool) {
	var n uint64
	i := 0
	for i < len(b) && b[i] >= '0' && b[i] <= '9' {
		n = n*10 + uint64(b[i]-'0')
		if n > 1<<32-1 {
			n = 1<<32 - 1
		}
		i++
	}
	return uint32(n), i > 0
}

// parseEpoch reads SUBMIT_JOB_EPOCH's Unix time: whole seconds, with
// spaces around them, a '+' before them, or a fraction after them (a
// client that sends a time such as Python's time.time() gives, which
// gearmand reads as its whole seconds) taken off.
func parseEpoch(b []byte) (int64, error) {
	b = bytes.TrimSpace(b)
	if whole, frac, ok := bytes.Cut(b, []byte(".")); ok && len(whole) > 0 &&
		len(bytes.TrimLeft(frac, "0123456789")) == 0 {
		b = whole
	}
	return strconv.ParseInt(string(b), 10, 64)
}

// statusText returns a WORK_STATUS's numerator and denominator as the
// worker sent them ("numerator\x00denominator", a copy), for its clients
// to get as they are, as from gearmand: a worker may send a fraction
// ("33.3" of "100", "0.5" of "1"; abraxas sends a percentage times 100),
// which the job's num and den (leading digits, for GET_STATUS) would
// lose. A number left out (Perl's Gearman::Worker sends no denominator)
// is sent as 0. nil when num and den, in decimal, are the text.
func statusText(numArg, denArg []byte, num, den uint32) []byte {
	var nb, db [10]byte
	numText := strconv.AppendUint(nb[:0], uint64(num), 10)
	denText := strconv.AppendUint(db[:0], uint64(den), 10)
	if len(numArg) == 0 {
		numArg = numText
	}
	if len(denArg) == 0 {
		denArg = denText
	}
	if bytes.Equal(numArg, numText) && bytes.Equal(denArg, denText) {
		return nil
	}
	text := make([]byte, 0, len(numArg)+1+len(denArg))
	return append(append(append(text, numArg...), 0), denArg...)
}

// noData is the empty result: no room to grow into, nothing shared.
var noData = []byte{}

// ownData returns a work result's data b, of frame f, for the broker to
// keep: a copy when f's body is borrowed (the reader reuses it), else b
// itself (a body that is not borrowed is never reused, and a large result
// is not copied twice); nil for nil, and noData for empty data.
func ownData(f *gearman.Frame, b []byte) []byte {
	switch {
	case b == nil:
		return nil
	case len(b) == 0:
		return noData
	case f.Borrowed:
		return bytes.Clone(b)
	}
	return b
}

// padWorkArgs accepts a work update that lacks its trailing arguments, as
// Perl's Gearman::Worker sends them: WORK_COMPLETE (and WORK_DATA,
// WORK_WARNING, WORK_EXCEPTION) with an empty or "0" result carries the
// handle without a NUL, and WORK_STATUS carries no denominator. The
// missing arguments are taken as empty (a number of 0). It reports whether
// p is such a packet; p.Args is then complete.
func padWorkArgs(p *gearman.Packet, body []byte) bool {
	switch p.Command {
	case gearman.WorkComplete, gearman.WorkData, gearman.WorkWarning, gearman.WorkException, gearman.WorkStatus:
	default:
		return false
	}
	n := p.Command.NumArgs()
	have := min(bytes.Count(body, []byte{0})+1, n)
	args, ok := gearman.SplitArgs(make([][]byte, 0, n), body, have)
	if !ok {
		return false
	}
	for len(args) < n {
		args = append(args, nil)
	}
	p.Args = args
	return true
}
