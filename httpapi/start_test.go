package httpapi_test

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sselog/sselog/httpapi"
	"github.com/sselog/sselog/internal/testkit"
	"github.com/sselog/sselog/store"
	"github.com/sselog/sselog/stream"
)

// testClock is the clock ids are taken from, set by the test.
type testClock struct{ ns atomic.Int64 }

func (c *testClock) Now() time.Time  { return time.Unix(0, c.ns.Load()) }
func (c *testClock) Set(t time.Time) { c.ns.Store(t.UnixNano()) }

// newClockServer is newServer over a log whose ids come from clk.
func newClockServer(t *testing.T, clk *testClock, hubOpts stream.Options) *testServer {
	t.Helper()
	l := testkit.OpenAt(t, filepath.Join(t.TempDir(), "events.db"), store.Options{Now: clk.Now})
	s, h := startServer(t, l, httpapi.Options{}, hubOpts, testkit.ServeOptions{})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), testkit.Wait)
		defer cancel()
		s.client.CloseIdleConnections()
		if err := s.Config.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := h.Drain(ctx); err != nil {
			t.Errorf("drain: %v", err)
		}
	})
	return s
}

// publishAt publishes body to name with the clock at t.
func publishAt(t *testing.T, s *testServer, clk *testClock, at time.Time, name, body string) []store.ID {
	t.Helper()
	clk.Set(at)
	return s.mustPublish(t, name, body)
}

// before is the id a start at ids[i] reads after: the previous id, or the
// zero ID for the first.
func before(ids []store.ID, i int) store.ID {
	if i == 0 {
		return store.ID{}
	}
	return ids[i-1]
}

// sinceBase is a whole second, so that its RFC 3339 form has no fraction.
var sinceBase = time.Date(2026, 5, 6, 7, 8, 9, 0, time.UTC)

// sinceFixture publishes, with the clock set for each: one event a second
// before sinceBase, one a millisecond before, two in sinceBase's own
// millisecond, one a millisecond after and one a second after. It leaves
// the clock two seconds after sinceBase, so that what the test publishes
// next is after all of them.
func sinceFixture(t *testing.T, s *testServer, clk *testClock) []store.ID {
	t.Helper()
	var ids []store.ID
	ids = append(ids, publishAt(t, s, clk, sinceBase.Add(-time.Second), "s", `{"data":"a second before"}`)...)
	ids = append(ids, publishAt(t, s, clk, sinceBase.Add(-time.Millisecond), "s", `{"data":"a millisecond before"}`)...)
	ids = append(ids, publishAt(t, s, clk, sinceBase, "s", `[{"data":"at"},{"type":"t","data":"also at"}]`)...)
	ids = append(ids, publishAt(t, s, clk, sinceBase.Add(time.Millisecond), "s", `{"data":"a millisecond after"}`)...)
	ids = append(ids, publishAt(t, s, clk, sinceBase.Add(time.Second), "s", `{"data":"a second after"}`)...)
	clk.Set(sinceBase.Add(2 * time.Second))
	return ids
}

// sinceCases are since values over sinceFixture, with the index of the
// first event each starts at.
var sinceCases = []struct {
	name  string
	since string
	first int
}{
	{"RFC 3339", "2026-05-06T07:08:09Z", 2},
	{"RFC 3339 with a fraction", "2026-05-06T07:08:09.000Z", 2},
	{"RFC 3339 in another zone", "2026-05-06T09:08:09+02:00", 2},
	{"Unix milliseconds", strconv.FormatInt(sinceBase.UnixMilli(), 10), 2},
	{"a millisecond before", "2026-05-06T07:08:08.999Z", 1},
	{"a millisecond before in Unix milliseconds", strconv.FormatInt(sinceBase.UnixMilli()-1, 10), 1},
	{"inside the millisecond before", "2026-05-06T07:08:08.9995Z", 2},
	{"a millisecond after", "2026-05-06T07:08:09.001Z", 4},
	{"between events", "2026-05-06T07:08:09.5Z", 5},
	{"the epoch", "0", 0},
	{"the epoch in RFC 3339", "1970-01-01T00:00:00Z", 0},
	{"leading zeros", "000" + strconv.FormatInt(sinceBase.UnixMilli(), 10), 2},
}

