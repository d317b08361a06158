package broker

import (
	"slices"

	"github.com/gearwork/gearwork/internal/store"
)

// In shared mode a job that waits for others (SubmitParams.After) lives
// in the shared store only: it is inserted with the jobs it names, never
// held by the server that submits it, and the store checks them in the
// insert's transaction (refusing an unknown or failed one, with the
// error submitAfterLocked gives in local mode). Every server reports
// the ends of its background jobs in the commit round that writes them
// (CommitParams.DepEnds), and the store releases or cancels the jobs
// that wait for them in that transaction; a released job is claimed like
// any other.

// afterLocked: the store checks the jobs a submit names as it inserts
// the job; only what prepareAfter found wrong is known before.
func (c *sharedMode) afterLocked(p SubmitParams) ([]*job, error) { return nil, p.afterErr }

// unreadAfterLocked: the store judges the jobs a submit waits for.
func (c *sharedMode) unreadAfterLocked([]uint64, map[uint64]depOutcome) []uint64 { return nil }

// waitLocked makes new job j wait, in the store, for the jobs after.
func (c *sharedMode) waitLocked(j *job, _ []*job, after []uint64, anyway bool) {
	if len(after) == 0 {
		return
	}
	x := j.extra()
	x.after = slices.Compact(slices.Sorted(slices.Values(after)))
	x.anyway = anyway
}

// dependencyEndedLocked reports the end of background job j, in final
// state state, to the store's next round.
func (c *sharedMode) dependencyEndedLocked(j *job, state string) {
	if !j.background {
		return
	}
	c.depEnds = append(c.depEnds, store.DepEnd{Seq: j.seq, State: state})
	c.b.kickCommitter()
}
