package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/sselog/sselog/httpapi"
	"github.com/sselog/sselog/internal/testkit"
	"github.com/sselog/sselog/store"
	"github.com/sselog/sselog/stream"
)

// browserTestEnv, set to 1 (as .ci/run does), turns a missing Chromium from
// a skip into a failure: CI must not pass without having run the browser.
const browserTestEnv = "SSELOG_BROWSER_TEST"

// browserNames are the names Chromium is installed under, in the order
// tried: Debian's package, other distributions', Google's build.
var browserNames = []string{"chromium", "chromium-browser", "google-chrome"}

// findBrowser returns the path of a Chromium, skipping the test when there
// is none, unless browserTestEnv says it must run.
func findBrowser(t *testing.T) string {
	t.Helper()
	for _, name := range browserNames {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	msg := fmt.Sprintf("no browser found (looked for %s in PATH); install Debian's chromium to run this test", strings.Join(browserNames, ", "))
	if os.Getenv(browserTestEnv) == "1" {
		t.Fatalf("%s, and %s=1 requires it", msg, browserTestEnv)
	}
	t.Skipf("%s (set %s=1 to make this a failure)", msg, browserTestEnv)
	return ""
}

// syncBuffer collects the browser's output, which its own goroutines write,
// for the log of a failed test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// quiet drops the lines in which Chromium complains that it has no D-Bus,
// as it does on every start in a container, from its output.
func quiet(out string) string {
	var b strings.Builder
	for line := range strings.Lines(out) {
		if !strings.Contains(line, "dbus") {
			b.WriteString(line)
		}
	}
	return b.String()
}

// startBrowser starts one headless Chromium for the test and its subtests,
// and stops it when the test ends. Each subtest opens its own tab with
// chromedp.NewContext on the returned context.
func startBrowser(t *testing.T) context.Context {
	t.Helper()
	path := findBrowser(t)
	out := &syncBuffer{}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		// CI runs as root, where Chromium refuses to start with its
		// sandbox; the page is our own, so the sandbox protects nothing.
		chromedp.NoSandbox,
		chromedp.CombinedOutput(out),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	bctx, cancelBrowser := chromedp.NewContext(actx)
	t.Cleanup(func() {
		cancelBrowser()
		cancelAlloc() // waits for the browser process to exit
		if t.Failed() {
			t.Logf("browser output (less D-Bus complaints):\n%s", quiet(out.String()))
		}
	})
	// The first Run starts the browser and binds its life to bctx, which
	// has no deadline (a deadline there would stop the whole browser).
	if err := chromedp.Do(bctx); err != nil {
		t.Fatalf("starting %s: %v", path, err)
	}
	return bctx
}

// feedPage is the page under test: a plain module script that opens one
// EventSource on /v1/events with the page's own query string and records
// every event it receives in window.got, for the test to read.
const feedPage = `<!doctype html>
<meta charset="utf-8">
<link rel="icon" href="data:,">
<title>merged feed</title>
<script type="module">
window.got = [];
window.opened = false;
window.errors = 0;
window.jsErrors = [];
window.addEventListener("error", (e) => window.jsErrors.push(String(e.message)));
const es = new EventSource("/v1/events" + location.search);
es.onopen = () => { window.opened = true; };
es.onerror = () => { window.errors++; };
const record = (e) => window.got.push({type: e.type, id: e.lastEventId, data: e.data});
es.addEventListener("tick", record);
es.addEventListener("reset", record);
es.onmessage = record; // an untyped event would be a mistake: recorded to be seen
</script>
`

// pageEvent is an event as the page recorded it.
type pageEvent struct {
	Type string `json:"type"`
	ID   string `json:"id"`
	Data string `json:"data"`
}

// browserServer is the API over a fresh log, with the page served from the
// same origin (so that EventSource needs no CORS), counting the requests
// that reach the merged endpoint.
type browserServer struct {
	url    string
	client *http.Client
	// feeds counts GET /v1/events requests; http11 counts those that came
	// over HTTP/1.1.
	feeds, http11 atomic.Int64
}

func newBrowserServer(t *testing.T) *browserServer {
	t.Helper()
	l := testkit.Open(t)
	hub := stream.NewHub(l, stream.Options{})
	h := httpapi.NewHandler(l, hub, httpapi.Options{})
	// Registered before Serve so that it runs after the server has closed:
	// no stream may be left reading the log when it closes.
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), testkit.Wait)
		defer cancel()
		if err := h.Drain(ctx); err != nil {
			t.Errorf("drain: %v", err)
		}
	})
	s := &browserServer{client: testkit.Client(t)}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /feed.html", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		io.WriteString(w, feedPage)
	})
	mux.Handle("/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && r.URL.Path == "/v1/events" {
			s.feeds.Add(1)
			if r.ProtoMajor == 1 && r.ProtoMinor == 1 {
				s.http11.Add(1)
			}
		}
		h.ServeHTTP(w, r)
	}))
	srv := testkit.Serve(t, mux, testkit.ServeOptions{Config: func(c *http.Server) { c.RegisterOnShutdown(h.Close) }})
	// Runs before srv.Close: ends the SSE handlers it would wait for.
	t.Cleanup(func() {
		h.Close()
		hub.Close()
	})
	s.url = srv.URL
	return s
}

