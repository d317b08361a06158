package broker

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"

	"github.com/gearwork/gearwork/internal/store"
)

// This file keeps dependencies between jobs (docs/batches.md,
// "Dependencies"): a background job submitted with SubmitParams.After
// waits (stateWaiting) until every job it names has completed
// successfully, and is cancelled when one of them fails, dies or is
// cancelled, unless AfterAnyway is set. A job can only name jobs that
// exist when it is submitted, so no cycle can form; an unknown job is
// refused. A waiting job stores the jobs it still waits for (store.Job
// After); when the last one completes it is saved without them, in the
// same committer round as the removal of that job.

// ErrDependency is wrapped by Submit's error for a dependency that is
// unknown (never existed, or its record is no longer kept) or that ended
// without success (for a job without AfterAnyway).
var ErrDependency = errors.New("dependency refused")

// depOutcome is what is known of a dependency that is not live.
type depOutcome uint8

const (
	depUnknown depOutcome = iota
	depSucceeded
	depFailed
)

// prepareAfter: the jobs a submit names are judged under the broker's
// lock; the records of those only the store knows are read by
// Broker.lockSubmit (unreadAfterLocked).
func (localMode) prepareAfter(after []uint64, _ []UniqueDep) afterRead {
	return afterRead{after: after}
}

// unreadAfterLocked returns the jobs of after that are neither live
// nor ended in memory, and whose stored records (a store.RecordStore
// keeps them on disk) known lacks, each once, in after's order. A live
// job costs no read of the store. It stops at a job known to have no
// record: the submit is refused there or before (afterLocked judges in
// the same order), so what follows needs no read.
func (m localMode) unreadAfterLocked(after []uint64, known map[uint64]depOutcome) []uint64 {
	b := m.b
	if b.records == nil {
		return nil
	}
	var (
		look []uint64
		seen map[uint64]bool
	)
	for _, q := range after {
		if d, outcome := b.dependencyLocked(q, nil); d != nil || outcome != depUnknown || seen[q] {
			continue
		}
		if outcome, read := known[q]; read {
			if outcome == depUnknown {
				break
			}
			continue
		}
		if seen == nil {
			seen = make(map[uint64]bool)
		}
		seen[q] = true
		look = append(look, q)
	}
	return look
}

// storedOutcome reads the stored record of job seq, without the broker's
// lock: depUnknown when there is none, an error when it cannot be read.
func (b *Broker) storedOutcome(seq uint64) (depOutcome, error) {
	r, err := b.records.Record(context.Background(), seq)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return depUnknown, nil
	case err != nil:
		return depUnknown, &StoreError{fmt.Errorf("reading the record of dependency %s: %w", b.Handle(seq), err)}
	case r.State == FinalComplete:
		return depSucceeded, nil
	}
	return depFailed, nil
}

// dependencyLocked judges dependency seq: the live job it waits for, or the
// outcome of one that ended. known holds the outcomes read from the store
// without the lock (Broker.lockSubmit).
func (b *Broker) dependencyLocked(seq uint64, known map[uint64]depOutcome) (*job, depOutcome) {
	if j := b.jobs.get(seq); j != nil && j.state != stateGone {
		return j, depUnknown
	}
	if j := b.life.done[seq]; j != nil {
		return nil, depSucceeded
	}
	if j := b.life.dead[seq]; j != nil {
		return nil, depFailed
	}
	if r := b.keptRecordLocked(seq); r != nil {
		if r.state.String() == FinalComplete {
			return nil, depSucceeded
		}
		return nil, depFailed
	}
	return nil, known[seq]
}

// submitAfterLocked checks a submit's dependencies and returns the live
// jobs the new job must wait for here (dependencies.afterLocked).
func (b *Broker) submitAfterLocked(p *SubmitParams) ([]*job, error) {
	if len(p.After) == 0 && len(p.AfterUnique) == 0 {
		return nil, nil
	}
	if !p.Background {
		return nil, fmt.Errorf("%w: only background jobs can wait for others", ErrDependency)
	}
	return b.mode.afterLocked(*p)
}

