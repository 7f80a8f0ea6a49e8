package stream_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/sselog/sselog/internal/testkit"
	"github.com/sselog/sselog/store"
	"github.com/sselog/sselog/stream"
)

// newHub opens a log in a temp dir with a hub over it. The hub is closed
// before the log.
func newHub(tb testing.TB, opts stream.Options) (*store.Log, *stream.Hub) {
	tb.Helper()
	l := testkit.Open(tb)
	h := stream.NewHub(l, opts)
	tb.Cleanup(h.Close)
	return l, h
}

// publish appends n events to name, one Append (so one commit) each, and
// returns their ids.
func publish(tb testing.TB, l *store.Log, name string, n int) []store.ID {
	tb.Helper()
	ids := make([]store.ID, 0, n)
	for i := 0; i < n; i++ {
		got, err := l.Append(context.Background(), name, []store.Event{{Data: fmt.Appendf(nil, `{"n":%d}`, i)}})
		if err != nil {
			tb.Fatal(err)
		}
		ids = append(ids, got...)
	}
	return ids
}

// pull calls Next until the subscription has handed out the event until,
// waiting on the wake channel in between. It parses each frame at once,
// since frames are valid only until the next call. It also counts the
// frames that held more than one event, which only a replay from the log
// produces.
func pull(sub *stream.Subscription, until store.ID, timeout time.Duration) (got []sseEvent, multi int, err error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		if sub.Cursor().Compare(until) >= 0 {
			return got, multi, nil
		}
		frames, wake, err := sub.Next()
		if err != nil {
			return got, multi, err
		}
		for _, f := range frames {
			events, _, _ := parseSSE(f)
			if len(events) > 1 {
				multi++
			}
			got = append(got, events...)
		}
		if len(frames) > 0 {
			continue
		}
		select {
		case <-wake:
		case <-deadline.C:
			return got, multi, fmt.Errorf("timed out at cursor %s waiting for %s", sub.Cursor(), until)
		}
	}
}

func mustPull(t *testing.T, sub *stream.Subscription, until store.ID) ([]sseEvent, int) {
	t.Helper()
	got, multi, err := pull(sub, until, testkit.Wait)
	if err != nil {
		t.Fatal(err)
	}
	return got, multi
}

// assertIdle checks that nothing more is ready: a subscription must not hand
// out an event twice or one that was never committed.
func assertIdle(t *testing.T, sub *stream.Subscription) {
	t.Helper()
	frames, wake, err := sub.Next()
	if err != nil {
		t.Fatal(err)
	}
	if len(frames) > 0 || wake == nil {
		t.Fatalf("Next returned %d unexpected frames %q", len(frames), frames)
	}
}

// assertEvents compares what a subscriber received with the log's events.
func assertEvents(t *testing.T, got []sseEvent, want []store.Event) {
	t.Helper()
	if err := testkit.DiffEvents(got, want); err != nil {
		t.Fatal(err)
	}
}

func readAfter(t *testing.T, l *store.Log, name string, after store.ID) []store.Event {
	t.Helper()
	events, err := l.ReadAfter(name, after, 0)
	if err != nil {
		t.Fatal(err)
	}
	return events
}

func TestSubscribe(t *testing.T) {
	tests := []struct {
		name   string
		from   bool
		fromAt int // index of the event to start after; -1: the zero ID
	}{
		{"live", false, 0},
		{"from_zero", true, -1},
		{"from_middle", true, 4},
		{"from_last", true, 9},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l, h := newHub(t, stream.Options{})
			before := publish(t, l, "s", 10)
			// Events of another stream share the id space and must not leak.
			publish(t, l, "other", 3)
			var after store.ID
			if tc.fromAt >= 0 {
				after = before[tc.fromAt]
			}
			subscribe := func() (*stream.Subscription, error) { return h.SubscribeLive("s") }
			if tc.from {
				subscribe = func() (*stream.Subscription, error) { return h.SubscribeAfter("s", after) }
			}
			sub, err := subscribe()
			if err != nil {
				t.Fatal(err)
			}
			defer sub.Close()
			publish(t, l, "other", 2)
			later := publish(t, l, "s", 5)

			got, _ := mustPull(t, sub, later[len(later)-1])
			start := store.ID{}
			switch {
			case !tc.from:
				start = before[len(before)-1]
			case tc.fromAt >= 0:
				start = before[tc.fromAt]
			}
			assertEvents(t, got, readAfter(t, l, "s", start))
			assertIdle(t, sub)
		})
	}
}

// TestSubscribeAfterUnknownID covers a Last-Event-ID from a client that is
// between two events of the stream (an id of another stream, say): it
// resumes with the first event after that id.
func TestSubscribeAfterUnknownID(t *testing.T) {
	l, h := newHub(t, stream.Options{})
	publish(t, l, "s", 3)
	mid := publish(t, l, "other", 1)[0]
	last := publish(t, l, "s", 3)[2]
	sub, err := h.SubscribeAfter("s", mid)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	got, _ := mustPull(t, sub, last)
	assertEvents(t, got, readAfter(t, l, "s", mid))
}

