package pebble

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/minio/minlz"

	"github.com/gearwork/gearwork/internal/store"
)

// Job records (store.RecordStore) are kept in blocks: the records of one
// function that one write ends (EndJobs) are one block of two keys,
//
//	blockHdrPrefix,  uint16 length of the function, function, first Seq (8 bytes)
//	blockDataPrefix, the same
//
// the header (each record's Seq, finish time and state: what the memory
// index, recordIndex, is rebuilt from) and the data (each record's Seq
// and data). A block's key is the smallest Seq in it; a block that loses
// some of its records is written again under its new smallest Seq. A
// write of a few dozen records thus costs Pebble two keys, not two per
// record.
const (
	blockHdrPrefix  = 'r'
	blockDataPrefix = 's'
	blockVersion    = 1
	// blockDataPacked marks data whose records (all that follows the
	// version byte in blockVersion data) are compressed (MinLZ, block
	// format). Records of one block repeat most of their bytes (function,
	// worker, outcome, times a few digits apart), so this usually halves
	// what a record costs in the log, the memtable and on disk. Data of
	// version blockVersion, written before, still reads.
	blockDataPacked = 2
)

// blockRec is one record of a block.
type blockRec struct {
	seq   uint64
	fin   int64
	state string
	data  []byte
}

func blockKey(prefix byte, fn string, first uint64) []byte {
	return appendBlockKey(make([]byte, 0, blockKeyLen(fn)), prefix, fn, first)
}

func blockKeyLen(fn string) int { return 11 + len(fn) }

func appendBlockKey(k []byte, prefix byte, fn string, first uint64) []byte {
	k = append(k, prefix)
	k = binary.BigEndian.AppendUint16(k, uint16(len(fn)))
	k = append(k, fn...)
	return binary.BigEndian.AppendUint64(k, first)
}

// parseBlockKey returns the function and first Seq of a block key.
func parseBlockKey(k []byte) (string, uint64, bool) {
	if len(k) < 11 || (k[0] != blockHdrPrefix && k[0] != blockDataPrefix) {
		return "", 0, false
	}
	n := int(binary.BigEndian.Uint16(k[1:3]))
	if len(k) != 3+n+8 {
		return "", 0, false
	}
	return string(k[3 : 3+n]), binary.BigEndian.Uint64(k[3+n:]), true
}

// blockMax is the most records in a block and blockBytes the most bytes
// of data (a single larger record is a block of its own), so that
// reading one record reads and unpacks a bounded block.
const (
	blockMax   = 512
	blockBytes = 64 << 10
)

// splitBlocks cuts recs, in any order (a write's records come in the
// order their jobs ended), into runs of at most blockMax records and
// blockBytes of data whose Seqs lie within maxBack of the smallest
// (recEntry's back). A block keeps its records in the order given. The
// blocks are appended to out.
func splitBlocks(out [][]blockRec, recs []blockRec) [][]blockRec {
	for len(recs) > 0 {
		lo, hi := recs[0].seq, recs[0].seq
		size := len(recs[0].data)
		n := 1
		for ; n < len(recs) && n < blockMax; n++ {
			q := recs[n].seq
			if max(hi, q)-min(lo, q) > maxBack || size+len(recs[n].data) > blockBytes {
				break
			}
			lo, hi = min(lo, q), max(hi, q)
			size += len(recs[n].data)
		}
		out = append(out, recs[:n])
		recs = recs[n:]
	}
	return out
}

// blockFirst returns the smallest Seq of a block's records: its key.
func blockFirst(blk []blockRec) uint64 {
	first := blk[0].seq
	for _, r := range blk[1:] {
		first = min(first, r.seq)
	}
	return first
}

// encodeBlock returns the header and data values of recs, a block of
// splitBlocks, in their order. The header is
//
//	version 1 byte, uvarint count of states, each state (uvarint length,
//	bytes), uvarint count of records, and per record: uvarint Seq less the
//	first (the smallest), varint finish time less the previous record's, state (1 byte,
//	its position among the states)
//
// and the data is the version byte, then per record uvarint Seq less the
// first, uvarint length, data; written packed (blockDataPacked: that
// version byte, then all that followed the version byte as one MinLZ
// block), or as it is if MinLZ cannot take it.
func encodeBlock(recs []blockRec) (hdr, data []byte) {
	var bb blockBufs
	return bb.encode(recs)
}

