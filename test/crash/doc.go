// Package crash holds Gearwork's crash test: a real server process with the
// Pebble store is killed with SIGKILL at random moments under load and
// restarted, and every job it acknowledged must be completed at least once.
// See docs/durability.md.
package crash
