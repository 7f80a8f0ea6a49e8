package store

import (
	"encoding/binary"
	"fmt"
	"slices"

	bolt "go.etcd.io/bbolt"
)

// Reads of several streams merged into one sequence. Ids are one space
// across streams, so the merge of their events in id order is the order
// they were committed in, and a position in the merge is one id: the
// reader's cursor, as for one stream.

// Selection names the streams a merged read covers: every stream in
// Names, and every stream of the log that Match accepts (nil: none).
// Match is called once for each stream the log knows (tombstones
// included), so a selection of names alone reads no list of streams.
type Selection struct {
	Names []string
	Match func(stream string) bool
}

// StreamGap describes a selected stream that lost events after the read's
// position: its low-water mark is above it.
type StreamGap struct {
	Stream string
	Bounds
	// Oldest is the stream's oldest retained event after the position;
	// zero when none is left.
	Oldest ID
}

// MergedBounds is what a merged read saw, in the same transaction as its
// events.
type MergedBounds struct {
	// Newest is the newest id committed in any stream when the read began.
	Newest ID
	// Gaps lists, in name order, the selected streams whose low-water
	// mark is above the position read after.
	Gaps []StreamGap
	// Streams is how many streams the read selected (tombstones
	// included): each cost it a cursor seek.
	Streams int
	// Foreign is Bounds.Foreign for the position read after.
	Foreign bool
}

// ScanMerged calls fn for each event with an id greater than after of the
// streams sel selects, in id order, at most limit of them (limit <= 0
// means no limit), in one read transaction, and reports from that
// transaction the newest id and the selected streams that lost events
// after it. The event passed to fn, and its Data, alias the database's
// memory map: they are valid only during the call. An error from fn ends
// the scan and is returned. Each page costs a cursor seek per selected
// stream that has events: callers keep selections and pages bounded.
func (l *Log) ScanMerged(sel Selection, after ID, limit int, fn func(*Event) error) (MergedBounds, error) {
	var mb MergedBounds
	err := l.view(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketMeta).Get(keyLastID); len(v) == len(ID{}) {
			mb.Newest = ID(v)
		}
		var h mergeHeap
		err := selected(tx, sel, func(name []byte, c counters) error {
			mb.Streams++
			var cur *bolt.Cursor
			var k, v []byte
			if b := tx.Bucket(bucketEvents).Bucket(name); b != nil {
				cur = b.Cursor()
				k, v = cur.Seek(after[:])
				if k != nil && ID(k) == after {
					k, v = cur.Next()
				}
			}
			if after.Compare(c.LowWater) < 0 {
				g := StreamGap{Stream: string(name), Bounds: Bounds{LowWater: c.LowWater, Deleted: c.Deleted, Newest: mb.Newest}}
				if k != nil {
					g.Oldest = ID(k)
				}
				mb.Gaps = append(mb.Gaps, g)
			}
			if k != nil {
				m := &mergeCursor{name: string(name), c: cur, k: k, v: v}
				m.setKey()
				h.cursors = append(h.cursors, m)
			}
			return nil
		})
		if err != nil {
			return err
		}
		h.init()
		var e Event // one for the whole scan: fn may not keep it
		for n := 0; len(h.cursors) > 0 && (limit <= 0 || n < limit); n++ {
			m := h.cursors[0]
			e.Stream = m.name
			if err := decodeValue(m.k, m.v, &e); err != nil {
				return fmt.Errorf("stream %s id %x: %w", m.name, m.k, err)
			}
			if err := fn(&e); err != nil {
				return err
			}
			if m.k, m.v = m.c.Next(); m.k == nil {
				h.popTop()
			} else {
				m.setKey()
				h.down(0)
			}
		}
		return nil
	})
	return mb, err
}

