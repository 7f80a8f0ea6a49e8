package stream_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sselog/sselog/internal/testkit"
	"github.com/sselog/sselog/store"
	"github.com/sselog/sselog/stream"
)

// pullMerged calls Next until the cursor reaches until, and returns the
// bytes handed out, as one stream: parse them with parseSSE, whose last
// event id persists from frame to frame as a browser's does.
func pullMerged(m *stream.Merged, until store.ID, timeout time.Duration) ([]byte, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	var wire []byte
	for m.Cursor().Compare(until) < 0 {
		frames, wake, err := m.Next()
		if err != nil {
			return wire, err
		}
		for _, f := range frames {
			wire = append(wire, f...)
		}
		if len(frames) > 0 {
			continue
		}
		select {
		case <-wake:
		case <-deadline.C:
			return wire, fmt.Errorf("timed out at cursor %s waiting for %s", m.Cursor(), until)
		}
	}
	return wire, nil
}

// envelope is a merged frame's data.
type envelope struct {
	Stream   string          `json:"stream"`
	Data     json.RawMessage `json:"data"`
	Reason   string          `json:"reason"`
	OldestID string          `json:"oldest_id"`
}

// mergedEvents parses a merged feed into its events (resets included) and
// checks the WHATWG view of it: ids never decrease.
func mergedEvents(t *testing.T, wire []byte) []sseEvent {
	t.Helper()
	events, _, _ := parseSSE(wire)
	for i := 1; i < len(events); i++ {
		if events[i].ID < events[i-1].ID {
			t.Fatalf("event %d has id %s after %s: a feed's ids must never decrease", i, events[i].ID, events[i-1].ID)
		}
	}
	return events
}