// TestSinceSSE starts streams by time: each starts at the first event at
// or after the time (an event exactly at its millisecond included, one a
// millisecond before not), with no reset, and live events follow with no
// gap or duplicate.
func TestSinceSSE(t *testing.T) {
	clk := &testClock{}
	s := newClockServer(t, clk, stream.Options{})
	ids := sinceFixture(t, s, clk)
	for _, tc := range sinceCases {
		t.Run(tc.name, func(t *testing.T) {
			c := s.dial(t, "/v1/streams/s/events?since="+url.QueryEscape(tc.since), "")
			expectFrom(t, s, c, "s", before(ids, tc.first))
		})
	}
}

// TestSinceHistory pages history by time: the page starts at the first
// event at or after the time, "gap" is false, and paging on with after
// continues it.
func TestSinceHistory(t *testing.T) {
	clk := &testClock{}
	s := newClockServer(t, clk, stream.Options{})
	ids := sinceFixture(t, s, clk)
	for _, tc := range sinceCases {
		t.Run(tc.name, func(t *testing.T) {
			var page historyPage
			s.getJSON(t, "/v1/streams/s/history?since="+url.QueryEscape(tc.since), &page)
			if page.Gap || len(page.Events) != len(ids)-tc.first {
				t.Fatalf("%d events (gap %v), want %d from %s", len(page.Events), page.Gap, len(ids)-tc.first, ids[tc.first])
			}
			for i, e := range page.Events {
				if e.ID != ids[tc.first+i] {
					t.Fatalf("event %d is %s, want %s", i, e.ID, ids[tc.first+i])
				}
			}

			// Paged: since starts, after continues.
			var got []store.ID
			s.getJSON(t, "/v1/streams/s/history?limit=1&since="+url.QueryEscape(tc.since), &page)
			for len(page.Events) > 0 {
				got = append(got, page.Events[0].ID)
				s.getJSON(t, "/v1/streams/s/history?limit=1&after="+page.Events[0].ID.String(), &page)
			}
			if fmt.Sprint(got) != fmt.Sprint(ids[tc.first:]) {
				t.Fatalf("paged from since: %v, want %v", got, ids[tc.first:])
			}
		})
	}
}

// TestSinceBelowLowWater starts by a time older than what retention kept:
// the stream starts at the oldest retained event, with no reset, and
// history says no gap, where a resume from the same point is told.
func TestSinceBelowLowWater(t *testing.T) {
	clk := &testClock{}
	s := newClockServer(t, clk, stream.Options{})
	var ids []store.ID
	for i := range 10 {
		ids = append(ids, publishAt(t, s, clk, sinceBase.Add(time.Duration(i)*time.Second), "s", fmt.Sprintf(`{"data":%d}`, i))...)
	}
	low := trim(t, s.log, "s", store.Cut{MaxEvents: 4}, 3)
	if low != ids[5] {
		t.Fatalf("low-water mark %s, want %s", low, ids[5])
	}
	for _, since := range []string{"0", "2026-05-06T07:08:09Z", "2026-05-06T07:08:12.5Z", strconv.FormatInt(sinceBase.Add(5*time.Second).UnixMilli(), 10)} {
		t.Run(since, func(t *testing.T) {
			c := s.dial(t, "/v1/streams/s/events?since="+url.QueryEscape(since), "")
			expectFrom(t, s, c, "s", low)

			var page historyPage
			s.getJSON(t, "/v1/streams/s/history?since="+url.QueryEscape(since), &page)
			retained := s.readAll(t, "s")
			if page.Gap || len(page.Events) != len(retained) || page.Events[0].ID != ids[6] {
				t.Fatalf("history since %s: %d events from %v (gap %v), want the %d retained from %s and no gap",
					since, len(page.Events), page.Events, page.Gap, len(retained), ids[6])
			}
		})
	}
	// The same point as a resume is told of the gap.
	var page historyPage
	s.getJSON(t, "/v1/streams/s/history?after="+zeroID, &page)
	if !page.Gap {
		t.Fatal("history after the zero id of a trimmed stream: no gap")
	}
}

