package pebble

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"slices"
	"strings"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/gearwork/gearwork/internal/store"
)

// The blocks of job records live outside Pebble, in segment files in the
// directory segDirName of the store's directory: files named by a number
// (segName), each the segment magic followed by frames,
//
//	kind 1 byte (frameBlock or frameTomb), uint32 length of the payload,
//	uint32 CRC-32C of the payload, payload
//
// appended one write after another and never changed. A block frame's
// payload is uvarint length of the function, function, the block's first
// Seq (8 bytes), length of the header (4 bytes), the header and the data of
// encodeBlock; a tombstone frame's payload is uvarint count, then each
// Seq (uvarint) whose record is forgotten: a record read before the
// tombstone (in an earlier segment, or earlier in the same one) is gone.
// A later record of the same Seq replaces an earlier one. An expiry
// frame's payload is uvarint length of the function, function, varint
// finish time and uvarint Seq: the records of the function read before it
// that ended at or before that place (the listing order) expired.
//
// The bytes of a record are thus written once, sequentially, and never go
// through Pebble's log, memtables and compactions. Expiry only forgets
// index entries; a segment is removed once none of its records is kept
// and every older segment is gone (so that a tombstone never outlives
// the segment whose records it forgets), and the oldest segment is copied
// forward and removed once most of its records are gone (compactSegment).
const (
	segDirName = "records"
	segMagic   = "gwrec\x00\x00\x01"
	segSuffix  = ".seg"
)

// The kinds of frames (their first byte).
const (
	frameBlock byte = iota + 1
	frameTomb
	frameExpire
)

// frameHdrLen is the size of a frame's kind, length and checksum.
const frameHdrLen = 9

// segMax is the size past which the next append starts a new segment.
const segMax = 16 << 20

// frameMax bounds a frame's payload when reading.
const frameMax = 1 << 30

var crcTable = crc32.MakeTable(crc32.Castagnoli)

func segName(num uint32) string { return fmt.Sprintf("%08d%s", num, segSuffix) }

// parseSegName returns the number of a segment file's name.
func parseSegName(name string) (uint32, bool) {
	base, ok := strings.CutSuffix(name, segSuffix)
	if !ok || len(base) != 8 {
		return 0, false
	}
	n := uint32(0)
	for _, c := range []byte(base) {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = 10*n + uint32(c-'0')
	}
	return n, n > 0
}

// segments is the set of segment files. Every method is called with the
// record index's lock (recordIndex.mu) held.
type segments struct {
	fs  vfs.FS
	dir string
	// nums are the segments on disk, oldest first; the last may be
	// active.
	nums []uint32
	// active is the segment appended to (0: none yet), w its file and
	// size its length.
	active uint32
	w      vfs.File
	size   int64
	// readers are the files read, by segment.
	readers map[uint32]vfs.File
	// live counts the kept records of each segment; total counts every
	// record a segment holds.
	live, total map[uint32]int
	// dirty is set by an append not yet synced.
	dirty bool
	// buf holds the frames of one append.
	buf []byte
}

func newSegments(fs vfs.FS, storeDir string) *segments {
	return &segments{fs: fs, dir: fs.PathJoin(storeDir, segDirName), readers: make(map[uint32]vfs.File),
		live: make(map[uint32]int), total: make(map[uint32]int)}
}

// list finds the segments on disk, creating the directory if needed.
func (g *segments) list() error {
	if _, err := g.fs.Stat(g.dir); err != nil {
		if err := g.fs.MkdirAll(g.dir, 0o755); err != nil {
			return err
		}
		// The directory's name is durable before any segment in it.
		d, err := g.fs.OpenDir(g.fs.PathDir(g.dir))
		if err != nil {
			return err
		}
		if err := errors.Join(d.Sync(), d.Close()); err != nil {
			return err
		}
	}
	names, err := g.fs.List(g.dir)
	if err != nil {
		return err
	}
	g.nums = g.nums[:0]
	for _, name := range names {
		if n, ok := parseSegName(name); ok {
			g.nums = append(g.nums, n)
		}
	}
	slices.Sort(g.nums)
	return nil
}

