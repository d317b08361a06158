package pebble

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/gearwork/gearwork/internal/store"
)

// A write-ahead log cut short at its end looks exactly like a crash in
// the middle of a write, and Pebble keeps its intact prefix without a
// word. After a crash that is right (the cut writes were never
// acknowledged), but after a clean stop every byte of the log was synced,
// and a shorter log means lost jobs. So Close records the size and
// checksum of every log in cleanStopFile, and Open, when it finds that
// file, refuses a directory whose logs differ from it. Open removes the
// file (durably) before it opens the database, so that a crash later on
// leaves no record and torn tails are accepted again.
const (
	cleanStopFile   = "GEARWORK-CLEAN-STOP"
	cleanStopTemp   = cleanStopFile + ".tmp" // written, then renamed
	cleanStopHeader = "gearwork clean stop 1"
)

// writeCleanStop records the logs of the closed database in dir.
func writeCleanStop(fs vfs.FS, dir string) error {
	names, err := fs.List(dir)
	if err != nil {
		return err
	}
	slices.Sort(names)
	var b bytes.Buffer
	b.WriteString(cleanStopHeader + "\n")
	for _, name := range names {
		if !isLogFile(name) {
			continue
		}
		size, sum, err := checksumFile(fs, fs.PathJoin(dir, name))
		if err != nil {
			return err
		}
		fmt.Fprintf(&b, "%s %d %08x\n", name, size, sum)
	}
	// Written aside and renamed into place, so that a crash while it is
	// written (a SIGKILL after a stop timed out, a power cut) leaves no
	// record, or a whole one, never one cut short that the next start
	// would take for a damaged directory.
	tmp := fs.PathJoin(dir, cleanStopTemp)
	f, err := fs.Create(tmp, vfs.WriteCategoryUnspecified)
	if err != nil {
		return err
	}
	if _, err := f.Write(b.Bytes()); err != nil {
		_ = f.Close()
		return err
	}
	if err := errors.Join(f.Sync(), f.Close()); err != nil {
		return err
	}
	if err := fs.Rename(tmp, fs.PathJoin(dir, cleanStopFile)); err != nil {
		return err
	}
	return syncDir(fs, dir)
}

// checkCleanStop compares the logs in dir with the record of the last
// clean stop, if there is one, and then removes the record.
func checkCleanStop(fs vfs.FS, dir string) error {
	// A record a crash cut short before it was renamed into place.
	if err := fs.Remove(fs.PathJoin(dir, cleanStopTemp)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing %s: %w", cleanStopTemp, err)
	}
	path := fs.PathJoin(dir, cleanStopFile)
	data, err := readFile(fs, path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading %s: %w", cleanStopFile, err)
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	if !sc.Scan() || sc.Text() != cleanStopHeader {
		return fmt.Errorf("%s is not a record this server wrote (remove it to start): %w", cleanStopFile, store.ErrCorrupt)
	}
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 3 {
			return fmt.Errorf("%s: malformed line %q (remove the file to start): %w", cleanStopFile, sc.Text(), store.ErrCorrupt)
		}
		name := f[0]
		size, err1 := strconv.ParseInt(f[1], 10, 64)
		sum, err2 := strconv.ParseUint(f[2], 16, 32)
		if err1 != nil || err2 != nil {
			return fmt.Errorf("%s: malformed line %q (remove the file to start): %w", cleanStopFile, sc.Text(), store.ErrCorrupt)
		}
		gotSize, gotSum, err := checksumFile(fs, fs.PathJoin(dir, name))
		what := ""
		switch {
		case errors.Is(err, os.ErrNotExist):
			what = "is missing"
		case err != nil:
			return fmt.Errorf("reading %s: %w", name, err)
		case gotSize < size:
			what = fmt.Sprintf("is %d bytes shorter (%d bytes, was %d)", size-gotSize, gotSize, size)
		case gotSize != size || uint32(sum) != gotSum:
			what = fmt.Sprintf("has changed (%d bytes with checksum %08x, was %d bytes with checksum %08x)", gotSize, gotSum, size, sum)
		}
		if what != "" {
			return fmt.Errorf("the write-ahead log %s %s since the server stopped cleanly: it was cut short or damaged "+
				"after the stop, and the jobs in the damaged part would be lost. Restore the directory from a copy; "+
				"or, to start with what is left of the log (losing those jobs), remove %s: %w",
				name, what, fs.PathJoin(dir, cleanStopFile), store.ErrCorrupt)
		}
	}
	if err := fs.Remove(path); err != nil {
		return fmt.Errorf("removing %s: %w", cleanStopFile, err)
	}
	return syncDir(fs, dir)
}

func checksumFile(fs vfs.FS, path string) (int64, uint32, error) {
	f, err := fs.Open(path)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	h := crc32.New(castagnoli)
	n, err := io.Copy(h, f)
	return n, h.Sum32(), err
}

func syncDir(fs vfs.FS, dir string) error {
	d, err := fs.OpenDir(dir)
	if err != nil {
		return err
	}
	return errors.Join(d.Sync(), d.Close())
}
