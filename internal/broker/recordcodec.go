package broker

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"time"

	"github.com/gearwork/gearwork/internal/store"
)

// The stored form of a job record (store.Record.Data): a version byte
// (recordCodecV1), then the fields below as varints and length-prefixed
// strings, in this order. Seq, Function, State and Finished are the
// store.Record's own. The record of a retried job (RetryOf set) has the
// version byte recordCodecV2 and RetryOf after the attempts; the record
// of a job of a batch (Batch set) has recordCodecV3, RetryOf (0 or not)
// and then Batch after the attempts. Each writes the lowest version that
// holds the record, and every version reads back. The flag
// recordPayloadWhole says the payload field holds the whole payload
// (Payload) rather than its preview. Records written as JSON (they start
// with '{') still read back.
const (
	recordCodecV1 = 1
	recordCodecV2 = 2
	recordCodecV3 = 3

	recordBackground      = 1
	recordResultTruncated = 2
	recordPayloadWhole    = 4
)

var errRecordCodec = errors.New("job record: damaged or of an unknown version")

func encodeSnapshot(s *JobSnapshot) []byte {
	return appendSnapshot(make([]byte, 0, 64+len(s.Unique)+len(s.Result)+len(s.PayloadPreview)+len(s.LastError)), s)
}

// appendSnapshot appends the stored form of s to b.
func appendSnapshot(b []byte, s *JobSnapshot) []byte {
	payload := s.PayloadPreview
	if s.Payload != nil {
		payload = s.Payload
	}
	return appendRecordFields(b, &recordFields{unique: s.Unique, lastErr: s.LastError, orderKey: s.OrderingKey,
		cancelledBy: s.CancelledBy, result: s.Result, payload: payload, history: s.History,
		background: s.Background, truncated: s.ResultTruncated, whole: s.Payload != nil,
		priority: s.Priority, retries: s.Retries, attempts: s.Attempts, maxAttempts: s.MaxAttempts,
		payloadSize: s.PayloadSize, cancelledAt: unixNanos(s.CancelledAt), submitted: unixNanos(s.Submitted),
		started: unixNanos(s.Started), retryOf: s.RetryOf, batch: s.Batch})
}

// unixNanos is t in nanoseconds since the epoch, 0 for the zero time.
func unixNanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// recordFields are the fields of the stored form of a record, read from a
// JobSnapshot (appendSnapshot) or straight from a histRec (appendRecord)
// without copying what they point to.
type recordFields struct {
	unique, lastErr, orderKey, cancelledBy string
	// result is nil when the record has none; payload is the whole
	// payload when whole, its preview otherwise.
	result, payload                 []byte
	history                         []store.Attempt
	background, truncated, whole    bool
	priority                        Priority
	retries, attempts               uint32
	maxAttempts, payloadSize        int
	cancelledAt, submitted, started int64
	retryOf, batch                  uint64
}

// appendRecordFields appends the stored form of f to b.
func appendRecordFields(b []byte, f *recordFields) []byte {
	version := byte(recordCodecV1)
	switch {
	case f.batch != 0:
		version = recordCodecV3
	case f.retryOf != 0:
		version = recordCodecV2
	}
	b = append(b, version)
	str := func(v string) { b = binary.AppendUvarint(b, uint64(len(v))); b = append(b, v...) }
	byt := func(v []byte) {
		if v == nil {
			b = append(b, 0)
			return
		}
		b = binary.AppendUvarint(b, uint64(len(v))+1)
		b = append(b, v...)
	}
	var flags uint64
	if f.background {
		flags |= recordBackground
	}
	if f.truncated {
		flags |= recordResultTruncated
	}
	if f.whole {
		flags |= recordPayloadWhole
	}
	b = binary.AppendUvarint(b, flags)
	str(f.unique)
	b = binary.AppendUvarint(b, uint64(f.priority))
	b = binary.AppendUvarint(b, uint64(f.retries))
	b = binary.AppendUvarint(b, uint64(f.attempts))
	b = binary.AppendVarint(b, int64(f.maxAttempts))
	str(f.lastErr)
	str(f.orderKey)
	byt(f.result)
	byt(f.payload)
	b = binary.AppendUvarint(b, uint64(f.payloadSize))
	str(f.cancelledBy)
	b = binary.AppendVarint(b, f.cancelledAt)
	b = binary.AppendVarint(b, f.submitted)
	b = binary.AppendVarint(b, f.started)
	b = binary.AppendUvarint(b, uint64(len(f.history)))
	for _, a := range f.history {
		b = binary.AppendVarint(b, a.Start)
		b = binary.AppendVarint(b, a.End)
		str(a.Outcome)
		str(a.Error)
		str(a.Worker)
	}
	if version >= recordCodecV2 {
		b = binary.AppendUvarint(b, f.retryOf)
	}
	if version >= recordCodecV3 {
		b = binary.AppendUvarint(b, f.batch)
	}
	return b
}