// afterLocked judges the jobs p names in memory: live ones to wait for,
// ended ones by their records (read by Broker.lockSubmit).
func (m localMode) afterLocked(p SubmitParams) ([]*job, error) {
	if p.afterErr != nil {
		return nil, p.afterErr // a stored record could not be read
	}
	b := m.b
	var wait []*job
	for _, u := range p.AfterUnique {
		d, done := b.uniqueDependencyLocked(u)
		switch {
		case d != nil:
			wait = append(wait, d)
		case !done:
			return nil, uniqueDependencyErr(u)
		}
	}
	for _, q := range p.After {
		d, outcome := b.dependencyLocked(q, p.known)
		switch {
		case d != nil:
			wait = append(wait, d)
		case outcome == depUnknown:
			return nil, b.dependencyErr(q, true)
		case outcome == depFailed && !p.AfterAnyway:
			return nil, b.dependencyErr(q, false)
		}
	}
	// Each job once: sorted and compacted, O(n log n) however many a
	// submit names (a Contains per job was quadratic).
	slices.SortFunc(wait, func(x, y *job) int { return cmp.Compare(x.seq, y.seq) })
	return slices.Compact(wait), nil
}

// waitLocked makes j wait in memory for the live jobs deps.
func (m localMode) waitLocked(j *job, deps []*job, _ []uint64, anyway bool) {
	if len(deps) > 0 {
		m.b.waitForLocked(j, deps, anyway)
	}
}

// dependencyEndedLocked: the jobs waiting here were released or cancelled
// (Broker.dependencyEndedLocked); no other server waits.
func (localMode) dependencyEndedLocked(*job, string) {}

// dependencyErr is why a submit naming job q is refused: q is unknown, or
// it ended without success.
func (b *Broker) dependencyErr(q uint64, unknown bool) error {
	if unknown {
		return fmt.Errorf("%w: no job %s (it never existed, or its record is no longer kept)", ErrDependency, b.Handle(q))
	}
	return fmt.Errorf("%w: job %s ended without success", ErrDependency, b.Handle(q))
}

// waitForLocked makes new job j wait for the live jobs deps. It must run
// before j is made runnable (makeRunnableLocked then leaves it waiting).
func (b *Broker) waitForLocked(j *job, deps []*job, anyway bool) {
	x := j.extra()
	x.anyway = anyway
	for _, d := range deps {
		x.after = append(x.after, d.seq)
		b.addDependentLocked(d.seq, j)
	}
}

func (b *Broker) addDependentLocked(dep uint64, j *job) {
	if b.dependents == nil {
		b.dependents = make(map[uint64][]*job)
	}
	b.dependents[dep] = append(b.dependents[dep], j)
}

// dependencyEndedLocked releases or cancels the jobs waiting for j, which
// ended in state (a final state of its record).
func (b *Broker) dependencyEndedLocked(j *job, state string) {
	waiting := b.dependents[j.seq]
	if waiting == nil {
		return
	}
	delete(b.dependents, j.seq)
	for _, w := range waiting {
		if w.state != stateWaiting || w.x == nil {
			continue
		}
		x := w.x
		if i := slices.Index(x.after, j.seq); i >= 0 {
			x.after = slices.Delete(x.after, i, i+1)
		}
		if state != FinalComplete && !x.anyway {
			b.log.Info("broker: job cancelled, a job it waited for ended without success",
				slog.String("handle", b.Handle(w.seq)), slog.String("dependency", b.Handle(j.seq)), slog.String("state", state))
			b.cancelLocked(w, "dependency "+b.Handle(j.seq)+" "+state)
			continue
		}
		if len(x.after) > 0 {
			continue
		}
		x.after, x.anyway = nil, false
		b.makeRunnableLocked(w, true)
		b.saveLocked(w) // stored without its dependencies
	}
}

// unlinkWaitingLocked takes a waiting job that leaves the broker out of
// the lists of the jobs it waited for.
func (b *Broker) unlinkWaitingLocked(j *job) {
	for _, d := range j.x.after {
		list := slices.DeleteFunc(b.dependents[d], func(w *job) bool { return w == j })
		if len(list) == 0 {
			delete(b.dependents, d)
		} else {
			b.dependents[d] = list
		}
	}
}