// appendBlockFrame adds the frame of a block of fn to g.buf and returns
// its offset from the start of the buffer.
func (g *segments) appendBlockFrame(fn string, blk []blockRec) int {
	at := len(g.buf)
	g.buf = append(g.buf, frameBlock, 0, 0, 0, 0, 0, 0, 0, 0)
	g.buf = binary.AppendUvarint(g.buf, uint64(len(fn)))
	g.buf = append(g.buf, fn...)
	g.buf = binary.BigEndian.AppendUint64(g.buf, blockFirst(blk))
	hl := len(g.buf)
	g.buf = append(g.buf, 0, 0, 0, 0)
	g.buf = appendHeader(g.buf, blk)
	binary.BigEndian.PutUint32(g.buf[hl:], uint32(len(g.buf)-hl-4))
	g.buf = appendData(g.buf, blk)
	g.sealFrame(at)
	return at
}

// appendTombFrame adds a tombstone of seqs to g.buf.
func (g *segments) appendTombFrame(seqs []uint64) {
	at := len(g.buf)
	g.buf = append(g.buf, frameTomb, 0, 0, 0, 0, 0, 0, 0, 0)
	g.buf = binary.AppendUvarint(g.buf, uint64(len(seqs)))
	for _, q := range seqs {
		g.buf = binary.AppendUvarint(g.buf, q)
	}
	g.sealFrame(at)
}

// appendExpireFrame adds an expiry of fn's records up to e to g.buf.
func (g *segments) appendExpireFrame(fn string, e recEntry) {
	at := len(g.buf)
	g.buf = append(g.buf, frameExpire, 0, 0, 0, 0, 0, 0, 0, 0)
	g.buf = binary.AppendUvarint(g.buf, uint64(len(fn)))
	g.buf = append(g.buf, fn...)
	g.buf = binary.AppendVarint(g.buf, e.fin())
	g.buf = binary.AppendUvarint(g.buf, e.seq())
	g.sealFrame(at)
}

// decodeExpireFrame returns the function and place of an expiry frame.
func decodeExpireFrame(p []byte) (string, recEntry, error) {
	bad := fmt.Errorf("job record expiry frame: %w", store.ErrCorrupt)
	l, n := binary.Uvarint(p)
	if n <= 0 || l > uint64(len(p)-n) {
		return "", recEntry{}, bad
	}
	fn, p := string(p[n:n+int(l)]), p[n+int(l):]
	fin, n := binary.Varint(p)
	if n <= 0 {
		return "", recEntry{}, bad
	}
	seq, m := binary.Uvarint(p[n:])
	if m <= 0 || n+m != len(p) {
		return "", recEntry{}, bad
	}
	return fn, mkEntry(seq, fin, 0, 0), nil
}

// sealFrame fills in the length and checksum of the frame at at, the last
// in g.buf.
func (g *segments) sealFrame(at int) {
	payload := g.buf[at+frameHdrLen:]
	binary.BigEndian.PutUint32(g.buf[at+1:], uint32(len(payload)))
	binary.BigEndian.PutUint32(g.buf[at+5:], crc32.Checksum(payload, crcTable))
}

// prepare makes room for an append of n bytes: it starts a new segment
// when there is none or the active one is full, and returns the offset at
// which the append will start and the segment.
func (g *segments) prepare(n int) (uint32, int64, error) {
	if g.w != nil && g.size+int64(n) <= segMax {
		return g.active, g.size, nil
	}
	if g.w != nil {
		// The full segment is synced before the next begins.
		if err := g.sync(); err != nil {
			return 0, 0, err
		}
		if err := g.w.Close(); err != nil {
			return 0, 0, err
		}
		g.w = nil
	}
	num := uint32(1)
	if len(g.nums) > 0 {
		num = g.nums[len(g.nums)-1] + 1
	}
	f, err := g.fs.Create(g.fs.PathJoin(g.dir, segName(num)), vfs.WriteCategoryUnspecified)
	if err != nil {
		return 0, 0, err
	}
	if _, err := f.Write([]byte(segMagic)); err != nil {
		_ = f.Close()
		return 0, 0, err
	}
	// The new file is synced with the first append; its name now.
	if err := g.syncDir(); err != nil {
		_ = f.Close()
		return 0, 0, err
	}
	g.nums = append(g.nums, num)
	g.active, g.w, g.size = num, f, int64(len(segMagic))
	return num, g.size, nil
}

