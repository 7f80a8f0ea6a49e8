package httpapi_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sselog/sselog/httpapi"
	"github.com/sselog/sselog/internal/testkit"
	"github.com/sselog/sselog/store"
	"github.com/sselog/sselog/stream"
)

// TestStreamStart checks the response headers and that the retry hint is
// flushed at once, before there is any event to send: a client must know
// the connection is up without waiting for traffic.
func TestStreamStart(t *testing.T) {
	s := newServer(t, httpapi.Options{Retry: 1500 * time.Millisecond}, stream.Options{})
	c := s.dial(t, "/v1/streams/s/events", "")
	for k, want := range map[string]string{
		"Content-Type":      "text/event-stream",
		"Cache-Control":     "no-cache",
		"X-Accel-Buffering": "no",
	} {
		if got := c.Response().Header.Get(k); got != want {
			t.Errorf("%s: %q, want %q", k, got, want)
		}
	}
	// A live start says where it starts: the newest id (none yet).
	const hint = "retry: 1500\nid: 00000000000000000000000000\n\n"
	got, err := c.ReadRaw(len(hint))
	if err != nil {
		t.Fatalf("reading the retry hint with nothing published: %v", err)
	}
	if got != hint {
		t.Fatalf("stream starts with %q, want %q", got, hint)
	}
	ids := s.mustPublish(t, "s", `{"data":1}`)
	if err := testkit.DiffEvents(readEvents(t, c, 1), []store.Event{{ID: ids[0], Data: []byte("1")}}); err != nil {
		t.Fatal(err)
	}
}

func TestHeartbeat(t *testing.T) {
	s := newServer(t, httpapi.Options{Heartbeat: 50 * time.Millisecond}, stream.Options{})
	c := s.dial(t, "/v1/streams/s/events", "")
	if b, err := c.Next(); err != nil || b.Retry == "" {
		t.Fatalf("first block %+v, %v; want the retry hint", b, err)
	}
	// Several in a row: the timer must be re-armed after each one.
	for i := range 3 {
		line, err := c.ReadLine()
		if err != nil {
			t.Fatalf("heartbeat %d: %v", i, err)
		}
		if line != ":\n" {
			t.Fatalf("heartbeat %d: got %q, want a comment line %q", i, line, ":\n")
		}
		if line, err = c.ReadLine(); err != nil || line != "\n" {
			t.Fatalf("heartbeat %d is followed by %q, %v; want its blank line", i, line, err)
		}
	}
	// Events still flow between heartbeats.
	ids := s.mustPublish(t, "s", `{"data":1}`)
	if err := testkit.DiffEvents(readEvents(t, c, 1), []store.Event{{ID: ids[0], Data: []byte("1")}}); err != nil {
		t.Fatal(err)
	}
}

