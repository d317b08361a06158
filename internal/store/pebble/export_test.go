package pebble

// ManifestDamage exposes manifestDamage to the external tests.
var ManifestDamage = manifestDamage

// CleanStopFile is the name of the record of a clean stop.
const CleanStopFile = cleanStopFile

// PebbleMemory returns the bytes Pebble's memtables (those flushed but
// still referenced included) and block cache hold.
func PebbleMemory(s *Store) (memtables, cache int64) {
	m := s.db.Metrics()
	return int64(m.MemTable.Size + m.MemTable.ZombieSize), m.BlockCache.Size
}
