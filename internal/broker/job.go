package broker

// Priority is a Gearman job priority. Lower values run first.
type Priority uint8

// The three Gearman priorities.
const (
	High   Priority = 0
	Normal Priority = 1
	Low    Priority = 2
)

const numPriorities = 3

var priorityNames = [numPriorities]string{High: "high", Normal: "normal", Low: "low"}

// String returns "high", "normal" or "low" ("normal" for a value that is
// none of the three).
func (p Priority) String() string {
	if p < numPriorities {
		return priorityNames[p]
	}
	return "normal"
}

type jobState uint8

const (
	// statePending: accepted, waiting for the shared store to insert it
	// (shared mode only, settleInsertedLocked: the insert gives the job its
	// handle). With a local store a new job is runnable at once and its
	// write is tracked by job.save instead.
	statePending jobState = iota
	// stateScheduled: waiting in the timer heap for its run-at time.
	stateScheduled
	// stateQueued: in its function's priority queue.
	stateQueued
	// stateRunning: held by a worker.
	stateRunning
	// stateGone: finished, cancelled or dropped; no longer indexed.
	stateGone
	// stateRetryWait: failed, waiting in the timer heap for its backoff.
	stateRetryWait
	// stateBlocked: runnable but behind the head of its ordering key.
	stateBlocked
	// stateDead: out of attempts; kept as a dead letter.
	stateDead
	// stateDone: completed; its result is retained.
	stateDone
	// stateWaiting: waiting for the jobs it depends on (dependencyEndedLocked).
	stateWaiting
)

// saveState is where a new background job's first store write stands. The
// job is runnable (queued, running, ...) meanwhile; only its submitters'
// answers wait for the write.
type saveState uint8

const (
	// saveNone: stored, or nothing to wait for.
	saveNone saveState = iota
	// saveQueued: in Broker.pendingSaves, not yet taken by the committer.
	// No record or delete of the job is queued anywhere else meanwhile:
	// the committer writes the job as it is when it takes the batch.
	saveQueued
	// saveWriting: the committer is writing it.
	saveWriting
)

func (s jobState) String() string {
	return [...]string{"pending", "scheduled", "queued", "running", "gone",
		"retry-wait", "blocked", "dead", "done", "waiting"}[s]
}

// hashedUniquePrefix marks a unique that the broker derived from the payload
// (the client sent "-"). Real uniques cannot contain NUL, so the two kinds
// never collide in the index.
const hashedUniquePrefix = "\x00-"

// job is one job. The hot fields of a queued job are kept small; everything
// a queued background job does not need lives in the lazily allocated extra,
// which is released again once the job no longer needs it (releaseExtra).
// The struct is 96 bytes, one of the Go allocator's size classes: a queue of
// ten million jobs costs about a gigabyte for the jobs alone, so think
// twice before adding a field (TestJobSize guards it). All fields are
// guarded by Broker.mu.
type job struct {
	seq        uint64
	fn         *function
	unique     string // index key; "" when none
	payload    []byte
	prev, next *job // links in the function's priority queue
	x          *jobExtra
	// submitted is when the job was accepted, in Unix nanoseconds; 0 for
	// jobs replayed from a store that does not keep it.
	submitted  int64
	retries    uint32
	priority   Priority
	state      jobState
	background bool
	// flags holds the rarely set flags and the save state (jobFlags).
	flags jobFlags
}

// jobFlags are a job's rarely set flags and its saveState, packed into one
// byte.
type jobFlags uint8

const (
	// jobCancelled: a running job whose clients were told it failed (admin
	// cancel) or which nobody waits for any more; the worker's results are
	// dropped.
	jobCancelled jobFlags = 1 << iota
	// jobTiered: the job counts in the payload tiering budget (tiering).
	jobTiered
	// jobFinished: a worker reported the job's result (Stats).
	jobFinished

	// saveShift and saveMask place the job's saveState in the flags: it
	// tracks the first store write of a new background job with a local
	// store (commitLoop); saveNone once it is durable or when there is none
	// to wait for.
	saveShift          = 3
	saveMask  jobFlags = 3 << saveShift

	// jobProgress: in shared mode, progress of the job was written to the
	// store (sharedMode.progressLocked).
	jobProgress jobFlags = 1 << 5
	// jobRecorded: the job's final record is made (recordEndLocked);
	// a later end of the same job (a worker's result after a cancel)
	// changes nothing.
	jobRecorded jobFlags = 1 << 6
	// jobHeld: a batch's callback job, not runnable until its first store
	// write is done (batchEndLocked): it must not run before the write that
	// records the batch's callback as submitted.
	jobHeld jobFlags = 1 << 7
)

// has reports whether all of flags are set on j.
func (j *job) has(flags jobFlags) bool { return j.flags&flags == flags }

// saveState returns the state of the job's first store write.
func (j *job) saveState() saveState { return saveState(j.flags&saveMask) >> saveShift }

// setSave sets the state of the job's first store write.
func (j *job) setSave(s saveState) { j.flags = j.flags&^saveMask | jobFlags(s)<<saveShift&saveMask }

