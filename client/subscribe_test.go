package client_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sselog/sselog/client"
	"github.com/sselog/sselog/internal/testkit"
	"github.com/sselog/sselog/store"
)

// TestSubscribeStarts: each start gives the events the README says, then
// live ones.
func TestSubscribeStarts(t *testing.T) {
	t.Parallel()
	srv := newServer(t)
	c := newClient(t, srv.URL)
	early := srv.publishN(t, "s", 1, 3)
	// Since needs a later millisecond than the early events'.
	earlyTime := mustULID(t, early[2]).Time()
	testkit.WaitFor(t, "the clock to pass the early events' millisecond", func() bool { return time.Now().After(earlyTime) })
	middle := time.Now()
	testkit.WaitFor(t, "the clock to pass the middle", func() bool { return time.Now().UnixMilli() > middle.UnixMilli() })
	late := srv.publishN(t, "s", 4, 3)
	all := append(append([]string(nil), early...), late...)

	for _, tc := range []struct {
		name string
		from client.From
		want func() []string // before the live event
	}{
		{"beginning", client.Beginning(), func() []string { return all }},
		{"after an id", client.After(all[1]), func() []string { return all[2:] }},
		{"after an id, lower case", client.After(strings.ToLower(all[1])), func() []string { return all[2:] }},
		{"since", client.Since(middle), func() []string { return all[3:] }},
		{"last", client.Last(2), func() []string { return all[len(all)-2:] }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := tc.want()
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			got := collect(c.Subscribe(ctx, "s", tc.from))
			got.waitFor(t, len(want))
			// A live event after the replay: the subscription goes on.
			live := srv.publishN(t, "s", 100, 1)
			all = append(all, live...) // later cases see it too
			items := got.waitFor(t, len(want)+1)
			want = append(append([]string(nil), want...), live...)
			if ids := itemIDs(items); strings.Join(ids, ",") != strings.Join(want, ",") {
				t.Errorf("got %v, want %v", ids, want)
			}
			cancel()
			if err := got.waitEnd(t, testkit.Wait); !errors.Is(err, context.Canceled) {
				t.Errorf("after cancel the iteration ended with %v, want context.Canceled", err)
			}
		})
	}
}

// TestSubscribeLive: a live start gets what is committed after it
// connects, in order, with the fields of the log.
func TestSubscribeLive(t *testing.T) {
	t.Parallel()
	srv := newServer(t)
	c := newClient(t, srv.URL)
	srv.publishN(t, "s", 0, 2) // before: not delivered
	got := collect(c.Subscribe(t.Context(), "s", client.Live()))
	// The moment the subscription starts is not announced: publish probes
	// until one arrives.
	testkit.WaitFor(t, "a probe to arrive", func() bool {
		srv.publishN(t, "s", -1, 1)
		items, _ := got.snapshot()
		return len(items) > 0
	})
	first, _ := got.snapshot()
	after := srv.stored(t, "s")
	for i, e := range after {
		if e.ID.String() == first[0].ID {
			after = after[i:]
			break
		}
	}
	items := got.waitFor(t, len(after))
	if err := sameEvents(events(items), after); err != nil {
		t.Error(err)
	}
	if items[0].Event.Stream != "s" {
		t.Errorf("event stream %q, want s", items[0].Event.Stream)
	}
}

// TestSubscribeAcrossCuts: every connection is cut after a random number
// of bytes, inside lines and events as often as not, while events are
// published. The iterator resumes with Last-Event-ID each time, and what
// it yields is the stream exactly: no gap, no duplicate, in order.
func TestSubscribeAcrossCuts(t *testing.T) {
	t.Parallel()
	srv := newServer(t)
	proxy := newCutProxy(t, srv.URL, func(int) int { return 100 + rand.IntN(3000) })
	c := newClient(t, proxy.URL())
	srv.publishN(t, "s", 0, 200)
	got := collect(c.Subscribe(t.Context(), "s", client.Beginning()))
	const total = 1200
	for n := 200; n < total; n += 25 {
		srv.publishN(t, "s", n, 25)
	}
	items := got.waitFor(t, total)
	if err := sameEvents(events(items), srv.stored(t, "s")); err != nil {
		t.Error(err)
	}
	if n := proxy.connections(); n < 10 {
		t.Errorf("%d connections: the cuts did not happen", n)
	}
	t.Logf("%d events over %d connections", total, proxy.connections())
}