// blockBufs are the buffers a block is encoded into, reused from block to
// block (a batch copies the values it is given).
type blockBufs struct {
	hdr, data, packed, key []byte
	states                 []string
	pos                    []byte // each record's state's position in states
	// blocks are where putBlocks splits records (splitBlocks).
	blocks [][]blockRec
	// all, sorted and groups are where group puts a write's new records
	// (EndJobs), kept from one write to the next.
	all, sorted []blockRec
	groups      []fnRecs
	// groupOf finds a function's group in a write of records of many
	// functions (more than fewGroups).
	groupOf map[string]int
}

// fewGroups is how many functions group looks through one by one.
const fewGroups = 8

// fnRecs are the new records of one function.
type fnRecs struct {
	fn   string
	recs []blockRec
	n    int // while grouping: how many
}

// group returns recs by function, each function's in the order given,
// in bb's buffers (valid until the next group): most writes are of one
// function, and none allocates once the buffers have grown to the
// largest write.
func (bb *blockBufs) group(recs []store.Record) []fnRecs {
	if cap(bb.all) > 1<<16 {
		bb.all, bb.sorted = nil, nil // do not keep a rare large write's room
	}
	clear(bb.groups[:cap(bb.groups)])
	clear(bb.groupOf)
	groups := bb.groups[:0]
	all := bb.all[:0]
	g := -1 // the group of the record before
	for _, r := range recs {
		if g < 0 || groups[g].fn != r.Function {
			g = bb.find(groups, r.Function)
			if g < 0 {
				g = len(groups)
				groups = append(groups, fnRecs{fn: r.Function})
				if len(groups) > fewGroups {
					bb.groupOf[r.Function] = g
				}
			}
		}
		groups[g].n++
		all = append(all, blockRec{seq: r.Seq, fin: r.Finished, state: r.State, data: r.Data})
	}
	bb.all, bb.groups = all, groups
	if len(groups) <= 1 {
		if len(groups) == 1 {
			groups[0].recs = all
		}
		return groups
	}
	// Several functions: the records go to their function's run of
	// sorted, in their order.
	sorted := slices.Grow(bb.sorted[:0], len(all))[:len(all)]
	at := 0
	for i := range groups {
		groups[i].recs = sorted[at : at : at+groups[i].n]
		at += groups[i].n
	}
	g = -1
	for i, r := range all {
		if g < 0 || groups[g].fn != recs[i].Function {
			g = bb.find(groups, recs[i].Function)
		}
		groups[g].recs = append(groups[g].recs, r)
	}
	bb.sorted = sorted
	return groups
}

// letGo drops what the buffers refer to of the last write's records
// (group, putBlocks): nothing of them is kept once the write returns.
func (bb *blockBufs) letGo() {
	clear(bb.all)
	clear(bb.sorted)
	clear(bb.groups)
	clear(bb.blocks)
}

// find returns the position of fn's group in groups, or -1.
func (bb *blockBufs) find(groups []fnRecs, fn string) int {
	if len(groups) <= fewGroups {
		if g := slices.IndexFunc(groups, func(x fnRecs) bool { return x.fn == fn }); g >= 0 || len(groups) < fewGroups {
			return g
		}
		// At fewGroups: from now on groupOf knows them all.
		if bb.groupOf == nil {
			bb.groupOf = make(map[string]int)
		}
		for i, x := range groups {
			bb.groupOf[x.fn] = i
		}
		return -1
	}
	if g, ok := bb.groupOf[fn]; ok {
		return g
	}
	return -1
}

