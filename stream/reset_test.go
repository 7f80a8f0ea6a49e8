package stream_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/sselog/sselog/internal/testkit"
	"github.com/sselog/sselog/store"
	"github.com/sselog/sselog/stream"
)

// trim removes events of name with cut until nothing is left to remove.
func trim(t *testing.T, l *store.Log, name string, cut store.Cut) store.ID {
	t.Helper()
	var lw store.ID
	for {
		res, err := l.Trim(name, cut, 7)
		if err != nil {
			t.Fatal(err)
		}
		if res.Events > 0 {
			lw = res.LowWater
		}
		if !res.More {
			return lw
		}
	}
}

func subscribe(t *testing.T, h *stream.Hub, name string, after store.ID) *stream.Subscription {
	t.Helper()
	sub, err := h.SubscribeAfter(name, after)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sub.Close)
	return sub
}

func resetEvent(id store.ID, data string) sseEvent {
	return sseEvent{ID: id.String(), Type: "reset", Data: data}
}

func trimmedData(oldest store.ID) string {
	if oldest.IsZero() {
		return `{"reason":"trimmed","oldest_id":""}`
	}
	return fmt.Sprintf(`{"reason":"trimmed","oldest_id":"%s"}`, oldest)
}

// wantEvents is the sseEvents of evs, for comparison with what was pulled.
func wantEvents(evs []store.Event) []sseEvent {
	out := make([]sseEvent, len(evs))
	for i, e := range evs {
		out[i] = sseEvent{ID: e.ID.String(), Type: "message", Data: string(e.Data)}
	}
	return out
}

func assertSame(t *testing.T, got, want []sseEvent) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d events %+v, want %d %+v", len(got), got, len(want), want)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("event %d: got %+v, want %+v", i, got[i], want[i])
		}
	}
}

// TestResetTrimmed is a client whose resume point was trimmed away: it is
// told so first, then handed the oldest retained event onwards, then live
// events; resuming from the reset's id is exact, with no second reset.
func TestResetTrimmed(t *testing.T) {
	l, h := newHub(t, stream.Options{})
	ids := publish(t, l, "s", 10)
	lw := trim(t, l, "s", store.Cut{MaxEvents: 5})
	if lw != ids[4] {
		t.Fatalf("low-water mark %s, want %s", lw, ids[4])
	}

	sub := subscribe(t, h, "s", ids[2])
	got, _ := mustPull(t, sub, ids[9])
	want := append([]sseEvent{resetEvent(ids[4], trimmedData(ids[5]))}, wantEvents(readAfter(t, l, "s", ids[4]))...)
	assertSame(t, got, want)
	live := publish(t, l, "s", 2)
	got, _ = mustPull(t, sub, live[1])
	assertSame(t, got, wantEvents(readAfter(t, l, "s", ids[9])))
	assertIdle(t, sub)

	again := subscribe(t, h, "s", ids[4])
	got, _ = mustPull(t, again, live[1])
	assertSame(t, got, wantEvents(readAfter(t, l, "s", ids[4])))

	// The beginning is below the mark too: a client asking for everything
	// learns that the stream no longer starts at its first event.
	fromStart := subscribe(t, h, "s", store.ID{})
	got, _ = mustPull(t, fromStart, live[1])
	assertSame(t, got, append([]sseEvent{resetEvent(ids[4], trimmedData(ids[5]))}, wantEvents(readAfter(t, l, "s", ids[4]))...))
}

// TestResetTrimmedEverything: with nothing retained, the reset's oldest_id
// is empty and what follows is live.
func TestResetTrimmedEverything(t *testing.T) {
	l, h := newHub(t, stream.Options{})
	ids := publish(t, l, "s", 6)
	trim(t, l, "s", store.Cut{Before: store.MinIDAt(time.Now().Add(time.Hour))})
	sub := subscribe(t, h, "s", ids[0])
	got, _ := mustPull(t, sub, ids[5])
	assertSame(t, got, []sseEvent{resetEvent(ids[5], trimmedData(store.ID{}))})
	assertIdle(t, sub)
	live := publish(t, l, "s", 1)
	got, _ = mustPull(t, sub, live[0])
	assertSame(t, got, wantEvents(readAfter(t, l, "s", ids[5])))
}

// TestResetDuringReplay: a subscriber still replaying from the log when a
// trim passes its cursor is told at that point, not silently skipped
// ahead, and nothing it is handed afterwards repeats.
func TestResetDuringReplay(t *testing.T) {
	l, h := newHub(t, stream.Options{PageSize: 4})
	ids := publish(t, l, "s", 40)
	sub := subscribe(t, h, "s", store.ID{})
	first, _ := mustPull(t, sub, ids[7])
	assertSame(t, first, wantEvents(readAfter(t, l, "s", store.ID{})[:8]))

	lw := trim(t, l, "s", store.Cut{MaxEvents: 10})
	got, _ := mustPull(t, sub, ids[39])
	want := append([]sseEvent{resetEvent(lw, trimmedData(ids[30]))}, wantEvents(readAfter(t, l, "s", lw))...)
	assertSame(t, got, want)
	assertIdle(t, sub)
}

// TestLiveSubscriberNotReset: a subscriber reading live already has every
// event, so a trim passing its position changes nothing for it. (One that
// has not read yet learns of the trim from its first read of the log.)
func TestLiveSubscriberNotReset(t *testing.T) {
	l, h := newHub(t, stream.Options{})
	ids := publish(t, l, "s", 3)
	sub := subscribe(t, h, "s", ids[2])
	assertIdle(t, sub) // caught up: reading live from now on
	more := publish(t, l, "s", 5)
	trim(t, l, "s", store.Cut{MaxEvents: 1})
	got, _ := mustPull(t, sub, more[4])
	if len(got) != 5 || got[0].ID != more[0].String() || got[4].ID != more[4].String() {
		t.Fatalf("live subscriber got %+v, want the 5 events after %s", got, ids[2])
	}
	assertIdle(t, sub)
}