// dropWaitingLocked drops the jobs of f that wait for others (DropFunction),
// oldest first, each cancelled by why; the jobs that wait for those are
// cancelled in turn (dependencyEndedLocked).
func (b *Broker) dropWaitingLocked(f *function, why string) {
	var drop []*job
	for _, list := range b.dependents {
		for _, w := range list {
			if w.fn == f && !slices.Contains(drop, w) {
				drop = append(drop, w)
			}
		}
	}
	slices.SortFunc(drop, func(x, y *job) int { return cmp.Compare(x.seq, y.seq) })
	for _, w := range drop {
		if w.state == stateWaiting { // not cancelled by an earlier drop
			b.dropLocked(w, why)
		}
	}
}

// replayAfterLocked links a replayed waiting job to the jobs it waits for,
// which were replayed before it (they are older). A dependency that is no
// longer stored ended: by its record, it succeeded or the job is cancelled
// once the replay is done; without a record (the job was released in the
// same write that removed the dependency, but not yet saved so) it counts
// as done.
func (b *Broker) replayAfterLocked(seq uint64) {
	j := b.jobs.get(seq)
	if j == nil || j.state != stateWaiting {
		return
	}
	x := j.x
	var failed string
	for _, q := range slices.Clone(x.after) {
		d, outcome := b.dependencyLocked(q, nil)
		if d == nil && outcome == depUnknown && b.records != nil {
			var err error
			if outcome, err = b.storedOutcome(q); err != nil {
				// As without a record: it counts as done.
				b.log.Warn("broker: cannot read a dependency's record at replay", slog.String("error", err.Error()))
			}
		}
		switch {
		case d != nil:
			b.addDependentLocked(q, j)
			continue
		case outcome == depFailed && !x.anyway:
			failed = b.Handle(q)
		}
		x.after = slices.DeleteFunc(x.after, func(s uint64) bool { return s == q })
	}
	if failed != "" {
		b.cancelAfterReplay = append(b.cancelAfterReplay, cancelAfter{j, failed})
		return
	}
	if len(x.after) == 0 {
		b.makeRunnableLocked(j, false)
	}
}

// cancelAfter is a replayed job to cancel because a job it waited for
// failed.
type cancelAfter struct {
	j   *job
	dep string
}

// finishAfterReplayLocked cancels the replayed jobs whose dependencies
// failed.
func (b *Broker) finishAfterReplayLocked() {
	for _, c := range b.cancelAfterReplay {
		if c.j.state == stateWaiting {
			b.cancelLocked(c.j, "dependency "+c.dep+" ended without success")
		}
	}
	b.cancelAfterReplay = nil
}

// UniqueDep names a job by its function and unique
// (SubmitParams.AfterUnique).
type UniqueDep struct {
	Function, Unique string
}

// uniqueDependencyLocked returns the live job of u, or reports that u
// names a retained result (done): a job that completed.
func (b *Broker) uniqueDependencyLocked(u UniqueDep) (d *job, done bool) {
	f := b.functions[u.Function]
	if f == nil || u.Unique == "" {
		return nil, false
	}
	if j := f.uniques[u.Unique]; j != nil && j.state != stateGone {
		return j, false
	}
	return nil, f.life != nil && f.life.done[u.Unique] != nil
}

func uniqueDependencyErr(u UniqueDep) error {
	return fmt.Errorf("%w: no live job of %q has the unique %q (nor a retained result)", ErrDependency, u.Function, u.Unique)
}

// prepareAfter turns the jobs a submit names by unique into sequence
// numbers (added to p.After) before the broker's lock, reading the store:
// a live job, or a retained result (dropped: it completed). The store
// judges the others as it inserts the job.
func (c *sharedMode) prepareAfter(after []uint64, unique []UniqueDep) afterRead {
	if len(unique) == 0 {
		return afterRead{after: after}
	}
	ctx, cancel := context.WithTimeout(context.Background(), sharedStatusTimeout)
	defer cancel()
	out := afterRead{after: slices.Clone(after)}
	for _, u := range unique {
		seq, ok, err := c.store.FindUnique(ctx, u.Function, u.Unique)
		if err == nil && !ok {
			_, err = c.store.DoneByUnique(ctx, u.Function, u.Unique)
			if errors.Is(err, store.ErrNotFound) {
				return afterRead{after: after, err: uniqueDependencyErr(u)}
			}
		}
		if err != nil {
			return afterRead{after: after, err: &StoreError{err}}
		}
		if ok {
			out.after = append(out.after, seq)
		}
	}
	return out
}
