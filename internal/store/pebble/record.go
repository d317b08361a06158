package pebble

import (
	"encoding/binary"
	"fmt"
	"math"
	"slices"

	"github.com/gearwork/gearwork/internal/store"
)

// Keys. Every job is one key: jobPrefix followed by its Seq as eight
// big-endian bytes, so that the key order is the Seq order and Load replays
// jobs in the order they were submitted. formatKey holds the layout version
// of the whole store; it sorts before every job key.
const (
	jobPrefix = 'j'
	jobKeyLen = 9
	// metaPrefix starts the keys of the broker's metadata (cron ticks,
	// pauses): metaPrefix followed by the entry's key.
	metaPrefix = 'm'
)

var (
	formatKey = []byte("\x00gearwork-format")
	// formatValue is the layout this version writes: 2 since job record
	// blocks keep their data packed (blockDataPacked), which a server of
	// layout 1 cannot read. A store of layout 1 is marked 2 when it opens.
	formatValue   = []byte("gearwork/pebble 2")
	formatValueV1 = []byte("gearwork/pebble 1")
	// jobLower and jobUpper bound every job key.
	jobLower = []byte{jobPrefix}
	jobUpper = []byte{jobPrefix + 1}
)

func appendJobKey(dst []byte, seq uint64) []byte {
	dst = append(dst, jobPrefix)
	return binary.BigEndian.AppendUint64(dst, seq)
}

func putJobKey(dst []byte, seq uint64) {
	dst[0] = jobPrefix
	binary.BigEndian.PutUint64(dst[1:], seq)
}

func parseJobKey(k []byte) (uint64, bool) {
	if len(k) != jobKeyLen || k[0] != jobPrefix {
		return 0, false
	}
	return binary.BigEndian.Uint64(k[1:]), true
}

// recordVersion is the first byte of every job record. A store refuses a
// record whose version it does not know rather than guess. A job of a
// batch is written as version 2, which adds the batch; every other job
// keeps version 1, so stores written before batches existed read back
// unchanged.
const (
	recordVersion      = 1
	recordVersionBatch = 2
	// recordVersionAfter: a job that waits for others (version 2, then
	// its dependencies).
	recordVersionAfter = 3
	// recordVersionSubmitted: a job that knows when it was submitted
	// (version 3, whose dependencies may be none, then the time).
	recordVersionSubmitted = 4
	// recordVersionWorkers: a job whose attempts name their workers
	// (version 4, then the workers).
	recordVersionWorkers = 5
)

// A version 1 record is:
//
//	version   1 byte (1)
//	priority  1 byte
//	retries   uvarint
//	runAt     varint (Unix seconds)
//	handle    uvarint length, bytes
//	function  uvarint length, bytes
//	unique    uvarint length, bytes
//	reducer   uvarint length, bytes
//	state     1 byte
//	attempts  uvarint
//	notBefore varint
//	lastError uvarint length, bytes
//	history   uvarint count, then per attempt: start varint, end varint,
//	          outcome and error as uvarint length, bytes
//	result    uvarint length, bytes
//	finished  varint (FinishedAt)
//	ordering  uvarint length, bytes (OrderingKey)
//	maxAtt    varint (MaxAttempts)
//	timeout   varint
//	schedule  uvarint length, bytes
//	tick      varint
//	payload   every remaining byte
//
// A version 2 record has, between tick and payload:
//
//	batch     uvarint
//
// a version 3 record, after the batch:
//
//	after     uvarint count (at least 1), then each Seq as uvarint
//	anyway    1 byte (AfterAnyway)
//
// and a version 4 record, after those (whose count may be 0):
//
//	submitted varint (Submitted, Unix nanoseconds)
//
// and a version 5 record, after the submit time, one entry per attempt of
// the history, in its order:
//
//	worker    uvarint length, bytes (Attempt.Worker)
//
// The Seq is the key. Pebble checksums its WAL records and blocks, so the
// record carries no checksum of its own.

// recordLen returns the encoded size of j.
func recordLen(j *store.Job) int {
	n := 2 + uvarintLen(uint64(j.Retries)) + uvarintLen(zigzag(j.RunAt))
	for _, s := range [...]string{j.Handle, j.Function, j.Unique, j.Reducer, j.LastError, j.OrderingKey, j.Schedule} {
		n += uvarintLen(uint64(len(s))) + len(s)
	}
	n += 1 + uvarintLen(uint64(j.Attempts)) + uvarintLen(zigzag(j.NotBefore)) + uvarintLen(uint64(len(j.History)))
	for _, a := range j.History {
		n += uvarintLen(zigzag(a.Start)) + uvarintLen(zigzag(a.End)) +
			uvarintLen(uint64(len(a.Outcome))) + len(a.Outcome) + uvarintLen(uint64(len(a.Error))) + len(a.Error)
	}
	n += uvarintLen(uint64(len(j.Result))) + len(j.Result)
	n += uvarintLen(zigzag(j.FinishedAt)) + uvarintLen(zigzag(int64(j.MaxAttempts))) + uvarintLen(zigzag(j.Timeout)) + uvarintLen(zigzag(j.Tick))
	if v := versionOf(j); v >= recordVersionBatch {
		n += uvarintLen(j.Batch)
		if v >= recordVersionAfter {
			n += uvarintLen(uint64(len(j.After))) + 1
			for _, q := range j.After {
				n += uvarintLen(q)
			}
		}
		if v >= recordVersionSubmitted {
			n += uvarintLen(zigzag(j.Submitted))
		}
		if v >= recordVersionWorkers {
			for _, a := range j.History {
				n += uvarintLen(uint64(len(a.Worker))) + len(a.Worker)
			}
		}
	}
	return n + len(j.Payload)
}

