//go:build race

package testserver

// raceEnabled: these tests run with the race detector, so the servers
// they build get it too.
const raceEnabled = true
