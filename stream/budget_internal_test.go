package stream

import (
	"bytes"
	"testing"

	"github.com/sselog/sselog/store"
)

// TestFrameBound checks the bounds a replay page relies on to stay within
// its allowance: neither may be short of the real frame.
func TestFrameBound(t *testing.T) {
	for _, tc := range []struct{ typ, data string }{
		{"", ""},
		{"", "{}"},
		{"update", `{"a":1}`},
		{"", "\n"},
		{"t", "a\nb\rc\r\nd"},
		{"", "\r\n\r\n\r\n"},
		{"", "\n\n\n\n\n\n\n\n"},
		{"t", "\r\r\r\r"},
	} {
		e := store.Event{Type: tc.typ, Data: []byte(tc.data)}
		n := len(AppendFrame(nil, e.ID, e.Type, e.Data))
		if b := frameBound(&e); b < n {
			t.Errorf("frameBound(%q, %q) = %d, frame is %d", tc.typ, tc.data, b, n)
		}
		if m := maxFrameLen(&e); m < frameBound(&e) {
			t.Errorf("maxFrameLen(%q, %q) = %d, below frameBound %d", tc.typ, tc.data, m, frameBound(&e))
		}
	}
}

// TestTailCost checks that a tail counts the memory it holds: a run's
// buffer until its last frame goes, and the slots its ring has grown by,
// given back when a cut leaves them empty.
func TestTailCost(t *testing.T) {
	var tl tail
	tl.init(1024, 1<<30, store.ID{})
	ids := make([]store.ID, 100)
	for i := range ids {
		ids[i][15] = byte(i + 1)
	}
	// Two runs of 50 frames, 10 bytes each, in buffers of 600 and 700.
	buf1, buf2 := make([]byte, 500, 600), make([]byte, 500, 700)
	for i := range 50 {
		cost := 0
		if i == 49 {
			cost = cap(buf1)
		}
		tl.push(ids[i], buf1[10*i:10*i+10:10*i+10], cost)
	}
	for i := range 50 {
		cost := 0
		if i == 49 {
			cost = cap(buf2)
		}
		tl.push(ids[50+i], buf2[10*i:10*i+10:10*i+10], cost)
	}
	ring := (128 - minTailLen) * slotBytes
	if got, want := tl.cost(), 600+700+ring; got != want {
		t.Fatalf("cost %d, want %d", got, want)
	}
	// Cutting into the first run frees nothing until its last frame goes.
	tl.shrink(tl.cost() - 1)
	if tl.n != 50 || tl.floor != ids[49] {
		t.Fatalf("after a cut by one byte: %d frames, floor %v; want the first run gone, floor at its last", tl.n, tl.floor)
	}
	if got, want := tl.cost(), 700+ring; got != want {
		t.Fatalf("cost %d after the first run went, want %d", got, want)
	}
	// Emptied, the ring is back to its first size.
	tl.shrink(0)
	if tl.n != 0 || tl.cost() != 0 || len(tl.ids) != minTailLen || tl.floor != ids[99] {
		t.Fatalf("after shrink(0): %d frames, cost %d, ring %d, floor %v", tl.n, tl.cost(), len(tl.ids), tl.floor)
	}
	// The frames left are the newest, in order, after a cut that shrinks the
	// ring on the way.
	for i := range 100 {
		tl.push(ids[i], bytes.Repeat([]byte{byte(i)}, 10), 10)
	}
	tl.shrink(200)
	got, last := tl.appendAfter(nil, store.ID{})
	if len(got) != tl.n || last != ids[99] || tl.cost() > 200 {
		t.Fatalf("after shrink(200): %d frames (n %d), last %v, cost %d", len(got), tl.n, last, tl.cost())
	}
	for i, f := range got {
		if f[0] != byte(100-len(got)+i) {
			t.Fatalf("frame %d is event %d, want %d", i, f[0], 100-len(got)+i)
		}
	}
}