// putRecord encodes j into dst, which must be recordLen(j) bytes long.
func putRecord(dst []byte, j *store.Job) {
	dst[0] = versionOf(j)
	dst[1] = j.Priority
	n := 2
	n += binary.PutUvarint(dst[n:], uint64(j.Retries))
	n += binary.PutVarint(dst[n:], j.RunAt)
	str := func(s string) {
		n += binary.PutUvarint(dst[n:], uint64(len(s)))
		n += copy(dst[n:], s)
	}
	for _, s := range [...]string{j.Handle, j.Function, j.Unique, j.Reducer} {
		str(s)
	}
	dst[n] = uint8(j.State)
	n++
	n += binary.PutUvarint(dst[n:], uint64(j.Attempts))
	n += binary.PutVarint(dst[n:], j.NotBefore)
	str(j.LastError)
	n += binary.PutUvarint(dst[n:], uint64(len(j.History)))
	for _, a := range j.History {
		n += binary.PutVarint(dst[n:], a.Start)
		n += binary.PutVarint(dst[n:], a.End)
		str(a.Outcome)
		str(a.Error)
	}
	n += binary.PutUvarint(dst[n:], uint64(len(j.Result)))
	n += copy(dst[n:], j.Result)
	n += binary.PutVarint(dst[n:], j.FinishedAt)
	str(j.OrderingKey)
	n += binary.PutVarint(dst[n:], int64(j.MaxAttempts))
	n += binary.PutVarint(dst[n:], j.Timeout)
	str(j.Schedule)
	n += binary.PutVarint(dst[n:], j.Tick)
	if v := dst[0]; v >= recordVersionBatch {
		n += binary.PutUvarint(dst[n:], j.Batch)
		if v >= recordVersionAfter {
			n += binary.PutUvarint(dst[n:], uint64(len(j.After)))
			for _, q := range j.After {
				n += binary.PutUvarint(dst[n:], q)
			}
			dst[n] = 0
			if j.AfterAnyway {
				dst[n] = 1
			}
			n++
		}
		if v >= recordVersionSubmitted {
			n += binary.PutVarint(dst[n:], j.Submitted)
		}
		if v >= recordVersionWorkers {
			for _, a := range j.History {
				str(a.Worker)
			}
		}
	}
	copy(dst[n:], j.Payload)
}

// versionOf returns the record version j needs: the oldest that holds it.
func versionOf(j *store.Job) byte {
	switch {
	case slices.ContainsFunc(j.History, func(a store.Attempt) bool { return a.Worker != "" }):
		return recordVersionWorkers
	case j.Submitted != 0:
		return recordVersionSubmitted
	case len(j.After) > 0:
		return recordVersionAfter
	case j.Batch != 0:
		return recordVersionBatch
	}
	return recordVersion
}

// knownVersion reports whether a store reads records of version v.
func knownVersion(v byte) bool { return v >= recordVersion && v <= recordVersionWorkers }

// recordDecoder decodes records, sharing the strings of repeated function
// names between jobs.
type recordDecoder struct {
	functions map[string]string
}

