package stream

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/sselog/sselog/store"
)

// A merged subscription follows several streams as one sequence, in id
// order. Ids are one space across streams, so one cursor, the id of the
// last event handed out, is its whole position: a client resumes a merged
// feed with one Last-Event-ID.
//
// It has two sources. Before it has caught up, and whenever it falls
// behind, it reads the log (store.ScanMerged), whose read transactions
// see every stream at one instant: a short page proves nothing older is
// missing, in any stream. Once caught up, the commit hook hands it the
// frames of its streams as they commit, into a queue it drains; events
// that reach both (committed while it caught up) are told apart by the
// cursor. A queue that outgrows its bound is dropped, and the log serves
// again. Deletions go into the queue as well, in order, and are never
// dropped: a stream deleted while followed is told with a reset even when
// its last events were already handed out.

// Merged frames carry an envelope in their data, so that a listener knows
// the source: {"stream":"<name>","data":<the event's data>}.

// Defaults for zero MergedOptions fields.
const (
	DefaultMergedQueueLen   = 4096
	DefaultMergedQueueBytes = 4 << 20
)

// MergedStart is where a merged subscription begins.
type MergedStart int

const (
	// MergedLive starts after the newest committed event.
	MergedLive MergedStart = iota
	// MergedResume resumes after an id a client was handed: events its
	// streams lost after it are told with resets, and an id this log never
	// issued with an "unknown" reset.
	MergedResume
	// MergedFrom starts after a computed id (a time, a count): it claims
	// no continuity, so its first read tells nothing of what was removed
	// before it.
	MergedFrom
)

// MergedOptions configures SubscribeMerged.
type MergedOptions struct {
	// Selection is what the log reads cover; Match must accept exactly the
	// same streams (it decides for each commit).
	Selection store.Selection
	Match     func(stream string) bool
	Start     MergedStart
	// After is the id a MergedResume or MergedFrom start reads after.
	After store.ID
}

// Merged is one follower's cursor over several streams. Its methods are not
// safe for concurrent use; one goroutine drives it.
type Merged struct {
	hub    *Hub
	sel    store.Selection
	match  func(string) bool
	cursor store.ID
	// replaying sends reads to the log; resuming and starting qualify the
	// first of them, as for a Subscription.
	replaying, resuming, starting bool
	// told is, for each stream a reset was sent for, what it told: a later
	// read or deletion that tells no more is not sent again. A deletion
	// tells more than a trim at the same mark (a trim of every event
	// leaves the mark a deletion keeps).
	told map[string]toldReset

	buf   []byte // the page in hand
	held  int    // what it is charged to the replay budget
	items []pageItem
	// streams is how many streams the last read selected, and replayed how
	// many events it read.
	streams, replayed int
	frames            [][]byte
	taken             []queued // the queue taken by the last call, kept until the next

	// wokenSeq is the commit that last queued it a frame; only the commit
	// hook uses it. gone is set once it is closed.
	wokenSeq uint64
	gone     atomic.Bool

	mu         sync.Mutex // guards what the commit and deletion hooks write
	queue      []queued
	queueBytes int
	overflow   bool // events were dropped from the queue: read the log
	notify     chan struct{}
	closed     bool
}

// toldReset is what a reset sent for a stream said.
type toldReset struct {
	lowWater store.ID
	deleted  bool
}

// pageItem is an event of a page read from the log: its id and where its
// frame is in the page's buffer.
type pageItem struct {
	id       store.ID
	from, to int
}

// queued is a frame the commit hook handed over, or a deletion (frame
// nil): the stream and its final low-water mark.
type queued struct {
	id       store.ID
	frame    []byte
	stream   string
	deletion bool
}