// TestSubscribeResumePoint: a Last start is repeated on every attempt
// until an item has been yielded; from then on each attempt resumes with
// Last-Event-ID, the id of the last item yielded (a reset's too), and no
// query.
func TestSubscribeResumePoint(t *testing.T) {
	t.Parallel()
	const (
		id1 = "01JDX3ZJ1P8V6Y5C4Q2W7N9K0A"
		id2 = "01JDX3ZJ1P8V6Y5C4Q2W7N9K0B"
		id3 = "01JDX3ZJ1P8V6Y5C4Q2W7N9K0C"
	)
	script, url := newSSEScript(t,
		status(http.StatusServiceUnavailable, ""),
		sendSSE("retry: 1\n\n"), // ends without anything
		sendSSE("retry: 1\n\n"+frame(id1, "t", `1`)+"id: "+id2+"\ndata: {\"cut"),
		sendSSE("retry: 1\n\n"+frame(id2, "reset", `{"reason":"trimmed","oldest_id":"`+id3+`"}`)),
		holdSSE("retry: 1\n\n"+frame(id3, "", `3`)),
	)
	c := newClient(t, url)
	got := collect(c.Subscribe(t.Context(), "s", client.Last(5)))
	items := got.waitFor(t, 3)
	want := []string{id1, id2, id3}
	if ids := itemIDs(items); strings.Join(ids, ",") != strings.Join(want, ",") {
		t.Fatalf("got %v, want %v", ids, want)
	}
	if items[1].Reset == nil || items[1].Event != nil || *items[1].Reset != (client.Reset{Reason: "trimmed", OldestID: id3}) {
		t.Errorf("item 1: %+v %+v, want the reset alone", items[1].Event, items[1].Reset)
	}
	if items[2].Event == nil || items[2].Event.Type != "message" || string(items[2].Event.Data) != "3" {
		t.Errorf("item 2: %+v, want an untyped event", items[2].Event)
	}
	seen := script.seen()
	for i, r := range seen[:5] {
		wantLast, wantID := "5", ""
		switch {
		case i == 3:
			wantLast, wantID = "", id1
		case i == 4:
			wantLast, wantID = "", id2
		}
		if r.query.Get("last") != wantLast || r.header.Get("Last-Event-ID") != wantID {
			t.Errorf("attempt %d: last=%q Last-Event-ID %q; want %q, %q", i, r.query.Get("last"), r.header.Get("Last-Event-ID"), wantLast, wantID)
		}
		if got := r.header.Get("Accept"); got != "text/event-stream" {
			t.Errorf("attempt %d: Accept %q", i, got)
		}
	}
}

