package store_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/sselog/sselog/internal/testkit"
	"github.com/sselog/sselog/store"
)

// idAt is the id of millisecond ms with every entropy bit set: the largest
// id of that millisecond.
func idAt(ms uint64) store.ID {
	id := store.ID{byte(ms >> 40), byte(ms >> 32), byte(ms >> 24), byte(ms >> 16), byte(ms >> 8), byte(ms)}
	for i := 6; i < len(id); i++ {
		id[i] = 0xff
	}
	return id
}

// TestIDBefore pins the seek by time at its edges: exactly at a
// millisecond, the millisecond before is the bound; inside one, that
// millisecond is; the epoch has no millisecond before it; outside the
// range of ids is ErrTimeRange.
func TestIDBefore(t *testing.T) {
	const maxMs = 1<<48 - 1
	m := time.Date(2026, 3, 4, 5, 6, 7, 8_000_000, time.UTC) // 8 ms into a second
	mMs := uint64(m.UnixMilli())
	tests := []struct {
		name string
		t    time.Time
		want store.ID
		err  error
	}{
		{"exactly at a millisecond", m, idAt(mMs - 1), nil},
		{"inside a millisecond", m.Add(500 * time.Microsecond), idAt(mMs), nil},
		{"one nanosecond in", m.Add(time.Nanosecond), idAt(mMs), nil},
		{"in another zone", m.In(time.FixedZone("x", 7200)), idAt(mMs - 1), nil},
		{"the epoch", time.Unix(0, 0), store.ID{}, nil},
		{"inside the first millisecond", time.Unix(0, 1), idAt(0), nil},
		{"one millisecond after the epoch", time.UnixMilli(1), idAt(0), nil},
		{"the last millisecond of ids", time.UnixMilli(maxMs), idAt(maxMs - 1), nil},
		{"a nanosecond before the epoch", time.Unix(0, -1), store.ID{}, store.ErrTimeRange},
		{"year 1", time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC), store.ID{}, store.ErrTimeRange},
		{"inside the last millisecond", time.UnixMilli(maxMs).Add(time.Nanosecond), store.ID{}, store.ErrTimeRange},
		{"beyond the last millisecond", time.UnixMilli(maxMs + 1), store.ID{}, store.ErrTimeRange},
		{"the zero time", time.Time{}, store.ID{}, store.ErrTimeRange},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := store.IDBefore(tc.t)
			if !errors.Is(err, tc.err) || got != tc.want {
				t.Fatalf("IDBefore(%s) = %s, %v; want %s, %v", tc.t, got, err, tc.want, tc.err)
			}
		})
	}
}

// TestIDBeforeSeeks reads after IDBefore(t) from a log whose ids come from
// a clock the test sets: the first event read is the first one stamped at
// or after t, events a millisecond earlier are left out, and several
// events within t's millisecond are all read.
func TestIDBeforeSeeks(t *testing.T) {
	base := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	clock := newFakeClock(base)
	l := testkit.OpenAt(t, filepath.Join(t.TempDir(), "events.db"), store.Options{Now: clock.Now})
	var ids []store.ID
	for i, at := range []time.Duration{0, time.Millisecond, 2 * time.Millisecond, 2 * time.Millisecond, 2 * time.Millisecond, time.Second} {
		clock.Set(base.Add(at))
		got := mustAppend(t, l, "s", makeEvents("", 1, i)...)
		ids = append(ids, got...)
	}
	tests := []struct {
		name  string
		since time.Time
		first int // index into ids of the first event read; len(ids): none
	}{
		{"before everything", base.Add(-time.Hour), 0},
		{"at the first event", base, 0},
		{"inside the first event's millisecond", base.Add(time.Microsecond), 1},
		{"at the second event", base.Add(time.Millisecond), 1},
		{"at a millisecond of three events", base.Add(2 * time.Millisecond), 2},
		{"between events", base.Add(500 * time.Millisecond), 5},
		{"at the last event", base.Add(time.Second), 5},
		{"after everything", base.Add(time.Second + time.Millisecond), len(ids)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			after, err := store.IDBefore(tc.since)
			if err != nil {
				t.Fatal(err)
			}
			page, err := l.ReadAfter("s", after, 0)
			if err != nil {
				t.Fatal(err)
			}
			want := ids[tc.first:]
			if len(page) != len(want) || len(want) > 0 && page[0].ID != want[0] {
				t.Fatalf("after IDBefore(%s): %d events from %v, want %d from %v", tc.since, len(page), idsOf(page), len(want), want)
			}
			for _, e := range page {
				if e.ID.Time().Before(tc.since) {
					t.Fatalf("event %s at %s read for since %s", e.ID, e.ID.Time(), tc.since)
				}
			}
		})
	}
}

// TestStartOfLast checks the start by count: reading after it gives
// exactly the newest n events, or all of a stream that holds fewer; a
// trimmed or deleted stream starts at its low-water mark, so that what
// was removed is not asked for; n below 1 is refused.
func TestStartOfLast(t *testing.T) {
	l := testkit.Open(t)
	ids := mustAppend(t, l, "s", makeEvents("", 100, 0)...)
	trimmed := mustAppend(t, l, "trimmed", makeEvents("", 20, 0)...)
	for {
		res, err := l.Trim("trimmed", store.Cut{MaxEvents: 10}, 7)
		if err != nil {
			t.Fatal(err)
		}
		if !res.More {
			break
		}
	}
	gone := mustAppend(t, l, "gone", makeEvents("", 3, 0)...)
	if _, err := l.DeleteStream(context.Background(), "gone"); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name   string
		stream string
		n      int
		want   store.ID
		count  int // events read after want
	}{
		{"last 1", "s", 1, ids[98], 1},
		{"last 50 of 100", "s", 50, ids[49], 50},
		{"last 99 of 100", "s", 99, ids[0], 99},
		{"exactly all", "s", 100, store.ID{}, 100},
		{"more than the stream holds", "s", 10000, store.ID{}, 100},
		{"within the retained", "trimmed", 5, trimmed[14], 5},
		{"all retained", "trimmed", 10, trimmed[9], 10},
		{"more than retained", "trimmed", 15, trimmed[9], 10},
		{"deleted stream", "gone", 2, gone[2], 0},
		{"never published", "new", 5, store.ID{}, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			after, err := l.StartOfLast(tc.stream, tc.n)
			if err != nil || after != tc.want {
				t.Fatalf("StartOfLast(%s, %d) = %s, %v; want %s", tc.stream, tc.n, after, err, tc.want)
			}
			page, bounds, err := l.ReadPage(tc.stream, after, 0)
			if err != nil {
				t.Fatal(err)
			}
			if len(page) != tc.count || bounds.Gap(after) {
				t.Fatalf("after %s: %d events (gap %v), want %d and no gap", after, len(page), bounds.Gap(after), tc.count)
			}
		})
	}

	for _, n := range []int{0, -1} {
		if _, err := l.StartOfLast("s", n); err == nil {
			t.Errorf("StartOfLast(s, %d) succeeded", n)
		}
	}
	mustClose(t, l)
	if _, err := l.StartOfLast("s", 1); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("StartOfLast after Close: %v, want ErrClosed", err)
	}
}
