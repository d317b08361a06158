//go:build !unix

package pebble

// allocEntries returns room for n entries (length 0, capacity n).
func allocEntries(n int) []recEntry { return make([]recEntry, 0, n) }

// freeEntries gives back what allocEntries or resizeEntries returned:
// the collector does.
func freeEntries([]recEntry) {}