func TestSubscribeInvalidStream(t *testing.T) {
	_, h := newHub(t, stream.Options{})
	for _, name := range []string{"", ".x", "a/b", "a b"} {
		if _, err := h.SubscribeAfter(name, store.ID{}); !errors.Is(err, store.ErrInvalidStream) {
			t.Errorf("Subscribe(%q) = %v, want ErrInvalidStream", name, err)
		}
	}
	if n := h.Following(); n != 0 {
		t.Errorf("Following() = %d after refused subscribes, want 0", n)
	}
}

// TestSlowSubscriber checks that a subscriber that stops reading while the
// tail moves far past it still gets every event exactly once, in order,
// by reading from the log again. Each limit of the tail is tried alone.
func TestSlowSubscriber(t *testing.T) {
	tests := []struct {
		name string
		opts stream.Options
	}{
		{"tail_len", stream.Options{TailLen: 8, PageSize: 5}},
		{"tail_bytes", stream.Options{TailBytes: 300, PageSize: 5}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l, h := newHub(t, tc.opts)
			first := publish(t, l, "s", 3)
			live, err := h.SubscribeLive("s")
			if err != nil {
				t.Fatal(err)
			}
			defer live.Close()
			fromZero, err := h.SubscribeAfter("s", store.ID{})
			if err != nil {
				t.Fatal(err)
			}
			defer fromZero.Close()
			// A reader that keeps up, so the tail is in use throughout.
			keepUp, err := h.SubscribeLive("s")
			if err != nil {
				t.Fatal(err)
			}
			defer keepUp.Close()

			var keptUp []sseEvent
			var last store.ID
			for range 10 {
				ids := publish(t, l, "s", 10)
				last = ids[len(ids)-1]
				got, _ := mustPull(t, keepUp, last)
				keptUp = append(keptUp, got...)
			}
			// Read a little, fall behind again, then catch up.
			partial, _ := mustPull(t, live, first[len(first)-1])
			more := publish(t, l, "s", 40)
			last = more[len(more)-1]

			for _, sub := range []struct {
				name  string
				s     *stream.Subscription
				start store.ID
				prior []sseEvent
			}{
				{"live", live, first[len(first)-1], partial},
				{"from_zero", fromZero, store.ID{}, nil},
			} {
				got, multi := mustPull(t, sub.s, last)
				got = append(sub.prior, got...)
				if err := testkit.DiffEvents(got, readAfter(t, l, "s", sub.start)); err != nil {
					t.Fatalf("%s: %v", sub.name, err)
				}
				if multi == 0 {
					t.Errorf("%s: no frame held several events: the log was never read, so the test did not test the fallback", sub.name)
				}
				assertIdle(t, sub.s)
			}
			rest, _ := mustPull(t, keepUp, last)
			assertEvents(t, append(keptUp, rest...), readAfter(t, l, "s", first[len(first)-1]))
		})
	}
}

// TestFrameShared checks the "one encoding per event" guarantee: live
// subscribers are handed the very same bytes for an event.
func TestFrameShared(t *testing.T) {
	l, h := newHub(t, stream.Options{})
	var subs []*stream.Subscription
	for range 3 {
		sub, err := h.SubscribeLive("s")
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Close()
		subs = append(subs, sub)
	}
	ids, err := l.Append(context.Background(), "s", []store.Event{{Data: []byte("1")}, {Type: "t", Data: []byte("2")}})
	if err != nil {
		t.Fatal(err)
	}
	var first [][]byte
	for i, sub := range subs {
		frames, _, err := sub.Next()
		if err != nil {
			t.Fatal(err)
		}
		if len(frames) != len(ids) {
			t.Fatalf("subscriber %d: got %d frames, want %d", i, len(frames), len(ids))
		}
		if i == 0 {
			first = append(first, frames...)
			continue
		}
		for j := range frames {
			if &frames[j][0] != &first[j][0] || len(frames[j]) != len(first[j]) {
				t.Errorf("subscriber %d frame %d is a separate encoding", i, j)
			}
		}
	}
	want := stream.AppendFrame(nil, ids[1], "t", []byte("2"))
	if string(first[1]) != string(want) {
		t.Errorf("shared frame %q, want %q", first[1], want)
	}
}