// TestResetUnknown: a resume point newer than anything in the database
// cannot be honoured; the client is told and goes live from the newest id.
func TestResetUnknown(t *testing.T) {
	l, h := newHub(t, stream.Options{})
	publish(t, l, "s", 3)
	last := publish(t, l, "other", 1)[0]
	future := store.MinIDAt(time.Now().Add(time.Hour))
	sub := subscribe(t, h, "s", future)
	got := pullOnce(t, sub)
	assertSame(t, got, []sseEvent{resetEvent(last, `{"reason":"unknown"}`)})
	assertIdle(t, sub)
	live := publish(t, l, "s", 2)
	got, _ = mustPull(t, sub, live[1])
	assertSame(t, got, wantEvents(readAfter(t, l, "s", last)))
	assertIdle(t, sub)

	// The newest id itself is known: no reset.
	sub2 := subscribe(t, h, "s", live[1])
	assertIdle(t, sub2)
}

// pullOnce waits for the next frames and parses them.
func pullOnce(t *testing.T, sub *stream.Subscription) []sseEvent {
	t.Helper()
	deadline := time.NewTimer(testkit.Wait)
	defer deadline.Stop()
	for {
		frames, wake, err := sub.Next()
		if err != nil {
			t.Fatal(err)
		}
		var got []sseEvent
		for _, f := range frames {
			events, _, _ := parseSSE(f)
			got = append(got, events...)
		}
		if len(frames) > 0 {
			return got
		}
		select {
		case <-wake:
		case <-deadline.C:
			t.Fatal("no frames in time")
		}
	}
}

// nextErr calls Next until it fails or the deadline passes.
func nextErr(t *testing.T, sub *stream.Subscription) error {
	t.Helper()
	deadline := time.NewTimer(testkit.Wait)
	defer deadline.Stop()
	for {
		frames, wake, err := sub.Next()
		if err != nil {
			return err
		}
		if len(frames) > 0 {
			t.Fatalf("unexpected frames %q", frames)
		}
		select {
		case <-wake:
		case <-deadline.C:
			t.Fatal("Next did not fail in time")
		}
	}
}

// TestResetDeleted: deleting a stream hands its subscribers a reset and
// ends them; a client resuming from before the deletion is told the same;
// a client resuming from the reset's id sees exactly the stream's new life.
func TestResetDeleted(t *testing.T) {
	l, h := newHub(t, stream.Options{})
	ids := publish(t, l, "s", 5)
	caughtUp := subscribe(t, h, "s", ids[4])
	assertIdle(t, caughtUp)
	behind := subscribe(t, h, "s", ids[1])

	lw, err := l.DeleteStream(context.Background(), "s")
	if err != nil || lw != ids[4] {
		t.Fatalf("DeleteStream = %s, %v; want %s", lw, err, ids[4])
	}
	deleted := resetEvent(ids[4], `{"reason":"deleted"}`)
	for _, sub := range []*stream.Subscription{caughtUp, behind} {
		got := pullOnce(t, sub)
		assertSame(t, got, []sseEvent{deleted})
		if err := nextErr(t, sub); !errors.Is(err, stream.ErrDeleted) {
			t.Fatalf("Next after the reset: %v, want ErrDeleted", err)
		}
	}

	late := subscribe(t, h, "s", ids[0])
	got := pullOnce(t, late)
	assertSame(t, got, []sseEvent{deleted})
	if err := nextErr(t, late); !errors.Is(err, stream.ErrDeleted) {
		t.Fatalf("Next after the reset: %v, want ErrDeleted", err)
	}

	resumed := subscribe(t, h, "s", ids[4])
	assertIdle(t, resumed)
	reborn := publish(t, l, "s", 3)
	if reborn[0].Compare(ids[4]) <= 0 {
		t.Fatalf("new id %s not above the deleted stream's %s", reborn[0], ids[4])
	}
	got, _ = mustPull(t, resumed, reborn[2])
	assertSame(t, got, wantEvents(readAfter(t, l, "s", store.ID{})))
	// Once republished the stream exists again; the old events stay gone,
	// and a client from before the deletion is told they were removed.
	old := subscribe(t, h, "s", ids[1])
	got, _ = mustPull(t, old, reborn[2])
	assertSame(t, got, append([]sseEvent{resetEvent(ids[4], trimmedData(reborn[0]))}, wantEvents(readAfter(t, l, "s", store.ID{}))...))
}

// TestDeleteUnfollows: after a deletion the hub follows the stream afresh,
// so a new subscriber never sees the deleted events from the old tail.
func TestDeleteUnfollows(t *testing.T) {
	l, h := newHub(t, stream.Options{})
	sub := subscribe(t, h, "s", store.ID{})
	ids := publish(t, l, "s", 3)
	mustPull(t, sub, ids[2])
	if _, err := l.DeleteStream(context.Background(), "s"); err != nil {
		t.Fatal(err)
	}
	fresh, err := h.SubscribeLive("s")
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	sub.Close()
	if n := h.Following(); n != 1 {
		t.Fatalf("following %d streams, want 1 (the fresh subscriber's)", n)
	}
	assertIdle(t, fresh)
	more := publish(t, l, "s", 1)
	got, _ := mustPull(t, fresh, more[0])
	assertSame(t, got, wantEvents(readAfter(t, l, "s", store.ID{})))
}