// decode decodes the record of job seq. The job owns all of its memory, so
// that v may be reused afterwards, except for a lent payload (lend), which
// is part of v.
func (d *recordDecoder) decode(seq uint64, v []byte, lend bool) (store.Job, error) {
	r := recordReader{b: v}
	version := r.byte()
	if r.err == nil && !knownVersion(version) {
		return store.Job{}, fmt.Errorf("job record %d has unknown version %d: %w", seq, version, store.ErrCorrupt)
	}
	j := store.Job{Seq: seq}
	j.Priority = r.byte()
	j.Retries = r.uint32()
	j.RunAt = r.varint()
	j.Handle = string(r.bytes())
	fn := r.bytes()
	if d.functions == nil {
		d.functions = make(map[string]string)
	}
	if s, ok := d.functions[string(fn)]; ok {
		j.Function = s
	} else if r.err == nil {
		j.Function = string(fn)
		if len(d.functions) < 1<<16 {
			d.functions[j.Function] = j.Function
		}
	}
	j.Unique = string(r.bytes())
	j.Reducer = string(r.bytes())
	j.State = store.JobState(r.byte())
	j.Attempts = r.uint32()
	j.NotBefore = r.varint()
	j.LastError = string(r.bytes())
	if nh := r.uvarint(); nh > 0 && nh <= uint64(len(r.b)) {
		j.History = make([]store.Attempt, nh)
		for i := range j.History {
			a := &j.History[i]
			a.Start = r.varint()
			a.End = r.varint()
			a.Outcome = string(r.bytes())
			a.Error = string(r.bytes())
		}
	} else if nh > 0 {
		r.fail()
	}
	if res := r.bytes(); len(res) > 0 {
		j.Result = append([]byte(nil), res...)
	}
	j.FinishedAt = r.varint()
	j.OrderingKey = string(r.bytes())
	j.MaxAttempts = r.int32()
	j.Timeout = r.varint()
	j.Schedule = string(r.bytes())
	j.Tick = r.varint()
	if version >= recordVersionBatch {
		j.Batch = r.uvarint()
	}
	if version >= recordVersionAfter {
		switch na := r.uvarint(); {
		case na > 0 && na <= uint64(len(r.b)):
			j.After = make([]uint64, na)
			for i := range j.After {
				j.After[i] = r.uvarint()
			}
		case na > 0 || version == recordVersionAfter:
			r.fail()
		}
		j.AfterAnyway = r.byte() == 1
	}
	if version >= recordVersionSubmitted {
		j.Submitted = r.varint()
	}
	if version >= recordVersionWorkers {
		for i := range j.History {
			j.History[i].Worker = string(r.bytes())
		}
	}
	if r.err != nil {
		return store.Job{}, fmt.Errorf("job record %d is cut short or garbled (%d bytes): %w", seq, len(v), store.ErrCorrupt)
	}
	switch {
	case len(r.b) == 0:
	case lend:
		j.Payload = r.b
	default:
		j.Payload = append([]byte(nil), r.b...)
	}
	return j, nil
}

// recordPayload returns the payload part of a record, aliasing v.
func recordPayload(seq uint64, v []byte) ([]byte, error) {
	r := recordReader{b: v}
	version := r.byte()
	if r.err == nil && !knownVersion(version) {
		return nil, fmt.Errorf("job record %d has unknown version %d: %w", seq, version, store.ErrCorrupt)
	}
	r.byte()
	r.uvarint()
	r.varint()
	for range 4 {
		r.bytes()
	}
	r.byte()
	r.uvarint()
	r.varint()
	r.bytes()
	nh := r.uvarint()
	for i := uint64(0); i < nh && r.err == nil; i++ {
		r.varint()
		r.varint()
		r.bytes()
		r.bytes()
	}
	r.bytes()
	r.varint()
	r.bytes()
	r.varint()
	r.varint()
	r.bytes()
	r.varint()
	if version >= recordVersionBatch {
		r.uvarint()
	}
	if version >= recordVersionAfter {
		for na := r.uvarint(); na > 0 && r.err == nil; na-- {
			r.uvarint()
		}
		r.byte()
	}
	if version >= recordVersionSubmitted {
		r.varint()
	}
	if version >= recordVersionWorkers {
		for nh > 0 && r.err == nil {
			r.bytes()
			nh--
		}
	}
	if r.err != nil {
		return nil, fmt.Errorf("job record %d is cut short or garbled (%d bytes): %w", seq, len(v), store.ErrCorrupt)
	}
	return r.b, nil
}

// recordReader reads a record front to back; the first error sticks.
type recordReader struct {
	b   []byte
	err error
}

var errShort = fmt.Errorf("record too short")

func (r *recordReader) fail() {
	if r.err == nil {
		r.err = errShort
	}
	r.b = nil
}

func (r *recordReader) byte() byte {
	if len(r.b) < 1 {
		r.fail()
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *recordReader) uvarint() uint64 {
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail()
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *recordReader) varint() int64 { return unzigzag(r.uvarint()) }

// uint32 reads a uvarint that must fit in 32 bits.
func (r *recordReader) uint32() uint32 {
	v := r.uvarint()
	if v > math.MaxUint32 {
		r.fail()
	}
	return uint32(v)
}

// int32 reads a varint that must fit in 32 bits.
func (r *recordReader) int32() int32 {
	v := r.varint()
	if v < math.MinInt32 || v > math.MaxInt32 {
		r.fail()
	}
	return int32(v)
}

func (r *recordReader) bytes() []byte {
	n := r.uvarint()
	if r.err != nil || n > uint64(len(r.b)) {
		r.fail()
		return nil
	}
	s := r.b[:n]
	r.b = r.b[n:]
	return s
}

func uvarintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}

func zigzag(v int64) uint64 { return uint64(v<<1) ^ uint64(v>>63) }

func unzigzag(u uint64) int64 { return int64(u>>1) ^ -int64(u&1) }