// SubscribeMerged opens a merged subscription.
func (h *Hub) SubscribeMerged(opts MergedOptions) (*Merged, error) {
	if opts.Match == nil {
		return nil, errors.New("merged subscription without Match")
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, ErrClosed
	}
	m := &Merged{
		hub: h, sel: opts.Selection, match: opts.Match,
		cursor: opts.After, told: make(map[string]toldReset),
		notify: make(chan struct{}),
	}
	switch opts.Start {
	case MergedLive:
		// Every event up to delivered is committed, and every later commit
		// reaches the queue.
		m.cursor = h.delivered
	case MergedResume:
		m.replaying, m.resuming = true, true
	default:
		m.replaying, m.starting = true, true
	}
	if h.merged == nil {
		h.merged = make(map[*Merged]struct{})
	}
	h.merged[m] = struct{}{}
	for name, subs := range h.mergedFor {
		if m.match(name) {
			// Never grown in place: a slice is the hook's to read
			// until it is replaced.
			h.mergedFor[name] = append(subs[:len(subs):len(subs)], m)
			h.cached++
		}
	}
	return m, nil
}

// Cursor is the id of the last event Next handed out (or the starting
// point, before any).
func (m *Merged) Cursor() store.ID { return m.cursor }

// Close releases the subscription.
func (m *Merged) Close() {
	h := m.hub
	h.mu.Lock()
	if _, ok := h.merged[m]; ok {
		delete(h.merged, m)
		m.gone.Store(true) // the hook drops it from mergedFor when it meets it
	}
	h.mu.Unlock()
	m.mu.Lock()
	m.closed = true
	m.queue, m.taken = nil, nil
	m.mu.Unlock()
	m.buf, m.frames = nil, nil
	m.putPage()
}

// Next returns the frames after the cursor that are ready now, in id
// order, and moves the cursor past them. The frames are valid until the
// next call. When none is ready it returns no frames and a channel that is
// closed when some may be. After Hub.Close or Close it returns ErrClosed.
func (m *Merged) Next() ([][]byte, <-chan struct{}, error) {
	spare := m.buf
	m.buf = nil
	m.putPage()
	clear(m.frames)
	m.frames = m.frames[:0]
	clear(m.taken)
	for {
		m.mu.Lock()
		if m.closed {
			m.mu.Unlock()
			return nil, nil, ErrClosed
		}
		if !m.replaying && !m.overflow {
			// Swap the queue with the one taken last time, whose frames
			// the caller is done with.
			m.taken, m.queue = m.queue, m.taken[:0]
			m.queueBytes = 0
			wake := m.notify
			m.mu.Unlock()
			for _, q := range m.taken {
				m.frames = m.appendQueued(m.frames, q)
			}
			if len(m.frames) == 0 {
				return nil, wake, nil
			}
			m.hub.handedLive.Add(uint64(len(m.frames)))
			return m.frames, nil, nil
		}
		// The log serves until a read comes back short, however many
		// pages that takes; what is dropped from now on is noticed by the
		// next call.
		m.replaying, m.overflow = true, false
		m.mu.Unlock()

		allowance := m.hub.pages.take(m.hub.opts.PageBytes)
		m.held = allowance
		if cap(spare) <= allowance {
			m.buf = spare[:0]
		}
		spare = nil
		caughtUp, err := m.replay(allowance)
		if err != nil {
			m.buf = nil
			m.putPage()
			return nil, nil, err
		}
		if caughtUp {
			m.replaying = false
		}
		if len(m.frames) == 0 {
			m.buf = nil
			m.putPage()
			continue
		}
		m.hub.pages.add(cap(m.buf) - m.held)
		m.held = cap(m.buf)
		m.hub.handedReplayed.Add(uint64(m.replayed))
		return m.frames, nil, nil
	}
}

// appendQueued appends the frame of q, if it is news to this subscriber.
func (m *Merged) appendQueued(frames [][]byte, q queued) [][]byte {
	if q.deletion {
		return m.appendReset(frames, q.stream, q.id, resetDeleted, nil)
	}
	if q.id.Compare(m.cursor) <= 0 {
		return frames // also read from the log while catching up
	}
	m.cursor = q.id
	return append(frames, q.frame)
}