type jobExtra struct {
	reducer  string
	runAt    int64 // Unix seconds; 0 = now
	worker   *Session
	clients  []*Session
	num, den uint32
	timer    timerSlot // in Broker.timers; idx -1 when not in it
	// waiters are the background submitters of a job whose first store
	// write is not done yet (job.save, or statePending in shared mode),
	// told once it is durable (or has ended, or the write failed).
	waiters []DoneFunc
	// life holds lifecycle state (attempts, ordering, results); nil for
	// jobs of functions without a policy.
	life *jobLife
	// started is when the current worker took the job, in Unix nanoseconds.
	started int64
	// leaseTimer: the running job's timer is its worker's lease
	// (Broker.CanDoLease), not a timeout that fails the job.
	leaseTimer bool
	// payloadLen is the length of a payload on disk only (tiering), as
	// read when the job was last handed out; 0 when not known.
	payloadLen uint32
	// warning is the end (errorText) of the last
	// WORK_WARNING of the current run: a WORK_FAIL that follows carries no
	// data, so the warning is the failed attempt's error text.
	warning string
	// retryOf is the job that this one runs again (RetryJob).
	retryOf uint64
	// batch is the batch the job belongs to; nil for none.
	batch *batch
	// after lists the jobs a waiting job still waits for (dependencyEndedLocked);
	// anyway: it runs even when one of them fails.
	after  []uint64
	anyway bool
}

// maxErrorText is the most bytes of a WORK_WARNING or WORK_EXCEPTION
// kept as an attempt's error text (their end). The text is kept several
// times over (the attempt, the job's record, its dead letter, each
// written to the store), for as long as they are kept: without a cap a
// worker could make each failed job hold many megabytes.
const maxErrorText = 4 << 10

// errorText returns the end of a warning's or an exception's data, at
// most maxErrorText bytes, as an error text to keep.
func errorText(data []byte) string {
	return string(data[max(len(data)-maxErrorText, 0):])
}

// size is what the job counts against Config.MaxQueuedBytes.
func (j *job) size() int64 { return int64(len(j.payload) + len(j.unique)) }

func (j *job) extra() *jobExtra {
	if j.x == nil {
		j.x = newExtra()
	}
	return j.x
}

// newExtra returns an empty extra.
func newExtra() *jobExtra { return &jobExtra{timer: timerSlot{idx: -1}} }

// releaseExtra drops j's extra when it holds nothing, as after a background
// job's submitters were acknowledged: a queued background job then costs
// only the job itself.
func (j *job) releaseExtra() {
	if x := j.x; x != nil && x.reducer == "" && x.runAt == 0 && x.worker == nil && len(x.clients) == 0 &&
		x.num == 0 && x.den == 0 && x.timer.idx < 0 && len(x.waiters) == 0 && x.life == nil && x.started == 0 &&
		x.warning == "" && x.retryOf == 0 && x.batch == nil && len(x.after) == 0 {
		j.x = nil
	}
}

// displayUnique returns the unique as clients sent it ("-" for a payload hash).
func (j *job) displayUnique() string { return displayUnique(j.unique) }

// displayUnique returns a unique as the client sent it: "-" for one the
// broker indexes by its hash.
func displayUnique(u string) string {
	if len(u) >= len(hashedUniquePrefix) && u[:len(hashedUniquePrefix)] == hashedUniquePrefix {
		return "-"
	}
	return u
}

func (j *job) reducer() string {
	if j.x == nil {
		return ""
	}
	return j.x.reducer
}

func (j *job) runAt() int64 {
	if j.x == nil {
		return 0
	}
	return j.x.runAt
}

func (j *job) worker() *Session {
	if j.x == nil {
		return nil
	}
	return j.x.worker
}

// failClients sends WORK_FAIL to the clients waiting on j.
func (j *job) failClients() {
	if j.x == nil {
		return
	}
	for _, c := range j.x.clients {
		c.out.Send(Event{Kind: EventFail, Seq: j.seq})
	}
}

// jobList is an intrusive doubly linked FIFO of jobs.
type jobList struct {
	head, tail *job
	n          int
}

func (l *jobList) pushBack(j *job) { l.insert(j, l.tail, nil) }

func (l *jobList) pushFront(j *job) { l.insert(j, nil, l.head) }

// insert links j between prev and next, neighbours in the list (nil at
// its ends); remove undoes it.
func (l *jobList) insert(j, prev, next *job) {
	j.prev, j.next = prev, next
	if prev != nil {
		prev.next = j
	} else {
		l.head = j
	}
	if next != nil {
		next.prev = j
	} else {
		l.tail = j
	}
	l.n++
}

func (l *jobList) remove(j *job) {
	if j.prev != nil {
		j.prev.next = j.next
	} else {
		l.head = j.next
	}
	if j.next != nil {
		j.next.prev = j.prev
	} else {
		l.tail = j.prev
	}
	j.prev, j.next = nil, nil
	l.n--
}

func (l *jobList) popFront() *job {
	j := l.head
	if j != nil {
		l.remove(j)
	}
	return j
}