func decodeSnapshot(data []byte, s *JobSnapshot) error {
	if len(data) > 0 && data[0] == '{' {
		if err := json.Unmarshal(data, s); err != nil {
			return err
		}
		if s.Priority >= numPriorities {
			return errRecordCodec
		}
		return nil
	}
	if len(data) == 0 || data[0] < recordCodecV1 || data[0] > recordCodecV3 {
		return errRecordCodec
	}
	version := data[0]
	d := data[1:]
	bad := false
	uv := func() uint64 {
		v, n := binary.Uvarint(d)
		if n <= 0 {
			bad = true
			return 0
		}
		d = d[n:]
		return v
	}
	// A varint is a zigzag-encoded uvarint (encoding/binary).
	sv := func() int64 {
		u := uv()
		return int64(u>>1) ^ -int64(u&1)
	}
	str := func() string {
		n := uv()
		if bad || n > uint64(len(d)) {
			bad = true
			return ""
		}
		v := string(d[:n])
		d = d[n:]
		return v
	}
	byt := func() []byte {
		n := uv()
		if bad || n == 0 {
			return nil
		}
		if n-1 > uint64(len(d)) {
			bad = true
			return nil
		}
		v := append([]byte{}, d[:n-1]...)
		d = d[n-1:]
		return v
	}
	tm := func() time.Time {
		if v := sv(); v != 0 {
			return time.Unix(0, v)
		}
		return time.Time{}
	}
	flags := uv()
	s.Background, s.ResultTruncated = flags&recordBackground != 0, flags&recordResultTruncated != 0
	s.Unique = str()
	if p := uv(); p < numPriorities {
		s.Priority = Priority(p)
	} else {
		bad = true
	}
	s.Retries = uint32(uv())
	s.Attempts = uint32(uv())
	s.MaxAttempts = int(sv())
	s.LastError = str()
	s.OrderingKey = str()
	s.Result = byt()
	s.PayloadPreview = byt()
	if flags&recordPayloadWhole != 0 {
		s.Payload = nonNilBytes(s.PayloadPreview)
		s.PayloadPreview = s.Payload[:min(len(s.Payload), PayloadPreviewCap)]
	}
	s.PayloadSize = int(uv())
	s.CancelledBy = str()
	s.CancelledAt = tm()
	s.Submitted = tm()
	s.Started = tm()
	n := uv()
	if n > uint64(len(d)) {
		bad = true
	}
	for i := uint64(0); i < n && !bad; i++ {
		a := store.Attempt{Start: sv(), End: sv()}
		a.Outcome, a.Error, a.Worker = str(), str(), str()
		s.History = append(s.History, a)
	}
	if version >= recordCodecV2 && !bad {
		s.RetryOf = uv()
	}
	if version >= recordCodecV3 && !bad {
		s.Batch = uv()
	}
	if bad || len(d) != 0 {
		return errRecordCodec
	}
	return nil
}