// selected calls fn for each stream sel selects that the streams bucket
// holds (tombstones included), in name order, each once.
func selected(tx *bolt.Tx, sel Selection, fn func(name []byte, c counters) error) error {
	st := tx.Bucket(bucketStreams)
	if sel.Match == nil {
		names := slices.Compact(slices.Sorted(slices.Values(sel.Names)))
		for _, name := range names {
			if v := st.Get([]byte(name)); v != nil {
				if err := fn([]byte(name), decodeCounters(v)); err != nil {
					return err
				}
			}
		}
		return nil
	}
	named := make(map[string]bool, len(sel.Names))
	for _, n := range sel.Names {
		named[n] = true
	}
	return st.ForEach(func(k, v []byte) error {
		if !named[string(k)] && !sel.Match(string(k)) {
			return nil
		}
		return fn(k, decodeCounters(v))
	})
}

// StartOfLastMerged returns the id after which the newest n events of the
// streams sel selects begin, in the merged order: the id of the event just
// before the n-th newest, found by walking back from each stream's newest
// in one read transaction. When the selected streams hold n events or
// fewer it is the zero ID: reading after it gives every retained event.
func (l *Log) StartOfLastMerged(sel Selection, n int) (after ID, err error) {
	if n < 1 {
		return ID{}, fmt.Errorf("start of the last %d events: n must be at least 1", n)
	}
	err = l.view(func(tx *bolt.Tx) error {
		h := mergeHeap{desc: true}
		err := selected(tx, sel, func(name []byte, _ counters) error {
			if b := tx.Bucket(bucketEvents).Bucket(name); b != nil {
				c := b.Cursor()
				if k, _ := c.Last(); k != nil {
					m := &mergeCursor{name: string(name), c: c, k: k}
					m.setKey()
					h.cursors = append(h.cursors, m)
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		h.init()
		for i := 0; i < n && len(h.cursors) > 0; i++ {
			m := h.cursors[0]
			if m.k, _ = m.c.Prev(); m.k == nil {
				h.popTop()
			} else {
				m.setKey()
				h.down(0)
			}
		}
		if len(h.cursors) > 0 {
			after = ID(h.cursors[0].k)
		}
		return nil
	})
	if err != nil {
		return ID{}, fmt.Errorf("start of the last %d events: %w", n, err)
	}
	return after, nil
}

// mergeCursor is one stream's position in a merged read. hi and lo are
// its key as two big-endian words: ids compare as those, which is cheaper
// than comparing byte slices, and the merge compares on every event.
type mergeCursor struct {
	name   string
	c      *bolt.Cursor
	k, v   []byte
	hi, lo uint64
}

func (m *mergeCursor) setKey() {
	if len(m.k) >= 16 {
		m.hi, m.lo = binary.BigEndian.Uint64(m.k), binary.BigEndian.Uint64(m.k[8:])
	} else {
		// Not an id (a damaged key, which decodeValue reports): sorts
		// first, so the error surfaces at once.
		m.hi, m.lo = 0, 0
	}
}

// mergeHeap orders stream cursors by their current key, smallest first,
// or largest first for a walk back: a binary heap written out, since
// container/heap's interface calls cost more than the comparisons.
type mergeHeap struct {
	cursors []*mergeCursor
	desc    bool
}

func (h *mergeHeap) before(a, b *mergeCursor) bool {
	if h.desc {
		a, b = b, a
	}
	return a.hi < b.hi || a.hi == b.hi && a.lo < b.lo
}

func (h *mergeHeap) init() {
	for i := len(h.cursors)/2 - 1; i >= 0; i-- {
		h.down(i)
	}
}

// down restores the heap below i after the key at i grew (shrank, for a
// walk back).
func (h *mergeHeap) down(i int) {
	c := h.cursors
	for {
		l := 2*i + 1
		if l >= len(c) {
			return
		}
		m := l
		if r := l + 1; r < len(c) && h.before(c[r], c[l]) {
			m = r
		}
		if !h.before(c[m], c[i]) {
			return
		}
		c[i], c[m] = c[m], c[i]
		i = m
	}
}

// popTop removes the first cursor.
func (h *mergeHeap) popTop() {
	last := len(h.cursors) - 1
	h.cursors[0] = h.cursors[last]
	h.cursors[last] = nil
	h.cursors = h.cursors[:last]
	h.down(0)
}
