package httpapi_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sselog/sselog/httpapi"
	"github.com/sselog/sselog/internal/testkit"
	"github.com/sselog/sselog/store"
	"github.com/sselog/sselog/stream"
)

// zeroID is the all-zero id, which resumes a stream from its beginning.
var zeroID = strings.Repeat("0", 26)

// newServerAt is newServer over the database at path, so that a test can
// stop a server and start another on the same file. stop closes the hub
// (ending every SSE handler), then the server, then the log; it runs once,
// and at cleanup if the test did not call it.
func newServerAt(tb testing.TB, path string, opts httpapi.Options, hubOpts stream.Options) (s *testServer, stop func()) {
	tb.Helper()
	l := testkit.OpenAt(tb, path, store.Options{})
	s, _ = startServer(tb, l, opts, hubOpts, testkit.ServeOptions{})
	stop = sync.OnceFunc(func() {
		s.hub.Close()
		s.Close()
		s.client.CloseIdleConnections()
		if err := l.Close(); err != nil {
			tb.Error(err)
		}
	})
	tb.Cleanup(stop)
	return s, stop
}

// trim cuts stream in transactions of at most chunk keys, as the retention
// worker does, and returns the stream's low-water mark afterwards.
func trim(t *testing.T, l *store.Log, name string, cut store.Cut, chunk int) store.ID {
	t.Helper()
	for range 1000 {
		res, err := l.Trim(name, cut, chunk)
		if err != nil {
			t.Fatal(err)
		}
		if !res.More {
			info, err := l.Stream(name)
			if err != nil {
				t.Fatal(err)
			}
			return info.LowWater
		}
	}
	t.Fatalf("trim of %s does not end", name)
	return store.ID{}
}

// publishN publishes n events with data 0..n-1 to name in one batch.
func publishN(t *testing.T, s *testServer, name string, n int) []store.ID {
	t.Helper()
	parts := make([]string, n)
	for i := range parts {
		parts[i] = fmt.Sprintf(`{"data":%d}`, i)
	}
	return s.mustPublish(t, name, "["+strings.Join(parts, ",")+"]")
}

// trimmedReset is the data of a reset after a trim.
func trimmedReset(oldest store.ID) map[string]string {
	s := ""
	if !oldest.IsZero() {
		s = oldest.String()
	}
	return map[string]string{"reason": "trimmed", "oldest_id": s}
}

// readReset reads the next event of c and checks that it is a reset with
// exactly the given data fields, whose id is minID (with exact) or at least
// minID. It returns the reset's id.
func readReset(t *testing.T, c *testkit.SSEReader, minID store.ID, exact bool, data map[string]string) store.ID {
	t.Helper()
	e, err := c.NextEvent()
	if err != nil {
		t.Fatalf("want a reset %v: %v", data, err)
	}
	var got map[string]string
	if e.Type != "reset" || json.Unmarshal([]byte(e.Data), &got) != nil || !maps.Equal(got, data) {
		t.Fatalf("got %+v, want event: reset with data %v", e, data)
	}
	id, err := store.ParseID(e.ID)
	if err != nil {
		t.Fatalf("reset id %q: %v", e.ID, err)
	}
	if exact && id != minID || id.Compare(minID) < 0 {
		t.Fatalf("reset id %s, want %s (exact %v)", id, minID, exact)
	}
	return id
}

// expectFrom reads from c every event of name after the id after, then
// publishes a marker and checks that it comes next: nothing else was sent.
func expectFrom(t *testing.T, s *testServer, c *testkit.SSEReader, name string, after store.ID) {
	t.Helper()
	want, err := s.log.ReadAfter(name, after, 0)
	if err != nil {
		t.Fatal(err)
	}
	got := readEvents(t, c, len(want))
	marker := s.mustPublish(t, name, `{"type":"marker","data":"marker"}`)
	got = append(got, readEvents(t, c, 1)...)
	want = append(want, store.Event{ID: marker[0], Type: "marker", Data: []byte(`"marker"`)})
	if err := testkit.DiffEvents(got, want); err != nil {
		t.Fatal(err)
	}
}

