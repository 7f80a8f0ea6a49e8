package stream_test

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/sselog/sselog/internal/testkit"
	"github.com/sselog/sselog/store"
	"github.com/sselog/sselog/stream"
)

var large = flag.Bool("large", false, "run the memory budget tests at the scale of the attacks they answer (slower; hundreds of MB of disk)")

// heapInuse is the heap in use once garbage is collected.
func heapInuse() int64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapInuse)
}

// heapSlack is what the heap may grow by in these tests besides what is
// measured: the store's and the runtime's own bookkeeping after thousands
// of commits or reads.
const heapSlack = 1 << 20

const mib = 1 << 20

// makeBatch makes n events of about size bytes of data each.
func makeBatch(n, size int) []store.Event {
	batch := make([]store.Event, n)
	for i := range batch {
		data := fmt.Appendf(nil, `{"n":%d,"pad":"`, i)
		data = append(data, bytes.Repeat([]byte("x"), max(size-len(data)-2, 0))...)
		batch[i] = store.Event{Type: "update", Data: append(data, `"}`...)}
	}
	return batch
}

// publishBatch appends n events of about size bytes of data to name in one
// commit and returns their ids.
func publishBatch(tb testing.TB, l *store.Log, name string, n, size int) []store.ID {
	tb.Helper()
	ids, err := l.Append(context.Background(), name, makeBatch(n, size))
	if err != nil {
		tb.Fatal(err)
	}
	return ids
}

// encode is the SSE encoding of events, as the hub sends them.
func encode(events []store.Event) []byte {
	var b []byte
	for _, e := range events {
		b = stream.AppendFrame(b, e.ID, e.Type, e.Data)
	}
	return b
}

// pullBytes calls Next until the subscription has handed out the event
// until, checking the bytes handed out against want: every event once, in
// order, byte for byte (cheaper than parsing them, at these sizes). It
// counts the frames that held several events: replay pages.
func pullBytes(t *testing.T, sub *stream.Subscription, until store.ID, want []byte) (pages int) {
	t.Helper()
	got := 0
	for sub.Cursor().Compare(until) < 0 {
		frames, wake, err := sub.Next()
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range frames {
			if !bytes.HasPrefix(want[got:], f) {
				t.Fatalf("at byte %d of %d: got %.80q, want %.80q", got, len(want), f, want[got:])
			}
			got += len(f)
			if bytes.Count(f, []byte("\n\n")) > 1 {
				pages++
			}
		}
		if len(frames) == 0 {
			select {
			case <-wake:
			case <-time.After(testkit.Wait):
				t.Fatalf("timed out at cursor %s waiting for %s", sub.Cursor(), until)
			}
		}
	}
	if got != len(want) {
		t.Fatalf("got %d bytes, want %d", got, len(want))
	}
	return pages
}

