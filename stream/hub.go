package stream

import (
	"bytes"
	"errors"
	"sync"
	"sync/atomic"

	"github.com/sselog/sselog/store"
)

// Log is the part of *store.Log the hub uses. The hooks registered with
// OnCommit and OnDelete must be called one at a time, in commit order: the
// hub's commit hook keeps state that only it writes.
type Log interface {
	Scan(stream string, after store.ID, limit int, fn func(*store.Event) error) (store.Bounds, error)
	ScanMerged(sel store.Selection, after store.ID, limit int, fn func(*store.Event) error) (store.MergedBounds, error)
	LastID() store.ID
	OnCommit(fn func([]store.Event))
	OnDelete(fn func(stream string, lowWater store.ID))
}

// Defaults for zero Options fields.
const (
	DefaultTailLen   = 4096
	DefaultTailBytes = 8 << 20
	DefaultPageSize  = 512
	DefaultPageBytes = 1 << 20
	// DefaultTailBudget and DefaultReplayBudget fit a small server: with
	// both spent, the hub holds about 128 MiB beyond its per-subscriber
	// costs.
	DefaultTailBudget   = 64 << 20
	DefaultReplayBudget = 64 << 20
)

var (
	// ErrClosed is returned by Subscribe after Close and by Next on a
	// subscription that was closed.
	ErrClosed = errors.New("hub is closed")
	// ErrDeleted is returned by Next once the stream was deleted and the
	// subscriber has been handed the reset that says so.
	ErrDeleted = errors.New("stream deleted")
)

// Options configures NewHub. The zero value is ready to use.
type Options struct {
	// TailLen is how many recent frames each followed stream keeps in
	// memory for live subscribers. Zero means DefaultTailLen.
	TailLen int
	// TailBytes caps the memory of those frames per stream. Zero means
	// DefaultTailBytes.
	TailBytes int
	// TailBudget caps the memory of the tails of all followed streams
	// together: frame buffers and grown rings. When a commit takes the
	// total over it, the committing stream's tail is cut to its fair share
	// (TailBudget divided by the number of followed streams, at least
	// MinTailShare), then the other tails are cut to theirs, round robin,
	// until the total is within the budget; when the shares cannot all fit
	// (more than TailBudget/MinTailShare followed streams), tails are
	// emptied round robin instead. Cutting a tail loses nothing: its
	// subscribers read the cut events from the log. Zero means
	// DefaultTailBudget.
	TailBudget int
	// PageSize is how many events a subscriber reads from the log in one
	// read transaction while it catches up. Zero means DefaultPageSize.
	PageSize int
	// PageBytes ends a page early before its frames pass this many bytes,
	// so that a page of large events stays small. A page always holds at
	// least one event. Zero means DefaultPageBytes.
	PageBytes int
	// ReplayBudget caps the memory of replay pages across the hub: pages
	// being read and pages handed out and not yet done with (a slow client
	// holds its page while it writes it). Each page takes its allowance,
	// up to PageBytes, from the budget; once the budget is spent, pages
	// get MinReplayPage each instead, so replays slow down rather than
	// stop. Zero means DefaultReplayBudget.
	ReplayBudget int
	// MergedQueueLen and MergedQueueBytes bound the frames a merged
	// subscription that has caught up holds, queued by commits and not
	// yet taken; beyond either, the queue is dropped and the subscription
	// reads the log until it has caught up again. Zero means
	// DefaultMergedQueueLen and DefaultMergedQueueBytes.
	MergedQueueLen   int
	MergedQueueBytes int
}