// sameJSON reports whether got and want are the same JSON value, whatever
// the order of object keys; numbers are compared as written.
func sameJSON(got []byte, want string) bool {
	decode := func(b []byte) (any, error) {
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.UseNumber()
		var v any
		err := dec.Decode(&v)
		return v, err
	}
	g, err1 := decode(got)
	w, err2 := decode([]byte(want))
	return err1 == nil && err2 == nil && reflect.DeepEqual(g, w)
}

// nextID is the id right after id.
func nextID(id store.ID) store.ID {
	for i := len(id) - 1; i >= 0; i-- {
		id[i]++
		if id[i] != 0 {
			break
		}
	}
	return id
}

// expectEnd checks that the server ends c's stream with nothing more.
func expectEnd(t *testing.T, c *testkit.SSEReader) {
	t.Helper()
	if b, err := c.Next(); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("got %+v, %v; want the end of the stream", b, err)
	}
}

func mustParseID(t *testing.T, s string) store.ID {
	t.Helper()
	id, err := store.ParseID(s)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// TestTrimmedReset resumes a trimmed stream from before, at and after its
// low-water mark. From before it, the client is told with a reset carrying
// the mark and the oldest retained id, then gets every retained event and
// live ones; reconnecting with the reset's id gives no second reset. The
// stream is read idle, through a one-frame tail (every read goes to the
// log), and while a live subscriber keeps it followed: the hub's in-memory
// tail must not hide the gap.
func TestTrimmedReset(t *testing.T) {
	setups := []struct {
		name   string
		hub    stream.Options
		follow bool
	}{
		{"idle stream", stream.Options{}, false},
		{"one-frame tail", stream.Options{TailLen: 1}, false},
		{"small pages", stream.Options{PageSize: 2}, false},
		{"followed stream", stream.Options{}, true},
	}
	for _, setup := range setups {
		t.Run(setup.name, func(t *testing.T) {
			s := newServer(t, httpapi.Options{}, setup.hub)
			if setup.follow {
				live := s.dial(t, "/v1/streams/s/events", "")
				if _, err := live.Next(); err != nil {
					t.Fatal(err)
				}
				waitFollowing(t, s, 1)
			}
			ids := publishN(t, s, "s", 10)
			low := trim(t, s.log, "s", store.Cut{MaxEvents: 4}, 2)
			if low != ids[5] {
				t.Fatalf("low-water mark %s after keeping 4 of 10, want %s", low, ids[5])
			}
			tests := []struct {
				name   string
				query  string
				header string
				reset  bool
			}{
				{"oldest id", "", ids[0].String(), true},
				{"just below the mark", "", ids[4].String(), true},
				{"in query", "?last_event_id=" + ids[2].String(), "", true},
				{"zero id", "", zeroID, true},
				{"zero id in query", "?last_event_id=" + zeroID, "", true},
				{"at the mark", "", low.String(), false},
				{"retained id", "", ids[7].String(), false},
			}
			for _, tc := range tests {
				t.Run(tc.name, func(t *testing.T) {
					resume := tc.header
					if resume == "" {
						resume = strings.TrimPrefix(tc.query, "?last_event_id=")
					}
					after := mustParseID(t, resume)
					c := s.dial(t, "/v1/streams/s/events"+tc.query, tc.header)
					if !tc.reset {
						expectFrom(t, s, c, "s", after)
						return
					}
					retained := s.readAll(t, "s")
					id := readReset(t, c, low, true, trimmedReset(retained[0].ID))
					expectFrom(t, s, c, "s", id)
					// The reset's id is where a reconnecting client resumes:
					// exactly the retained events, with no second reset.
					again := s.dial(t, "/v1/streams/s/events", id.String())
					expectFrom(t, s, again, "s", id)
				})
			}
		})
	}
}

// TestPublishResetTypeRefused checks that no publisher can forge the
// server's reset notice: the type is refused however it is written, and
// nothing of the request is appended.
func TestPublishResetTypeRefused(t *testing.T) {
	s := newServer(t, httpapi.Options{}, stream.Options{})
	s.mustPublish(t, "s", `{"data":0}`)
	tests := []struct{ name, body string }{
		{"single", `{"type":"reset","data":{"reason":"trimmed"}}`},
		{"escaped", `{"type":"res\u0065t","data":1}`},
		{"last of a batch", `[{"data":1},{"type":"reset","data":2}]`},
		{"first of a batch", `[{"type":"reset","data":1},{"data":2}]`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := takeSnapshot(t, s)
			s.mustDo(t, http.MethodPost, "/v1/streams/s/events", "application/json", tc.body, http.StatusBadRequest)
			if after := takeSnapshot(t, s); !reflect.DeepEqual(before, after) {
				t.Fatalf("refused publish changed the log: %+v -> %+v", before, after)
			}
		})
	}
}