// appendReset appends a reset of stream with the low-water mark lowWater,
// unless one that told as much was sent. Its id is lowWater where that
// moves the cursor forward; where it would move it back (a deletion of a
// stream whose events were handed out), it has none: a feed's ids never
// decrease.
func (m *Merged) appendReset(frames [][]byte, stream string, lowWater store.ID, reason string, oldest *store.ID) [][]byte {
	deleted := reason == resetDeleted
	if told, ok := m.told[stream]; ok && told.lowWater.Compare(lowWater) >= 0 && (told.deleted || !deleted) {
		return frames
	}
	m.told[stream] = toldReset{lowWater, deleted}
	var b []byte
	if lowWater.Compare(m.cursor) > 0 {
		m.cursor = lowWater
		b = mergedResetFrame(nil, &lowWater, stream, reason, oldest)
	} else {
		b = mergedResetFrame(nil, nil, stream, reason, oldest)
	}
	return append(frames, b)
}

// replay reads one page of the merged streams after the cursor into
// m.buf and m.frames, with the resets of the streams that lost events
// after it in their places, and reports whether the page came back short:
// everything committed before the read began has then been handed out.
func (m *Merged) replay(allowance int) (caughtUp bool, err error) {
	// Each read seeks a cursor in every selected stream: a wide selection
	// reads pages wide enough to pay for that (still within the bytes
	// allowed), rather than a seek per stream for every PageSize events.
	page := max(m.hub.opts.PageSize, m.streams)
	items := m.items[:0]
	defer func() { m.items, m.replayed = items[:0], len(items) }()
	n := 0
	mb, err := m.hub.log.ScanMerged(m.sel, m.cursor, page, func(e *store.Event) error {
		need := len(m.buf) + mergedFrameLen(e)
		if need > cap(m.buf) {
			if n > 0 && need > allowance {
				return errPageFull
			}
			m.buf = growPage(m.buf, need, allowance)
		}
		start := len(m.buf)
		m.buf = appendMergedFrame(m.buf, e)
		items = append(items, pageItem{e.ID, start, len(m.buf)})
		n++
		return nil
	})
	full := n == page
	if errors.Is(err, errPageFull) {
		full, err = true, nil
	}
	if err != nil {
		return false, fmt.Errorf("merged replay: %w", err)
	}
	m.streams = mb.Streams
	if m.resuming && (mb.Foreign || mb.Newest.Compare(m.cursor) < 0) {
		// This database never issued the id: go live from the newest id
		// there is, which the same transaction proved is the newest.
		m.resuming = false
		m.frames = append(m.frames, resetFrame(nil, mb.Newest, resetUnknown, nil))
		m.cursor = mb.Newest
		return true, nil
	}
	m.resuming = false
	gaps := mb.Gaps
	if m.starting {
		// A start claims no continuity: what was removed before it is
		// not news.
		for _, g := range gaps {
			// What was removed before the start is not news; a
			// deletion found there still is, once the stream's
			// subscribers would be told it (the deletion hook).
			m.told[g.Stream] = toldReset{lowWater: g.LowWater}
		}
		gaps, m.starting = nil, false
	}
	if len(gaps) == 0 && len(items) > 0 {
		// The usual page: its frames, in one buffer, go out as one.
		m.cursor = items[len(items)-1].id
		m.frames = append(m.frames, m.buf)
		return !full, nil
	}
	// Resets go where their low-water marks fall among the events, in one
	// pass over both in id order; those beyond a full page wait for the
	// page that reaches them.
	slices.SortFunc(gaps, func(a, b store.StreamGap) int { return a.LowWater.Compare(b.LowWater) })
	g := 0
	for _, it := range items {
		for ; g < len(gaps) && gaps[g].LowWater.Compare(it.id) < 0; g++ {
			m.frames = m.gapReset(m.frames, gaps[g])
		}
		m.cursor = it.id
		m.frames = append(m.frames, m.buf[it.from:it.to:it.to])
	}
	if !full {
		for ; g < len(gaps); g++ {
			m.frames = m.gapReset(m.frames, gaps[g])
		}
	}
	return !full, nil
}

