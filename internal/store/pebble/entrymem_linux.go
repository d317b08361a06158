package pebble

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// resizeEntries returns s in room for n entries (its first min(len, n)
// entries kept). The kernel moves the mapping's pages (mremap): growing
// copies nothing and faults in only the new pages, shrinking gives the
// pages beyond n back. A slice of the heap fallback is copied.
func resizeEntries(s []recEntry, n int) []recEntry {
	if cap(s) > 0 {
		if mem, err := unix.Mremap(mappedBytes(s), n*int(unsafe.Sizeof(recEntry{})), unix.MREMAP_MAYMOVE); err == nil {
			return entriesOf(mem)[:min(len(s), n)]
		}
	}
	return copyEntries(s, n)
}
