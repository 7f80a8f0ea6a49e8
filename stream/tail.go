package stream

import (
	"sort"

	"github.com/sselog/sselog/store"
)

// tail is a ring of the most recent frames of one stream, in id order. It
// holds every event of the stream committed after floor: when a frame is
// evicted to respect the limits, floor moves up to its id, and subscribers
// behind floor read from the log instead.
type tail struct {
	maxLen   int
	ids      []store.ID
	frames   [][]byte
	start, n int
	bytes    int
	maxBytes int
	floor    store.ID
}

// minTailLen is a new ring's size; it doubles up to maxLen as frames
// arrive, so a quiet stream with a subscriber costs little memory.
const minTailLen = 16

func (t *tail) init(maxLen, maxBytes int, floor store.ID) {
	t.maxLen = maxLen
	t.ids = make([]store.ID, min(minTailLen, maxLen))
	t.frames = make([][]byte, len(t.ids))
	t.maxBytes = maxBytes
	t.floor = floor
}

func (t *tail) push(id store.ID, frame []byte) {
	if t.n == len(t.ids) && t.n < t.maxLen {
		t.grow()
	}
	for t.n > 0 && (t.n == len(t.ids) || t.bytes+len(frame) > t.maxBytes) {
		t.evict()
	}
	i := (t.start + t.n) % len(t.ids)
	t.ids[i], t.frames[i] = id, frame
	t.n++
	t.bytes += len(frame)
}

func (t *tail) grow() {
	n := min(2*len(t.ids), t.maxLen)
	ids, frames := make([]store.ID, n), make([][]byte, n)
	for i := 0; i < t.n; i++ {
		ids[i], frames[i] = t.ids[t.at(i)], t.frames[t.at(i)]
	}
	t.ids, t.frames, t.start = ids, frames, 0
}

func (t *tail) evict() {
	t.floor = t.ids[t.start]
	t.bytes -= len(t.frames[t.start])
	t.frames[t.start] = nil
	t.start = (t.start + 1) % len(t.ids)
	t.n--
}

func (t *tail) at(i int) int { return (t.start + i) % len(t.ids) }

// appendAfter appends the frames with ids greater than after and returns
// the id of the last one appended.
func (t *tail) appendAfter(dst [][]byte, after store.ID) ([][]byte, store.ID) {
	i := sort.Search(t.n, func(i int) bool { return t.ids[t.at(i)].Compare(after) > 0 })
	if i == t.n {
		return dst, after
	}
	for j := i; j < t.n; j++ {
		dst = append(dst, t.frames[t.at(j)])
	}
	return dst, t.ids[t.at(t.n-1)]
}
