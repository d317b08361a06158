package broker

import (
	"math"
	"slices"
	"sort"
)

// The admin listings ("show jobs", "show unique jobs", "workers") may
// cover every live job or session: they gather in chunks, each under one
// short hold of the lock, and hand each chunk to the caller without it, so
// that a listing of half a million jobs (which anyone may ask for, again
// and again) does not stall every other client and worker for the
// hundreds of milliseconds a whole walk takes. A listing is then no
// snapshot: a job added or removed meanwhile may or may not appear, but
// none appears twice, and nothing is read without the lock.

// listChunk bounds the jobs or abilities one hold of the lock gathers for
// a listing (for jobs, from the pages of the index and from the frozen
// entries of each queue with some).
const listChunk = 1024

// EachJob calls each with the live jobs in handle (sequence) order, in
// chunks of at most about listChunk, without holding the lock, until each
// returns false. The slice is reused after each returns.
func (b *Broker) EachJob(each func([]JobInfo) bool) {
	b.mu.Lock()
	keys := b.jobs.pageKeys()
	// The jobs live now have numbers below nextSeq: pages made later
	// beyond them hold only jobs added meanwhile, which need not appear
	// (and a listing that followed them might never end).
	endKey := (b.nextSeq - 1) >> jobPageShift
	b.jobs.listings++
	from := len(b.jobs.added)
	b.mu.Unlock()
	defer func() {
		b.mu.Lock()
		if b.jobs.listings--; b.jobs.listings == 0 {
			b.jobs.added = nil
		}
		b.mu.Unlock()
	}()
	slices.Sort(keys)
	const chunkPages = listChunk >> jobPageShift
	buf := make([]JobInfo, 0, listChunk)
	var added []uint64
	for lo, last := uint64(0), false; !last; {
		// Skip the pages wholly before lo; the chunk ends after
		// chunkPages more of them, or with the frozen entries' limit.
		for len(keys) > 0 && keys[0] < lo>>jobPageShift {
			keys = keys[1:]
		}
		hi := uint64(math.MaxUint64)
		if len(keys) > chunkPages {
			hi = (keys[chunkPages-1] + 1) << jobPageShift
		}
		buf = buf[:0]
		b.mu.Lock()
		hi = b.jobs.frozenRange(lo, hi, listChunk, func(j *job) { buf = append(buf, b.jobInfoLocked(j)) })
		for _, k := range keys {
			if k<<jobPageShift >= hi {
				break
			}
			b.jobs.pageRange(k, lo, hi, func(j *job) { buf = append(buf, b.jobInfoLocked(j)) })
		}
		// The pages thaws made since the keys were taken: those of this chunk are walked
		// now, the others join the keys of later chunks.
		added = append(added[:0], b.jobs.added[from:]...)
		from = len(b.jobs.added)
		for _, k := range added {
			if k <= endKey && k<<jobPageShift < hi && (k+1)<<jobPageShift > lo {
				b.jobs.pageRange(k, lo, hi, func(j *job) { buf = append(buf, b.jobInfoLocked(j)) })
			}
		}
		b.mu.Unlock()
		// The frozen entries of queues walked before frozenRange lowered hi
		// belong to later chunks.
		buf = slices.DeleteFunc(buf, func(ji JobInfo) bool { return ji.Seq >= hi })
		slices.SortFunc(buf, func(x, y JobInfo) int { return cmpSeq(x.Seq, y.Seq) })
		// A page both among the keys and made again is walked twice.
		buf = slices.CompactFunc(buf, func(x, y JobInfo) bool { return x.Seq == y.Seq })
		last = hi == math.MaxUint64
		lo = hi
		added = slices.DeleteFunc(added, func(k uint64) bool { return k > endKey || k < lo>>jobPageShift })
		if len(added) > 0 {
			keys = append(keys, added...)
			slices.Sort(keys)
			keys = slices.Compact(keys)
		}
		if len(buf) > 0 && !each(buf) {
			return
		}
	}
}

func cmpSeq(x, y uint64) int {
	switch {
	case x < y:
		return -1
	case x > y:
		return 1
	}
	return 0
}

func (b *Broker) jobInfoLocked(j *job) JobInfo {
	return JobInfo{Seq: j.seq, Function: j.fn.name, Unique: j.displayUnique(),
		Retries: j.retries, Ignored: j.has(jobCancelled), Queued: j.background && b.store != nil,
		State: j.state.String(), Priority: j.priority}
}

// Jobs lists live jobs in handle order, at most limit of them (0: all),
// gathered as EachJob does.
func (b *Broker) Jobs(limit int) []JobInfo {
	var out []JobInfo
	b.EachJob(func(chunk []JobInfo) bool {
		out = append(out, chunk...)
		return limit == 0 || len(out) < limit
	})
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	return out
}

// EachUnique calls each with the uniques of live jobs (those the jobs of
// their function attach to, as the unique index holds them), in the
// handle order of their jobs, in chunks as EachJob, until each returns
// false.
func (b *Broker) EachUnique(each func([]string) bool) {
	var out []string
	b.EachJob(func(chunk []JobInfo) bool {
		out = out[:0]
		for _, ji := range chunk {
			if ji.Unique != "" {
				out = append(out, ji.Unique)
			}
		}
		return len(out) == 0 || each(out)
	})
}

// Uniques lists the uniques of live jobs ("show unique jobs"), sorted.
func (b *Broker) Uniques() []string {
	var out []string
	b.EachUnique(func(chunk []string) bool {
		out = append(out, chunk...)
		return true
	})
	sort.Strings(out)
	return out
}

// EachWorker calls each with the sessions (clients too, as gearmand lists
// them) by id, in chunks of about listChunk functions, without holding the
// lock, until each returns false. A session closed meanwhile may or may not
// appear.
func (b *Broker) EachWorker(each func([]WorkerInfo) bool) {
	b.mu.Lock()
	ids := make([]uint64, 0, len(b.sessions))
	for id := range b.sessions {
		ids = append(ids, id)
	}
	b.mu.Unlock()
	slices.Sort(ids)
	var buf []WorkerInfo
	for len(ids) > 0 {
		buf = buf[:0]
		n := 0
		b.mu.Lock()
		for len(ids) > 0 && n < listChunk {
			s := b.sessions[ids[0]]
			ids = ids[1:]
			if s == nil {
				continue
			}
			wi := WorkerInfo{ID: s.id, Addr: s.addr, ClientID: s.clientID}
			for _, a := range s.abilities {
				wi.Functions = append(wi.Functions, a.fn.name)
			}
			n += 1 + len(s.abilities)
			buf = append(buf, wi)
		}
		b.mu.Unlock()
		if len(buf) > 0 && !each(buf) {
			return
		}
	}
}

// Workers lists every session (clients too, as gearmand does), by id.
func (b *Broker) Workers() []WorkerInfo {
	var out []WorkerInfo
	b.EachWorker(func(chunk []WorkerInfo) bool {
		out = append(out, chunk...)
		return true
	})
	return out
}