// TestSinceFuture starts by a time after every event: the stream waits,
// with no reset, and is sent the first event at or after that time (not
// one published earlier); history answers an empty page, then that event.
func TestSinceFuture(t *testing.T) {
	clk := &testClock{}
	s := newClockServer(t, clk, stream.Options{})
	publishAt(t, s, clk, sinceBase, "s", `{"data":"past"}`)
	s.mustPublish(t, "other", `{"data":"newest in the database"}`)
	later := sinceBase.Add(time.Hour)
	for _, since := range []string{later.Format(time.RFC3339), strconv.FormatInt(later.UnixMilli(), 10)} {
		var page historyPage
		s.getJSON(t, "/v1/streams/s/history?since="+since, &page)
		if page.Gap || len(page.Events) != 0 {
			t.Fatalf("history since %s: %d events (gap %v), want an empty page", since, len(page.Events), page.Gap)
		}
	}
	clients := []*testkit.SSEReader{
		s.dial(t, "/v1/streams/s/events?since="+later.Format(time.RFC3339), ""),
		s.dial(t, "/v1/streams/s/events?since="+strconv.FormatInt(later.UnixMilli(), 10), ""),
	}
	publishAt(t, s, clk, later.Add(-time.Millisecond), "s", `{"data":"before the start"}`)
	due := publishAt(t, s, clk, later, "s", `{"data":"due"}`)
	want := []store.Event{{ID: due[0], Data: []byte(`"due"`)}}
	for _, c := range clients {
		if err := testkit.DiffEvents(readEvents(t, c, 1), want); err != nil {
			t.Fatal(err)
		}
	}
	var page historyPage
	s.getJSON(t, "/v1/streams/s/history?since="+later.Format(time.RFC3339), &page)
	if page.Gap || len(page.Events) != 1 || page.Events[0].ID != due[0] {
		t.Fatalf("history since %s: %+v, want only %s", later, page, due[0])
	}
}

// TestLastSSE starts streams with the newest n events: exactly those, or
// all of a stream that holds fewer, then live events with no gap or
// duplicate, and no reset.
func TestLastSSE(t *testing.T) {
	s := newServer(t, httpapi.Options{}, stream.Options{})
	for _, last := range []int{1, 50, 99, 100, 101, httpapi.MaxLast} {
		t.Run(strconv.Itoa(last), func(t *testing.T) {
			name := "s" + strconv.Itoa(last)
			ids := publishN(t, s, name, 100)
			c := s.dial(t, "/v1/streams/"+name+"/events?last="+strconv.Itoa(last), "")
			// The newest min(last, 100), then a live marker: nothing else.
			expectFrom(t, s, c, name, before(ids, 100-min(last, 100)))
		})
	}
}

// TestLastTrimmedAndEmpty: last over a trimmed stream is its retained
// events, with no reset; over a stream with no events it is live only.
func TestLastTrimmedAndEmpty(t *testing.T) {
	s := newServer(t, httpapi.Options{}, stream.Options{})
	publishN(t, s, "s", 10)
	low := trim(t, s.log, "s", store.Cut{MaxEvents: 4}, 3)
	expectFrom(t, s, s.dial(t, "/v1/streams/s/events?last=10", ""), "s", low)
	// Each expectFrom publishes a marker: the stream now holds 5 events.
	retained := s.readAll(t, "s")
	expectFrom(t, s, s.dial(t, "/v1/streams/s/events?last="+strconv.Itoa(len(retained)), ""), "s", low)
	retained = s.readAll(t, "s")
	expectFrom(t, s, s.dial(t, "/v1/streams/s/events?last=2", ""), "s", retained[len(retained)-3].ID)

	c := s.dial(t, "/v1/streams/new/events?last=5", "")
	expectFrom(t, s, c, "new", store.ID{})
}