func TestResume(t *testing.T) {
	s := newServer(t, httpapi.Options{}, stream.Options{})
	var ids []store.ID
	for i := range 5 {
		ids = append(ids, s.mustPublish(t, "s", fmt.Sprintf(`{"data":%d}`, i))...)
	}
	s.mustPublish(t, "other", `{"data":"x"}`)
	zero := strings.Repeat("0", 26)
	tests := []struct {
		name   string
		query  string
		header string
		after  store.ID // where the stream must resume
	}{
		{"header", "", ids[1].String(), ids[1]},
		{"query", "?last_event_id=" + ids[2].String(), "", ids[2]},
		{"header wins over query", "?last_event_id=" + ids[0].String(), ids[3].String(), ids[3]},
		{"header wins over bad query", "?last_event_id=nope", ids[3].String(), ids[3]},
		{"zero id replays all", "", zero, store.ID{}},
		{"zero id in query", "?last_event_id=" + zero, "", store.ID{}},
		{"last id", "", ids[4].String(), ids[4]},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// Markers of earlier cases are part of the stream by now.
			want, err := s.log.ReadAfter("s", tc.after, 0)
			if err != nil {
				t.Fatal(err)
			}
			c := s.dial(t, "/v1/streams/s/events"+tc.query, tc.header)
			got := readEvents(t, c, len(want))
			// A marker published now must come next: nothing extra was sent
			// before it.
			marker := s.mustPublish(t, "s", `{"data":"marker"}`)
			got = append(got, readEvents(t, c, 1)...)
			want = append(want, store.Event{ID: marker[0], Data: []byte(`"marker"`)})
			if err := testkit.DiffEvents(got, want); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestEmptyStream subscribes to streams that have no events yet, live and
// from the beginning: both wait, then get the first event published.
func TestEmptyStream(t *testing.T) {
	s := newServer(t, httpapi.Options{}, stream.Options{})
	s.mustPublish(t, "other", `{"data":0}`)
	live := s.dial(t, "/v1/streams/new/events", "")
	fromZero := s.dial(t, "/v1/streams/new/events", strings.Repeat("0", 26))
	for _, c := range []*testkit.SSEReader{live, fromZero} {
		// The hint proves the subscription exists before the publish.
		if b, err := c.Next(); err != nil || b.Retry == "" {
			t.Fatalf("first block %+v, %v; want the retry hint", b, err)
		}
	}
	ids := s.mustPublish(t, "new", `{"type":"first","data":1}`)
	want := []store.Event{{ID: ids[0], Type: "first", Data: []byte("1")}}
	for _, c := range []*testkit.SSEReader{live, fromZero} {
		if err := testkit.DiffEvents(readEvents(t, c, 1), want); err != nil {
			t.Fatal(err)
		}
	}
}

// TestSlowReaderDisconnected checks the write timeout: a client that stops
// reading is dropped once the kernel buffers are full and a write makes no
// progress for WriteTimeout, and publishing never waits for it.
func TestSlowReaderDisconnected(t *testing.T) {
	s := newServer(t, httpapi.Options{WriteTimeout: 200 * time.Millisecond, Heartbeat: time.Hour}, stream.Options{})
	conn, err := testkit.SmallBufferDialer().Dial("tcp", s.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "GET /v1/streams/big/events HTTP/1.1\r\nHost: sselog\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	waitFollowing(t, s, 1)

	deadline := time.Now().Add(testkit.Wait)
	data := []byte(`"` + strings.Repeat("x", 256<<10) + `"`)
	published := 0
	for s.hub.Following() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("subscriber still connected after %d events of %d KiB", published, len(data)>>10)
		}
		start := time.Now()
		if _, err := s.log.Append(t.Context(), "big", []store.Event{{Data: data}}); err != nil {
			t.Fatal(err)
		}
		// Generous for an fsync under the race detector, far below what
		// waiting on the stuck subscriber would take.
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("publish %d took %v: publishing waits for a subscriber", published, d)
		}
		published++
	}
	t.Logf("disconnected after %d events of %d KiB", published, len(data)>>10)

	// The server has closed its side: draining what the kernel holds ends
	// in EOF or a reset, not in our read deadline.
	if err := conn.SetReadDeadline(time.Now().Add(testkit.Wait)); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	_, err = io.Copy(io.Discard, resp.Body)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatal("the server kept the connection open")
	}
}

// waitFollowing polls the hub until n streams are followed: the handler's
// return is only visible through the subscription it releases.
func waitFollowing(t *testing.T, s *testServer, n int) {
	t.Helper()
	testkit.WaitFor(t, fmt.Sprintf("Following() == %d", n), func() bool { return s.hub.Following() == n })
}

// TestClientGoneReleases checks that an idle stream whose client goes away
// ends at once, not at the next heartbeat or event.
func TestClientGoneReleases(t *testing.T) {
	s := newServer(t, httpapi.Options{Heartbeat: time.Hour}, stream.Options{})
	c := s.dial(t, "/v1/streams/s/events", "")
	if _, err := c.Next(); err != nil {
		t.Fatal(err)
	}
	waitFollowing(t, s, 1)
	c.Close()
	waitFollowing(t, s, 0)
}

// TestHubCloseEndsStreams checks the shutdown path: closing the hub ends
// every open stream cleanly, each with a last retry hint jittered between
// one and two retry intervals so that clients do not all come back at once,
// and new subscribers are told to come back.
func TestHubCloseEndsStreams(t *testing.T) {
	s := newServer(t, httpapi.Options{Heartbeat: time.Hour}, stream.Options{})
	var clients []*testkit.SSEReader
	for range 20 {
		c := s.dial(t, "/v1/streams/s/events", "")
		if _, err := c.Next(); err != nil {
			t.Fatal(err)
		}
		clients = append(clients, c)
	}
	waitFollowing(t, s, 1)
	s.hub.Close()
	hints := map[string]bool{}
	for _, c := range clients {
		b, err := c.Next()
		ms, _ := strconv.Atoi(b.Retry)
		if err != nil || ms < 3000 || ms > 6000 || b.HasID || b.HasData {
			t.Fatalf("after Hub.Close: %+v, %v; want a retry hint of 3000-6000 ms", b, err)
		}
		hints[b.Retry] = true
		if b, err := c.Next(); !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("after the last hint: %+v, %v; want the end of the stream", b, err)
		}
	}
	if len(hints) < 2 {
		t.Fatalf("20 streams all got the same retry hint %v: no jitter", hints)
	}
	status, ct, body, err := s.do(http.MethodGet, "/v1/streams/s/events", "", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	// A non-200 answer would make EventSource stop reconnecting for good.
	var ms int
	if _, err := fmt.Sscanf(string(body), "retry: %d\n\n", &ms); status != http.StatusOK || ct != "text/event-stream" || err != nil || ms < 3000 || ms > 6000 {
		t.Fatalf("subscribe after Hub.Close: status %d, %s, %q; want 200 with only the retry hint", status, ct, body)
	}
}