// TestTailBudget is the attack of many subscribers on many busy streams:
// each stream's tail may hold TailBytes (8 MiB by default), and together
// they held the server's memory. With a budget the tails together stay
// within it, measured by the hub and by the heap, while every subscriber
// still gets every event once, in order: one that keeps up reads the
// tail, one that lags reads what was cut from the log.
func TestTailBudget(t *testing.T) {
	streams, perStream, budget := 32, 256<<10, 1*mib
	if *large {
		streams, perStream, budget = 100, 2*mib, stream.DefaultTailBudget
	}
	const batch, size = 64, 1000
	l, h := newHub(t, stream.Options{TailBudget: budget})
	type follower struct {
		name      string
		keep, lag *stream.Subscription
		start     store.ID
	}
	start := publish(t, l, "warmup", 1)[0]
	fs := make([]*follower, streams)
	for i := range fs {
		f := &follower{name: fmt.Sprintf("s%03d", i), start: start}
		var err error
		if f.keep, err = h.SubscribeLive(f.name); err != nil {
			t.Fatal(err)
		}
		if f.lag, err = h.SubscribeLive(f.name); err != nil {
			t.Fatal(err)
		}
		fs[i] = f
	}
	before := heapInuse()

	peak := 0
	last := make([]store.ID, streams)
	for range perStream / (batch * size) {
		// One publisher: the store keeps its last commit group's memory,
		// which concurrent publishers would make large and the heap
		// measure noisy.
		for i, f := range fs {
			ids := publishBatch(t, l, f.name, batch, size)
			last[i] = ids[len(ids)-1]
			// The commit hook has run by the time Append returns: the
			// budget holds exactly.
			if u := h.Usage().TailBytes; u > peak {
				peak = u
			}
		}
		for i, f := range fs {
			// Checked as it goes: what the test kept would weigh more
			// than what it measures.
			from := f.keep.Cursor()
			pullBytes(t, f.keep, last[i], encode(readAfter(t, l, f.name, from)))
			assertIdle(t, f.keep)
		}
	}
	grown := heapInuse() - before
	t.Logf("%d streams × %d KiB: tails peaked at %d KiB (budget %d KiB), heap grew %d KiB",
		streams, perStream>>10, peak>>10, budget>>10, grown>>10)
	if peak > budget {
		t.Errorf("tails peaked at %d bytes, over the budget of %d", peak, budget)
	}
	// As tails churn, the heap's spans fill unevenly: a few percent on
	// top of what the tails hold.
	if slack := heapSlack + budget/32; grown > int64(budget+slack) {
		t.Errorf("heap grew by %d bytes, over the budget of %d and %d of slack", grown, budget, slack)
	}

	fromLog := 0
	for i, f := range fs {
		fromLog += pullBytes(t, f.lag, last[i], encode(readAfter(t, l, f.name, f.start)))
		assertIdle(t, f.lag)
	}
	if fromLog == 0 {
		t.Error("no lagging subscriber read from the log: the budget never cut a tail it needed")
	}
	for _, f := range fs {
		f.keep.Close()
		f.lag.Close()
	}
	if u := h.Usage(); u.TailBytes != 0 || u.ReplayBytes != 0 {
		t.Errorf("with no subscriber left the hub holds %+v", u)
	}
}

// TestTailBudgetUnfollow checks that a stream's tail leaves the budget with
// the stream: when its last subscriber goes and when it is deleted.
func TestTailBudgetUnfollow(t *testing.T) {
	l, h := newHub(t, stream.Options{})
	a := subscribe(t, h, "a", store.ID{})
	b := subscribe(t, h, "b", store.ID{})
	c := subscribe(t, h, "c", store.ID{})
	var costs []int
	for _, name := range []string{"a", "b", "c"} {
		publishBatch(t, l, name, 10, 100)
		costs = append(costs, h.Usage().TailBytes)
	}
	if costs[0] <= 0 || costs[1] <= costs[0] || costs[2] <= costs[1] {
		t.Fatalf("tail bytes after each commit: %d", costs)
	}
	b.Close()
	afterClose := h.Usage().TailBytes
	if afterClose >= costs[2] {
		t.Fatalf("tail bytes %d after the last subscriber of b left, want less than %d", afterClose, costs[2])
	}
	if _, err := l.DeleteStream(context.Background(), "a"); err != nil {
		t.Fatal(err)
	}
	if u := h.Usage().TailBytes; u >= afterClose || u <= 0 {
		t.Fatalf("tail bytes %d after a was deleted, want less than %d and more than 0 (c)", u, afterClose)
	}
	c.Close()
	if u := h.Usage().TailBytes; u != 0 {
		t.Fatalf("tail bytes %d with only a deleted stream's subscriber left, want 0", u)
	}
	a.Close()
}

