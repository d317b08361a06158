//go:build unix

package pebble

import (
	"syscall"
	"unsafe"
)

// allocEntries returns room for n entries (length 0, capacity n) outside
// Go's heap: an anonymous mapping whose pages count only once they are
// written, and that the garbage collector neither scans nor counts
// towards its goal. A million records then cost their 24 MB, not twice
// that. freeEntries gives it back.
func allocEntries(n int) []recEntry {
	size := n * int(unsafe.Sizeof(recEntry{}))
	mem, err := syscall.Mmap(-1, 0, size, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		// Out of address space: the heap is the fallback.
		return make([]recEntry, 0, n)
	}
	return unsafe.Slice((*recEntry)(unsafe.Pointer(unsafe.SliceData(mem))), n)[:0]
}

// freeEntries gives back what allocEntries returned.
func freeEntries(s []recEntry) {
	if cap(s) == 0 {
		return
	}
	mem := unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(s[:1]))), cap(s)*int(unsafe.Sizeof(recEntry{})))
	// A slice from the heap fallback is not a mapping: munmap fails on it
	// (EINVAL) and the collector takes it.
	_ = syscall.Munmap(mem)
}