// encode is encodeBlock into bb's buffers: hdr and data are valid until
// the next encode.
func (bb *blockBufs) encode(recs []blockRec) (hdr, data []byte) {
	if cap(bb.data) > 1<<20 {
		bb.hdr, bb.data, bb.packed = nil, nil, nil // do not keep a rare large block's buffer
	}
	first := blockFirst(recs)
	// The states, in the order they first come; pos[i] is the position of
	// record i's (most records of a block are in the state of the one
	// before).
	states := bb.states[:0]
	pos := slices.Grow(bb.pos[:0], len(recs))[:len(recs)]
	at := -1
	for i, r := range recs {
		if at < 0 || r.state != states[at] {
			if at = slices.Index(states, r.state); at < 0 {
				at = len(states)
				states = append(states, r.state)
			}
		}
		pos[i] = byte(at)
	}
	bb.states, bb.pos = states, pos
	hdr = append(bb.hdr[:0], blockVersion)
	hdr = binary.AppendUvarint(hdr, uint64(len(states)))
	for _, s := range states {
		hdr = binary.AppendUvarint(hdr, uint64(len(s)))
		hdr = append(hdr, s...)
	}
	hdr = binary.AppendUvarint(hdr, uint64(len(recs)))
	data = append(bb.data[:0], blockVersion)
	prev := int64(0)
	for i, r := range recs {
		hdr = binary.AppendUvarint(hdr, r.seq-first)
		hdr = binary.AppendVarint(hdr, r.fin-prev)
		prev = r.fin
		hdr = append(hdr, pos[i])
		data = binary.AppendUvarint(data, r.seq-first)
		data = binary.AppendUvarint(data, uint64(len(r.data)))
		data = append(data, r.data...)
	}
	bb.hdr, bb.data = hdr, data
	return hdr, bb.pack(data)
}

// pack returns data (blockVersion data) as blockDataPacked data, or data
// itself if it cannot be packed (beyond MinLZ's largest block).
func (bb *blockBufs) pack(data []byte) []byte {
	packed, err := minlz.AppendEncoded(append(bb.packed[:0], blockDataPacked), data[1:], minlz.LevelFastest)
	if err != nil {
		return data
	}
	bb.packed = packed
	return packed
}

// blockDamaged returns the error for a damaged part (header or data) of
// the block that starts at first.
func blockDamaged(first uint64, part string) error {
	return fmt.Errorf("job record block %d: %s: %w", first, part, store.ErrCorrupt)
}

// decodeHeader calls each with every record of the header of the block
// that starts at first.
func decodeHeader(v []byte, first uint64, each func(seq uint64, fin int64, state string) error) error {
	bad := func() error { return blockDamaged(first, "header") } // made only when returned
	if len(v) == 0 || v[0] != blockVersion {
		return bad()
	}
	d := v[1:]
	uv := func() (uint64, bool) {
		x, n := binary.Uvarint(d)
		if n <= 0 {
			return 0, false
		}
		d = d[n:]
		return x, true
	}
	ns, ok := uv()
	if !ok || ns > 256 {
		return bad()
	}
	states := make([]string, ns)
	for i := range states {
		l, ok := uv()
		if !ok || l > uint64(len(d)) {
			return bad()
		}
		states[i], d = string(d[:l]), d[l:]
	}
	count, ok := uv()
	if !ok {
		return bad()
	}
	fin := int64(0)
	for range count {
		back, ok := uv()
		if !ok || back > math.MaxUint32 {
			return bad()
		}
		delta, n := binary.Varint(d)
		if n <= 0 || len(d) < n+1 || int(d[n]) >= len(states) {
			return bad()
		}
		fin += delta
		st := states[d[n]]
		d = d[n+1:]
		if err := each(first+back, fin, st); err != nil {
			return err
		}
	}
	if len(d) != 0 {
		return bad()
	}
	return nil
}

// decodeData calls each with every record's Seq and data (valid during
// the call) of the data of the block that starts at first, until each returns
// false.
func decodeData(v []byte, first uint64, each func(seq uint64, data []byte) bool) error {
	bad := func() error { return blockDamaged(first, "data") }
	if len(v) == 0 || (v[0] != blockVersion && v[0] != blockDataPacked) {
		return bad()
	}
	d := v[1:]
	if v[0] == blockDataPacked {
		// Only MinLZ blocks are written, and none larger than MinLZ's
		// own limit: anything else is damage, not a size to allocate.
		ok, size, err := minlz.IsMinLZ(d)
		if err == nil && (!ok || size > minlz.MaxBlockSize) {
			err = errors.New("not a MinLZ block of a possible size")
		}
		if err == nil {
			d, err = minlz.Decode(nil, d)
		}
		if err != nil {
			return fmt.Errorf("%w: %w", bad(), err)
		}
	}
	for len(d) > 0 {
		back, n := binary.Uvarint(d)
		if n <= 0 {
			return bad()
		}
		d = d[n:]
		l, n := binary.Uvarint(d)
		if n <= 0 || l > uint64(len(d)-n) {
			return bad()
		}
		data := d[n : n+int(l)]
		d = d[n+int(l):]
		if !each(first+back, data) {
			return nil
		}
	}
	return nil
}