// TestTrimmedEverything resumes a stream whose every event was trimmed: the
// reset names no oldest id, and live events follow it.
func TestTrimmedEverything(t *testing.T) {
	s := newServer(t, httpapi.Options{}, stream.Options{})
	ids := publishN(t, s, "s", 3)
	low := trim(t, s.log, "s", store.Cut{Before: store.MinIDAt(time.Now().Add(time.Hour))}, 2)
	if low != ids[2] {
		t.Fatalf("low-water mark %s, want the last id %s", low, ids[2])
	}
	clients := []*testkit.SSEReader{
		s.dial(t, "/v1/streams/s/events", ids[0].String()),
		s.dial(t, "/v1/streams/s/events?last_event_id="+zeroID, ""),
	}
	for _, c := range clients {
		readReset(t, c, low, true, trimmedReset(store.ID{}))
	}
	fresh := s.mustPublish(t, "s", `{"data":"fresh"}`)
	want := []store.Event{{ID: fresh[0], Data: []byte(`"fresh"`)}}
	for _, c := range clients {
		if err := testkit.DiffEvents(readEvents(t, c, 1), want); err != nil {
			t.Fatal(err)
		}
	}
	expectFrom(t, s, s.dial(t, "/v1/streams/s/events", low.String()), "s", low)
}

// TestUnknownReset resumes from ids this database never issued: the client
// is told with a reset carrying the newest id there is, then gets only
// events published after it; reconnecting with that id gives no reset.
func TestUnknownReset(t *testing.T) {
	s := newServer(t, httpapi.Options{}, stream.Options{})
	publishN(t, s, "s", 3)
	s.mustPublish(t, "other", `{"data":"newest"}`)
	future := store.MinIDAt(time.Now().Add(24 * time.Hour)).String()
	tests := []struct {
		name   string
		stream string
		query  string
		header func() string
	}{
		{"just above the newest id", "s", "", func() string { return nextID(s.log.LastID()).String() }},
		{"far future", "s", "", func() string { return future }},
		{"largest id", "s", "", func() string { return "7ZZZZZZZZZZZZZZZZZZZZZZZZZ" }},
		{"in query", "s", "?last_event_id=" + future, func() string { return "" }},
		{"stream never published", "new", "", func() string { return future }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			last := s.log.LastID()
			c := s.dial(t, "/v1/streams/"+tc.stream+"/events"+tc.query, tc.header())
			id := readReset(t, c, last, true, map[string]string{"reason": "unknown"})
			expectFrom(t, s, c, tc.stream, s.log.LastID())
			expectFrom(t, s, s.dial(t, "/v1/streams/"+tc.stream+"/events", id.String()), tc.stream, id)
		})
	}
}

