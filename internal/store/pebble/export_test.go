package pebble

// ManifestDamage exposes manifestDamage to the external tests.
var ManifestDamage = manifestDamage

// CleanStopFile is the name of the record of a clean stop.
const CleanStopFile = cleanStopFile