func (m *Merged) gapReset(frames [][]byte, g store.StreamGap) [][]byte {
	reason := resetTrimmed
	if g.Deleted {
		reason = resetDeleted
	}
	var oldest *store.ID
	if !g.Oldest.IsZero() {
		oldest = &g.Oldest
	}
	return m.appendReset(frames, g.Stream, g.LowWater, reason, oldest)
}

func (m *Merged) putPage() {
	if m.held != 0 {
		m.hub.pages.add(-m.held)
		m.held = 0
	}
}

// push hands the subscriber the frames of one commit run of a stream it
// follows.
func (m *Merged) push(run []queued, bytes int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return
	}
	// While the log serves it (catching up, or after an overflow), the
	// queue still keeps what is committed, within the bound: that is
	// what it goes on with once caught up.
	if len(m.queue)+len(run) > m.hub.opts.MergedQueueLen || m.queueBytes+bytes > m.hub.opts.MergedQueueBytes {
		// Too far behind to queue: keep the deletions, drop the events,
		// and let the log serve them.
		kept := m.queue[:0]
		for _, q := range m.queue {
			if q.deletion {
				kept = append(kept, q)
			}
		}
		clear(m.queue[len(kept):])
		m.queue, m.queueBytes, m.overflow = kept, 0, true
		return
	}
	m.queue = append(m.queue, run...)
	m.queueBytes += bytes
}

// pushDeletion queues a deletion of stream, which is never dropped.
func (m *Merged) pushDeletion(stream string, lowWater store.ID) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.closed {
		m.queue = append(m.queue, queued{id: lowWater, stream: stream, deletion: true})
	}
}

func (m *Merged) wake() {
	m.mu.Lock()
	close(m.notify)
	m.notify = make(chan struct{})
	m.mu.Unlock()
}

// mergedFrameLen bounds the size of an event's merged frame from above,
// when its data has at most two line ends (compact JSON has none).
func mergedFrameLen(e *store.Event) int {
	return frameLen(e) + len(`{"stream":"","data":}`) + len(e.Stream)
}

// appendMergedFrame appends the frame of e in a merged feed: its data is
// the envelope {"stream":"<name>","data":<data>}. Stream names need no
// escaping (store.ValidateStream). Compact JSON, which is what the HTTP
// API stores, has no line ends, so the envelope is written in place as one
// data line; data with line ends goes through AppendFrame's split.
func appendMergedFrame(b []byte, e *store.Event) []byte {
	if indexLineEnd(e.Data) >= 0 {
		env := make([]byte, 0, len(`{"stream":"","data":}`)+len(e.Stream)+len(e.Data))
		env = append(append(append(env, `{"stream":"`...), e.Stream...), `","data":`...)
		env = append(append(env, e.Data...), '}')
		return AppendFrame(b, e.ID, e.Type, env)
	}
	b = append(b, "id: "...)
	b = e.ID.AppendText(b)
	if e.Type != "" {
		b = append(append(b, "\nevent: "...), e.Type...)
	}
	b = append(append(b, "\ndata: {\"stream\":\""...), e.Stream...)
	b = append(append(b, `","data":`...), e.Data...)
	return append(b, "}\n\n"...)
}

// mergedResetFrame appends a reset of one stream of a merged feed: data
// {"stream":..., "reason":..., "oldest_id":... (trims only)}, with the id
// line only when id is given.
func mergedResetFrame(b []byte, id *store.ID, stream, reason string, oldest *store.ID) []byte {
	data := make([]byte, 0, 128)
	data = append(data, `{"stream":"`...)
	data = append(data, stream...)
	data = append(data, `","reason":"`...)
	data = append(data, reason...)
	data = append(data, '"')
	if reason == resetTrimmed {
		data = append(data, `,"oldest_id":"`...)
		if oldest != nil {
			data = oldest.AppendText(data)
		}
		data = append(data, '"')
	}
	data = append(data, '}')
	if id != nil {
		return AppendFrame(b, *id, store.ResetType, data)
	}
	b = append(b, "event: "+store.ResetType+"\ndata: "...)
	b = append(b, data...)
	return append(b, "\n\n"...)
}