// TestStartPrecedence: a non-empty Last-Event-ID header wins over every
// query parameter, invalid ones included; among the query's
// last_event_id, since and last, an empty value is not given.
func TestStartPrecedence(t *testing.T) {
	s := newServer(t, httpapi.Options{}, stream.Options{})
	ids := publishN(t, s, "s", 10)
	header := ids[5].String()
	for _, query := range []string{
		"since=0",
		"last=3",
		"last_event_id=" + ids[1].String(),
		"since=yesterday",
		"last=0",
		"last_event_id=nope",
		"since=0&last=3",
		"since=0&last=3&last_event_id=" + zeroID,
	} {
		t.Run("header and "+query, func(t *testing.T) {
			expectFrom(t, s, s.dial(t, "/v1/streams/s/events?"+query, header), "s", ids[5])
		})
	}
	t.Run("empty since beside last", func(t *testing.T) {
		all := s.readAll(t, "s")
		expectFrom(t, s, s.dial(t, "/v1/streams/s/events?since=&last=3", ""), "s", all[len(all)-4].ID)
	})
	t.Run("empty last_event_id and last beside since", func(t *testing.T) {
		expectFrom(t, s, s.dial(t, "/v1/streams/s/events?last_event_id=&last=&since=0", ""), "s", store.ID{})
	})
	t.Run("last_event_id alone", func(t *testing.T) {
		expectFrom(t, s, s.dial(t, "/v1/streams/s/events?last_event_id="+ids[2].String(), ""), "s", ids[2])
	})
	t.Run("invalid header and valid query", func(t *testing.T) {
		status, ct, body, err := s.do(http.MethodGet, "/v1/streams/s/events?since=0", "", "", http.Header{"Last-Event-Id": {"nope"}})
		if err != nil {
			t.Fatal(err)
		}
		if status != http.StatusBadRequest || !strings.Contains(string(body), "Last-Event-ID") {
			t.Fatalf("status %d: %s; want 400 naming Last-Event-ID", status, body)
		}
		assertJSONError(t, ct, body)
	})
}

