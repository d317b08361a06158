package httpapi

import (
	"container/list"
	"sync"
	"time"

	"github.com/gearwork/gearwork/internal/broker"
)

// hub watches jobs through one broker session and keeps each watched job's
// events in a feed: a bounded log that event streams read and resume from.
//
// Lock order: broker.mu before hub.mu (Send is called with the broker's lock
// held); the hub never calls the broker while holding its own lock.
type hub struct {
	b         *broker.Broker
	sess      *broker.Session
	logSize   int
	maxFeeds  int
	retention time.Duration

	// mu guards everything below.
	mu    sync.Mutex
	feeds map[uint64]*feed
	// bytes counts the data bytes the feeds' events hold (feed.bytes).
	bytes int64
	// finished lists feeds with a final event, oldest first, for eviction.
	finished *list.List
	closed   bool
}

// feedEvent is one event of a job, numbered from 1 in its feed.
type feedEvent struct {
	id    uint64
	kind  string
	ev    broker.Event
	snap  broker.JobSnapshot // for kinds "state" and "retry" (hasSnap)
	final bool
	// hasSnap is set on a retry event that carries the job as it was
	// when its run ended (SendRetry).
	hasSnap bool
}

// feed is the event log of one job. Its fields are guarded by hub.mu.
type feed struct {
	seq    uint64
	events []feedEvent // the newest events, at most hub.logSize
	nextID uint64
	// final is the job's last event, once it came.
	final *feedEvent
	// finishedAt is when the final event came; elem is its place in
	// hub.finished.
	finishedAt time.Time
	elem       *list.Element
	// changed is closed and replaced whenever an event is added.
	changed chan struct{}
	// bytes counts the data bytes of events, and of the final event, that
	// the feed holds.
	bytes int64
	// readers counts open event streams; lastRead is when the last ended.
	readers  int
	lastRead time.Time
	// ready is closed once the feed may be read; gone is then set if the
	// job turned out not to be live.
	ready chan struct{}
	gone  bool
}

func newHub(b *broker.Broker, logSize, maxFeeds int, retention time.Duration) *hub {
	h := &hub{b: b, logSize: logSize, maxFeeds: maxFeeds, retention: retention,
		feeds: make(map[uint64]*feed), finished: list.New()}
	h.sess = b.NewSession("http", h)
	h.b.SetClientID(h.sess, "gearwork-http")
	return h
}

// Send implements broker.Outbox; it runs with the broker's lock held.
func (h *hub) Send(ev broker.Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	f := h.feeds[ev.Seq]
	if f == nil || f.final != nil {
		return
	}
	var kind string
	final := false
	switch ev.Kind {
	case broker.EventData:
		kind = "data"
	case broker.EventWarning:
		kind = "warning"
	case broker.EventStatus:
		kind = "status"
	case broker.EventComplete:
		kind, final = "complete", true
	case broker.EventFail:
		kind, final = "fail", true
	case broker.EventException:
		kind, final = "exception", true
	case broker.EventRetry:
		kind = "retry"
	default:
		return
	}
	h.appendLocked(f, feedEvent{kind: kind, ev: ev, final: final})
}

// Placed implements broker.PlacedOutbox: the job a submit watched (track)
// as the broker placed it, or as it is when the submit joined it. The
// feed's first event, state, made before that, then says the job's state
// (blocked behind its ordering key, waiting for others, ...; not
// "attached" for a job joined), priority and times, as GET
// /v1/jobs/{handle} does. A feed that has more events than that is left
// as it is. It runs with the broker's lock held, before any update of
// the job.
func (h *hub) Placed(job broker.JobSnapshot) {
	h.mu.Lock()
	defer h.mu.Unlock()
	f := h.feeds[job.Seq]
	if f == nil || f.nextID != 1 || len(f.events) != 1 || f.events[0].kind != "state" {
		return
	}
	f.events[0].snap = job
}

// SendRetry implements broker.RetryOutbox: a retry event that keeps the
// job as it was when its run ended, which says why and when it runs
// again. It runs with the broker's lock held.
func (h *hub) SendRetry(ev broker.Event, job broker.JobSnapshot) {
	h.mu.Lock()
	defer h.mu.Unlock()
	f := h.feeds[ev.Seq]
	if f == nil || f.final != nil {
		return
	}
	h.appendLocked(f, feedEvent{kind: "retry", ev: ev, snap: job, hasSnap: true})
}

