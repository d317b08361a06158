package pebble

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"strings"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/gearwork/gearwork/internal/store"
)

// Pebble reads its MANIFEST (the list of live files) up to the first chunk
// that fails its checksum and treats the rest as the torn tail of an
// interrupted append. That is right for a crash, but when the damage is in
// the middle of the file it silently opens an older state of the database
// whose newer files it then deletes: acknowledged jobs would vanish without
// a word. checkManifests refuses a MANIFEST in which a valid chunk follows
// an invalid one, which a torn append never produces.
//
// The MANIFEST uses the LevelDB log format: 32 KiB blocks of chunks, each
// with a 7-byte header (masked CRC-32C of type and data, little-endian
// uint16 length, type 1-4) that never spans a block.
const (
	manifestBlockSize  = 32 << 10
	manifestHeaderSize = 7
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// checkManifests checks every MANIFEST file in dir. A missing directory is
// not an error (Open creates it).
func checkManifests(fs vfs.FS, dir string) error {
	names, err := fs.List(dir)
	if err != nil {
		return nil //nolint:nilerr // Open reports an unusable directory itself
	}
	if err := checkManifestPresent(names); err != nil {
		return err
	}
	for _, name := range names {
		if !strings.HasPrefix(name, "MANIFEST-") {
			continue
		}
		path := fs.PathJoin(dir, name)
		b, err := readFile(fs, path)
		if err != nil {
			return fmt.Errorf("reading %s: %w", name, err)
		}
		if off, ok := manifestDamage(b); ok {
			return fmt.Errorf("%s is damaged at byte %d (intact records follow the damage, so it is not an interrupted write): %w",
				name, off, store.ErrCorrupt)
		}
	}
	return nil
}

// manifestMarker starts the name of the empty file whose name ends with
// that of the current MANIFEST ("marker.manifest.000001.MANIFEST-000001").
const manifestMarker = "marker.manifest."

// checkManifestPresent refuses a directory that holds Pebble's data files
// but not the MANIFEST that lists them. Without it Pebble either fails
// with a bare "no such file" or, when the marker naming it is gone too,
// takes the directory for a new database and replays whatever logs it
// finds, which loses every job in an sstable.
func checkManifestPresent(names []string) error {
	have := map[string]bool{}
	current := ""
	data := 0
	for _, name := range names {
		have[name] = true
		switch {
		case strings.HasPrefix(name, manifestMarker):
			rest := strings.TrimPrefix(name, manifestMarker)
			if _, m, ok := strings.Cut(rest, "."); ok {
				current = m
			}
		case strings.HasSuffix(name, ".sst"), strings.HasSuffix(name, ".log"):
			data++
		}
	}
	const what = "Pebble's list of the database's files; without it the jobs in this directory cannot be read"
	switch {
	case current != "" && !have[current]:
		return fmt.Errorf("the MANIFEST file %s is missing (%s): %w", current, what, store.ErrCorrupt)
	case current == "" && data > 0:
		return fmt.Errorf("the MANIFEST file and the marker naming it (%sNNNNNN.MANIFEST-NNNNNN) are missing, "+
			"but %d data files (*.sst, *.log) are present (%s): %w", manifestMarker, data, what, store.ErrCorrupt)
	}
	return nil
}

func readFile(fs vfs.FS, path string) ([]byte, error) {
	f, err := fs.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(f)
}

// manifestDamage returns the offset of the first invalid chunk of b when a
// valid chunk follows it.
func manifestDamage(b []byte) (int, bool) {
	pos := 0
	for pos < len(b) {
		inBlock := manifestBlockSize - pos%manifestBlockSize
		if inBlock < manifestHeaderSize {
			pos += inBlock // padding at the end of a block
			continue
		}
		if n, ok := validChunk(b, pos); ok {
			pos += n
			continue
		}
		// pos is where a reader stops. Look for a valid chunk anywhere after.
		for q := pos + 1; q+manifestHeaderSize <= len(b); q++ {
			if manifestBlockSize-q%manifestBlockSize < manifestHeaderSize {
				continue
			}
			if _, ok := validChunk(b, q); ok {
				return pos, true
			}
		}
		return 0, false
	}
	return 0, false
}

// validChunk reports whether a well-formed chunk with a matching checksum
// starts at pos, and its length with the header.
func validChunk(b []byte, pos int) (int, bool) {
	if pos+manifestHeaderSize > len(b) {
		return 0, false
	}
	h := b[pos : pos+manifestHeaderSize]
	typ := h[6]
	if typ < 1 || typ > 4 {
		return 0, false
	}
	n := int(binary.LittleEndian.Uint16(h[4:6]))
	end := pos + manifestHeaderSize + n
	if end > len(b) || pos/manifestBlockSize != (end-1)/manifestBlockSize {
		return 0, false
	}
	c := crc32.Update(0, castagnoli, h[6:7])
	c = crc32.Update(c, castagnoli, b[pos+manifestHeaderSize:end])
	masked := (c>>15 | c<<17) + 0xa282ead8
	if masked != binary.LittleEndian.Uint32(h[0:4]) {
		return 0, false
	}
	return manifestHeaderSize + n, true
}