// TestStartBadInput: every invalid since, last, or combination of start
// parameters is a 400 with a JSON error that names what was wrong, before
// any stream starts, and changes nothing.
func TestStartBadInput(t *testing.T) {
	s := newServer(t, httpapi.Options{}, stream.Options{})
	publishN(t, s, "s", 3)
	badSince := []string{
		"yesterday", "1e3", "+5", "-5", "-0", " 5", "5 ", "0x10", "1_000", "5.0", "１２３",
		"2026-13-01T00:00:00Z", "2026-02-30T00:00:00Z", "2026-01-01T24:00:00Z",
		"2026-01-01", "2026-01-01T00:00:00", "2026-01-01 00:00:00Z", "2026-01-01t00:00:00z",
		"2026-01-01T00:00:00,5Z", "2026-01-01T00:00:00.Z", "2026-01-01T00:00:00+24:00", "2026-01-01T00:00:00+0200",
		"1969-12-31T23:59:59.999Z", "0000-01-01T00:00:00Z",
		"281474976710656", "99999999999999999999", "9223372036854775808",
		"\x00", "<script>", "\r\ndata: x",
	}
	badLast := []string{"0", "10001", "-1", "abc", "+5", "1e3", "5.0", " 5", "0x10", "１", "99999999999999999999", "00"}
	type bad struct {
		path string
		want string // in the error message
	}
	var tests []bad
	for _, v := range badSince {
		tests = append(tests,
			bad{"/v1/streams/s/events?since=" + url.QueryEscape(v), "since"},
			bad{"/v1/streams/s/history?since=" + url.QueryEscape(v), "since"})
	}
	for _, v := range badLast {
		tests = append(tests,
			bad{"/v1/streams/s/events?last=" + url.QueryEscape(v), "last"},
			bad{"/v1/streams/s/history?last=" + url.QueryEscape(v), "last"})
	}
	tests = append(tests,
		bad{"/v1/streams/s/events?since=0&last=5", "at most one"},
		bad{"/v1/streams/s/events?last_event_id=" + zeroID + "&since=0", "at most one"},
		bad{"/v1/streams/s/events?last_event_id=" + zeroID + "&last=5", "at most one"},
		bad{"/v1/streams/s/events?last_event_id=" + zeroID + "&since=0&last=5", "at most one"},
		bad{"/v1/streams/s/events?since=yesterday&last=abc", "at most one"},
		bad{"/v1/streams/s/events?last_event_id=nope", "last_event_id"},
		bad{"/v1/streams/s/history?after=" + zeroID + "&since=0", "at most one"},
		bad{"/v1/streams/s/history?last=5&since=0", "at most one"},
		bad{"/v1/streams/s/history?after=" + zeroID + "&last=5", "at most one"},
	)
	snap := takeSnapshot(t, s)
	for _, tc := range tests {
		t.Run(strings.TrimPrefix(tc.path, "/v1/streams/s/"), func(t *testing.T) {
			status, ct, body, err := s.do(http.MethodGet, tc.path, "", "", nil)
			if err != nil {
				t.Fatal(err)
			}
			if status != http.StatusBadRequest {
				t.Fatalf("status %d: %s; want 400", status, body)
			}
			assertJSONError(t, ct, body)
			if !strings.Contains(string(body), tc.want) {
				t.Fatalf("error %s does not say %q", body, tc.want)
			}
		})
	}
	if after := takeSnapshot(t, s); !reflect.DeepEqual(snap, after) {
		t.Fatalf("refused requests changed the log: %+v -> %+v", snap, after)
	}
	waitFollowing(t, s, 0)
	// Still served as before.
	expectFrom(t, s, s.dial(t, "/v1/streams/s/events?last=3", ""), "s", store.ID{})
}

// TestLastHistory: history's last=n starts its pages with the newest n
// events, claims no continuity over a trimmed stream (no gap), and pages
// on with after.
func TestLastHistory(t *testing.T) {
	s := newServer(t, httpapi.Options{}, stream.Options{})
	ids := publishN(t, s, "s", 10)
	pageIDs := func(path string) ([]store.ID, bool) {
		t.Helper()
		var page historyPage
		s.getJSON(t, path, &page)
		var got []store.ID
		for _, e := range page.Events {
			got = append(got, e.ID)
		}
		return got, page.Gap
	}
	if got, gap := pageIDs("/v1/streams/s/history?last=3"); gap || fmt.Sprint(got) != fmt.Sprint(ids[7:]) {
		t.Fatalf("last=3: %v (gap %v), want %v", got, gap, ids[7:])
	}
	if got, _ := pageIDs("/v1/streams/s/history?last=20"); fmt.Sprint(got) != fmt.Sprint(ids) {
		t.Fatalf("last=20: %v, want all %v", got, ids)
	}
	got, _ := pageIDs("/v1/streams/s/history?last=6&limit=4")
	more, _ := pageIDs("/v1/streams/s/history?limit=4&after=" + got[len(got)-1].String())
	if fmt.Sprint(append(got, more...)) != fmt.Sprint(ids[4:]) {
		t.Fatalf("last=6 in pages of 4: %v then %v, want %v", got, more, ids[4:])
	}
	trim(t, s.log, "s", store.Cut{MaxEvents: 4}, 3)
	if got, gap := pageIDs("/v1/streams/s/history?last=8"); gap || fmt.Sprint(got) != fmt.Sprint(ids[6:]) {
		t.Fatalf("last=8 over 4 retained: %v (gap %v), want %v and no gap", got, gap, ids[6:])
	}
	if got, gap := pageIDs("/v1/streams/none/history?last=8"); gap || len(got) != 0 {
		t.Fatalf("last over no stream: %v (gap %v)", got, gap)
	}
}