// Hub tracks the followed streams. It is safe for concurrent use.
type Hub struct {
	log  Log
	opts Options

	// mu guards streams and orders a stream's creation against the commit
	// hook: while the hook delivers a commit it holds mu for reading, so a
	// stream created under the write lock sees either all of a commit in
	// its tail or none of it, and its floor is the last id delivered.
	mu      sync.RWMutex
	streams map[string]*followed
	// delivered is the newest id the commit hook has delivered. Written
	// only by the hook, under mu.RLock; read under mu.Lock.
	delivered store.ID
	closed    bool
	// order lists the followed streams, in no particular order, for the
	// tail budget's round robin; followed.slot is a stream's index. Changed
	// under mu.Lock, with streams.
	order []*followed
	// clock is where the next sweep of the tails starts in order, and ends
	// is scratch for the frame boundaries of a commit run. Only the commit
	// hook uses them.
	clock int
	ends  []int
	// tailCost is the sum of every followed stream's tail.cost. It changes
	// in the commit hook (under mu.RLock) and when a stream stops being
	// followed (under mu.Lock); atomic so that Usage reads it without
	// holding up commits.
	tailCost atomic.Int64
	// pages is the replay budget, taken from and given back to by the
	// subscriptions.
	pages pageBudget

	// handedLive and handedReplayed count the events Next has handed out,
	// from the tails and queues, and from the log.
	handedLive, handedReplayed atomic.Uint64

	// merged holds the merged subscriptions; it changes under mu.Lock.
	merged map[*Merged]struct{}
	// mergedFor caches, for each stream name a commit touched, the merged
	// subscriptions that follow it, and cached counts its entries. The
	// commit hook fills it (under mu.RLock, alone); a new subscription
	// adds itself to the names it follows (under mu.Lock), so that no
	// subscription's arrival makes every later commit ask every
	// subscription again; a closed one is marked gone and dropped by the
	// hook when it meets it. commitSeq numbers the commits, and woken
	// collects the subscriptions a commit handed frames to; only the hook
	// uses them.
	mergedFor map[string][]*Merged
	cached    int
	commitSeq uint64
	woken     []*Merged
}

// maxMergedCache bounds the entries of mergedFor (names and the
// subscriptions under them): past it, the cache starts over. At 8 bytes an
// entry it stays under about 10 MiB, and the names a subscription checks
// when it arrives stay few.
const maxMergedCache = 1 << 20

// NewHub creates a hub over log and registers its commit hook.
func NewHub(log Log, opts Options) *Hub {
	if opts.TailLen <= 0 {
		opts.TailLen = DefaultTailLen
	}
	if opts.TailBytes <= 0 {
		opts.TailBytes = DefaultTailBytes
	}
	if opts.PageSize <= 0 {
		opts.PageSize = DefaultPageSize
	}
	if opts.PageBytes <= 0 {
		opts.PageBytes = DefaultPageBytes
	}
	if opts.TailBudget <= 0 {
		opts.TailBudget = DefaultTailBudget
	}
	if opts.ReplayBudget <= 0 {
		opts.ReplayBudget = DefaultReplayBudget
	}
	if opts.MergedQueueLen <= 0 {
		opts.MergedQueueLen = DefaultMergedQueueLen
	}
	if opts.MergedQueueBytes <= 0 {
		opts.MergedQueueBytes = DefaultMergedQueueBytes
	}
	h := &Hub{log: log, opts: opts, streams: make(map[string]*followed)}
	h.pages.max = opts.ReplayBudget
	// Register before reading LastID: a commit between the two is then
	// delivered, and delivered only moves forward.
	log.OnCommit(h.committed)
	log.OnDelete(h.deleted)
	h.mu.Lock()
	if last := log.LastID(); last.Compare(h.delivered) > 0 {
		h.delivered = last
	}
	h.mu.Unlock()
	return h
}

// committed is the log's commit hook. It hands each run of a followed
// stream's events in the commit to push.
func (h *Hub) committed(events []store.Event) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	for i := 0; i < len(events); {
		j := i + 1
		for j < len(events) && events[j].Stream == events[i].Stream {
			j++
		}
		if f := h.streams[events[i].Stream]; f != nil {
			h.push(f, events[i:j])
		}
		if len(h.merged) > 0 {
			h.pushMerged(events[i:j])
		}
		i = j
	}
	// One wake-up per merged subscriber per commit, however many of its
	// streams the commit touched.
	for k, m := range h.woken {
		m.wake()
		h.woken[k] = nil
	}
	h.woken = h.woken[:0]
	h.commitSeq++
	h.delivered = events[len(events)-1].ID
}

// pushMerged encodes a run of one stream's events in the merged form
// once, and queues the frames to every merged subscription that follows
// the stream. A stream no merged subscription follows costs a map lookup.
func (h *Hub) pushMerged(run []store.Event) {
	if h.mergedFor == nil || h.cached > maxMergedCache {
		h.mergedFor, h.cached = make(map[string][]*Merged), 0
	}
	name := run[0].Stream
	subs, ok := h.mergedFor[name]
	if !ok {
		for m := range h.merged {
			if m.match(name) {
				subs = append(subs, m)
			}
		}
		h.mergedFor[name] = subs
		h.cached += 1 + len(subs)
	}
	if len(subs) == 0 {
		return
	}
	size := 0
	for k := range run {
		size += mergedFrameLen(&run[k])
	}
	buf := alloc(size)
	ends := h.ends[:0]
	for k := range run {
		buf = appendMergedFrame(buf, &run[k])
		ends = append(ends, len(buf))
	}
	h.ends = ends
	items := make([]queued, len(run))
	start := 0
	for k, end := range ends {
		items[k] = queued{id: run[k].ID, frame: buf[start:end:end], stream: name}
		start = end
	}
	gone := 0
	for _, m := range subs {
		if m.gone.Load() {
			gone++
			continue
		}
		m.push(items, len(buf))
		if m.wokenSeq != h.commitSeq+1 {
			m.wokenSeq = h.commitSeq + 1
			h.woken = append(h.woken, m)
		}
	}
	if gone > 0 {
		kept := make([]*Merged, 0, len(subs)-gone)
		for _, m := range subs {
			if !m.gone.Load() {
				kept = append(kept, m)
			}
		}
		h.mergedFor[name] = kept
		h.cached -= gone
	}
}

