package httpapi_test

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sselog/sselog/httpapi"
	"github.com/sselog/sselog/internal/testkit"
	"github.com/sselog/sselog/store"
	"github.com/sselog/sselog/stream"
)

// fuzzFixture is the server every input of one fuzz process goes to, and
// what it holds: a few events in stream s, then one in stream t, the
// newest in the database.
type fuzzFixture struct {
	s      *testServer
	events []store.Event // s's events, in order
	newest store.ID
}

func newFuzzFixture(f *testing.F) *fuzzFixture {
	f.Helper()
	s := newServer(f, httpapi.Options{}, stream.Options{})
	fx := &fuzzFixture{s: s}
	for _, body := range []string{`{"data":1}`, `{"type":"t","data":"two"}`, `[{"data":[3]},{"type":"u","data":{"four":4}}]`} {
		status, _, b, err := s.do(http.MethodPost, "/v1/streams/s/events", "application/json", body, nil)
		if err != nil || status != http.StatusCreated {
			f.Fatalf("publish: %d %s %v", status, b, err)
		}
	}
	events, err := s.log.ReadAfter("s", store.ID{}, 0)
	if err != nil {
		f.Fatal(err)
	}
	fx.events = events
	status, _, b, err := s.do(http.MethodPost, "/v1/streams/t/events", "application/json", `{"data":5}`, nil)
	if err != nil || status != http.StatusCreated {
		f.Fatalf("publish: %d %s %v", status, b, err)
	}
	fx.newest = s.log.LastID()
	return fx
}

// after is the stream's events after id, as an SSE client sees them.
func (fx *fuzzFixture) after(id store.ID) []testkit.SSEEvent {
	var out []testkit.SSEEvent
	for _, e := range fx.events {
		if e.ID.Compare(id) > 0 {
			typ := e.Type
			if typ == "" {
				typ = "message"
			}
			out = append(out, testkit.SSEEvent{ID: e.ID.String(), Type: typ, Data: string(e.Data)})
		}
	}
	return out
}

// exchange sends one raw request and reads the head of the answer. The
// caller reads the body and closes the connection.
func (fx *fuzzFixture) exchange(t *testing.T, req string) (*http.Response, net.Conn) {
	t.Helper()
	c, err := net.Dial("tcp", fx.s.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	// Closing with a reset leaves no TIME_WAIT behind: a fuzz process
	// makes tens of thousands of connections, more than there are
	// ephemeral ports.
	if err := c.(*net.TCPConn).SetLinger(0); err != nil {
		t.Fatal(err)
	}
	if err := c.SetDeadline(time.Now().Add(testkit.Wait)); err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(c, req); err != nil {
		c.Close()
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		c.Close()
		// net/http answers every request it reads, even a broken one; no
		// answer means the handler panicked.
		t.Fatalf("no answer to %q: %v", req, err)
	}
	return resp, c
}

// onTheWire reports whether s reaches the server as it is: no byte that
// ends or splits the request line or a header line.
func onTheWire(s string, inHeader bool) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 && !(inHeader && c == '\t') || c == 0x7f || (!inHeader && c == ' ') {
			return false
		}
	}
	return true
}

// checkServerAnswer holds any answer to the fact that a request cannot
// make the server fail: a 5xx is allowed only from net/http itself, for a
// protocol version or a transfer coding it does not speak (501, 505),
// never from the handler.
func checkServerAnswer(t *testing.T, resp *http.Response, body []byte) {
	t.Helper()
	if resp.StatusCode >= 500 {
		if (resp.StatusCode != http.StatusNotImplemented && resp.StatusCode != http.StatusHTTPVersionNotSupported) ||
			resp.Header.Get("Content-Type") == "application/json" {
			t.Fatalf("status %d: %s", resp.StatusCode, body)
		}
	}
}

