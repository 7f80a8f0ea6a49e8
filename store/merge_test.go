package store_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/sselog/sselog/internal/testkit"
	"github.com/sselog/sselog/store"
)

// scanMerged reads sel after after in pages of page events, as a
// subscriber does, and returns every event and the first page's bounds.
func scanMerged(t *testing.T, l *store.Log, sel store.Selection, after store.ID, page int) ([]store.Event, store.MergedBounds) {
	t.Helper()
	var out []store.Event
	var first store.MergedBounds
	for i := 0; ; i++ {
		n := 0
		mb, err := l.ScanMerged(sel, after, page, func(e *store.Event) error {
			out = append(out, store.Event{ID: e.ID, Stream: e.Stream, Type: e.Type, Data: slices.Clone(e.Data)})
			after = e.ID
			n++
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			first = mb
		}
		if n < page || page <= 0 {
			return out, first
		}
	}
}

func TestScanMerged(t *testing.T) {
	l := testkit.Open(t)
	var all []store.Event // in commit order, which is id order
	for i := range 30 {
		stream := []string{"orders", "audit.a", "audit.b", "other"}[i%4]
		ids := mustAppend(t, l, stream, makeEvents("t", 1+i%3, i*10)...)
		for j, id := range ids {
			all = append(all, store.Event{ID: id, Stream: stream, Type: "t", Data: payload(i*10 + j)})
		}
	}
	pick := func(keep func(string) bool, after store.ID) []store.Event {
		var want []store.Event
		for _, e := range all {
			if keep(e.Stream) && e.ID.Compare(after) > 0 {
				want = append(want, e)
			}
		}
		return want
	}
	audit := store.Selection{Names: []string{"orders", "orders", "missing"}, Match: func(s string) bool { return strings.HasPrefix(s, "audit.") }}
	keepAudit := func(s string) bool { return s == "orders" || strings.HasPrefix(s, "audit.") }
	for _, page := range []int{0, 1, 7, 1000} {
		for _, after := range []store.ID{{}, all[10].ID, all[len(all)-1].ID} {
			got, mb := scanMerged(t, l, audit, after, page)
			if want := pick(keepAudit, after); !slices.EqualFunc(got, want, sameEvent) {
				t.Fatalf("page %d after %s: %d events, want %d", page, after, len(got), len(want))
			}
			if mb.Newest != all[len(all)-1].ID || len(mb.Gaps) != 0 {
				t.Fatalf("bounds %+v", mb)
			}
		}
	}
	// Names alone read no list: a name that is not a stream is skipped.
	got, _ := scanMerged(t, l, store.Selection{Names: []string{"other", "nope"}}, store.ID{}, 5)
	if want := pick(func(s string) bool { return s == "other" }, store.ID{}); !slices.EqualFunc(got, want, sameEvent) {
		t.Fatalf("names only: %d events, want %d", len(got), len(want))
	}
}

func sameEvent(a, b store.Event) bool {
	return a.ID == b.ID && a.Stream == b.Stream && a.Type == b.Type && string(a.Data) == string(b.Data)
}

// TestScanMergedGaps: the selected streams that lost events after the
// position are reported with their low-water mark, whether the loss was a
// trim or a deletion, and their oldest retained event.
func TestScanMergedGaps(t *testing.T) {
	l := testkit.Open(t)
	a := mustAppend(t, l, "a", makeEvents("t", 5, 0)...)
	b := mustAppend(t, l, "b", makeEvents("t", 3, 0)...)
	c := mustAppend(t, l, "c", makeEvents("t", 2, 0)...)
	if _, err := l.Trim("a", store.Cut{MaxEvents: 2}, 100); err != nil {
		t.Fatal(err)
	}
	if _, err := l.DeleteStream(t.Context(), "b"); err != nil {
		t.Fatal(err)
	}
	sel := store.Selection{Match: func(string) bool { return true }}
	got, mb := scanMerged(t, l, sel, store.ID{}, 0)
	if len(got) != 4 || got[0].ID != a[3] || got[2].ID != c[0] {
		t.Fatalf("events %v", got)
	}
	want := []store.StreamGap{
		{Stream: "a", Bounds: store.Bounds{LowWater: a[2], Newest: c[1]}, Oldest: a[3]},
		{Stream: "b", Bounds: store.Bounds{LowWater: b[2], Deleted: true, Newest: c[1]}},
	}
	if fmt.Sprint(mb.Gaps) != fmt.Sprint(want) {
		t.Fatalf("gaps %+v, want %+v", mb.Gaps, want)
	}
	// After the low-water marks, nothing is a gap.
	if _, mb := scanMerged(t, l, sel, b[2], 0); len(mb.Gaps) != 0 {
		t.Fatalf("gaps after every low-water mark: %+v", mb.Gaps)
	}
}

func TestStartOfLastMerged(t *testing.T) {
	l := testkit.Open(t)
	var ids []store.ID
	for i := range 12 {
		ids = append(ids, mustAppend(t, l, fmt.Sprint("s", i%3), makeEvents("t", 1, i)...)...)
	}
	mustAppend(t, l, "unselected", makeEvents("t", 5, 0)...)
	sel := store.Selection{Names: []string{"s0", "s1", "s2"}}
	for _, tc := range []struct {
		n    int
		want store.ID
	}{{1, ids[10]}, {5, ids[6]}, {11, ids[0]}, {12, store.ID{}}, {100, store.ID{}}} {
		got, err := l.StartOfLastMerged(sel, tc.n)
		if err != nil || got != tc.want {
			t.Errorf("last %d: %s %v, want %s", tc.n, got, err, tc.want)
		}
	}
	if _, err := l.StartOfLastMerged(sel, 0); err == nil {
		t.Error("n = 0 accepted")
	}
}