// TestReplayBudget is the attack of many slow clients replaying from the
// beginning: each held a replay page of up to PageBytes while it wrote it,
// and kept the buffer for the connection's life. With a budget, the pages
// held together stay within it and a minimum page each, measured by the
// hub and by the heap; a subscriber that has caught up holds no page; and
// a replay alone still gets full pages.
func TestReplayBudget(t *testing.T) {
	subs, events, budget := 64, 2048, 1*mib
	if *large {
		subs, events, budget = 500, 8192, stream.DefaultReplayBudget
	}
	const size = 1000
	// Pages end by bytes, not by count.
	l, h := newHub(t, stream.Options{ReplayBudget: budget, PageSize: 1 << 20})
	var last store.ID
	for range events / 128 {
		ids := publishBatch(t, l, "s", 128, size)
		last = ids[len(ids)-1]
	}
	frame := len(stream.AppendFrame(nil, last, "update", make([]byte, size)))
	bound := budget + subs*stream.MinReplayPage
	before := heapInuse()

	// Every subscriber reads one page and holds it, as a slow client does
	// while it writes the page.
	ss := make([]*stream.Subscription, subs)
	pages := make([][]byte, subs)
	held := 0
	for i := range ss {
		ss[i] = subscribe(t, h, "s", store.ID{})
		defer ss[i].Close()
		frames, _, err := ss[i].Next()
		if err != nil || len(frames) != 1 {
			t.Fatalf("subscriber %d: first Next = %d frames, %v; want a page", i, len(frames), err)
		}
		pages[i] = frames[0]
		held += len(pages[i])
		if len(pages[i]) < frame {
			t.Fatalf("subscriber %d: a page of %d bytes, less than an event", i, len(pages[i]))
		}
	}
	grown := heapInuse() - before
	runtime.KeepAlive(pages)
	usage := h.Usage().ReplayBytes
	t.Logf("%d slow replays: pages of %d KiB, counted %d KiB, heap grew %d KiB (budget %d KiB, bound %d KiB)",
		subs, held>>10, usage>>10, grown>>10, budget>>10, bound>>10)
	if held > bound || usage > bound {
		t.Errorf("slow replays hold pages of %d bytes, counted %d; want at most %d", held, usage, bound)
	}
	if grown > int64(bound+heapSlack) {
		t.Errorf("heap grew by %d bytes with the pages held, over %d and %d of slack", grown, bound, heapSlack)
	}
	if len(pages[0]) <= stream.DefaultPageBytes-frame {
		t.Errorf("the first replay, alone in the budget, got a page of %d bytes, want a full one of %d", len(pages[0]), stream.DefaultPageBytes)
	}
	if n := len(pages[subs-1]); n > stream.MinReplayPage {
		t.Errorf("a replay after the budget was spent got a page of %d bytes, want at most %d", n, stream.MinReplayPage)
	}

	// They all go on to the end: every event once, in order, and then,
	// caught up, they hold nothing.
	want := encode(readAfter(t, l, "s", store.ID{}))
	for i, sub := range ss {
		if !bytes.HasPrefix(want, pages[i]) {
			t.Fatalf("subscriber %d: the first page is not the stream's first events", i)
		}
		pullBytes(t, sub, last, want[len(pages[i]):])
		assertIdle(t, sub)
	}
	pages = nil
	idle := heapInuse() - before
	t.Logf("caught up: counted %d bytes, heap grew %d KiB", h.Usage().ReplayBytes, idle>>10)
	if u := h.Usage().ReplayBytes; u != 0 {
		t.Errorf("caught-up subscribers are counted as holding %d bytes of replay pages", u)
	}
	if idle > heapSlack {
		t.Errorf("heap grew by %d bytes with every subscriber caught up, want at most %d", idle, heapSlack)
	}

	// A replay alone is not slowed: full pages but the last.
	fast := subscribe(t, h, "s", store.ID{})
	defer fast.Close()
	for fast.Cursor() != last {
		frames, _, err := fast.Next()
		if err != nil || len(frames) != 1 {
			t.Fatalf("fast replay: Next = %d frames, %v", len(frames), err)
		}
		if n := len(frames[0]); n <= stream.DefaultPageBytes-frame && fast.Cursor() != last {
			t.Fatalf("fast replay: a page of %d bytes before the end, want a full one of %d", n, stream.DefaultPageBytes)
		}
	}
}
