// Package compat holds Gearwork's end-to-end compatibility suite. Its tests
// build the gearwork binary, start "gearwork serve" on a free loopback port
// and drive it with Gearman clients and workers written elsewhere: Debian's
// gearman and gearadmin tools (libgearman), a C client and worker built
// against libgearman itself (testdata/c), PHP's gearman extension, Perl's
// Gearman::Client and Gearman::Worker, the Node libraries abraxas,
// gearman, gearmanode, gearman-node and node-gearman (with the test suites
// of the last two), and the client tests of the Go libraries
// github.com/appscode/g2 and github.com/mikespook/gearman-go
// (TestG2ClientSuite and the suites beside it). Gearwork's own lifecycle
// features (a configuration file's retry policies and cron schedule, dead
// letters, retained results, ordering) are driven the same way, and checked
// to survive a SIGKILL. Where it makes sense the same checks also run
// against Debian's C gearmand, so that every difference between the two
// servers is visible in the test output and written down in
// docs/protocol.md.
//
// # Requirements
//
// scripts/deps.sh installs every client (the Node packages into
// ~/.cache/gearwork/node, the Go modules into the module cache). A missing
// client fails the suite; set GEARWORK_ALLOW_SKIP=1 to skip the tests that
// need it instead.
//
// The package has no non-test code.
package compat