// write appends g.buf (frames, to start at offset at of the active
// segment, as prepare returned) and empties it; with sync, it is on disk
// when write returns.
func (g *segments) write(sync bool) error {
	if len(g.buf) == 0 {
		return nil
	}
	n, err := g.w.Write(g.buf)
	g.size += int64(n)
	g.buf = g.buf[:0]
	if err != nil {
		return err
	}
	g.dirty = true
	if sync {
		return g.sync()
	}
	return nil
}

// sync makes every append durable.
func (g *segments) sync() error {
	if !g.dirty || g.w == nil {
		return nil
	}
	if err := g.w.SyncData(); err != nil {
		return err
	}
	g.dirty = false
	return nil
}

func (g *segments) syncDir() error {
	d, err := g.fs.OpenDir(g.dir)
	if err != nil {
		return err
	}
	return errors.Join(d.Sync(), d.Close())
}

// reader returns the open file of segment num.
func (g *segments) reader(num uint32) (vfs.File, error) {
	if f := g.readers[num]; f != nil {
		return f, nil
	}
	if len(g.readers) >= maxReaders {
		// Descriptors are a budget: keep a few segments open.
		for n, f := range g.readers {
			_ = f.Close()
			delete(g.readers, n)
			break
		}
	}
	f, err := g.fs.Open(g.fs.PathJoin(g.dir, segName(num)))
	if err != nil {
		return nil, err
	}
	g.readers[num] = f
	return f, nil
}

// maxReaders bounds the segment files kept open for reading.
const maxReaders = 4

// readFrame returns the payload of the frame at off of segment num.
func (g *segments) readFrame(num uint32, off uint32) (byte, []byte, error) {
	f, err := g.reader(num)
	if err != nil {
		return 0, nil, err
	}
	var hdr [frameHdrLen]byte
	if _, err := f.ReadAt(hdr[:], int64(off)); err != nil {
		return 0, nil, fmt.Errorf("segment %d at %d: %w", num, off, err)
	}
	n := binary.BigEndian.Uint32(hdr[1:])
	if n > frameMax {
		return 0, nil, fmt.Errorf("segment %d at %d: frame of %d bytes: %w", num, off, n, store.ErrCorrupt)
	}
	payload := make([]byte, n)
	if _, err := f.ReadAt(payload, int64(off)+frameHdrLen); err != nil {
		return 0, nil, fmt.Errorf("segment %d at %d: %w", num, off, err)
	}
	if crc32.Checksum(payload, crcTable) != binary.BigEndian.Uint32(hdr[5:]) {
		return 0, nil, fmt.Errorf("segment %d at %d: checksum mismatch: %w", num, off, store.ErrCorrupt)
	}
	return hdr[0], payload, nil
}

// blockFrame is the decoded payload of a block frame.
type blockFrame struct {
	fn        string
	first     uint64
	hdr, data []byte
}

func decodeBlockFrame(p []byte) (blockFrame, error) {
	bad := fmt.Errorf("job record block frame: %w", store.ErrCorrupt)
	l, n := binary.Uvarint(p)
	if n <= 0 || l > uint64(len(p)-n) {
		return blockFrame{}, bad
	}
	var b blockFrame
	b.fn, p = string(p[n:n+int(l)]), p[n+int(l):]
	if len(p) < 8 {
		return blockFrame{}, bad
	}
	b.first, p = binary.BigEndian.Uint64(p), p[8:]
	if len(p) < 4 || uint64(binary.BigEndian.Uint32(p)) > uint64(len(p)-4) {
		return blockFrame{}, bad
	}
	l = uint64(binary.BigEndian.Uint32(p))
	b.hdr, b.data = p[4:4+l], p[4+l:]
	return b, nil
}

