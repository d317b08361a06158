package pebble

// ManifestDamage exposes manifestDamage to the external tests.
var ManifestDamage = manifestDamage
