package stream

import (
	"sort"
	"unsafe"

	"github.com/sselog/sselog/store"
)

// tail is a ring of the most recent frames of one stream, in id order. It
// holds every event of the stream committed after floor: when a frame is
// evicted to respect the limits, floor moves up to its id, and subscribers
// behind floor read from the log instead.
//
// The frames of one commit run share one buffer, which stays in memory
// until the run's last frame is evicted (eviction is oldest first). So a
// frame's cost is zero except for the run's last, which carries the whole
// buffer's capacity: bytes is then exactly the memory of the buffers the
// ring holds, however many frames of a run are already gone.
type tail struct {
	maxLen   int
	minLen   int // the ring's first size, below which it never shrinks
	ids      []store.ID
	frames   [][]byte
	costs    []int
	start, n int
	bytes    int
	maxBytes int
	floor    store.ID
}

// minTailLen is a new ring's size; it doubles up to maxLen as frames
// arrive, so a quiet stream with a subscriber costs little memory.
const minTailLen = 16

// slotBytes is the memory of one ring slot: an id, a frame's slice header
// and its cost.
const slotBytes = int(unsafe.Sizeof(store.ID{}) + unsafe.Sizeof([]byte(nil)) + unsafe.Sizeof(0))

func (t *tail) init(maxLen, maxBytes int, floor store.ID) {
	t.maxLen = maxLen
	t.minLen = min(minTailLen, maxLen)
	t.ids = make([]store.ID, t.minLen)
	t.frames = make([][]byte, t.minLen)
	t.costs = make([]int, t.minLen)
	t.maxBytes = maxBytes
	t.floor = floor
}

// cost is what the tail holds against the hub's TailBudget: its frame
// buffers and the slots its ring has grown by. The first minLen slots are
// left out: they are a fixed cost of every followed stream, bounded by the
// number of subscriptions rather than by traffic, and counting them would
// let many quiet streams crowd out the busy ones.
func (t *tail) cost() int {
	return t.bytes + (len(t.ids)-t.minLen)*slotBytes
}

// push appends the frame of event id; cost is what it frees when evicted
// (see tail).
func (t *tail) push(id store.ID, frame []byte, cost int) {
	if t.n == len(t.ids) && t.n < t.maxLen {
		t.resize(min(2*len(t.ids), t.maxLen))
	}
	for t.n > 0 && (t.n == len(t.ids) || t.bytes+cost > t.maxBytes) {
		t.evict()
	}
	i := (t.start + t.n) % len(t.ids)
	t.ids[i], t.frames[i], t.costs[i] = id, frame, cost
	t.n++
	t.bytes += cost
}

// shrink evicts the oldest frames until the tail's cost is at most limit,
// and gives back the ring slots the evictions left empty: a ring grown to
// thousands of slots by a burst would otherwise keep costing more than its
// share of the budget. It may evict every frame, the newest included.
func (t *tail) shrink(limit int) {
	for t.n > 0 && t.cost() > limit {
		t.evict()
		if len(t.ids) > t.minLen && t.n <= len(t.ids)/4 {
			t.resize(max(t.minLen, 2*t.n))
		}
	}
}

// resize moves the frames to a ring of size n, which must hold them all.
func (t *tail) resize(n int) {
	ids, frames, costs := make([]store.ID, n), make([][]byte, n), make([]int, n)
	for i := 0; i < t.n; i++ {
		j := t.at(i)
		ids[i], frames[i], costs[i] = t.ids[j], t.frames[j], t.costs[j]
	}
	t.ids, t.frames, t.costs, t.start = ids, frames, costs, 0
}

func (t *tail) evict() {
	t.floor = t.ids[t.start]
	t.bytes -= t.costs[t.start]
	t.frames[t.start], t.costs[t.start] = nil, 0
	t.start = (t.start + 1) % len(t.ids)
	t.n--
}

// release lets go of every frame and of the ring, once the stream is no
// longer followed; its cost is zero from then on.
func (t *tail) release() {
	t.ids, t.frames, t.costs = nil, nil, nil
	t.start, t.n, t.bytes, t.minLen = 0, 0, 0, 0
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
