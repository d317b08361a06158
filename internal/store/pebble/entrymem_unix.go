//go:build unix

package pebble

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// allocEntries returns room for n entries (length 0, capacity n) outside
// Go's heap: an anonymous mapping whose pages count only once they are
// written, and that the garbage collector neither scans nor counts
// towards its goal. A million records then cost their 20 MB, not twice
// that. freeEntries gives it back; resizeEntries changes its size.
func allocEntries(n int) []recEntry {
	mem, err := unix.Mmap(-1, 0, n*int(unsafe.Sizeof(recEntry{})), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		// Out of address space: the heap is the fallback.
		return make([]recEntry, 0, n)
	}
	return entriesOf(mem)[:0]
}

// freeEntries gives back what allocEntries or resizeEntries returned.
func freeEntries(s []recEntry) {
	if cap(s) == 0 {
		return
	}
	// unix.Munmap refuses (EINVAL) a slice it did not map: one from the
	// heap fallback, which the collector takes.
	_ = unix.Munmap(mappedBytes(s))
}

// mappedBytes returns the whole room of s, a mapping of allocEntries, as
// the bytes that were mapped.
func mappedBytes(s []recEntry) []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(s[:1]))), cap(s)*int(unsafe.Sizeof(recEntry{})))
}

// entriesOf returns mapped bytes as entries (length and capacity all of
// them).
func entriesOf(mem []byte) []recEntry {
	return unsafe.Slice((*recEntry)(unsafe.Pointer(unsafe.SliceData(mem))), len(mem)/int(unsafe.Sizeof(recEntry{})))
}