// TestSubscribeStartPosition: before the first item, the position a
// block without data gave (sselog's live start) is where every
// reconnection resumes, until an item moves it; the id of a block the
// stream ended inside does not count.
func TestSubscribeStartPosition(t *testing.T) {
	t.Parallel()
	const (
		pos = "01JDX3ZJ1P8V6Y5C4Q2W7N9K0A"
		cut = "01JDX3ZJ1P8V6Y5C4Q2W7N9K0Z"
		id1 = "01JDX3ZJ1P8V6Y5C4Q2W7N9K0B"
		id2 = "01JDX3ZJ1P8V6Y5C4Q2W7N9K0C"
	)
	script, url := newSSEScript(t,
		sendSSE("retry: 1\nid: "+pos+"\n\nid: "+cut+"\n"),
		sendSSE("retry: 1\n\n"), // a resume: no position of its own
		sendSSE("retry: 1\n\n"+frame(id1, "", `1`)),
		holdSSE("retry: 1\n\n"+frame(id2, "", `2`)),
	)
	c := newClient(t, url)
	got := collect(c.Subscribe(t.Context(), "s", client.Live()))
	items := got.waitFor(t, 2)
	if ids := itemIDs(items); strings.Join(ids, ",") != id1+","+id2 {
		t.Fatalf("got %v, want %s, %s", ids, id1, id2)
	}
	for i, want := range []string{"", pos, pos, id1} {
		if h := script.seen()[i].header.Get("Last-Event-ID"); h != want {
			t.Errorf("attempt %d: Last-Event-ID %q, want %q", i, h, want)
		}
	}
}

// TestSubscribeRetryHint: a stream that ends is reconnected after the
// server's retry hint, not sooner.
func TestSubscribeRetryHint(t *testing.T) {
	t.Parallel()
	const hint = 300 * time.Millisecond
	script, url := newSSEScript(t,
		sendSSE("retry: 300\n\n"+frame("01JDX3ZJ1P8V6Y5C4Q2W7N9K0A", "", `1`)),
		holdSSE("retry: 300\n\n"),
	)
	c := newClient(t, url)
	collect(c.Subscribe(t.Context(), "s", client.Live()))
	testkit.WaitFor(t, "the second connection", func() bool { return len(script.seen()) >= 2 })
	seen := script.seen()
	if gap := seen[1].at.Sub(seen[0].at); gap < hint {
		t.Errorf("reconnected %v after a stream that hinted %v", gap, hint)
	}
}

// TestSubscribeRetryAfter: 429 and 503 with Retry-After are waited out,
// then the stream is followed.
func TestSubscribeRetryAfter(t *testing.T) {
	t.Parallel()
	script, url := newSSEScript(t,
		status(http.StatusTooManyRequests, "1"),
		status(http.StatusServiceUnavailable, ""),
		holdSSE("retry: 1\n\n"+frame("01JDX3ZJ1P8V6Y5C4Q2W7N9K0A", "", `1`)),
	)
	c := newClient(t, url)
	got := collect(c.Subscribe(t.Context(), "s", client.Live()))
	got.waitFor(t, 1)
	seen := script.seen()
	if gap := seen[1].at.Sub(seen[0].at); gap < time.Second {
		t.Errorf("retried %v after Retry-After: 1", gap)
	}
}

// TestSubscribeRefused: an answer reconnecting cannot change is yielded
// once and ends the iteration, after one attempt.
func TestSubscribeRefused(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		step func(http.ResponseWriter, *http.Request)
		kind error
	}{
		{"400", status(http.StatusBadRequest, ""), client.ErrInvalid},
		{"401", status(http.StatusUnauthorized, ""), client.ErrUnauthorized},
		{"403", status(http.StatusForbidden, ""), client.ErrForbidden},
		{"404", status(http.StatusNotFound, ""), client.ErrNotFound},
		{"not SSE", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("<html>")) }, client.ErrProtocol},
		{"event without an id", sendSSE("data: 1\n\n"), client.ErrProtocol},
		{"data not JSON", sendSSE(frame("01JDX3ZJ1P8V6Y5C4Q2W7N9K0A", "", `{`)), client.ErrProtocol},
		{"ids going back", sendSSE(frame("01JDX3ZJ1P8V6Y5C4Q2W7N9K0B", "", `1`) + frame("01JDX3ZJ1P8V6Y5C4Q2W7N9K0A", "", `2`)), client.ErrProtocol},
		{"reset without a reason", sendSSE(frame("01JDX3ZJ1P8V6Y5C4Q2W7N9K0A", "reset", `{}`)), client.ErrProtocol},
		{"start position not an id", sendSSE("retry: 1\nid: nope\n\n"), client.ErrProtocol},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			script, url := newSSEScript(t, tc.step)
			c := newClient(t, url)
			// A refusal the client mistakes for a reason to reconnect
			// ends at the deadline, with the wrong error.
			ctx, cancel := context.WithTimeout(t.Context(), testkit.Wait)
			defer cancel()
			var errs []error
			for _, err := range c.Subscribe(ctx, "s", client.Live()) {
				if err != nil {
					errs = append(errs, err)
				}
			}
			if len(errs) != 1 || !errors.Is(errs[0], tc.kind) {
				t.Fatalf("errors %v, want one that is %v", errs, tc.kind)
			}
			if n := len(script.seen()); n != 1 {
				t.Errorf("%d attempts, want 1", n)
			}
		})
	}
}