// FuzzSubscribeResume sends any Last-Event-ID header and any query to the
// SSE endpoint. Where both reach the server intact, the answer is exactly
// what the README says: the header wins unless it is empty, a query that
// also gives since or last is a stream or a 400, an id that is
// not a ULID is a 400 before the stream starts, an accepted one is a ULID
// and the stream replays every event after it (or, past the newest id in
// the database, starts with a reset). Anything else, CR, LF and NUL
// included, is answered with a 200 or a 4xx, never by the handler with a
// 5xx.
func FuzzSubscribeResume(f *testing.F) {
	fx := newFuzzFixture(f)
	for _, seed := range [][2]string{
		{"", ""},
		{zeroID, ""},
		{"", "last_event_id=" + zeroID},
		{fx.events[1].ID.String(), ""},
		{strings.ToLower(fx.events[2].ID.String()), "last_event_id=nope"},
		{"", "last_event_id=" + fx.events[3].ID.String()},
		{fx.newest.String(), ""},
		{"7ZZZZZZZZZZZZZZZZZZZZZZZZZ", ""},
		{"80000000000000000000000000", ""},
		{" \t" + zeroID + "\t ", ""},
		{"nope", "last_event_id=" + zeroID},
		{"", "last_event_id=nope&last_event_id=" + zeroID},
		{"", "last_event_id=" + zeroID + "&last_event_id=nope"},
		{"", "last_event_id=%30%30%30%30%30%30%30%30%30%30%30%30%30%30%30%30%30%30%30%30%30%30%30%30%30%30"},
		{"", "last_event_id=%zz"},
		{"", "last_event_id=" + zeroID + ";x=1"},
		{"", "last_event_id=+" + zeroID[1:]},
		{"\xff\xfe", ""},
		{zeroID[:25] + "\u0130", ""},
		{"x\r\nX-Injected: 1", ""},
		{zeroID + "\x00", ""},
		{"", "a HTTP/1.1\r\nHost: y\r\n\r\n"},
		{"x\r\nTransfer-Encoding: gzip", ""},
		{"", "last_event_id=" + zeroID + "#fragment"},
		{"", "last_event_id=" + zeroID + "%23"},
		{"", "?last_event_id=" + zeroID},
	} {
		f.Add(seed[0], seed[1])
	}
	f.Fuzz(func(t *testing.T, header, query string) {
		if len(header)+len(query) > 64<<10 {
			t.Skip("larger than a request head may be")
		}
		target := "/v1/streams/s/events"
		if query != "" {
			target += "?" + query
		}
		resp, c := fx.exchange(t, "GET "+target+" HTTP/1.1\r\nHost: x\r\nLast-Event-ID: "+header+"\r\nConnection: close\r\n\r\n")
		defer c.Close()
		defer resp.Body.Close()
		sse := resp.StatusCode == http.StatusOK && resp.Header.Get("Content-Type") == "text/event-stream"
		var cl *testkit.SSEReader
		var body []byte
		if sse {
			cl = testkit.NewSSEReader(resp, nil)
			if b, err := cl.Next(); err != nil || b.Retry == "" {
				t.Fatalf("stream starts with %+v, %v; want the retry hint", b, err)
			}
		} else {
			body, _ = io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		}
		checkServerAnswer(t, resp, body)

		if !onTheWire(header, true) || !onTheWire(query, false) {
			if !sse && resp.StatusCode != http.StatusBadRequest && resp.StatusCode < 500 {
				t.Fatalf("status %d: %s", resp.StatusCode, body)
			}
			return
		}
		source, resume := "Last-Event-ID", strings.Trim(header, " \t")
		if resume == "" {
			q, _ := url.ParseQuery(query)
			if q.Get("since") != "" || q.Get("last") != "" {
				// A start by time or by count (FuzzParseSince and
				// start_test.go hold their values), alone or beside
				// another start: a stream, or a 400.
				given := 0
				for _, p := range []string{"last_event_id", "since", "last"} {
					if q.Get(p) != "" {
						given++
					}
				}
				if given > 1 && resp.StatusCode != http.StatusBadRequest || !sse && resp.StatusCode != http.StatusBadRequest {
					t.Fatalf("query %q: status %d (%s), want a stream or a 400 (400 for more than one start)", query, resp.StatusCode, body)
				}
				return
			}
			source, resume = "last_event_id", q.Get("last_event_id")
		}
		id, perr := store.ParseID(resume)
		switch {
		case resume != "" && perr != nil:
			if resp.StatusCode != http.StatusBadRequest {
				t.Fatalf("%s %q is not an id, answered %d, want 400", source, resume, resp.StatusCode)
			}
			assertJSONError(t, resp.Header.Get("Content-Type"), body)
			if !strings.Contains(string(body), source) {
				t.Fatalf("error %s does not name %s", body, source)
			}
		case !sse:
			t.Fatalf("%s %q: status %d (%s), want a 200 event stream", source, resume, resp.StatusCode, body)
		case resume == "":
			// Live only: nothing to read without waiting.
		case id.Compare(fx.newest) > 0:
			e, err := cl.NextEvent()
			want := testkit.SSEEvent{ID: fx.newest.String(), Type: store.ResetType, Data: `{"reason":"unknown"}`}
			if err != nil || e != want {
				t.Fatalf("resume after %s, past the newest id: got %+v, %v; want %+v", id, e, err, want)
			}
		default:
			want := fx.after(id)
			for i, w := range want {
				e, err := cl.NextEvent()
				if err != nil || e != w {
					t.Fatalf("resume after %s: event %d is %+v, %v; want %+v", id, i, e, err, w)
				}
			}
		}
	})
}