// The data bytes that event logs keep: a worker may send WORK_DATA of up
// to --max-packet bytes each, and every job watched over HTTP keeps the
// last EventLog of its events, so without a bound in bytes one job could
// hold gigabytes. Beyond maxFeedBytes a job's log lets its oldest events
// go (keeping its newest); beyond maxHubBytes for all jobs together, the
// logs of finished jobs nobody reads are forgotten first, then the job
// whose event came keeps none but its final event. A stream that
// resumes after events that were let go is told so (a comment).
const (
	maxFeedBytes = 16 << 20
	maxHubBytes  = 256 << 20
)

func (h *hub) appendLocked(f *feed, e feedEvent) {
	f.nextID++
	e.id = f.nextID
	if len(f.events) >= h.logSize {
		h.dropOldestLocked(f, len(f.events)-h.logSize+1)
	}
	f.events = append(f.events, e)
	n := int64(len(e.ev.Data))
	f.bytes += n
	h.bytes += n
	if e.final {
		fe := e
		f.final = &fe
		f.finishedAt = time.Now()
		f.elem = h.finished.PushBack(f)
	}
	h.trimLocked(f)
	close(f.changed)
	f.changed = make(chan struct{})
}

// dropOldestLocked lets the n oldest events of f's log go. The final
// event stays counted: f.final keeps it.
func (h *hub) dropOldestLocked(f *feed, n int) {
	for _, old := range f.events[:n] {
		if !old.final {
			f.bytes -= int64(len(old.ev.Data))
			h.bytes -= int64(len(old.ev.Data))
		}
	}
	m := copy(f.events, f.events[n:])
	clear(f.events[m:])
	f.events = f.events[:m]
}

// trimLocked keeps the logs within maxFeedBytes and maxHubBytes after an
// event of f (see there).
func (h *hub) trimLocked(f *feed) {
	for len(f.events) > 1 && f.bytes > maxFeedBytes && !f.events[0].final {
		h.dropOldestLocked(f, 1)
	}
	for e := h.finished.Front(); h.bytes > maxHubBytes && e != nil; {
		next := e.Next()
		if old := e.Value.(*feed); old != f && old.readers == 0 {
			h.forgetLocked(old)
		}
		e = next
	}
	for len(f.events) > 0 && h.bytes > maxHubBytes && !f.events[0].final {
		h.dropOldestLocked(f, 1)
	}
}

// track starts the feed of a job just submitted with
// broker.SubmitWatched on the hub's session. It is called from the submit's
// watching callback, with the broker's lock held, before any event of the
// job (or from its DoneFunc for a submit answered by a retained result).
func (h *hub) track(seq uint64, snap broker.JobSnapshot) *feed {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.startLocked(seq, snap, true)
}

// hasRoom reports whether a new job can be watched without exceeding
// MaxFeeds (evicting finished jobs if need be).
func (h *hub) hasRoom() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return !h.closed && (len(h.feeds) < h.maxFeeds || h.finished.Len() > 0)
}

// startLocked creates the feed of seq (or returns the existing one),
// evicting the oldest finished feed when full. With force, it may exceed
// the limit when nothing can be evicted.
func (h *hub) startLocked(seq uint64, snap broker.JobSnapshot, force bool) *feed {
	if h.closed {
		return nil
	}
	if f := h.feeds[seq]; f != nil {
		return f
	}
	for len(h.feeds) >= h.maxFeeds {
		front := h.finished.Front()
		if front == nil {
			if !force {
				return nil
			}
			break
		}
		h.forgetLocked(front.Value.(*feed))
	}
	f := &feed{seq: seq, changed: make(chan struct{}), ready: make(chan struct{}), lastRead: time.Now()}
	close(f.ready)
	h.feeds[seq] = f
	h.appendLocked(f, feedEvent{kind: "state", snap: snap})
	return f
}

// forget drops a feed that no job will finish.
func (h *hub) forget(f *feed) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.feeds[f.seq] == f {
		h.forgetLocked(f)
	}
}

func (h *hub) forgetLocked(f *feed) {
	if f.elem != nil {
		h.finished.Remove(f.elem)
		f.elem = nil
	}
	if h.feeds[f.seq] == f {
		delete(h.feeds, f.seq)
		h.bytes -= f.bytes
	}
}

