package client_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/sselog/sselog/client"
	"github.com/sselog/sselog/internal/testkit"
	"github.com/sselog/sselog/store"
)

// TestHistory: a walk over more than two pages yields the stream in
// order and ends after an empty page.
func TestHistory(t *testing.T) {
	t.Parallel()
	srv := newServer(t)
	rec, url := newRecorder(t, srv.URL, nil)
	c := newClient(t, url)
	for n := 0; n < 2500; n += 500 {
		srv.publishN(t, "s", n, 500)
	}
	var items []client.Item
	for item, err := range c.History(t.Context(), "s", client.Beginning()) {
		if err != nil {
			t.Fatal(err)
		}
		items = append(items, item)
	}
	if err := sameEvents(events(items), srv.stored(t, "s")); err != nil {
		t.Fatal(err)
	}
	if len(events(items)) != len(items) {
		t.Errorf("a walk with nothing removed yielded resets")
	}
	if n := len(rec.seen()); n != 4 {
		t.Errorf("%d pages read, want 4 (three, then an empty one)", n)
	}
}

// TestHistoryFrom: After, Since, and the starts history does not take.
func TestHistoryFrom(t *testing.T) {
	t.Parallel()
	srv := newServer(t)
	c := newClient(t, srv.URL)
	early := srv.publishN(t, "s", 0, 3)
	last := mustULID(t, early[2]).Time()
	testkit.WaitFor(t, "a later millisecond", func() bool { return time.Now().UnixMilli() > last.UnixMilli() })
	middle := time.Now()
	testkit.WaitFor(t, "a later millisecond", func() bool { return time.Now().UnixMilli() > middle.UnixMilli() })
	late := srv.publishN(t, "s", 3, 2)

	walk := func(from client.From) ([]string, error) {
		var ids []string
		for item, err := range c.History(t.Context(), "s", from) {
			if err != nil {
				return ids, err
			}
			ids = append(ids, item.ID)
		}
		return ids, nil
	}
	if ids, err := walk(client.After(early[1])); err != nil || strings.Join(ids, ",") != strings.Join(append(early[2:], late...), ",") {
		t.Errorf("after %s: %v, %v", early[1], ids, err)
	}
	if ids, err := walk(client.Since(middle)); err != nil || strings.Join(ids, ",") != strings.Join(late, ",") {
		t.Errorf("since: %v, %v; want %v", ids, err, late)
	}
	if ids, err := walk(client.Last(3)); err != nil || strings.Join(ids, ",") != strings.Join(append(early[2:], late...), ",") {
		t.Errorf("last 3: %v, %v; want %v, %v", ids, err, early[2], late)
	}
	if ids, err := walk(client.Last(50)); err != nil || len(ids) != 5 {
		t.Errorf("last 50 of 5: %v, %v; want all five", ids, err)
	}
	if _, err := walk(client.Live()); !errors.Is(err, client.ErrInvalid) {
		t.Errorf("live: %v, want ErrInvalid", err)
	}
}

// TestHistoryLast: a Last start over more than a page asks for last=n
// once, then pages on after the last event read, and yields exactly the
// newest n.
func TestHistoryLast(t *testing.T) {
	t.Parallel()
	srv := newServer(t)
	rec, url := newRecorder(t, srv.URL, nil)
	c := newClient(t, url)
	for n := 0; n < 3000; n += 500 {
		srv.publishN(t, "s", n, 500)
	}
	var items []client.Item
	for item, err := range c.History(t.Context(), "s", client.Last(2500)) {
		if err != nil {
			t.Fatal(err)
		}
		items = append(items, item)
	}
	if err := sameEvents(events(items), srv.stored(t, "s")[500:]); err != nil {
		t.Fatal(err)
	}
	seen := rec.seen()
	if len(seen) != 4 {
		t.Fatalf("%d pages read, want 4 (three, then an empty one)", len(seen))
	}
	for i, r := range seen {
		wantLast, wantAfter := "", ""
		switch i {
		case 0:
			wantLast = "2500"
		default:
			wantAfter = items[min(i*client.HistoryPage, len(items))-1].ID
		}
		if r.query.Get("last") != wantLast || r.query.Get("after") != wantAfter || r.query.Has("since") {
			t.Errorf("page %d: query %v, want last=%q after=%q", i, r.query, wantLast, wantAfter)
		}
	}
}

// TestHistoryGap: a walk from before a trim starts with a gap reset whose
// id is just below the oldest retained event; a walk after the reset's id
// reports no gap; a deleted stream is a gap with nothing after it.
func TestHistoryGap(t *testing.T) {
	t.Parallel()
	srv := newServer(t)
	c := newClient(t, srv.URL)
	ids := srv.publishN(t, "s", 0, 5)
	if _, err := srv.log.Trim("s", store.Cut{MaxEvents: 2}, 100); err != nil {
		t.Fatal(err)
	}
	var items []client.Item
	for item, err := range c.History(t.Context(), "s", client.Beginning()) {
		if err != nil {
			t.Fatal(err)
		}
		items = append(items, item)
	}
	if len(items) != 3 || items[0].Reset == nil || items[0].Reset.Reason != client.ReasonGap || items[0].Reset.OldestID != ids[3] {
		t.Fatalf("items %+v: want a gap reset, then the two retained events", items)
	}
	if items[0].ID < ids[2] || items[0].ID >= ids[3] {
		t.Errorf("reset id %s, want one from the trimmed %s up to, not including, the retained %s", items[0].ID, ids[2], ids[3])
	}
	var again []client.Item
	for item, err := range c.History(t.Context(), "s", client.After(items[0].ID)) {
		if err != nil {
			t.Fatal(err)
		}
		again = append(again, item)
	}
	if len(again) != 2 || again[0].Event == nil || again[0].ID != ids[3] {
		t.Errorf("after the reset's id: %+v, want the two retained events and no reset", again)
	}

	if _, err := srv.log.DeleteStream(t.Context(), "s"); err != nil {
		t.Fatal(err)
	}
	var gone []client.Item
	for item, err := range c.History(t.Context(), "s", client.After(ids[4])) {
		if err != nil {
			t.Fatal(err)
		}
		gone = append(gone, item)
	}
	// The resume point is the stream's last id, the low-water mark the
	// deletion set: nothing after it was removed.
	if len(gone) != 0 {
		t.Errorf("after the last id of a deleted stream: %+v, want nothing", gone)
	}
	gone = nil
	for item, err := range c.History(t.Context(), "s", client.Beginning()) {
		if err != nil {
			t.Fatal(err)
		}
		gone = append(gone, item)
	}
	if len(gone) != 1 || gone[0].Reset == nil || gone[0].ID != client.ZeroID {
		t.Errorf("a deleted stream from the beginning: %+v, want one gap reset at the zero id", gone)
	}
}

// TestInfo: a stream's counters and ids; ErrNotFound for one never
// published to.
func TestInfo(t *testing.T) {
	t.Parallel()
	srv := newServer(t)
	c := newClient(t, srv.URL)
	ids := srv.publishN(t, "s", 0, 3)
	info, err := c.Info(t.Context(), "s")
	if err != nil {
		t.Fatal(err)
	}
	if info.Name != "s" || info.Count != 3 || info.FirstID != ids[0] || info.LastID != ids[2] || info.LowWater != client.ZeroID || info.Bytes == 0 {
		t.Errorf("info %+v, want 3 events from %s to %s", info, ids[0], ids[2])
	}
	if _, err := c.Info(t.Context(), "nothing"); !errors.Is(err, client.ErrNotFound) {
		t.Errorf("info of a stream never published to: %v, want ErrNotFound", err)
	}
}