// publish posts one "tick" event to name whose data names the stream and
// numbers the event, and returns its id.
func (s *browserServer) publish(t *testing.T, name string, n int) string {
	t.Helper()
	body := fmt.Sprintf(`{"type":"tick","data":{"s":%q,"n":%d}}`, name, n)
	resp, err := s.client.Post(s.url+"/v1/streams/"+name+"/events", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("publish to %s: %s: %s", name, resp.Status, b)
	}
	var ack struct{ ID string }
	if err := json.Unmarshal(b, &ack); err != nil || ack.ID == "" {
		t.Fatalf("publish to %s: answer %q: %v", name, b, err)
	}
	return ack.ID
}

// published is what the test expects a page to receive: the ids of each
// stream's events, in publish order, and the newest of them.
type published struct {
	ids  map[string][]string
	last string
}

// round publishes one event to each of names in turn, count times, so that
// the streams' ids interleave; the ids of streams in want are recorded.
func (s *browserServer) round(t *testing.T, names []string, count int, want *published) {
	t.Helper()
	for n := range count {
		for _, name := range names {
			id := s.publish(t, name, n)
			if want != nil && want.ids[name] != nil {
				want.ids[name] = append(want.ids[name], id)
				want.last = id
			}
		}
	}
}

// TestBrowserMergedFeed follows ten streams on one EventSource in headless
// Chromium over HTTP/1.1, where ten EventSources would hang past the
// browser's six connections per host: every event of the ten streams
// arrives once, in id order, in an envelope that names its stream, and the
// server sees one SSE request.
func TestBrowserMergedFeed(t *testing.T) {
	bctx := startBrowser(t)
	var ten []string
	for i := range 10 {
		ten = append(ten, fmt.Sprintf("s%d", i))
	}
	tests := []struct {
		name string
		// query is the page's (and so the feed's) query string.
		query url.Values
		// before are the streams published to before the page opens;
		// replayed says whether the feed delivers those events.
		before   []string
		replayed bool
	}{
		{
			name:     "ten names, from the start",
			query:    url.Values{"stream": ten, "last_event_id": {strings.Repeat("0", 26)}},
			before:   ten,
			replayed: true,
		},
		{
			// A live start delivers none of the earlier events; streams
			// s5 to s9 exist only once the page is connected.
			name:   "a pattern, live",
			query:  url.Values{"stream": {"s*"}},
			before: ten[:5],
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newBrowserServer(t)
			want := &published{ids: make(map[string][]string)}
			for _, name := range ten {
				want.ids[name] = []string{}
			}
			// "other" is selected by neither the names nor the pattern.
			before := slices.Concat(tc.before, []string{"other"})
			if tc.replayed {
				s.round(t, before, 3, want)
			} else {
				s.round(t, before, 3, nil)
			}

			tab, cancel := chromedp.NewContext(bctx)
			t.Cleanup(cancel)
			// Open the tab before giving the steps a deadline, which would
			// otherwise bound the tab's life.
			if err := chromedp.Do(tab); err != nil {
				t.Fatalf("open a tab: %v", err)
			}
			ctx, cancelRun := context.WithTimeout(tab, 2*testkit.Wait)
			defer cancelRun()
			if err := chromedp.Do(ctx, chromedp.Navigate(s.url+"/feed.html?"+tc.query.Encode())); err != nil {
				t.Fatalf("open the page: %v", err)
			}
			// The server answers the feed's headers only once it has
			// registered the subscription, so what is published after
			// onopen must arrive, even on a live start.
			if _, err := chromedp.Run(ctx, chromedp.Poll[bool](`window.opened`, pollOpts()...)); err != nil {
				t.Fatalf("waiting for the EventSource to open: %v%s", err, pageState(ctx))
			}
			s.round(t, slices.Concat(ten, []string{"other"}), 5, want)

			// Everything before the newest event has been sent once it
			// arrives: the feed is in id order.
			_, err := chromedp.Run(ctx, chromedp.PollFunction[bool](`(id) => window.got.some((e) => e.id === id)`,
				append(pollOpts(), chromedp.WithPollingArgs(want.last))...))
			if err != nil {
				// Go on: checkFeed says which events are missing.
				t.Errorf("waiting for event %s: %v%s", want.last, err, pageState(ctx))
				// A fresh deadline for reading what did arrive: ctx's
				// may be the one that ran out.
				var cancelRead context.CancelFunc
				ctx, cancelRead = context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
				defer cancelRead()
			}
			got, err := chromedp.Run(ctx, chromedp.Evaluate[[]pageEvent](`window.got`))
			if err != nil {
				t.Fatal(err)
			}
			checkFeed(t, got, want)

			errs, err := chromedp.Run(ctx, chromedp.Evaluate[int](`window.errors`))
			if err != nil {
				t.Fatal(err)
			}
			if errs != 0 {
				t.Errorf("the EventSource reported %d errors (a reconnect, or a refused request)", errs)
			}
			if n, h11 := s.feeds.Load(), s.http11.Load(); n != 1 || h11 != 1 {
				t.Errorf("the server saw %d requests for /v1/events (%d over HTTP/1.1), want exactly one, over HTTP/1.1", n, h11)
			}
		})
	}
}