// push encodes a run of one stream's events once, appends the frames to
// the stream's tail and wakes the stream's subscribers: one lock, one
// wake-up and one buffer for the run. Then it keeps the tails within the
// budget (see Options.TailBudget), which costs one comparison while the
// total is under it.
func (h *Hub) push(f *followed, run []store.Event) {
	size := 0
	for k := range run {
		size += frameLen(&run[k])
	}
	// The frames are sliced only once the whole run is encoded, so that
	// they all share the final buffer even if the estimate was short and
	// append moved it: the tail then accounts for one buffer per run.
	buf := alloc(size)
	ends := h.ends[:0]
	for k := range run {
		e := &run[k]
		buf = AppendFrame(buf, e.ID, e.Type, e.Data)
		ends = append(ends, len(buf))
	}
	h.ends = ends
	f.mu.Lock()
	before := f.tail.cost()
	start := 0
	for k, end := range ends {
		cost := 0
		if k == len(ends)-1 {
			cost = cap(buf)
		}
		f.tail.push(run[k].ID, buf[start:end:end], cost)
		start = end
	}
	budget := int64(h.opts.TailBudget)
	over := h.tailCost.Load()+int64(f.tail.cost()-before) > budget
	if over {
		// The stream that took the total over pays first.
		f.tail.shrink(h.share())
	}
	h.tailCost.Add(int64(f.tail.cost() - before))
	f.wakeLocked()
	f.mu.Unlock()
	if over && h.tailCost.Load() > budget {
		h.sweep()
	}
}

// unfollow forgets a followed stream, under mu.Lock: its tail's memory
// goes, and leaves the budget. The caller must have ended the stream's
// reads from the tail (no subscription left, or deleted set).
func (h *Hub) unfollow(f *followed) {
	delete(h.streams, f.name)
	last := h.order[len(h.order)-1]
	h.order[f.slot], last.slot = last, f.slot
	h.order[len(h.order)-1] = nil
	h.order = h.order[:len(h.order)-1]
	f.mu.Lock()
	h.tailCost.Add(-int64(f.tail.cost()))
	f.tail.release()
	f.mu.Unlock()
}

// deleted is the log's deletion hook. The stream's subscribers are handed a
// reset and ended; the stream is no longer followed, so that a subscriber
// arriving later starts from a tail that holds nothing of the deleted
// events.
func (h *Hub) deleted(name string, lowWater store.ID) {
	h.mu.Lock()
	defer h.mu.Unlock()
	// A merged feed goes on: its subscribers are told, in order with the
	// events queued before.
	for m := range h.merged {
		if m.match(name) {
			m.pushDeletion(name, lowWater)
			m.wake()
		}
	}
	f := h.streams[name]
	if f == nil {
		return
	}
	f.mu.Lock()
	f.deleted, f.lowWater = true, lowWater
	f.mu.Unlock()
	h.unfollow(f)
	f.wake()
}

// frameLen estimates the size of an event's frame from above, when its data
// has at most two line ends; more make it short.
func frameLen(e *store.Event) int {
	return len("id: \nevent: \ndata: \n\n") + 26 + len(e.Type) + len(e.Data) + 16
}

// maxFrameLen bounds the size of an event's frame without reading its data:
// as if every byte of it ended a line.
func maxFrameLen(e *store.Event) int {
	return len("id: \nevent: \ndata: \n\n") + 26 + len(e.Type) + 7*len(e.Data)
}

// frameBound bounds the size of an event's frame closely: each line end
// adds a "data: " prefix (a CRLF is counted twice, for less than that).
func frameBound(e *store.Event) int {
	ends := bytes.Count(e.Data, []byte{'\n'}) + bytes.Count(e.Data, []byte{'\r'})
	return len("id: \nevent: \ndata: \n\n") + 26 + len(e.Type) + len(e.Data) + len("data: ")*ends
}

