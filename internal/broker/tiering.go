package broker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"

	"github.com/gearwork/gearwork/internal/store"
)

// tiering is the broker's payload tiering state. The rule: when reader is
// set, a stored background job whose payload is nil has its payload on disk
// only; payloads kept in memory are never nil (an empty one is
// emptyPayload).
type tiering struct {
	reader store.PayloadReader // nil: tiering off
	// budget is the most payload bytes kept in memory; negative keeps none.
	budget int64
	// inMemory counts the payload bytes of stored background jobs kept in
	// memory. Written under Broker.mu; read without it by
	// PayloadBytesInMemory.
	inMemory atomic.Int64
	// onDisk counts stored background jobs whose payload is on disk only.
	// Guarded by Broker.mu.
	onDisk int
	// lending is set while replay loads through store.LendingLoader: the
	// payloads of the jobs it admits are the store's, copied only when kept
	// in memory. Guarded by Broker.mu.
	lending bool
	// freeze says that queued jobs whose payload is on disk are kept as
	// frozen cold entries of their queue (jobQueue): with a local store.
	freeze bool
}

// off turns tiering off, field by field: inMemory may be read meanwhile
// (PayloadBytesInMemory). Caller holds Broker.mu.
func (t *tiering) off() {
	t.reader, t.budget, t.onDisk, t.lending, t.freeze = nil, 0, 0, false, false
	t.inMemory.Store(0)
}

var emptyPayload = []byte{}

// initTiering turns tiering on when the store can read payloads back and a
// budget is set.
func (b *Broker) initTiering() {
	if pr, ok := b.store.(store.PayloadReader); ok && b.cfg.MemoryBudget != 0 {
		b.tier = tiering{reader: pr, budget: b.cfg.MemoryBudget, freeze: b.cfg.Shared == nil}
	}
}

// tierAdmitLocked decides, for a background job that has just been stored
// (or replayed), whether its payload stays in memory: while the budget
// allows, unless the job is queued behind frozen jobs whose payload is on
// disk (jobQueue.diskAhead), which run before it. aliased says the
// job's unique may share memory with the submitted packet, which must be
// released together with the payload. While replay lends payloads
// (tiering.lending), every replayed job comes here. A payload kept in
// memory is copied when it is lent, or when it is part of the packet body
// (aliased): that body holds the function name and unique as well and is
// rounded up to an allocator size class (1152 bytes for a 1 KiB payload),
// or grown in doubling steps for a large one, so a copy of its own takes
// less memory for as long as the job is queued.
func (b *Broker) tierAdmitLocked(j *job, aliased bool) {
	t := &b.tier
	if t.reader == nil || !j.background || j.has(jobTiered) {
		return
	}
	j.flags |= jobTiered
	if t.budget > 0 && t.inMemory.Load()+int64(len(j.payload)) <= t.budget && !j.fn.queues[j.priority].diskAhead(j) {
		switch {
		case j.payload == nil:
			j.payload = emptyPayload
		case t.lending:
			j.payload = bytes.Clone(j.payload)
		case aliased:
			j.payload = bytes.Clone(j.payload)
			b.ownUniqueLocked(j)
		}
		t.inMemory.Add(int64(len(j.payload)))
		return
	}
	if b.jobs.holds(j) {
		b.liveBytes -= int64(len(j.payload)) // Config.MaxQueuedBytes counts memory
	}
	j.payload = nil
	t.onDisk++
	if aliased {
		b.ownUniqueLocked(j)
	}
}

// tierLoadLocked is how replay reads the store: lending payloads
// (store.LendingLoader) when tiering is on and the store can, so that only
// the payloads kept in memory are copied; otherwise store.Store.Load.
func (b *Broker) tierLoadLocked(ctx context.Context, each func(store.Job) error) error {
	ll, ok := b.store.(store.LendingLoader)
	if !ok || b.tier.reader == nil {
		return b.store.Load(ctx, each)
	}
	b.tier.lending = true
	defer func() { b.tier.lending = false }()
	return ll.LoadLending(ctx, each)
}

// tierForgetLocked releases a job's share of the budget when it leaves the
// broker or the store. It is idempotent.
func (b *Broker) tierForgetLocked(j *job) {
	t := &b.tier
	if !j.has(jobTiered) {
		return
	}
	j.flags &^= jobTiered
	if j.payload == nil {
		t.onDisk--
		return
	}
	t.inMemory.Add(-int64(len(j.payload)))
}

// tierDeadLocked lets a job that has just become a dead letter keep its
// payload on disk only, when tiering is on and the payload is stored: dead
// letters are read rarely (listed, shown, retried: tierFillDeadLetters,
// tierReviveLocked), and a function keeps thousands of them, whose
// payloads no budget counts (Config.MaxQueuedBytes counts live jobs,
// Config.MemoryBudget queued ones). A dead letter whose first write is
// still under way keeps its payload until the write settles
// (tierAdmitLocked counts it then), as does one without tiering.
func (b *Broker) tierDeadLocked(j *job) {
	b.tierForgetLocked(j)
	if b.tier.reader == nil || j.payload == nil || j.saveState() != saveNone {
		return
	}
	j.extra().payloadLen = uint32(min(len(j.payload), 1<<32-1))
	j.payload = nil
}

// tierReviveLocked makes a dead letter that is queued again, whose
// payload is on disk only (tierDeadLocked, or tierForgetLocked as it
// died), a tiered job again, so that Grab reads its payload back instead
// of handing out an empty one.
func (b *Broker) tierReviveLocked(j *job) {
	if b.tier.reader == nil || j.payload != nil || j.has(jobTiered) {
		return
	}
	j.flags |= jobTiered
	b.tier.onDisk++
}

