//go:build !linux

package pebble

// resizeEntries returns s in room for n entries (its first min(len, n)
// entries kept), copied to new room.
func resizeEntries(s []recEntry, n int) []recEntry { return copyEntries(s, n) }