// Close ends every subscription: their Next returns ErrClosed.
func (h *Hub) Close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	for m := range h.merged {
		m.gone.Store(true)
		m.mu.Lock()
		m.closed = true
		m.mu.Unlock()
		m.wake()
	}
	for _, f := range h.streams {
		f.mu.Lock()
		f.closed = true
		f.mu.Unlock()
		f.wake()
	}
}

// followed is the in-memory state of a stream with at least one subscriber.
type followed struct {
	name string
	refs int // guarded by Hub.mu
	slot int // index in Hub.order, guarded by Hub.mu

	mu     sync.RWMutex
	tail   tail
	notify chan struct{} // closed and replaced on every commit to the stream
	closed bool
	// deleted is set, with the stream's final low-water mark, when the
	// stream is deleted.
	deleted  bool
	lowWater store.ID
}

// wake closes the stream's notify channel, waking every subscriber waiting
// on it, and replaces it for the next wait.
func (f *followed) wake() {
	f.mu.Lock()
	f.wakeLocked()
	f.mu.Unlock()
}

// wakeLocked is wake for a caller that holds f.mu.
func (f *followed) wakeLocked() {
	close(f.notify)
	f.notify = make(chan struct{})
}

// SubscribeAfter opens a cursor over stream that resumes after the id
// after: the subscription hands out every event of the stream with a
// larger id, then follows live. The zero ID means from the stream's
// beginning. Its first read goes to the log, which alone can tell whether
// events after the resume point were trimmed (a "reset" then says so) or
// whether the id was never issued here.
func (h *Hub) SubscribeAfter(name string, after store.ID) (*Subscription, error) {
	return h.subscribe(name, after, true)
}

// SubscribeStart opens a cursor over stream that starts after the id
// after, as a new start rather than a resume: it hands out every retained
// event of the stream with a larger id, then follows live, like
// SubscribeAfter, but its first read claims no continuity with after, so
// it sends no reset for events removed before it (it starts at the oldest
// retained event) nor for an id beyond the newest (it waits for events
// above after). A start by time or by count uses it: such an after is a
// computed bound, not an event the client has seen. From its first read
// on, the subscription is as exact as any other: a trim that passes it
// later, or a deletion, is told with a reset.
func (h *Hub) SubscribeStart(name string, after store.ID) (*Subscription, error) {
	s, err := h.subscribe(name, after, true)
	if err != nil {
		return nil, err
	}
	s.starting = true
	return s, nil
}

// SubscribeLive opens a cursor over stream that starts after the newest
// committed event: it hands out only the events committed from now on, and
// no reset, since it has no resume point that could have been trimmed.
func (h *Hub) SubscribeLive(name string) (*Subscription, error) {
	return h.subscribe(name, store.ID{}, false)
}

// subscribe is SubscribeAfter when resuming is set, else SubscribeLive
// (after is then ignored).
func (h *Hub) subscribe(name string, after store.ID, resuming bool) (*Subscription, error) {
	if err := store.ValidateStream(name); err != nil {
		return nil, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, ErrClosed
	}
	f := h.streams[name]
	if f == nil {
		f = &followed{name: name, notify: make(chan struct{})}
		f.tail.init(h.opts.TailLen, h.opts.TailBytes, h.delivered)
		h.streams[name] = f
		f.slot = len(h.order)
		h.order = append(h.order, f)
	}
	f.refs++
	s := &Subscription{hub: h, f: f, cursor: after, resuming: resuming}
	if !resuming {
		// Every event up to delivered is committed, and every later commit
		// gets larger ids and reaches the tail.
		s.cursor = h.delivered
		s.known = h.delivered
	}
	return s, nil
}

// Handed reports how many events subscriptions have handed out since the
// hub was made: live (from the tails and merged queues) and replayed
// (read from the log). Resets count with the events around them.
func (h *Hub) Handed() (live, replayed uint64) {
	return h.handedLive.Load(), h.handedReplayed.Load()
}

// Following reports how many streams have subscribers.
func (h *Hub) Following() int {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return len(h.streams)
}

func (h *Hub) release(f *followed) {
	h.mu.Lock()
	defer h.mu.Unlock()
	f.refs--
	// A deleted stream's entry may already belong to a newer follower.
	if f.refs == 0 && h.streams[f.name] == f {
		h.unfollow(f)
	}
}