// TestHistoryGap checks that a history page says when events after its
// starting point were removed, and then starts at the oldest retained one.
func TestHistoryGap(t *testing.T) {
	s := newServer(t, httpapi.Options{}, stream.Options{})
	ids := publishN(t, s, "h", 10)
	low := trim(t, s.log, "h", store.Cut{MaxEvents: 4}, 3)
	whole := publishN(t, s, "whole", 3)
	gone := publishN(t, s, "gone", 2)
	if status, _, b, err := s.do(http.MethodDelete, "/v1/streams/gone", "", "", nil); err != nil || status != http.StatusOK {
		t.Fatalf("DELETE: %d, %v: %s", status, err, b)
	}
	future := store.MinIDAt(time.Now().Add(time.Hour))
	tests := []struct {
		name   string
		stream string
		after  string // omitted when empty
		gap    bool
		from   store.ID // the page holds the events after this one
	}{
		{"below the mark", "h", ids[0].String(), true, low},
		{"just below the mark", "h", ids[4].String(), true, low},
		{"zero id", "h", zeroID, true, low},
		{"after omitted", "h", "", true, low},
		{"at the mark", "h", low.String(), false, low},
		{"retained id", "h", ids[7].String(), false, ids[7]},
		{"last id", "h", ids[9].String(), false, ids[9]},
		{"future id", "h", future.String(), false, future},
		{"untrimmed from zero", "whole", zeroID, false, store.ID{}},
		{"untrimmed", "whole", whole[0].String(), false, whole[0]},
		{"deleted, old id", "gone", gone[0].String(), true, gone[1]},
		{"deleted, last id", "gone", gone[1].String(), false, gone[1]},
		{"never published", "never", zeroID, false, store.ID{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := "/v1/streams/" + tc.stream + "/history?limit=3"
			if tc.after != "" {
				path += "&after=" + tc.after
			}
			var page historyPage
			s.getJSON(t, path, &page)
			want, err := s.log.ReadAfter(tc.stream, tc.from, 3)
			if err != nil {
				t.Fatal(err)
			}
			var got []store.ID
			for _, e := range page.Events {
				got = append(got, e.ID)
			}
			if page.Gap != tc.gap || page.Events == nil || len(got) != len(want) {
				t.Fatalf("gap %v, %d events; want gap %v, %d events", page.Gap, len(got), tc.gap, len(want))
			}
			for i := range want {
				if got[i] != want[i].ID {
					t.Fatalf("event %d: %s, want %s", i, got[i], want[i].ID)
				}
			}
		})
	}
}

// TestLiveSubscriberNotReset trims a stream under a subscriber that has read
// every event: its position is not lost, so it just goes on with the next
// events, whether they come from memory or, with a one-frame tail, from the
// log after the trim.
func TestLiveSubscriberNotReset(t *testing.T) {
	hubs := []struct {
		name string
		opts stream.Options
	}{
		{"default tail", stream.Options{}},
		{"one-frame tail", stream.Options{TailLen: 1}},
	}
	cuts := []struct {
		name string
		cut  store.Cut
	}{
		{"keep one", store.Cut{MaxEvents: 1}},
		{"keep none", store.Cut{Before: store.MinIDAt(time.Now().Add(time.Hour))}},
	}
	for _, h := range hubs {
		for _, cut := range cuts {
			t.Run(h.name+"/"+cut.name, func(t *testing.T) {
				s := newServer(t, httpapi.Options{Heartbeat: time.Hour}, h.opts)
				// Live, and from the beginning of a stream with no events yet.
				for _, sub := range []struct{ name, query string }{{"live", ""}, {"replayed", "?last_event_id=" + zeroID}} {
					name := sub.name
					c := s.dial(t, "/v1/streams/"+name+"/events"+sub.query, "")
					if _, err := c.Next(); err != nil {
						t.Fatal(err)
					}
					waitFollowing(t, s, 1)
					first := publishN(t, s, name, 5)
					// Caught up: it has read the last event.
					readEvents(t, c, len(first))
					low := trim(t, s.log, name, cut.cut, 2)
					if low.Compare(first[3]) < 0 {
						t.Fatalf("low-water mark %s, want at least %s", low, first[3])
					}
					// A batch: with a one-frame tail, the subscriber falls
					// behind the tail and reads from the trimmed log.
					next := publishN(t, s, name, 3)
					got := readEvents(t, c, 3)
					for i, e := range got {
						if e.ID != next[i].String() || e.Type != "message" {
							t.Fatalf("event %d after the trim: %+v, want %s", i, e, next[i])
						}
					}
					c.Close()
					waitFollowing(t, s, 0)
				}
			})
		}
	}
}

