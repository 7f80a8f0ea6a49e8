package store

import (
	"testing"
	"time"
)

// The entropy is 80 bits split over two words; the carry between them and
// the overflow into the next millisecond are too rare to meet through Append.
func TestGeneratorEntropyCarry(t *testing.T) {
	t0 := time.Date(2030, 6, 1, 12, 0, 0, 0, time.UTC)
	ms := uint64(t0.UnixMilli())
	now := func() time.Time { return t0 }
	withEntropy := func(ms uint64, e ...byte) ID {
		id := fresh(ms)
		copy(id[6:], e)
		return id
	}

	for _, tc := range []struct {
		name string
		last ID
		want ID
	}{
		{"plain increment", withEntropy(ms, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1), withEntropy(ms, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2)},
		{"carry into the high word",
			withEntropy(ms, 0x12, 0x34, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff),
			withEntropy(ms, 0x12, 0x35, 0, 0, 0, 0, 0, 0, 0, 0)},
		{"carry within the high word",
			withEntropy(ms, 0x12, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff),
			withEntropy(ms, 0x13, 0, 0, 0, 0, 0, 0, 0, 0, 0)},
		// The clock is behind the last id here too: increments continue
		// from the last id, not from the clock.
		{"ahead of the clock", withEntropy(ms+5000, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9), withEntropy(ms+5000, 0, 0, 0, 0, 0, 0, 0, 0, 0, 10)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := &generator{last: tc.last, now: now}
			if got := g.next(); got != tc.want {
				t.Fatalf("next after %x = %x, want %x", tc.last[:], got[:], tc.want[:])
			}
		})
	}

	t.Run("overflow borrows the next millisecond", func(t *testing.T) {
		last := withEntropy(ms, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff)
		g := &generator{last: last, now: now}
		got := g.next()
		if got.ms() != ms+1 {
			t.Fatalf("next after full entropy has ms %d, want %d", got.ms(), ms+1)
		}
		if got.Compare(last) <= 0 {
			t.Fatalf("next %x not after %x", got[:], last[:])
		}
		// Fresh entropy keeps its top bit clear, leaving room to increment.
		if got[6]&0x80 != 0 {
			t.Fatalf("fresh entropy %x has its top bit set", got[6:])
		}
	})
}

// A clock before 1970 must not wrap to the largest timestamp: every id
// after it would then be stuck at the end of the id space.
func TestGeneratorClockBefore1970(t *testing.T) {
	g := &generator{now: func() time.Time { return time.Unix(-10, 0) }}
	id := g.next()
	if id.ms() != 0 {
		t.Fatalf("id at a pre-1970 clock has timestamp %d ms, want 0", id.ms())
	}
	g.now = time.Now
	if next := g.next(); next.Compare(id) <= 0 || next.ms() == 0 {
		t.Fatalf("id after the clock recovered = %v, want a current one above %v", next, id)
	}
}