// TestSubscribeChecksFrom: an unusable start is ErrInvalid before any
// request.
func TestSubscribeChecksFrom(t *testing.T) {
	t.Parallel()
	script, url := newSSEScript(t, status(http.StatusTeapot, ""))
	c := newClient(t, url)
	for _, from := range []client.From{client.After("not-an-id"), client.After(""), client.Last(0), client.Since(time.Time{})} {
		for _, err := range c.Subscribe(t.Context(), "s", from) {
			if !errors.Is(err, client.ErrInvalid) {
				t.Errorf("%v: %v, want ErrInvalid", from, err)
			}
		}
	}
	if n := len(script.seen()); n != 0 {
		t.Errorf("%d requests, want none", n)
	}
}

// TestSubscribeResets: a trimmed start is told with a reset (its id the
// low-water mark, its oldest id the first event that follows), a
// deletion too; after the deletion the iterator follows the stream
// published to again under the same name.
func TestSubscribeResets(t *testing.T) {
	t.Parallel()
	srv := newServer(t)
	c := newClient(t, srv.URL)
	ids := srv.publishN(t, "s", 1, 6)
	trim, err := srv.log.Trim("s", store.Cut{MaxEvents: 3}, 100)
	if err != nil || trim.Events != 3 {
		t.Fatalf("trim: %+v, %v", trim, err)
	}
	got := collect(c.Subscribe(t.Context(), "s", client.Beginning()))
	items := got.waitFor(t, 4)
	if r := items[0]; r.Reset == nil || r.Event != nil || r.ID != ids[2] || *r.Reset != (client.Reset{Reason: client.ReasonTrimmed, OldestID: ids[3]}) {
		t.Fatalf("first item %+v %+v, want a trimmed reset at %s with oldest %s", r, r.Reset, ids[2], ids[3])
	}
	if strings.Join(itemIDs(items[1:]), ",") != strings.Join(ids[3:], ",") {
		t.Errorf("after the reset: %v, want %v", itemIDs(items[1:]), ids[3:])
	}

	low, err := srv.log.DeleteStream(t.Context(), "s")
	if err != nil {
		t.Fatal(err)
	}
	items = got.waitFor(t, 5)
	if r := items[4]; r.Reset == nil || r.Reset.Reason != client.ReasonDeleted || r.ID != low.String() {
		t.Fatalf("after the deletion: %+v %+v, want a deleted reset at %s", r, r.Reset, low)
	}
	again := srv.publishN(t, "s", 10, 1)
	items = got.waitFor(t, 6)
	if items[5].Event == nil || items[5].ID != again[0] {
		t.Errorf("after the stream came back: %+v, want its event %s", items[5], again[0])
	}
}