// wantMerged is what a merged feed of streams after after must hold: their
// events, read back from the log, in id order, as frames show them.
func wantMerged(t *testing.T, l *store.Log, keep func(string) bool, after store.ID) []sseEvent {
	t.Helper()
	var all []store.Event
	_, err := l.ScanMerged(store.Selection{Match: keep}, after, 0, func(e *store.Event) error {
		all = append(all, store.Event{ID: e.ID, Stream: e.Stream, Type: e.Type, Data: slices.Clone(e.Data)})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	out := make([]sseEvent, len(all))
	for i, e := range all {
		typ := e.Type
		if typ == "" {
			typ = "message"
		}
		out[i] = sseEvent{ID: e.ID.String(), Type: typ, Data: fmt.Sprintf(`{"stream":%q,"data":%s}`, e.Stream, e.Data)}
	}
	return out
}

func subscribeMerged(t *testing.T, h *stream.Hub, opts stream.MergedOptions) *stream.Merged {
	t.Helper()
	m, err := h.SubscribeMerged(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return m
}

func names(ns ...string) (store.Selection, func(string) bool) {
	return store.Selection{Names: ns}, func(s string) bool { return slices.Contains(ns, s) }
}

func TestMergedLive(t *testing.T) {
	l, h := newHub(t, stream.Options{})
	before := publish(t, l, "a", 2)
	sel, match := names("a", "b")
	m := subscribeMerged(t, h, stream.MergedOptions{Selection: sel, Match: match})
	if m.Cursor() != before[1] {
		t.Fatalf("live cursor %s, want the newest id %s", m.Cursor(), before[1])
	}
	publish(t, l, "a", 1)
	publish(t, l, "c", 3)
	last := publish(t, l, "b", 2)
	wire, err := pullMerged(m, last[1], testkit.Wait)
	if err != nil {
		t.Fatal(err)
	}
	got := mergedEvents(t, wire)
	if want := wantMerged(t, l, match, before[1]); !slices.Equal(got, want) {
		t.Fatalf("got %v\nwant %v", got, want)
	}
	frames, wake, err := m.Next()
	if err != nil || len(frames) != 0 || wake == nil {
		t.Fatalf("after the last event: %q %v", frames, err)
	}
}

// TestMergedNewStream: a stream created after the subscription opened is
// followed when the pattern matches it, from its first event.
func TestMergedNewStream(t *testing.T) {
	l, h := newHub(t, stream.Options{})
	match := func(s string) bool { return strings.HasPrefix(s, "audit.") }
	live := subscribeMerged(t, h, stream.MergedOptions{Selection: store.Selection{Match: match}, Match: match})
	resumed := subscribeMerged(t, h, stream.MergedOptions{Selection: store.Selection{Match: match}, Match: match, Start: stream.MergedResume})
	publish(t, l, "other", 1)
	publish(t, l, "audit.new", 2)
	last := publish(t, l, "audit.newer", 1)
	want := wantMerged(t, l, match, store.ID{})
	for _, m := range []*stream.Merged{live, resumed} {
		wire, err := pullMerged(m, last[0], testkit.Wait)
		if err != nil {
			t.Fatal(err)
		}
		if got := mergedEvents(t, wire); !slices.Equal(got, want) {
			t.Fatalf("got %v\nwant %v", got, want)
		}
	}
}

// TestMergedTorture: publishers over several streams while subscribers on
// overlapping selections start at random points and read at random
// paces, some through a queue so small it overflows: each gets exactly the
// merged sequence of its streams after its start.
func TestMergedTorture(t *testing.T) {
	for _, queue := range []int{0, 3} {
		t.Run(fmt.Sprint("queue ", queue), func(t *testing.T) {
			l, h := newHub(t, stream.Options{PageSize: 7, MergedQueueLen: queue})
			streams := []string{"s0", "s1", "s2", "s3", "s4", "s5"}
			publish(t, l, "s0", 5)
			var (
				pubs sync.WaitGroup
				last [4]store.ID
			)
			for p := range 4 {
				pubs.Go(func() {
					for i := range 60 {
						s := streams[(p+i)%len(streams)]
						// Runs of one to three events of a stream.
						evs := make([]store.Event, 1+i%3)
						for k := range evs {
							evs[k] = store.Event{Type: "t", Data: fmt.Appendf(nil, `{"p":%d,"i":%d,"k":%d}`, p, i, k)}
						}
						ids, err := l.Append(context.Background(), s, evs)
						if err != nil {
							t.Error(err)
							return
						}
						last[p] = ids[0]
					}
				})
			}
			type sub struct {
				m     *stream.Merged
				keep  func(string) bool
				after store.ID
			}
			var subs []sub
			for k := range 6 {
				keep := func(s string) bool { return s == streams[k] || s == streams[(k+2)%len(streams)] || k == 5 }
				start := stream.MergedResume
				var after store.ID
				if k%2 == 1 {
					start, after = stream.MergedLive, l.LastID()
				}
				m := subscribeMerged(t, h, stream.MergedOptions{Selection: store.Selection{Match: keep}, Match: keep, Start: start})
				if start == stream.MergedLive {
					after = m.Cursor()
				}
				subs = append(subs, sub{m, keep, after})
			}
			// Subscribers read while the publishers run, each at a pace of
			// its own.
			var wg sync.WaitGroup
			wires := make([][]byte, len(subs))
			done := make(chan struct{})
			for i, s := range subs {
				wg.Go(func() {
					for {
						select {
						case <-done:
							return
						default:
						}
						frames, wake, err := s.m.Next()
						if err != nil {
							t.Error(err)
							return
						}
						for _, f := range frames {
							wires[i] = append(wires[i], f...)
						}
						if len(frames) == 0 {
							select {
							case <-wake:
							case <-done:
								return
							}
						}
						if rand.IntN(4) == 0 {
							time.Sleep(time.Duration(rand.IntN(500)) * time.Microsecond) // a slow client's pace, not a wait for a condition
						}
					}
				})
			}
			pubs.Wait()
			close(done)
			wg.Wait()
			for i, s := range subs {
				want := wantMerged(t, l, s.keep, s.after)
				until := s.after
				if len(want) > 0 {
					until, _ = store.ParseID(want[len(want)-1].ID)
				}
				rest, err := pullMerged(s.m, until, testkit.Wait)
				if err != nil {
					t.Fatal(err)
				}
				got := mergedEvents(t, append(wires[i], rest...))
				if !slices.Equal(got, want) {
					t.Errorf("subscriber %d: got %d events, want %d; first difference at %d", i, len(got), len(want), firstDiff(got, want))
				}
			}
		})
	}
}

func firstDiff(a, b []sseEvent) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// TestMergedResets: a resume below a stream's low-water mark gets that
// stream's reset in its place in id order, with the mark as its id; a
// deletion while live is told with no id (its events were handed out) and
// the feed goes on; an id this log never issued gets one "unknown" reset.
func TestMergedResets(t *testing.T) {
	l, h := newHub(t, stream.Options{})
	a := publish(t, l, "a", 5)
	b := publish(t, l, "b", 2)
	if _, err := l.Trim("a", store.Cut{MaxEvents: 2}, 100); err != nil {
		t.Fatal(err)
	}
	sel, match := names("a", "b")
	m := subscribeMerged(t, h, stream.MergedOptions{Selection: sel, Match: match, Start: stream.MergedResume})
	wire, err := pullMerged(m, b[1], testkit.Wait)
	if err != nil {
		t.Fatal(err)
	}
	got := mergedEvents(t, wire)
	if len(got) != 5 || got[0].Type != store.ResetType || got[0].ID != a[2].String() {
		t.Fatalf("resume from zero over a trimmed stream: %v", got)
	}
	var env envelope
	if err := json.Unmarshal([]byte(got[0].Data), &env); err != nil || env.Stream != "a" || env.Reason != "trimmed" || env.OldestID != a[3].String() {
		t.Fatalf("trimmed reset %s (%v)", got[0].Data, err)
	}
	if want := wantMerged(t, l, match, store.ID{}); !slices.Equal(got[1:], want) {
		t.Fatalf("after the reset: %v, want %v", got[1:], want)
	}

	// b is deleted while followed: told, with no id, and the feed goes on.
	if _, err := l.DeleteStream(t.Context(), "b"); err != nil {
		t.Fatal(err)
	}
	after := publish(t, l, "a", 1)
	wire, err = pullMerged(m, after[0], testkit.Wait)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(wire), "event: reset\ndata: {\"stream\":\"b\",\"reason\":\"deleted\"}\n\n") {
		t.Fatalf("deletion while live: %q", wire)
	}
	if got := mergedEvents(t, append([]byte("id: "+b[1].String()+"\n\n"), wire...)); len(got) != 2 || got[1].ID != after[0].String() {
		t.Fatalf("after the deletion: %v", got)
	}

	// A resume from before the deletion is told once, at b's mark.
	again := subscribeMerged(t, h, stream.MergedOptions{Selection: sel, Match: match, Start: stream.MergedResume, After: b[0]})
	wire, err = pullMerged(again, after[0], testkit.Wait)
	if err != nil {
		t.Fatal(err)
	}
	got = mergedEvents(t, wire)
	if len(got) != 2 || got[0].Type != store.ResetType || got[0].ID != b[1].String() || !strings.Contains(got[0].Data, `"reason":"deleted"`) {
		t.Fatalf("resume from before the deletion: %v", got)
	}

	// An id from the future.
	future := store.MinIDAt(time.Now().Add(time.Hour))
	unknown := subscribeMerged(t, h, stream.MergedOptions{Selection: sel, Match: match, Start: stream.MergedResume, After: future})
	frames, _, err := unknown.Next()
	if err != nil || len(frames) != 1 || !strings.Contains(string(frames[0]), `{"reason":"unknown"}`) || unknown.Cursor() != l.LastID() {
		t.Fatalf("unknown id: %q %v", frames, err)
	}
}

// TestMergedStart: a start by time or count (MergedFrom) is told nothing
// of what was removed before it.
func TestMergedStart(t *testing.T) {
	l, h := newHub(t, stream.Options{})
	publish(t, l, "a", 5)
	b := publish(t, l, "b", 2)
	if _, err := l.Trim("a", store.Cut{MaxEvents: 2}, 100); err != nil {
		t.Fatal(err)
	}
	sel, match := names("a", "b")
	m := subscribeMerged(t, h, stream.MergedOptions{Selection: sel, Match: match, Start: stream.MergedFrom})
	wire, err := pullMerged(m, b[1], testkit.Wait)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := mergedEvents(t, wire), wantMerged(t, l, match, store.ID{}); !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v (no reset)", got, want)
	}
}

func TestMergedClose(t *testing.T) {
	_, h := newHub(t, stream.Options{})
	sel, match := names("a")
	m := subscribeMerged(t, h, stream.MergedOptions{Selection: sel, Match: match})
	_, wake, err := m.Next()
	if err != nil {
		t.Fatal(err)
	}
	h.Close()
	select {
	case <-wake:
	case <-time.After(testkit.Wait):
		t.Fatal("Close did not wake the subscriber")
	}
	if _, _, err := m.Next(); err != stream.ErrClosed {
		t.Fatalf("Next after Close: %v", err)
	}
	if _, err := h.SubscribeMerged(stream.MergedOptions{Selection: sel, Match: match}); err != stream.ErrClosed {
		t.Fatalf("subscribe after Close: %v", err)
	}
}

// TestMergedFrame holds the merged frame to AppendFrame of the envelope,
// for data with line ends and without, typed and not.
func TestMergedFrame(t *testing.T) {
	id := store.MinIDAt(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	for _, e := range []store.Event{
		{ID: id, Stream: "a.b", Type: "t", Data: []byte(`{"x":[1,2]}`)},
		{ID: id, Stream: "a", Data: []byte(`"plain"`)},
		{ID: id, Stream: "c", Type: "t", Data: []byte("{\"x\":\n1,\r\n\"y\":\r2}")},
		{ID: id, Stream: "c", Data: []byte("null")},
	} {
		env := fmt.Sprintf(`{"stream":"%s","data":%s}`, e.Stream, e.Data)
		want := stream.AppendFrame(nil, e.ID, e.Type, []byte(env))
		if got := stream.AppendMergedFrame(nil, &e); string(got) != string(want) {
			t.Errorf("%q:\ngot  %q\nwant %q", e.Data, got, want)
		}
	}
}
