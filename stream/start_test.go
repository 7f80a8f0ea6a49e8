package stream_test

import (
	"context"
	"testing"
	"time"

	"github.com/sselog/sselog/store"
	"github.com/sselog/sselog/stream"
)

func subscribeStart(t *testing.T, h *stream.Hub, name string, after store.ID) *stream.Subscription {
	t.Helper()
	sub, err := h.SubscribeStart(name, after)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sub.Close)
	return sub
}

// TestSubscribeStartTrimmed: a start below the low-water mark claims no
// continuity, so it gets the oldest retained event onwards with no reset,
// then live events; where SubscribeAfter from the same id is reset.
func TestSubscribeStartTrimmed(t *testing.T) {
	for _, opts := range []stream.Options{{}, {TailLen: 1}, {PageSize: 2}} {
		l, h := newHub(t, opts)
		ids := publish(t, l, "s", 10)
		lw := trim(t, l, "s", store.Cut{MaxEvents: 4})
		for _, after := range []store.ID{{}, ids[1], lw} {
			sub := subscribeStart(t, h, "s", after)
			got, _ := mustPull(t, sub, ids[9])
			assertSame(t, got, wantEvents(readAfter(t, l, "s", lw)))
			assertIdle(t, sub)
		}
		resumed := subscribe(t, h, "s", ids[1])
		got, _ := mustPull(t, resumed, ids[9])
		assertSame(t, got, append([]sseEvent{resetEvent(lw, trimmedData(ids[6]))}, wantEvents(readAfter(t, l, "s", lw))...))

		started := subscribeStart(t, h, "s", store.ID{})
		mustPull(t, started, ids[9])
		live := publish(t, l, "s", 2)
		got, _ = mustPull(t, started, live[1])
		assertSame(t, got, wantEvents(readAfter(t, l, "s", ids[9])))
		assertIdle(t, started)
	}
}

// TestSubscribeStartTrimmedEverything: a start on a stream whose events
// were all removed waits for new ones, without a reset; the removed ones
// are not taken for a gap when it later reads from the log.
func TestSubscribeStartTrimmedEverything(t *testing.T) {
	l, h := newHub(t, stream.Options{TailLen: 1})
	ids := publish(t, l, "s", 4)
	trim(t, l, "s", store.Cut{Before: store.MinIDAt(time.Now().Add(time.Hour))})
	sub := subscribeStart(t, h, "s", store.ID{})
	assertIdle(t, sub)
	// Three commits through a one-frame tail: the subscriber falls behind
	// it and reads from the log.
	live := publish(t, l, "s", 3)
	got, _ := mustPull(t, sub, live[2])
	assertSame(t, got, wantEvents(readAfter(t, l, "s", ids[3])))
	assertIdle(t, sub)
}

// TestSubscribeStartBeyondNewest: a start above every id (a time in the
// future) waits, with no "unknown" reset, and is handed only the events
// above its start.
func TestSubscribeStartBeyondNewest(t *testing.T) {
	l, h := newHub(t, stream.Options{})
	publish(t, l, "s", 2)
	// Ids come from the wall clock: every event published in this test is
	// below an hour from now, so the start is above all of them.
	after := store.MinIDAt(time.Now().Add(time.Hour))
	sub := subscribeStart(t, h, "s", after)
	assertIdle(t, sub)
	publish(t, l, "s", 2)
	assertIdle(t, sub)
}

// TestSubscribeStartDeleted: a start on a deleted stream is no resume from
// before the deletion: no reset, and the stream's new life follows.
func TestSubscribeStartDeleted(t *testing.T) {
	l, h := newHub(t, stream.Options{})
	ids := publish(t, l, "s", 3)
	if _, err := l.DeleteStream(context.Background(), "s"); err != nil {
		t.Fatal(err)
	}
	sub := subscribeStart(t, h, "s", ids[0])
	assertIdle(t, sub)
	reborn := publish(t, l, "s", 2)
	got, _ := mustPull(t, sub, reborn[1])
	assertSame(t, got, wantEvents(readAfter(t, l, "s", store.ID{})))
	assertIdle(t, sub)
}

// TestSubscribeStartThenTrim: only the first read of a start is spared the
// reset. A start still replaying from the log when a trim passes it is
// told at that point, as any subscriber is.
func TestSubscribeStartThenTrim(t *testing.T) {
	l, h := newHub(t, stream.Options{PageSize: 4})
	ids := publish(t, l, "s", 40)
	sub := subscribeStart(t, h, "s", store.ID{})
	first, _ := mustPull(t, sub, ids[3])
	assertSame(t, first, wantEvents(readAfter(t, l, "s", store.ID{})[:4]))

	lw := trim(t, l, "s", store.Cut{MaxEvents: 10})
	got, _ := mustPull(t, sub, ids[39])
	want := append([]sseEvent{resetEvent(lw, trimmedData(ids[30]))}, wantEvents(readAfter(t, l, "s", lw))...)
	assertSame(t, got, want)
	assertIdle(t, sub)
}