// TestGapsAcrossRestart checks that what a trim, a deletion and a
// retention override leave behind is on disk: after a restart, clients
// resuming from before are still told, and history still says gap.
func TestGapsAcrossRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.db")
	s, stop := newServerAt(t, path, httpapi.Options{}, stream.Options{})
	ids := publishN(t, s, "s", 10)
	low := trim(t, s.log, "s", store.Cut{MaxEvents: 4}, 3)
	deleted := publishN(t, s, "d", 2)
	if status, _, b, err := s.do(http.MethodDelete, "/v1/streams/d", "", "", nil); err != nil || status != http.StatusOK {
		t.Fatalf("DELETE: %d, %v: %s", status, err, b)
	}
	if status, _, b, err := s.do(http.MethodPut, "/v1/streams/r/retention", "application/json", `{"max_events":7}`, nil); err != nil || status != http.StatusOK {
		t.Fatalf("PUT retention: %d, %v: %s", status, err, b)
	}
	last := s.log.LastID()
	stop()

	s, _ = newServerAt(t, path, httpapi.Options{}, stream.Options{})
	if got := s.log.LastID(); got != last {
		t.Fatalf("LastID after restart %s, want %s", got, last)
	}
	t.Run("trimmed", func(t *testing.T) {
		for _, resume := range []string{ids[0].String(), zeroID} {
			retained := s.readAll(t, "s")
			c := s.dial(t, "/v1/streams/s/events", resume)
			id := readReset(t, c, low, true, trimmedReset(retained[0].ID))
			expectFrom(t, s, c, "s", id)
		}
		expectFrom(t, s, s.dial(t, "/v1/streams/s/events", low.String()), "s", low)
	})
	t.Run("history", func(t *testing.T) {
		var page historyPage
		s.getJSON(t, "/v1/streams/s/history?after="+ids[1].String(), &page)
		if !page.Gap || len(page.Events) == 0 || page.Events[0].ID != ids[6] {
			t.Fatalf("history after %s: %+v, want a gap and events from %s", ids[1], page, ids[6])
		}
	})
	t.Run("stream", func(t *testing.T) {
		var info struct {
			LowWater store.ID `json:"low_water"`
		}
		status, _, b, err := s.do(http.MethodGet, "/v1/streams/s", "", "", nil)
		if err != nil || status != http.StatusOK || json.Unmarshal(b, &info) != nil || info.LowWater != low {
			t.Fatalf("GET stream: %d, %v: %s; want low_water %s", status, err, b, low)
		}
	})
	t.Run("deleted", func(t *testing.T) {
		c := s.dial(t, "/v1/streams/d/events", deleted[0].String())
		readReset(t, c, deleted[1], true, map[string]string{"reason": "deleted"})
		expectEnd(t, c)
		status, ct, b, err := s.do(http.MethodGet, "/v1/streams/d", "", "", nil)
		if err != nil || status != http.StatusNotFound {
			t.Fatalf("GET deleted stream: %d, %v: %s", status, err, b)
		}
		assertJSONError(t, ct, b)
	})
	t.Run("unknown", func(t *testing.T) {
		last := s.log.LastID()
		c := s.dial(t, "/v1/streams/s/events", nextID(last).String())
		readReset(t, c, last, true, map[string]string{"reason": "unknown"})
		expectFrom(t, s, c, "s", s.log.LastID())
	})
	t.Run("retention", func(t *testing.T) {
		status, _, b, err := s.do(http.MethodGet, "/v1/streams/r/retention", "", "", nil)
		if err != nil || status != http.StatusOK {
			t.Fatalf("GET retention: %d, %v: %s", status, err, b)
		}
		var got struct {
			Override json.RawMessage `json:"override"`
		}
		if err := json.Unmarshal(b, &got); err != nil || !sameJSON(got.Override, `{"max_events":7}`) {
			t.Fatalf("retention after restart: %s, want the override {\"max_events\":7}", b)
		}
	})
	t.Run("new ids", func(t *testing.T) {
		fresh := s.mustPublish(t, "s", `{"data":"fresh"}`)
		if fresh[0].Compare(last) <= 0 {
			t.Fatalf("id %s after restart is not above %s", fresh[0], last)
		}
	})
}
