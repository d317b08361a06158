package broker

import "strings"

// uniqueIndex finds live jobs by unique alone, whatever their function
// (GET_STATUS_UNIQUE carries no function): one map lookup however many
// functions the broker knows. It holds exactly the jobs of the functions'
// own indexes (function.uniques), and is kept with them by
// setUniqueLocked, claimUniqueLocked, dropUniqueLocked and ownUniqueLocked.
// Guarded by Broker.mu.
type uniqueIndex struct {
	// first is one job per unique; its key is that job's unique.
	first map[string]*job
	// more holds the jobs of other functions with the same unique as
	// first's (rare: a unique is usually one function's).
	more map[string][]*job
}

// get returns a live job with unique u, of any function, or nil.
func (x *uniqueIndex) get(u string) *job { return x.first[u] }

// add records j, which no other job of its function shares its unique with.
func (x *uniqueIndex) add(j *job) {
	if x.first == nil {
		x.first = make(map[string]*job)
	}
	if x.first[j.unique] == nil {
		x.first[j.unique] = j
		return
	}
	if x.more == nil {
		x.more = make(map[string][]*job)
	}
	x.more[j.unique] = append(x.more[j.unique], j)
}

// remove forgets j; a job of another function with the same unique takes
// its place.
func (x *uniqueIndex) remove(j *job) {
	u := j.unique
	if x.first[u] == j {
		others := x.more[u]
		if len(others) == 0 {
			delete(x.first, u)
			return
		}
		last := len(others) - 1
		x.first[others[last].unique] = others[last] // the key is the holder's unique
		x.removeMore(u, last)
		return
	}
	for i, o := range x.more[u] {
		if o == j {
			x.removeMore(u, i)
			return
		}
	}
}

func (x *uniqueIndex) removeMore(u string, i int) {
	others := x.more[u]
	last := len(others) - 1
	others[i] = others[last]
	others[last] = nil
	if others = others[:last]; len(others) == 0 {
		delete(x.more, u)
		return
	}
	delete(x.more, u) // the key may be the unique of a job that left
	x.more[others[0].unique] = others
}

// all calls each for every job of the index.
func (x *uniqueIndex) all(each func(*job)) {
	for _, j := range x.first {
		each(j)
	}
	for _, js := range x.more {
		for _, j := range js {
			each(j)
		}
	}
}

// setUniqueLocked makes j, a live job of its function, the job its unique
// attaches to, replacing any other.
func (b *Broker) setUniqueLocked(j *job) {
	if j.unique == "" {
		return
	}
	f := j.fn
	if f.uniques == nil {
		f.uniques = make(map[string]*job)
	}
	if old := f.uniques[j.unique]; old != nil {
		if old == j {
			return
		}
		b.uniques.remove(old)
	}
	f.uniques[j.unique] = j
	b.uniques.add(j)
}

// claimUniqueLocked makes j, a live job of its function, the job its unique
// attaches to, unless another live job holds that unique already.
func (b *Broker) claimUniqueLocked(j *job) {
	if j.unique != "" && j.fn.uniques[j.unique] == nil {
		b.setUniqueLocked(j)
	}
}

// dropUniqueLocked forgets j, which leaves, as the job its unique attaches
// to (if it is).
func (b *Broker) dropUniqueLocked(j *job) {
	if f := j.fn; j.unique != "" && f.uniques[j.unique] == j {
		delete(f.uniques, j.unique)
		b.uniques.remove(j)
	}
}

// ownUniqueLocked gives j a unique of its own: the one it has may be a view
// of the packet body that also holds the payload, which is to be freed.
// The indexes' keys that are j's unique become the copy.
func (b *Broker) ownUniqueLocked(j *job) {
	if j.unique == "" {
		return
	}
	owned := strings.Clone(j.unique)
	if held := j.fn.uniques[j.unique] == j; held {
		b.dropUniqueLocked(j)
		j.unique = owned
		b.setUniqueLocked(j)
		return
	}
	j.unique = owned
}