// TestSubscribeCancel: cancelling ctx ends an iteration waiting for live
// events at once, with ctx's error.
func TestSubscribeCancel(t *testing.T) {
	t.Parallel()
	srv := newServer(t)
	c := newClient(t, srv.URL)
	srv.publishN(t, "s", 0, 1)
	ctx, cancel := context.WithCancel(t.Context())
	got := collect(c.Subscribe(ctx, "s", client.Beginning()))
	got.waitFor(t, 1)
	start := time.Now()
	cancel()
	if err := got.waitEnd(t, 2*time.Second); !errors.Is(err, context.Canceled) {
		t.Errorf("ended with %v, want context.Canceled", err)
	}
	t.Logf("ended %v after cancel", time.Since(start))
}

// TestSubscribeCancelWhileRetrying: cancelling ctx during the pauses
// against a server that is down ends the iteration with ctx's error and
// the failure it was retrying.
func TestSubscribeCancelWhileRetrying(t *testing.T) {
	t.Parallel()
	c := newClient(t, "http://127.0.0.1:1", client.WithBackoff(time.Second, time.Minute))
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	got := collect(c.Subscribe(ctx, "s", client.Live()))
	err := got.waitEnd(t, 2*time.Second)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "refused") {
		t.Errorf("ended with %v, want the deadline and the refused connection", err)
	}
}

// TestSubscribeStopClosesConnection: a loop that breaks closes the
// connection; the server's subscriber goes.
func TestSubscribeStopClosesConnection(t *testing.T) {
	t.Parallel()
	gone := make(chan struct{})
	_, url := newSSEScript(t, func(w http.ResponseWriter, r *http.Request) {
		holdSSE(frame("01JDX3ZJ1P8V6Y5C4Q2W7N9K0A", "", `1`)+frame("01JDX3ZJ1P8V6Y5C4Q2W7N9K0B", "", `2`))(w, r)
		close(gone)
	})
	c := newClient(t, url)
	for item, err := range c.Subscribe(t.Context(), "s", client.Live()) {
		if err != nil || item.ID != "01JDX3ZJ1P8V6Y5C4Q2W7N9K0A" {
			t.Fatalf("first item %+v, %v", item, err)
		}
		break
	}
	select {
	case <-gone:
	case <-time.After(testkit.Wait):
		t.Fatal("the server still holds the stream after the loop broke")
	}
}

// TestSubscribeTokenFunc: the token function is asked on every attempt,
// so a reconnection carries a fresh token.
func TestSubscribeTokenFunc(t *testing.T) {
	t.Parallel()
	script, url := newSSEScript(t,
		sendSSE("retry: 1\n\n"+frame("01JDX3ZJ1P8V6Y5C4Q2W7N9K0A", "", `1`)),
		holdSSE("retry: 1\n\n"),
	)
	n := 0
	c := newClient(t, url, client.WithTokenFunc(func(context.Context) (string, error) {
		n++ // one iteration, one goroutine
		return "token-" + string(rune('0'+n)), nil
	}))
	collect(c.Subscribe(t.Context(), "s", client.Live()))
	testkit.WaitFor(t, "the second connection", func() bool { return len(script.seen()) >= 2 })
	seen := script.seen()
	if a, b := seen[0].header.Get("Authorization"), seen[1].header.Get("Authorization"); a != "Bearer token-1" || b != "Bearer token-2" {
		t.Errorf("Authorization %q then %q, want a fresh token each time", a, b)
	}
}

func itemIDs(items []client.Item) []string {
	out := make([]string, len(items))
	for i, it := range items {
		out[i] = it.ID
	}
	return out
}