// restart forgets the finished feed of seq, for a job that lives again (a
// dead letter queued again): its events start over in a new feed.
func (h *hub) restart(seq uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if f := h.feeds[seq]; f != nil && f.final != nil {
		h.forgetLocked(f)
	}
}

// feedFor returns the feed of job seq, starting to watch the job if it is
// live and not yet watched. It reports false if the job is neither live nor
// remembered.
func (h *hub) feedFor(seq uint64) (*feed, bool) {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil, false
	}
	if f := h.feeds[seq]; f != nil {
		h.mu.Unlock()
		<-f.ready
		return f, !f.gone
	}
	// A placeholder collects the events that come as soon as Watch has
	// registered (Send runs under the broker's lock, before Watch returns
	// its snapshot); the state event is then put first and the log
	// numbered, before anyone may read it.
	f := &feed{seq: seq, changed: make(chan struct{}), ready: make(chan struct{}), lastRead: time.Now()}
	h.feeds[seq] = f
	h.mu.Unlock()
	snap, ok := h.b.Watch(h.sess, seq)
	h.mu.Lock()
	defer h.mu.Unlock()
	defer close(f.ready)
	if !ok {
		f.gone = true
		if h.feeds[seq] == f {
			h.forgetLocked(f)
		}
		return nil, false
	}
	evs := append([]feedEvent{{kind: "state", snap: snap}}, f.events...)
	for i := range evs {
		evs[i].id = uint64(i + 1)
	}
	f.events = evs
	f.nextID = uint64(len(evs))
	if f.final != nil {
		fe := evs[len(evs)-1]
		f.final = &fe
	}
	for len(h.feeds) > h.maxFeeds && h.finished.Len() > 0 {
		h.forgetLocked(h.finished.Front().Value.(*feed))
	}
	return f, true
}

// read returns the feed's events with an id above after, whether the final
// event is among those sent or already before after, and a channel closed
// when more events come.
func (h *hub) read(f *feed, after uint64) (evs []feedEvent, done bool, changed <-chan struct{}) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, e := range f.events {
		if e.id > after {
			evs = append(evs, e)
		}
	}
	if f.final != nil {
		if f.final.id > after && (len(evs) == 0 || evs[len(evs)-1].id != f.final.id) {
			evs = append(evs, *f.final)
		}
		done = true
	}
	return evs, done, f.changed
}

// outcome returns the final event of a feed, if it came.
func (h *hub) outcome(f *feed) (feedEvent, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if f.final == nil {
		return feedEvent{}, false
	}
	return *f.final, true
}

// finishedAt returns when the feed's final event came (zero if not yet).
func (h *hub) finishedAt(f *feed) time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	return f.finishedAt
}

// remembered returns the feed of seq if the hub has one.
func (h *hub) remembered(seq uint64) (*feed, bool) {
	h.mu.Lock()
	f := h.feeds[seq]
	h.mu.Unlock()
	if f == nil {
		return nil, false
	}
	<-f.ready
	return f, !f.gone
}

func (h *hub) addReader(f *feed, delta int) {
	h.mu.Lock()
	f.readers += delta
	if f.readers == 0 {
		f.lastRead = time.Now()
	}
	h.mu.Unlock()
}

// sweep forgets finished feeds past the retention, and stops watching
// unfinished jobs nobody has read for the retention time.
func (h *hub) sweep(now time.Time) {
	var unwatch []uint64
	h.mu.Lock()
	for e := h.finished.Front(); e != nil; e = h.finished.Front() {
		f := e.Value.(*feed)
		if now.Sub(f.finishedAt) < h.retention || f.readers > 0 {
			break
		}
		h.forgetLocked(f)
	}
	for seq, f := range h.feeds {
		if f.final == nil && f.readers == 0 && now.Sub(f.lastRead) > h.retention && len(h.feeds) > h.maxFeeds/2 {
			h.forgetLocked(f)
			unwatch = append(unwatch, seq)
		}
	}
	h.mu.Unlock()
	for _, seq := range unwatch {
		h.b.Unwatch(h.sess, seq)
	}
}

// close ends the hub's session; streams still open see no more events.
func (h *hub) close() {
	h.mu.Lock()
	h.closed = true
	h.mu.Unlock()
	h.b.CloseSession(h.sess)
}