func pollOpts() []chromedp.PollOption {
	return []chromedp.PollOption{chromedp.WithPollingInterval(10 * time.Millisecond), chromedp.WithPollingTimeout(testkit.Wait)}
}

// pageState describes what the page has seen, for a failure message.
func pageState(ctx context.Context) string {
	// A fresh deadline: ctx may be the one that ran out.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](
		`JSON.stringify({opened: window.opened, errors: window.errors, jsErrors: window.jsErrors, events: (window.got || []).length, last: (window.got || []).slice(-3)})`))
	if err != nil {
		return fmt.Sprintf(" (page state unknown: %v)", err)
	}
	return " (page: " + s + ")"
}

// checkFeed checks that got is exactly the events of want, each once, in
// id order, each in an envelope naming its stream, and nothing else.
func checkFeed(t *testing.T, got []pageEvent, want *published) {
	t.Helper()
	total := 0
	for _, ids := range want.ids {
		total += len(ids)
	}
	if len(got) != total {
		t.Errorf("the page received %d events, want %d", len(got), total)
	}
	seen := make(map[string][]string)
	var prev store.ID
	for i, e := range got {
		if e.Type != "tick" {
			t.Errorf("event %d: type %q, want tick (data %s)", i, e.Type, e.Data)
			continue
		}
		id, err := store.ParseID(e.ID)
		if err != nil {
			t.Errorf("event %d: id %q: %v", i, e.ID, err)
			continue
		}
		if i > 0 && id.Compare(prev) <= 0 {
			t.Errorf("event %d: id %s not after %s", i, id, prev)
		}
		prev = id
		var env struct {
			Stream string `json:"stream"`
			Data   struct {
				S string `json:"s"`
				N *int   `json:"n"`
			} `json:"data"`
		}
		dec := json.NewDecoder(strings.NewReader(e.Data))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&env); err != nil {
			t.Errorf("event %d: envelope %s: %v", i, e.Data, err)
			continue
		}
		if env.Data.N == nil {
			t.Errorf("event %d: envelope %s: no event data", i, e.Data)
			continue
		}
		if env.Stream != env.Data.S {
			t.Errorf("event %d (%s): the envelope names stream %q, the event was published to %q", i, e.ID, env.Stream, env.Data.S)
		}
		seen[env.Stream] = append(seen[env.Stream], e.ID)
	}
	for name, ids := range want.ids {
		if g := seen[name]; !slices.Equal(g, ids) {
			t.Errorf("stream %s: received %d events %v, want %d %v", name, len(g), g, len(ids), ids)
		}
	}
	for name, ids := range seen {
		if _, ok := want.ids[name]; !ok {
			t.Errorf("stream %s is not selected, yet %d of its events arrived", name, len(ids))
		}
	}
}
