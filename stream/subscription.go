package stream

import (
	"errors"
	"fmt"
	"slices"

	"github.com/sselog/sselog/store"
)

// Subscription is one follower's cursor over a stream. Its methods are not
// safe for concurrent use; one goroutine drives it.
type Subscription struct {
	hub    *Hub
	f      *followed
	cursor store.ID // id of the last event handed out
	// known is an id up to which every event of the stream has been handed
	// out: a replay read that came back short saw everything committed
	// before it began.
	known store.ID
	// buf is the replay page handed out last, and held is what it is
	// charged to the replay budget until the next call.
	buf    []byte
	held   int
	frames [][]byte
	closed bool
	// ending is set when the page in hand ends with a "deleted" reset;
	// once it is handed out, ended makes Next return ErrDeleted.
	ending bool
	ended  bool
	// resuming sends the first read to the log even when the tail could
	// serve it: only the log knows whether events after the resume point
	// were trimmed, and the tail may still hold them.
	resuming bool
	// starting marks a first read that claims no continuity with the
	// cursor (SubscribeStart): events removed after it, or a cursor beyond
	// the newest id, are not told with a reset. It ends with that read.
	starting bool
}

// Cursor is the id of the last event Next handed out (or the starting
// point, before any).
func (s *Subscription) Cursor() store.ID { return s.cursor }

// Next returns the frames of the events after the cursor that are ready
// now, in id order, and moves the cursor past them. The frames are valid
// until the next call. When none is ready it returns no frames and a
// channel that is closed when some may be. After Hub.Close it returns
// ErrClosed.
func (s *Subscription) Next() ([][]byte, <-chan struct{}, error) {
	if s.closed {
		return nil, nil, ErrClosed
	}
	// What the last call handed out has been written. Its page goes back
	// to the replay budget; the buffer is offered to this call's replay,
	// if it makes one, and dropped otherwise, so that a subscriber that
	// has caught up holds no page. The frames are cleared too: the slots
	// past the length would otherwise keep run buffers the tail has let
	// go of.
	spare := s.buf
	s.buf = nil
	s.putPage()
	clear(s.frames)
	s.frames = s.frames[:0]
	if s.ended {
		return nil, nil, ErrDeleted
	}
	for {
		f := s.f
		f.mu.RLock()
		if f.closed {
			f.mu.RUnlock()
			return nil, nil, ErrClosed
		}
		if f.deleted {
			// Whatever was still pending of the stream is gone with it.
			id := maxID(s.cursor, f.lowWater)
			f.mu.RUnlock()
			s.cursor, s.ended = id, true
			s.frames = append(s.frames, resetFrame(nil, id, resetDeleted, nil))
			return s.frames, nil, nil
		}
		wake := f.notify
		floor := f.tail.floor
		if !s.resuming && maxID(s.cursor, s.known).Compare(floor) >= 0 {
			var last store.ID
			s.frames, last = f.tail.appendAfter(s.frames, s.cursor)
			f.mu.RUnlock()
			if len(s.frames) == 0 {
				return nil, wake, nil
			}
			s.cursor = last
			s.hub.handedLive.Add(uint64(len(s.frames)))
			return s.frames, nil, nil
		}
		f.mu.RUnlock()

		// Behind the tail: read a page from the log. Taking the floor
		// before the read is what makes a short read a proof that
		// everything up to the floor has been seen.
		allowance := s.hub.pages.take(s.hub.opts.PageBytes)
		s.held = allowance
		if cap(spare) <= allowance {
			s.buf = spare[:0]
		}
		spare = nil
		n, err := s.replay(floor, allowance)
		if err != nil {
			s.buf = nil
			s.putPage()
			return nil, nil, err
		}
		s.resuming, s.starting = false, false
		if n == 0 {
			s.buf = nil
			s.putPage()
			continue
		}
		// Charge what the page holds: less than the allowance for a short
		// page, more when one event alone is larger.
		s.hub.pages.add(cap(s.buf) - s.held)
		s.held = cap(s.buf)
		s.frames = append(s.frames, s.buf)
		s.ended = s.ending
		s.hub.handedReplayed.Add(uint64(n))
		return s.frames, nil, nil
	}
}

