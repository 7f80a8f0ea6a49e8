package httpapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sselog/sselog/httpapi"
	"github.com/sselog/sselog/internal/testkit"
	"github.com/sselog/sselog/store"
	"github.com/sselog/sselog/stream"
)

// feedEvent is an event of a merged feed as a WHATWG client sees it: its
// id is the last event id in force when it was dispatched.
type feedEvent struct {
	ID     string
	Type   string
	Stream string
	Data   string // the event's own data, out of the envelope
	Reason string // resets
}

// feedReader reads a merged feed by the WHATWG rules: the last event id
// persists from block to block, and a block without data dispatches
// nothing but may set it. It checks that ids never decrease.
type feedReader struct {
	c      *testkit.SSEReader
	lastID string
}

func (f *feedReader) next() (feedEvent, error) {
	for {
		b, err := f.c.Next()
		if err != nil {
			return feedEvent{}, err
		}
		if b.HasID {
			if b.ID < f.lastID {
				return feedEvent{}, fmt.Errorf("id %s after %s: a feed's ids must never decrease", b.ID, f.lastID)
			}
			f.lastID = b.ID
		}
		if !b.HasData {
			continue
		}
		var env struct {
			Stream string          `json:"stream"`
			Data   json.RawMessage `json:"data"`
			Reason string          `json:"reason"`
		}
		if err := json.Unmarshal([]byte(b.Data), &env); err != nil {
			return feedEvent{}, fmt.Errorf("data %q is not an envelope: %w", b.Data, err)
		}
		typ := b.Type
		if typ == "" {
			typ = "message"
		}
		return feedEvent{ID: f.lastID, Type: typ, Stream: env.Stream, Data: string(env.Data), Reason: env.Reason}, nil
	}
}

func mergedURL(streams []string, query string) string {
	v := url.Values{"stream": streams}
	u := "/v1/events?" + v.Encode()
	if query != "" {
		u += "&" + query
	}
	return u
}