func TestClose(t *testing.T) {
	l, h := newHub(t, stream.Options{})
	sub, err := h.SubscribeLive("s")
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	_, wake, err := sub.Next()
	if err != nil || wake == nil {
		t.Fatalf("Next on an idle stream = %v, %v; want a wake channel", wake, err)
	}
	h.Close()
	select {
	case <-wake:
	case <-time.After(testkit.Wait):
		t.Fatal("Close did not wake a waiting subscriber")
	}
	if _, _, err := sub.Next(); !errors.Is(err, stream.ErrClosed) {
		t.Fatalf("Next after Close = %v, want ErrClosed", err)
	}
	// Commits after Close reach no one and break nothing.
	publish(t, l, "s", 1)
	if _, _, err := sub.Next(); !errors.Is(err, stream.ErrClosed) {
		t.Fatalf("Next after Close and a commit = %v, want ErrClosed", err)
	}
	if _, err := h.SubscribeAfter("s", store.ID{}); !errors.Is(err, stream.ErrClosed) {
		t.Fatalf("Subscribe after Close = %v, want ErrClosed", err)
	}
	sub.Close()
	if _, _, err := sub.Next(); !errors.Is(err, stream.ErrClosed) {
		t.Fatalf("Next on a closed subscription = %v, want ErrClosed", err)
	}
}

func TestFollowing(t *testing.T) {
	_, h := newHub(t, stream.Options{})
	a1, err := h.SubscribeLive("a")
	if err != nil {
		t.Fatal(err)
	}
	a2, err := h.SubscribeAfter("a", store.ID{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := h.SubscribeLive("b")
	if err != nil {
		t.Fatal(err)
	}
	for _, step := range []struct {
		close func()
		want  int
	}{
		{func() {}, 2},
		{a1.Close, 2},
		{a1.Close, 2}, // a second Close must not release a2's reference
		{a2.Close, 1},
		{b.Close, 0},
	} {
		step.close()
		if got := h.Following(); got != step.want {
			t.Fatalf("Following() = %d, want %d", got, step.want)
		}
	}
}

// TestNewHubOnUsedLog checks that a hub made over a log with history treats
// that history as committed: a live subscriber gets only what comes after.
func TestNewHubOnUsedLog(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.db")
	l := testkit.OpenAt(t, path, store.Options{})
	old := publish(t, l, "s", 5)
	h := stream.NewHub(l, stream.Options{})
	defer h.Close()
	sub, err := h.SubscribeLive("s")
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	assertIdle(t, sub)
	ids := publish(t, l, "s", 2)
	got, _ := mustPull(t, sub, ids[1])
	assertEvents(t, got, readAfter(t, l, "s", old[4]))
}

// TestCaughtUpIdle covers a subscriber that replays a stream whose newest
// event is older than the newest commit (another stream moved on). Once it
// has everything it must report idle, not read the log again and again.
func TestCaughtUpIdle(t *testing.T) {
	l, h := newHub(t, stream.Options{PageSize: 2})
	ids := publish(t, l, "s", 5)
	publish(t, l, "other", 1)
	sub, err := h.SubscribeAfter("s", store.ID{})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	got, _ := mustPull(t, sub, ids[4])
	assertEvents(t, got, readAfter(t, l, "s", store.ID{}))

	// Next runs in a goroutine so that a Next that never returns fails
	// the test instead of hanging it.
	type next struct {
		frames int
		wake   <-chan struct{}
		err    error
	}
	done := make(chan next, 1)
	go func() {
		frames, wake, err := sub.Next()
		done <- next{len(frames), wake, err}
	}()
	select {
	case n := <-done:
		if n.err != nil || n.frames != 0 || n.wake == nil {
			t.Fatalf("Next = %d frames, wake %v, err %v; want idle", n.frames, n.wake, n.err)
		}
	case <-time.After(testkit.Wait):
		t.Fatal("Next did not return on a caught-up subscription")
	}
}

// Pages that outgrow the page buffer, whether from many events or one huge
// one, must still reach the subscriber whole: the cursor moves past them.
func TestReplayLargePages(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts stream.Options
		size int
	}{
		{"small page budget", stream.Options{PageBytes: 100}, 1000},
		{"default budget, 5 MiB event", stream.Options{}, 5 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, h := newHub(t, tc.opts)
			before := publish(t, l, "s", 2)
			big := append(append([]byte(`"`), bytes.Repeat([]byte("x"), tc.size)...), '"')
			ids, err := l.Append(context.Background(), "s", []store.Event{{Data: big}, {Data: []byte("1")}})
			if err != nil {
				t.Fatal(err)
			}
			sub, err := h.SubscribeAfter("s", store.ID{})
			if err != nil {
				t.Fatal(err)
			}
			defer sub.Close()
			got, _ := mustPull(t, sub, ids[1])
			want := append(before, ids...)
			if len(got) != len(want) {
				t.Fatalf("got %d events, want %d", len(got), len(want))
			}
			for i := range want {
				if got[i].ID != want[i].String() {
					t.Fatalf("event %d: id %s, want %s", i, got[i].ID, want[i])
				}
			}
			if len(got[2].Data) != len(big) {
				t.Fatalf("big event: %d bytes of data, want %d", len(got[2].Data), len(big))
			}
		})
	}
}