// grabTiered completes a Grab whose job's payload is on disk: it reads the
// payload without holding the lock, and notes its length for the job's
// record (payloadSize). A job whose payload cannot be read is
// failed (its clients get WORK_FAIL) and left in the store, where a restart
// finds it again; the worker gets the next job instead.
func (b *Broker) grabTiered(s *Session, a Assignment) (Assignment, bool) {
	for {
		p, err := b.tier.reader.ReadPayload(context.Background(), a.Seq)
		b.mu.Lock()
		if err == nil {
			if j := b.heldBy(s, a.Seq); j != nil {
				j.x.payloadLen = uint32(min(len(p), 1<<32-1)) // for its record
			}
			b.mu.Unlock()
			a.Payload = p
			return a, true
		}
		if j := b.heldBy(s, a.Seq); j != nil {
			b.log.Error("broker: cannot read a job's payload back from the store; failing the job, which stays stored",
				slog.String("handle", b.Handle(a.Seq)), slog.String("function", a.Function), slog.String("error", err.Error()))
			j.failClients()
			b.recordEndLocked(j, jobEnd{state: FinalFailed, errText: "payload unreadable from the store"})
			b.tierForgetLocked(j)
			j.background = false // keep its record in the store
			b.removeLocked(j)
		}
		b.mu.Unlock()
		var onDisk bool
		var ok bool
		a, onDisk, ok = b.grab(s)
		if !ok || !onDisk {
			return a, ok
		}
	}
}

// tierFillRetries gives records of jobs whose payload is on disk (retry
// and lifecycle records, rewritten after the job was first stored) their
// payload back before the committer rewrites them. A record with a nil
// payload that is not stored yet is a new job with an empty payload and is
// written as it is. It runs without the lock.
func (b *Broker) tierFillRetries(ctx context.Context, records []store.Job) ([]store.Job, error) {
	if b.tier.reader == nil {
		return records, nil
	}
	for i := range records {
		r := &records[i]
		if r.Payload != nil {
			continue
		}
		p, err := b.tier.reader.ReadPayload(ctx, r.Seq)
		switch {
		case errors.Is(err, store.ErrNotFound):
			continue
		case err != nil:
			return records, fmt.Errorf("reading the payload of job %d back: %w", r.Seq, err)
		}
		r.Payload = p
	}
	return records, nil
}

// TieringStats reports payload tiering: the payload bytes of stored jobs
// kept in memory and the number of stored jobs whose payload is on disk
// only. Both are zero when tiering is off.
func (b *Broker) TieringStats() (inMemory int64, onDisk int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.tier.inMemory.Load(), b.tier.onDisk
}

// PayloadBytesInMemory returns the payload bytes of stored jobs kept in
// memory (the first figure of TieringStats) without taking the broker's
// lock, so that it answers during replay too. Safe for concurrent use.
func (b *Broker) PayloadBytesInMemory() int64 {
	return b.tier.inMemory.Load()
}

// payloadOnDisk reports whether j's payload is on disk only, or was
// until the job left the store (payloadLen outlives tierForgetLocked).
func (j *job) payloadOnDisk() bool {
	return j.payload == nil && (j.has(jobTiered) || j.x != nil && j.x.payloadLen != 0)
}

// payloadSize returns the length of j's payload; for one on disk only, the
// length read when the job was last handed out (grabTiered), or 0 when it
// was not (a job has no room to keep it while queued: the committer reads
// it back for the record, tierFillRecord).
func (j *job) payloadSize() int {
	if j.payload == nil && j.x != nil {
		return int(j.x.payloadLen)
	}
	return len(j.payload)
}

// tierFillDeadLetters reads back the payloads of listed dead letters that
// are on disk, without the lock. A payload that cannot be read stays nil.
func (b *Broker) tierFillDeadLetters(list []DeadLetter) []DeadLetter {
	if b.tier.reader == nil {
		return list
	}
	for i := range list {
		if list[i].Payload == nil {
			if p, err := b.tier.reader.ReadPayload(context.Background(), list[i].Seq); err == nil {
				list[i].Payload = p
			}
		}
	}
	return list
}

// recordReadsPayload reports whether the record of a job in state whose
// payload (of size bytes, 0: not known) was on disk only reads the payload
// back (tierFillRecord).
func recordReadsPayload(state string, size int) bool {
	return retryable(state) || size == 0
}

// tierFillRecord reads back the payload of a job that was on disk only
// when it ended, for its record s: the record of a failed, exception or
// dead job gets the preview, and the whole payload when a record keeps it
// (RetryPayloadCap), so that RetryJob can run the job again; a record
// whose payload size is not known (a job cancelled before it ran) gets its
// size and preview. The committer calls it (encodeRecords) before the
// write that removes the job from the store; a payload no longer stored is
// left out. The record of a job that completed knows its size and is left
// as it is, so that the common end of a job costs no read. It runs
// without the lock.
func (b *Broker) tierFillRecord(ctx context.Context, s *JobSnapshot) {
	if b.tier.reader == nil || !s.payloadOnDisk || !recordReadsPayload(s.State, s.PayloadSize) {
		return
	}
	p, err := b.tier.reader.ReadPayload(ctx, s.Seq)
	if err != nil {
		return
	}
	s.PayloadSize = len(p)
	s.PayloadPreview = capped(p, PayloadPreviewCap)
	if retryable(s.State) && len(p) <= RetryPayloadCap {
		s.Payload = p
	}
}