func decodeTombFrame(p []byte, each func(seq uint64)) error {
	count, n := binary.Uvarint(p)
	if n <= 0 || count > uint64(len(p)) {
		return fmt.Errorf("job record tombstone frame: %w", store.ErrCorrupt)
	}
	p = p[n:]
	for range count {
		q, n := binary.Uvarint(p)
		if n <= 0 {
			return fmt.Errorf("job record tombstone frame: %w", store.ErrCorrupt)
		}
		p = p[n:]
		each(q)
	}
	return nil
}

// scan calls each with every frame of segment num, in order. A frame that
// is cut short or fails its checksum ends the segment: it is the tail of
// an append that a crash interrupted (or damage, which scan reports
// through torn).
func (g *segments) scan(num uint32, buf []byte, each func(kind byte, off uint32, payload []byte) error) (rest []byte, torn bool, err error) {
	f, err := g.fs.Open(g.fs.PathJoin(g.dir, segName(num)))
	if err != nil {
		return buf, false, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return buf, false, err
	}
	size := st.Size()
	if size > 1<<32 {
		return buf, false, fmt.Errorf("segment %d: %d bytes: %w", num, size, store.ErrCorrupt)
	}
	buf = slices.Grow(buf[:0], int(size))[:size]
	if n, err := f.ReadAt(buf, 0); n != len(buf) {
		return buf, false, fmt.Errorf("segment %d: read %d of %d bytes: %w", num, n, len(buf), err)
	}
	if len(buf) < len(segMagic) || string(buf[:len(segMagic)]) != segMagic {
		return buf, true, nil
	}
	off := len(segMagic)
	for off < len(buf) {
		if len(buf)-off < frameHdrLen {
			return buf, true, nil
		}
		kind := buf[off]
		n := int(binary.BigEndian.Uint32(buf[off+1:]))
		if (kind != frameBlock && kind != frameTomb && kind != frameExpire) || n > len(buf)-off-frameHdrLen {
			return buf, true, nil
		}
		payload := buf[off+frameHdrLen : off+frameHdrLen+n]
		if crc32.Checksum(payload, crcTable) != binary.BigEndian.Uint32(buf[off+5:]) {
			return buf, true, nil
		}
		if err := each(kind, uint32(off), payload); err != nil {
			return buf, false, err
		}
		off += frameHdrLen + n
	}
	return buf, false, nil
}

// dropDead removes the oldest segments while none of their records is
// kept (and they are not active).
func (g *segments) dropDead() error {
	removed := false
	for len(g.nums) > 0 && g.nums[0] != g.active && g.live[g.nums[0]] <= 0 {
		if err := g.remove(g.nums[0]); err != nil {
			return err
		}
		removed = true
	}
	if removed {
		// A removal lost in a crash would bring back records whose
		// tombstones were in a later segment that was removed too.
		return g.syncDir()
	}
	return nil
}

// remove removes the oldest segment, num.
func (g *segments) remove(num uint32) error {
	if f := g.readers[num]; f != nil {
		_ = f.Close()
		delete(g.readers, num)
	}
	if err := g.fs.Remove(g.fs.PathJoin(g.dir, segName(num))); err != nil {
		return err
	}
	g.nums = g.nums[1:]
	delete(g.live, num)
	delete(g.total, num)
	return nil
}

// close syncs and closes every file.
func (g *segments) close() error {
	var err error
	if g.w != nil {
		err = errors.Join(g.sync(), g.w.Close())
		g.w = nil
	}
	for num, f := range g.readers {
		err = errors.Join(err, f.Close())
		delete(g.readers, num)
	}
	return err
}