// FuzzHistoryQuery sends any query to the history endpoint. Where it reaches
// the server intact, the answer is exactly the README's: since and last a
// page or a 400 (a 400 beside each other or after); after and limit
// are the first values of their names, after must be a ULID or empty,
// limit a number of at least 1 (strconv.Atoi's syntax) or empty, else 400;
// and a 200 holds the events after after, at most limit of them (1000 at
// most). Anything else is a 200 or a 4xx, never a 5xx from the handler.
func FuzzHistoryQuery(f *testing.F) {
	fx := newFuzzFixture(f)
	for _, q := range []string{
		"", "after=" + zeroID, "limit=1", "limit=0", "limit=-1", "limit=1000000", "limit=+2", "limit=007",
		"limit=99999999999999999999", "limit=1.5", "limit=%201", "limit=%EF%BC%91",
		"after=nope", "after=" + zeroID + "&limit=2", "limit=2&limit=x", "limit=x&limit=2",
		"after=%zz", "limit=1;after=x", "after=7ZZZZZZZZZZZZZZZZZZZZZZZZZ", "after=" + strings.ToLower(fx.events[1].ID.String()),
		"after=" + fx.events[2].ID.String() + "&limit=1", "after=&limit=", "after", "&&&", "after=" + fx.newest.String(),
		"x HTTP/1.1\r\nHost: y\r\n\r\n", "x HTTP/9.9\r\nHost: y\r\n\r\n", "a=\x00",
	} {
		f.Add(q)
	}
	f.Fuzz(func(t *testing.T, query string) {
		if len(query) > 64<<10 {
			t.Skip("larger than a request head may be")
		}
		resp, c := fx.exchange(t, "GET /v1/streams/s/history?"+query+" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
		defer c.Close()
		defer resp.Body.Close()
		body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		if err != nil {
			t.Fatal(err)
		}
		checkServerAnswer(t, resp, body)
		if !onTheWire(query, false) {
			if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusBadRequest && resp.StatusCode < 500 {
				t.Fatalf("status %d: %s", resp.StatusCode, body)
			}
			return
		}

		q, _ := url.ParseQuery(query)
		if q.Get("last") != "" || q.Get("since") != "" {
			// since and last start a page by time or by count
			// (FuzzParseSince and start_test.go hold their values); two
			// of after, since and last are a 400.
			given := 0
			for _, p := range []string{"after", "since", "last"} {
				if q.Get(p) != "" {
					given++
				}
			}
			if given > 1 && resp.StatusCode != http.StatusBadRequest ||
				resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusBadRequest {
				t.Fatalf("query %q: status %d: %s", query, resp.StatusCode, body)
			}
			return
		}
		after, limit := store.ID{}, httpapi.DefaultHistoryLimit
		var bad []string
		if s := q.Get("after"); s != "" {
			id, err := store.ParseID(s)
			if err != nil {
				bad = append(bad, "after")
			}
			after = id
		}
		if s := q.Get("limit"); s != "" {
			n, err := strconv.Atoi(s)
			if err != nil || n < 1 {
				bad = append(bad, "limit")
			}
			limit = min(n, httpapi.MaxHistoryLimit)
		}
		if len(bad) > 0 {
			if resp.StatusCode != http.StatusBadRequest {
				t.Fatalf("query %q (bad %v): status %d: %s", query, bad, resp.StatusCode, body)
			}
			assertJSONError(t, resp.Header.Get("Content-Type"), body)
			return
		}
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("query %q: status %d: %s", query, resp.StatusCode, body)
		}
		var page historyPage
		if err := decodeStrict(body, &page); err != nil {
			t.Fatalf("%v: %s", err, body)
		}
		want := fx.after(after)
		want = want[:min(len(want), limit)]
		if page.Gap || len(page.Events) != len(want) {
			t.Fatalf("query %q: %d events (gap %v), want %d", query, len(page.Events), page.Gap, len(want))
		}
		for i, e := range page.Events {
			got := testkit.SSEEvent{ID: e.ID.String(), Type: e.Type, Data: string(e.Data)}
			if got != want[i] || e.Time != e.ID.Time().UTC().Format(time.RFC3339Nano) {
				t.Fatalf("query %q: event %d is %+v at %s, want %+v", query, i, got, e.Time, want[i])
			}
		}
	})
}