// TestSubscriberSendingIsDropped: an SSE client has nothing to send after
// its request; one that sends anything is dropped at once rather than read
// from, so a stream of junk cannot cost the server a core.
func TestSubscriberSendingIsDropped(t *testing.T) {
	s := newServer(t, httpapi.Options{Heartbeat: time.Hour}, stream.Options{})
	conn, err := net.Dial("tcp", s.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "GET /v1/streams/s/events HTTP/1.1\r\nHost: sselog\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("subscribe: %v, %v", resp, err)
	}
	waitFollowing(t, s, 1)
	if _, err := conn.Write(bytes.Repeat([]byte("junk"), 1024)); err != nil {
		t.Fatal(err)
	}
	waitFollowing(t, s, 0)
	if err := conn.SetReadDeadline(time.Now().Add(testkit.Wait)); err != nil {
		t.Fatal(err)
	}
	_, err = io.Copy(io.Discard, resp.Body)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatal("the server kept the connection of a client that sent junk")
	}
}

// TestLiveStartPosition: a live stream's first block carries the id it
// starts after, so that a client that reconnects before any event arrived
// resumes from there and misses nothing committed in between. A resumed
// stream's first block carries no id: the client already has one.
func TestLiveStartPosition(t *testing.T) {
	s := newServer(t, httpapi.Options{Heartbeat: time.Hour}, stream.Options{})
	before := s.mustPublish(t, "s", `{"data":"before"}`)
	c := s.dial(t, "/v1/streams/s/events", "")
	first, err := c.Next()
	if err != nil || first.Retry == "" || !first.HasID || first.ID != before[0].String() || first.HasData {
		t.Fatalf("first block %+v, %v; want the retry hint and id %s", first, err, before[0])
	}
	c.Close() // gone before any event
	missed := s.mustPublish(t, "s", `{"data":"missed"}`)
	again := s.dial(t, "/v1/streams/s/events", first.ID)
	if b, err := again.Next(); err != nil || b.HasID {
		t.Fatalf("resumed stream's first block %+v, %v; want the retry hint alone", b, err)
	}
	if err := testkit.DiffEvents(readEvents(t, again, 1), []store.Event{{ID: missed[0], Data: []byte(`"missed"`)}}); err != nil {
		t.Fatal(err)
	}
}

// TestStartPosition: a start by count, or by a time not after the newest
// id, says in its first block where it starts, so that a reconnect before
// the first event resumes from there (on an empty stream, after more
// events than the count, nothing is missed); a time after the newest id
// has no position yet, and its first block carries none.
func TestStartPosition(t *testing.T) {
	s := newServer(t, httpapi.Options{Heartbeat: time.Hour}, stream.Options{})
	ids := publishN(t, s, "s", 3)
	for _, tc := range []struct {
		query string
		want  string // the first block's id; "" for none
	}{
		{"last=2", ids[0].String()},
		{"last=50", zeroID},
		{"since=0", zeroID},
		{"since=" + strconv.FormatInt(time.Now().Add(time.Hour).UnixMilli(), 10), ""},
	} {
		c := s.dial(t, "/v1/streams/s/events?"+tc.query, "")
		b, err := c.Next()
		if err != nil || b.HasData || b.Retry == "" || b.HasID != (tc.want != "") || b.ID != tc.want {
			t.Errorf("%s: first block %+v, %v; want id %q", tc.query, b, err, tc.want)
		}
		c.Close()
	}
	// An empty stream started by count, then more events than the count
	// while the client is away: the reconnect from the first block's id
	// gets every one.
	c := s.dial(t, "/v1/streams/empty/events?last=2", "")
	b, err := c.Next()
	if err != nil || !b.HasID {
		t.Fatalf("first block %+v %v", b, err)
	}
	c.Close()
	missed := publishN(t, s, "empty", 5)
	again := s.dial(t, "/v1/streams/empty/events", b.ID)
	got := readEvents(t, again, 5)
	for i, e := range got {
		if e.ID != missed[i].String() {
			t.Fatalf("event %d is %s, want %s", i, e.ID, missed[i])
		}
	}
}
