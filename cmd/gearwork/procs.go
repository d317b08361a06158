package main

import (
	"log/slog"
	"os"

	"github.com/gearwork/gearwork/internal/procpace"
)

// newProcPacer returns what runs the server on one processor while its
// load fits well within one core and costs less CPU per request there,
// and on all of them otherwise (procpace), or nil when GOMAXPROCS is set:
// the runtime has applied it, and it is left as it is. requests counts
// the Gearman requests served.
func newProcPacer(log *slog.Logger, requests func() uint64) *procpace.Pacer {
	if v := os.Getenv("GOMAXPROCS"); v != "" {
		log.Info("serve: the processor count is GOMAXPROCS's", slog.String("GOMAXPROCS", v))
		return nil
	}
	return procpace.New(procpace.Config{}, requests, log)
}