func mustULID(t *testing.T, s string) store.ID {
	t.Helper()
	id, err := store.ParseID(s)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// TestSubscribeLiveResumesBeforeFirstItem: a Live subscription whose first
// connection ends before any event (after the server's first block, which
// carries the position the stream starts after) resumes from that
// position: an event committed while it reconnects is its first item, not
// skipped by a second live start. (From the client review:
// TestReviewLiveGapBeforeFirstItem.)
func TestSubscribeLiveResumesBeforeFirstItem(t *testing.T) {
	t.Parallel()
	srv := newServer(t)
	srv.publishN(t, "s", 0, 1) // so that the live position is not the zero id
	var (
		firstBlock = make(chan string, 1)   // connection 0's first block, as the client got it
		published  = make(chan struct{})    // e1 is committed
		live       = make(chan struct{}, 1) // connection 1 has its first block
	)
	rec, url := newRecorder(t, srv.URL, nil)
	rec.answer = func(n int, w http.ResponseWriter, r *http.Request, _ []byte) bool {
		switch n {
		case 0:
			// Only the first block goes through; then the response ends
			// cleanly, so the client reads that block before the end.
			firstBlock <- forwardFirstBlock(t, srv.URL, w, r)
			return true
		case 1:
			select {
			case <-published:
			case <-r.Context().Done():
				return true
			}
			rec.backend.ServeHTTP(&firstWrite{ResponseWriter: w, wrote: live}, r)
			return true
		}
		return false
	}
	c := newClient(t, url)
	got := collect(c.Subscribe(t.Context(), "s", client.Live()))

	var block string
	select {
	case block = <-firstBlock:
	case <-time.After(testkit.Wait):
		t.Fatal("no connection")
	}
	_, position, _ := strings.Cut(block, "id: ")
	position, _, _ = strings.Cut(position, "\n")
	if len(position) != 26 {
		t.Fatalf("the live stream's first block %q has no id", block)
	}
	// Connection 0 is over at the client's end and the reconnection is
	// held: e1 is committed between the two.
	e1 := srv.publishN(t, "s", 1, 1)
	close(published)
	select {
	case <-live:
	case <-time.After(testkit.Wait):
		t.Fatal("no second connection")
	}
	e2 := srv.publishN(t, "s", 2, 1)
	items := got.waitFor(t, 1)
	if items[0].ID != e1[0] {
		t.Fatalf("first item %s, want %s, committed while the live subscription reconnected (e2 is %s)", items[0].ID, e1[0], e2[0])
	}
	if items := got.waitFor(t, 2); items[1].ID != e2[0] {
		t.Errorf("second item %s, want %s", items[1].ID, e2[0])
	}
	seen := rec.seen()
	if h := seen[1].header.Get("Last-Event-ID"); h != position || len(seen[1].query) != 0 {
		t.Errorf("the reconnection sent Last-Event-ID %q and query %v; want %s, the live start's position, and no query", h, seen[1].query, position)
	}
}

// forwardFirstBlock passes an SSE request to the backend, relays the
// answer's first block (up to its blank line) to the client, flushed, and
// ends the response there; the backend's stream is closed. It returns the
// block.
func forwardFirstBlock(t *testing.T, backend string, w http.ResponseWriter, r *http.Request) string {
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, r.Method, backend+r.URL.RequestURI(), nil)
	if err != nil {
		t.Errorf("forward: %v", err)
		return ""
	}
	req.Header = r.Header.Clone()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Errorf("forward: %v", err)
		return ""
	}
	defer resp.Body.Close()
	var block strings.Builder
	br := bufio.NewReader(resp.Body)
	for {
		line, err := br.ReadString('\n')
		block.WriteString(line)
		if err != nil || line == "\n" {
			break
		}
	}
	w.Header().Set("Content-Type", resp.Header.Get("Content-Type"))
	w.WriteHeader(resp.StatusCode)
	_, _ = io.WriteString(w, block.String())
	_ = http.NewResponseController(w).Flush()
	return block.String()
}

// firstWrite is a ResponseWriter that signals its first write.
type firstWrite struct {
	http.ResponseWriter
	wrote chan<- struct{}
	once  sync.Once
}

func (f *firstWrite) Write(p []byte) (int, error) {
	n, err := f.ResponseWriter.Write(p)
	f.once.Do(func() { f.wrote <- struct{}{} })
	return n, err
}

func (f *firstWrite) Unwrap() http.ResponseWriter { return f.ResponseWriter }