// wantFeed is the merged sequence of what sel selects after after, from
// the log.
func wantFeed(t *testing.T, l *store.Log, sel store.Selection, after store.ID) []feedEvent {
	t.Helper()
	var out []feedEvent
	_, err := l.ScanMerged(sel, after, 0, func(e *store.Event) error {
		typ := e.Type
		if typ == "" {
			typ = "message"
		}
		out = append(out, feedEvent{ID: e.ID.String(), Type: typ, Stream: e.Stream, Data: string(e.Data)})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func matcher(streams []string) store.Selection {
	var names, patterns []string
	for _, s := range streams {
		if strings.Contains(s, "*") {
			patterns = append(patterns, strings.TrimSuffix(s, "*"))
		} else {
			names = append(names, s)
		}
	}
	return store.Selection{Names: names, Match: func(s string) bool {
		for _, p := range patterns {
			if strings.HasPrefix(s, p) {
				return true
			}
		}
		return false
	}}
}

// TestMergedEndToEnd is the reconnect test in merged form: publishers over
// 20 streams, subscribers on overlapping sets of names and patterns that
// reconnect at random by Last-Event-ID, through a tail and merged queue
// small enough that they read the log too. Each ends with exactly the
// merged sequence of its streams after its start.
func TestMergedEndToEnd(t *testing.T) {
	const publishers, perPublisher = 8, 60
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	s := newServer(t, httpapi.Options{Heartbeat: 100 * time.Millisecond}, stream.Options{TailLen: 16, PageSize: 9, MergedQueueLen: 8})
	streams := make([]string, 20)
	for i := range streams {
		streams[i] = fmt.Sprintf("s%02d", i)
	}
	s.mustPublish(t, "s00", `[{"data":"pre"},{"type":"t","data":"pre"}]`)
	start := s.log.LastID()
	selections := [][]string{
		{"s00", "s01", "s02"},
		{"s1*"},
		{"s0*", "s15", "s16"},
		{"*"},
		{"s19", "s1*", "s03"},
		{"s07"},
	}
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	var pubs sync.WaitGroup
	for w := range publishers {
		pubs.Go(func() {
			rng := rand.New(rand.NewPCG(seed, uint64(w)))
			for i := 0; i < perPublisher; {
				name := streams[rng.IntN(len(streams))]
				n := 1 + rng.IntN(3)
				var evs []string
				for k := range n {
					evs = append(evs, fmt.Sprintf(`{"type":"w%d","data":{"w":%d,"i":%d}}`, w, w, i+k))
				}
				if _, err := s.publish(name, "["+strings.Join(evs, ",")+"]"); err != nil {
					t.Error(err)
					cancel()
					return
				}
				i += n
			}
		})
	}
	got := make([][]feedEvent, len(selections))
	starts := make([]store.ID, len(selections)) // where each feed started
	done := make(chan struct{})
	var subs sync.WaitGroup
	for k, sel := range selections {
		subs.Go(func() {
			rng := rand.New(rand.NewPCG(seed, uint64(100+k)))
			last := ""
			if k%2 == 0 {
				last = start.String() // a resume; the others start live
				starts[k] = start
			}
			// A connection ends when the publishing does, so that none
			// waits for events that will not come.
			connCtx, stop := context.WithCancel(ctx)
			defer stop()
			go func() {
				<-done
				stop()
			}()
			for connects := 0; ; connects++ {
				c, err := testkit.DialSSE(connCtx, s.client, s.URL+mergedURL(sel, ""), last)
				if err != nil {
					if connCtx.Err() == nil {
						t.Errorf("selection %v: %v", sel, err)
					}
					return
				}
				f := &feedReader{c: c, lastID: last}
				if last == "" {
					// A live start: its first block says where it starts.
					b, err := c.Next()
					if err != nil || !b.HasID {
						t.Errorf("selection %v: live start's first block %+v, %v", sel, b, err)
						c.Close()
						return
					}
					f.lastID = b.ID
					starts[k], _ = store.ParseID(b.ID)
				}
				for n := rng.IntN(40); n > 0; n-- {
					e, err := f.next()
					if err != nil {
						c.Close()
						if connCtx.Err() == nil {
							t.Errorf("selection %v: %v", sel, err)
						}
						return
					}
					got[k] = append(got[k], e)
				}
				// The position is the last id in force, whether an
				// event's or the live start's.
				last = f.lastID
				c.Close()
				select {
				case <-done:
					return
				default:
				}
			}
		})
	}
	pubs.Wait()
	close(done)
	subs.Wait()
	for k, sel := range selections {
		// Read on to the end of what was published.
		after := starts[k]
		if len(got[k]) > 0 {
			after, _ = store.ParseID(got[k][len(got[k])-1].ID)
		}
		rest := wantFeed(t, s.log, matcher(sel), after)
		if len(rest) > 0 {
			c := s.dial(t, mergedURL(sel, ""), after.String())
			f := &feedReader{c: c, lastID: after.String()}
			for range rest {
				e, err := f.next()
				if err != nil {
					t.Fatal(err)
				}
				got[k] = append(got[k], e)
			}
		}
		if want := wantFeed(t, s.log, matcher(sel), starts[k]); !slices.Equal(got[k], want) {
			i := firstFeedDiff(got[k], want)
			t.Fatalf("selection %v: %d events, want %d; first difference at %d: got %v, want %v", sel, len(got[k]), len(want), i, got[k][max(0, i-2):min(len(got[k]), i+3)], want[max(0, i-2):min(len(want), i+3)])
		}
	}
}

func firstFeedDiff(a, b []feedEvent) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// TestMergedNewStreamHTTP: a stream first published to after the feed
// opened is delivered when a pattern matches it, and a live start's first
// block says where it starts.
func TestMergedNewStreamHTTP(t *testing.T) {
	s := newServer(t, httpapi.Options{Heartbeat: time.Hour}, stream.Options{})
	before := s.mustPublish(t, "audit.old", `{"data":0}`)
	c := s.dial(t, mergedURL([]string{"audit.*"}, ""), "")
	first, err := c.Next()
	if err != nil || first.ID != before[0].String() || first.HasData {
		t.Fatalf("first block %+v %v, want the newest id %s", first, err, before[0])
	}
	s.mustPublish(t, "other", `{"data":1}`)
	ids := s.mustPublish(t, "audit.new", `{"type":"x","data":{"k":2}}`)
	f := &feedReader{c: c, lastID: first.ID}
	e, err := f.next()
	if err != nil || e != (feedEvent{ID: ids[0].String(), Type: "x", Stream: "audit.new", Data: `{"k":2}`}) {
		t.Fatalf("got %+v %v", e, err)
	}
}

// TestMergedResetsHTTP: a resume over a trimmed stream gets its reset in
// its place, named; a deleted stream's reset does not end the feed; an
// unknown id gets one reset.
func TestMergedResetsHTTP(t *testing.T) {
	s := newServer(t, httpapi.Options{Heartbeat: time.Hour}, stream.Options{})
	a := publishN(t, s, "a", 5)
	b := publishN(t, s, "b", 2)
	low := trim(t, s.log, "a", store.Cut{MaxEvents: 2}, 3)
	c := s.dial(t, mergedURL([]string{"a", "b"}, ""), zeroID)
	f := &feedReader{c: c, lastID: zeroID}
	e, err := f.next()
	if err != nil || e.Type != store.ResetType || e.Stream != "a" || e.Reason != "trimmed" || e.ID != low.String() {
		t.Fatalf("first event %+v %v, want a's trimmed reset at %s", e, err, low)
	}
	for _, want := range []store.ID{a[3], a[4], b[0], b[1]} {
		if e, err := f.next(); err != nil || e.ID != want.String() {
			t.Fatalf("got %+v %v, want %s", e, err, want)
		}
	}
	s.mustDo(t, http.MethodDelete, "/v1/streams/b", "", "", http.StatusOK)
	e, err = f.next()
	if err != nil || e.Type != store.ResetType || e.Stream != "b" || e.Reason != "deleted" || e.ID != b[1].String() {
		t.Fatalf("after the deletion %+v %v, want b's deleted reset (id unchanged)", e, err)
	}
	more := s.mustPublish(t, "a", `{"data":"after"}`)
	if e, err := f.next(); err != nil || e.ID != more[0].String() {
		t.Fatalf("the feed did not go on after the deletion: %+v %v", e, err)
	}
	future := store.MinIDAt(time.Now().Add(time.Hour)).String()
	u := s.dial(t, mergedURL([]string{"a"}, ""), future)
	fu := &feedReader{c: u}
	if e, err := fu.next(); err != nil || e.Type != store.ResetType || e.Reason != "unknown" || e.ID != more[0].String() {
		t.Fatalf("unknown id: %+v %v", e, err)
	}
}

func TestMergedHistory(t *testing.T) {
	s := newServer(t, httpapi.Options{}, stream.Options{})
	for i := range 12 {
		s.mustPublish(t, fmt.Sprintf("h%d", i%3), fmt.Sprintf(`{"data":%d}`, i))
	}
	s.mustPublish(t, "other", `{"data":"x"}`)
	type page struct {
		Events []struct {
			ID     store.ID        `json:"id"`
			Stream string          `json:"stream"`
			Type   string          `json:"type"`
			Data   json.RawMessage `json:"data"`
			Time   string          `json:"time"`
		} `json:"events"`
		Gap bool `json:"gap"`
	}
	var got []feedEvent
	after := zeroID
	for {
		var p page
		s.getJSON(t, "/v1/history?stream=h0&stream=h1*&stream=h2&limit=5&after="+after, &p)
		for _, e := range p.Events {
			got = append(got, feedEvent{ID: e.ID.String(), Type: e.Type, Stream: e.Stream, Data: string(e.Data)})
		}
		if len(p.Events) < 5 {
			break
		}
		after = p.Events[len(p.Events)-1].ID.String()
	}
	want := wantFeed(t, s.log, store.Selection{Names: []string{"h0", "h1", "h2"}}, store.ID{})
	if !slices.Equal(got, want) {
		t.Fatalf("paged history %v, want %v", got, want)
	}
	trim(t, s.log, "h1", store.Cut{MaxEvents: 1}, 3)
	var p page
	s.getJSON(t, "/v1/history?stream=h*", &p)
	if !p.Gap {
		t.Fatal("a selected stream lost events, and gap is false")
	}
	s.getJSON(t, "/v1/history?stream=h*&last=2", &p)
	if p.Gap || len(p.Events) != 2 {
		t.Fatalf("last=2: %d events, gap %v", len(p.Events), p.Gap)
	}
}

func TestMergedBadInput(t *testing.T) {
	s := newServer(t, httpapi.Options{}, stream.Options{})
	snap := takeSnapshot(t, s)
	many := make([]string, httpapi.MaxMergedStreams+1)
	for i := range many {
		many[i] = fmt.Sprint("s", i)
	}
	for _, path := range []string{
		"/v1/events",
		"/v1/events?stream=",
		"/v1/events?stream=a~b",
		"/v1/events?stream=.a",
		"/v1/events?stream=a%2Fb",
		"/v1/events?stream=" + strings.Repeat("x", httpapi.MaxPatternLen) + "*",
		mergedURL(many, ""),
		mergedURL([]string{"a"}, "since=0&last=3"),
		mergedURL([]string{"a"}, "last=0"),
		mergedURL([]string{"a"}, "last_event_id=nope"),
		"/v1/history",
		"/v1/history?stream=a&after=nope",
		"/v1/history?stream=a&limit=0",
		"/v1/history?stream=a&after=" + zeroID + "&since=0",
	} {
		status, ct, body, err := s.do(http.MethodGet, path, "", "", nil)
		if err != nil {
			t.Fatal(err)
		}
		if status != http.StatusBadRequest {
			t.Errorf("%s: %d %s, want 400", path, status, body)
			continue
		}
		assertJSONError(t, ct, body)
	}
	if got := takeSnapshot(t, s); fmt.Sprint(got) != fmt.Sprint(snap) {
		t.Fatal("a refused request changed the log")
	}
	// 64 parameters are fine.
	c := s.dial(t, mergedURL(many[:httpapi.MaxMergedStreams], ""), "")
	if _, err := c.Next(); err != nil {
		t.Fatal(err)
	}
}

// TestMergedAccess: with a token key, a feed never delivers an event of a
// stream the token may not subscribe to, whatever its patterns ask for;
// a request nothing granted could match is 403.
func TestMergedAccess(t *testing.T) {
	s, _ := newAuthServer(t, testSecret, httpapi.Options{Heartbeat: time.Hour})
	pub := hmacToken(t, grant{Publish: []string{"*"}})
	sub := hmacToken(t, grant{Subscribe: []string{"orders.*", "audit"}})
	header := func(tok string) http.Header { return http.Header{"Authorization": {"Bearer " + tok}} }
	publish := func(stream, body string) store.ID {
		t.Helper()
		status, _, b, err := s.do(http.MethodPost, "/v1/streams/"+stream+"/events", "application/json", body, header(pub))
		if err != nil || status != http.StatusCreated {
			t.Fatalf("publish %s: %d %s %v", stream, status, b, err)
		}
		var out struct {
			ID store.ID `json:"id"`
		}
		_ = json.Unmarshal(b, &out)
		return out.ID
	}
	for _, path := range []string{
		mergedURL([]string{"secret.*"}, ""),
		mergedURL([]string{"secret", "order"}, ""),
		"/v1/history?stream=secret*",
	} {
		status, _, body, err := s.do(http.MethodGet, path, "", "", header(sub))
		if err != nil || status != http.StatusForbidden {
			t.Fatalf("%s: %d %s %v, want 403", path, status, body, err)
		}
	}
	if status, _, _, _ := s.do(http.MethodGet, mergedURL([]string{"*"}, ""), "", "", nil); status != http.StatusUnauthorized {
		t.Fatalf("no token: %d, want 401", status)
	}
	ctx, cancel := context.WithTimeout(t.Context(), testkit.Wait)
	defer cancel()
	c, err := testkit.DialSSEWith(ctx, s.client, s.URL+mergedURL([]string{"*", "secret"}, "last_event_id="+zeroID), header(sub))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	f := &feedReader{c: c}
	publish("secret", `{"data":"no"}`)
	publish("orders.secretly", `{"data":"yes"}`)
	publish("ordersx", `{"data":"no"}`)
	publish("audit", `{"data":"yes"}`)
	publish("audit.x", `{"data":"no"}`)
	end := publish("orders.end", `{"data":"yes"}`)
	for {
		e, err := f.next()
		if err != nil {
			t.Fatal(err)
		}
		if e.Data != `"yes"` {
			t.Fatalf("leaked %+v", e)
		}
		if e.ID == end.String() {
			break
		}
	}
	var p struct {
		Events []struct {
			Stream string `json:"stream"`
		} `json:"events"`
	}
	status, _, body, err := s.do(http.MethodGet, "/v1/history?stream=*", "", "", header(sub))
	if err != nil || status != http.StatusOK || json.Unmarshal(body, &p) != nil {
		t.Fatalf("history: %d %s %v", status, body, err)
	}
	var streams []string
	for _, e := range p.Events {
		streams = append(streams, e.Stream)
	}
	if fmt.Sprint(streams) != "[orders.secretly audit orders.end]" {
		t.Fatalf("history over * shows %v", streams)
	}
}

// TestMergedPatternsNoName: a pattern that no stream name could match is
// a 400, not an empty feed.
func TestMergedPatternsNoName(t *testing.T) {
	s := newServer(t, httpapi.Options{}, stream.Options{})
	for _, p := range []string{".*", ".a*", strings.Repeat("x", store.MaxStreamLen+1) + "*"} {
		status, ct, body, err := s.do(http.MethodGet, mergedURL([]string{p}, ""), "", "", nil)
		if err != nil || status != http.StatusBadRequest {
			t.Fatalf("%q: %d %s %v, want 400", p, status, body, err)
		}
		assertJSONError(t, ct, body)
	}
}