// putPage gives the page in hand back to the replay budget.
func (s *Subscription) putPage() {
	if s.held != 0 {
		s.hub.pages.add(-s.held)
		s.held = 0
	}
}

// errPageFull ends a replay read that has filled its byte budget.
var errPageFull = errors.New("page full")

// replay reads one page after the cursor into s.buf and reports how many
// events it holds. A page ends at PageSize events or before its frames pass
// allowance bytes, whichever comes first; its first event is taken
// whatever its size. The buffer grows within the allowance, so that a page
// never holds more memory than it was allowed unless one event needs it.
func (s *Subscription) replay(floor store.ID, allowance int) (int, error) {
	page := s.hub.opts.PageSize
	n := 0
	// The cursor moves only once the whole page is in hand: a scan that
	// fails halfway must not skip what it read.
	cursor := s.cursor
	var first store.ID
	bounds, err := s.hub.log.Scan(s.f.name, cursor, page, func(e *store.Event) error {
		// The loose bound reads none of the data and settles most events;
		// near the end of the buffer, counting the data's line ends gives
		// a bound close enough to stop at the allowance.
		if len(s.buf)+maxFrameLen(e) > cap(s.buf) {
			need := len(s.buf) + frameBound(e)
			if need > cap(s.buf) {
				if n > 0 && need > allowance {
					// The next page starts with this event.
					return errPageFull
				}
				s.buf = growPage(s.buf, need, allowance)
			}
		}
		if n == 0 {
			first = e.ID
		}
		s.buf = AppendFrame(s.buf, e.ID, e.Type, e.Data)
		cursor = e.ID
		n++
		return nil
	})
	full := n == page
	if errors.Is(err, errPageFull) {
		full, err = true, nil
	}
	if err != nil {
		return 0, fmt.Errorf("replay %s: %w", s.f.name, err)
	}
	switch {
	case s.starting:
		// A start owes nothing below the low-water mark: the cursor moves
		// up to it, so that a later read does not take the removed events
		// for a gap in what this subscriber was handed. A cursor beyond
		// the newest id stays, and what follows is filtered by it.
		if cursor.Compare(bounds.LowWater) < 0 {
			cursor = bounds.LowWater
		}
	case s.resuming && (bounds.Foreign || bounds.Newest.Compare(s.cursor) < 0):
		// This database never issued the id: it is from another server, or
		// the database was replaced by an older copy. Nothing can be
		// replayed exactly; go live from the newest id there is, which the
		// same read transaction proved is the newest committed.
		s.buf = resetFrame(s.buf[:0], bounds.Newest, resetUnknown, nil)
		s.cursor = bounds.Newest
		return 1, nil
	case bounds.Gap(s.cursor):
		// Events after the cursor were removed: say so, in order, before
		// what is left. The reset carries the low-water mark as its id, so
		// a client that reconnects right after it is not told twice.
		reason := resetTrimmed
		if bounds.Deleted {
			reason, s.ending = resetDeleted, true
		}
		var oldest *store.ID
		if n > 0 {
			oldest = &first
		}
		reset := resetFrame(nil, bounds.LowWater, reason, oldest)
		s.buf = slices.Insert(s.buf, 0, reset...)
		if cursor.Compare(bounds.LowWater) < 0 {
			cursor = bounds.LowWater
		}
		n++
	}
	s.cursor = cursor
	if !full && floor.Compare(s.known) > 0 {
		s.known = floor
	}
	return n, nil
}

// Close releases the subscription.
func (s *Subscription) Close() {
	if s.closed {
		return
	}
	s.closed = true
	s.buf, s.frames = nil, nil
	s.putPage()
	s.hub.release(s.f)
}

func maxID(a, b store.ID) store.ID {
	if a.Compare(b) >= 0 {
		return a
	}
	return b
}
