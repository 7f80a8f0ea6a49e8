package httpapi_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/sselog/sselog/httpapi"
	"github.com/sselog/sselog/internal/testkit"
	"github.com/sselog/sselog/store"
	"github.com/sselog/sselog/stream"
)

// screenshotEnv names the file TestUIBrowser saves a screenshot of the
// page to: set it to regenerate httpapi/internal/ui/screenshot.png.
const screenshotEnv = "SSELOG_UI_SCREENSHOT"

// uiRetry is the servers' reconnection hint in these tests, short so that
// the page is quick to come back after a restart.
const uiRetry = 100 * time.Millisecond

// uiServer is the API over a database file on a real listener that a test
// can stop and start again on the same address, as an operator restarts
// sselog. It records the SSE requests it is sent.
type uiServer struct {
	path   string // the database
	addr   string // host:port, kept across restarts
	url    string
	opts   httpapi.Options
	client *http.Client

	log  *store.Log
	hub  *stream.Hub
	h    *httpapi.Handler
	srv  *http.Server
	done chan error // Serve's result

	mu   sync.Mutex
	subs []*http.Request // the GET .../events requests, in arrival order
}

func newUIServer(t *testing.T, opts httpapi.Options) *uiServer {
	t.Helper()
	opts.Retry = uiRetry
	s := &uiServer{path: filepath.Join(t.TempDir(), "events.db"), addr: "127.0.0.1:0", opts: opts, client: testkit.Client(t)}
	s.start(t, nil)
	t.Cleanup(func() { s.stop(t) })
	return s
}

// start opens the database, lets before (when not nil) change it while no
// one is served, and serves it.
func (s *uiServer) start(t *testing.T, before func(*store.Log)) {
	t.Helper()
	// Opened here and closed by stop, which the test's cleanup calls:
	// testkit.OpenAt's cleanup would close a restarted log before stop.
	l, err := store.Open(s.path, store.Options{})
	if err != nil {
		t.Fatalf("open %s: %v", s.path, err)
	}
	s.log = l
	if before != nil {
		before(s.log)
	}
	s.hub = stream.NewHub(s.log, stream.Options{})
	s.h = httpapi.NewHandler(s.log, s.hub, s.opts)
	ln := listenAgain(t, s.addr)
	s.addr = ln.Addr().String()
	s.url = "http://" + s.addr
	s.srv = &http.Server{
		ReadHeaderTimeout: 10 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/events") {
				s.mu.Lock()
				s.subs = append(s.subs, r.Clone(context.Background()))
				s.mu.Unlock()
			}
			s.h.ServeHTTP(w, r)
		}),
	}
	s.srv.RegisterOnShutdown(s.h.Close)
	// Chromium opens spare connections that send no request, which
	// Shutdown waits 5 s for (it takes a new connection for one whose
	// request is on its way): closed once the listener is.
	fresh := make(map[net.Conn]bool)
	var freshMu sync.Mutex
	s.srv.ConnState = func(c net.Conn, state http.ConnState) {
		freshMu.Lock()
		defer freshMu.Unlock()
		if state == http.StateNew {
			fresh[c] = true
		} else {
			delete(fresh, c)
		}
	}
	s.srv.RegisterOnShutdown(func() {
		freshMu.Lock()
		defer freshMu.Unlock()
		for c := range fresh {
			c.Close()
		}
	})
	s.done = make(chan error, 1)
	go func() { s.done <- s.srv.Serve(ln) }()
}

// stop stops the server as cmd/sselog does (Shutdown, Drain, the hub, the
// log), as far as start got; a stopped server is not stopped again.
func (s *uiServer) stop(t *testing.T) {
	t.Helper()
	if s.srv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), testkit.Wait)
		defer cancel()
		s.client.CloseIdleConnections()
		if err := s.srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := s.h.Drain(ctx); err != nil {
			t.Errorf("drain: %v", err)
		}
		if err := <-s.done; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("serve: %v", err)
		}
		s.srv = nil
	}
	if s.hub != nil {
		s.hub.Close()
		s.hub = nil
	}
	if s.log != nil {
		if err := s.log.Close(); err != nil {
			t.Errorf("close the log: %v", err)
		}
		s.log = nil
	}
}

// listenAgain listens on addr, waiting out a port that is still held.
func listenAgain(t *testing.T, addr string) net.Listener {
	t.Helper()
	deadline := time.Now().Add(testkit.Wait)
	for {
		ln, err := net.Listen("tcp", addr)
		if err == nil {
			return ln
		}
		if !errors.Is(err, syscall.EADDRINUSE) || time.Now().After(deadline) {
			t.Fatalf("listen on %s: %v", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// subscriptions returns the SSE requests the server has been sent.
func (s *uiServer) subscriptions() []*http.Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.subs)
}

// post publishes body (one event) to name, with tok as a bearer token
// when not empty, and returns the event's id.
func (s *uiServer) post(t *testing.T, name, body, tok string) string {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, s.url+"/v1/streams/"+name+"/events", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var ack struct{ ID string }
	if resp.StatusCode != http.StatusCreated || json.Unmarshal(b, &ack) != nil || ack.ID == "" {
		t.Fatalf("publish %s to %s: %s: %s", body, name, resp.Status, b)
	}
	return ack.ID
}

// postN publishes n events of type typ to name and returns their ids.
func (s *uiServer) postN(t *testing.T, name, typ string, n int) []string {
	t.Helper()
	ids := make([]string, n)
	for i := range ids {
		ids[i] = s.post(t, name, fmt.Sprintf(`{"type":%q,"data":{"n":%d}}`, typ, i), "")
	}
	return ids
}

// watchPage runs in every document before the page's own scripts, which
// the page's Content-Security-Policy does not restrain, and records what
// the page should never do: throw, leave a promise rejected, or be refused
// something by its policy.
const watchPage = `
window.problems = [];
addEventListener("error", (e) => problems.push("error: " + e.message));
addEventListener("unhandledrejection", (e) => problems.push("rejection: " + e.reason));
document.addEventListener("securitypolicyviolation", (e) => problems.push("csp: " + e.violatedDirective + " " + e.blockedURI));
`

// uiPage is one tab on the viewer page.
type uiPage struct {
	t   *testing.T
	ctx context.Context
}

// openUI opens url in a new tab of the browser at bctx, once the page has
// set itself up, and checks when the test ends that it never threw nor
// broke its policy.
func openUI(t *testing.T, bctx context.Context, url string) *uiPage {
	t.Helper()
	tab, cancel := chromedp.NewContext(bctx)
	t.Cleanup(cancel)
	// Open the tab before giving the steps a deadline, which would
	// otherwise bound the tab's life.
	if err := chromedp.Do(tab); err != nil {
		t.Fatalf("open a tab: %v", err)
	}
	ctx, cancelRun := context.WithTimeout(tab, 6*testkit.Wait)
	t.Cleanup(cancelRun)
	p := &uiPage{t: t, ctx: ctx}
	watch := chromedp.Func(func(ctx context.Context, _ *chromedp.Target) error {
		_, err := chromedp.Call(ctx, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: watchPage})
		return err
	})
	if err := chromedp.Do(ctx, watch, chromedp.EmulateViewport(1200, 900), chromedp.Navigate(url)); err != nil {
		t.Fatalf("open %s: %v", url, err)
	}
	t.Cleanup(func() {
		if problems := uiEval[[]string](p, `window.problems`); len(problems) > 0 {
			t.Errorf("the page reported problems: %q", problems)
		}
	})
	return p
}

// uiEval evaluates expr in the page.
func uiEval[T any](p *uiPage, expr string) T {
	p.t.Helper()
	v, err := chromedp.Run(p.ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		p.t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// wait polls fn, a JavaScript function of args, until it returns true.
func (p *uiPage) wait(what, fn string, args ...any) {
	p.t.Helper()
	opts := append(pollOpts(), chromedp.WithPollingArgs(args...))
	if _, err := chromedp.Run(p.ctx, chromedp.PollFunction[bool](fn, opts...)); err != nil {
		p.t.Fatalf("waiting until %s: %v (page: %s)", what, err, p.state())
	}
}

// state describes the page for a failure message.
func (p *uiPage) state() string {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(p.ctx), 5*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](`JSON.stringify({
		status: document.getElementById("status").textContent,
		live: document.getElementById("live").textContent,
		older: document.getElementById("older-note").textContent,
		token: !document.getElementById("token-form").hidden,
		events: document.querySelectorAll("#events li").length,
		first: [...document.querySelectorAll("#events li")].slice(0, 3).map((li) => li.textContent),
		problems: window.problems})`))
	if err != nil {
		return fmt.Sprintf("unknown: %v", err)
	}
	return s
}

// shown returns the ids of the events the stream view shows, newest first,
// as its rows are in the page.
func (p *uiPage) shown() []string {
	p.t.Helper()
	return uiEval[[]string](p, `[...document.querySelectorAll("#events li.event")].map((li) => li.dataset.id)`)
}

// waitShown waits until the stream view shows exactly want, newest first.
func (p *uiPage) waitShown(want []string) {
	p.t.Helper()
	p.wait(fmt.Sprintf("the view shows %d events", len(want)),
		`(want) => { const got = [...document.querySelectorAll("#events li.event")].map((li) => li.dataset.id); return got.length >= want.length; }`, want)
	if got := p.shown(); !slices.Equal(got, want) {
		p.t.Fatalf("the view shows %d events\n%v\nwant %d, newest first\n%v", len(got), got, len(want), want)
	}
}

func (p *uiPage) do(steps ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	if err := chromedp.Do(p.ctx, steps...); err != nil {
		p.t.Fatalf("%v (page: %s)", err, p.state())
	}
}

// newestFirst returns ids reversed.
func newestFirst(ids ...[]string) []string {
	all := slices.Concat(ids...)
	slices.Reverse(all)
	return all
}

// TestUIFiles checks how the page's files are served, without a browser:
// from /ui/ only, for GET and HEAD, without a token, under a policy that
// allows this origin's files and no inline script, and that the files
// themselves load nothing from elsewhere and never parse HTML from data.
func TestUIFiles(t *testing.T) {
	s, _ := newAuthServer(t, testSecret, httpapi.Options{})
	t.Run("redirect", func(t *testing.T) {
		status, hdr, _ := s.doFull(t, http.MethodGet, "/ui", "", "", nil)
		if status != http.StatusMovedPermanently || hdr.Get("Location") != "ui/" {
			t.Fatalf("GET /ui: %d, Location %q; want 301 to ui/", status, hdr.Get("Location"))
		}
	})
	files := []struct{ path, contentType string }{
		{"/ui/", "text/html; charset=utf-8"},
		{"/ui/app.js", "text/javascript; charset=utf-8"},
		{"/ui/style.css", "text/css; charset=utf-8"},
		{"/ui/favicon.svg", "image/svg+xml"},
	}
	for _, f := range files {
		t.Run("GET "+f.path, func(t *testing.T) {
			// No token: the files hold no data.
			status, hdr, body := s.doFull(t, http.MethodGet, f.path, "", "", nil)
			if status != http.StatusOK || hdr.Get("Content-Type") != f.contentType {
				t.Fatalf("GET %s without a token: %d %q: %.200s", f.path, status, hdr.Get("Content-Type"), body)
			}
			if csp := hdr.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") || strings.Contains(csp, "unsafe") {
				t.Errorf("Content-Security-Policy %q: want default-src 'self' and nothing unsafe", csp)
			}
			if hdr.Get("X-Content-Type-Options") != "nosniff" || hdr.Get("ETag") == "" {
				t.Errorf("headers %v: want nosniff and an ETag", hdr)
			}
			status, hdr, body = s.doFull(t, http.MethodHead, f.path, "", "", nil)
			if status != http.StatusOK || len(body) != 0 || hdr.Get("Content-Security-Policy") == "" {
				t.Errorf("HEAD %s: %d, %d bytes, headers %v", f.path, status, len(body), hdr)
			}
		})
	}
	t.Run("only GET and HEAD", func(t *testing.T) {
		for _, m := range []string{http.MethodPost, http.MethodPut, http.MethodDelete} {
			if status, _, body := s.doFull(t, m, "/ui/", "application/json", "{}", nil); status != http.StatusMethodNotAllowed {
				t.Errorf("%s /ui/: %d %s, want 405", m, status, body)
			}
		}
	})
	t.Run("unknown file", func(t *testing.T) {
		if status, _, _ := s.doFull(t, http.MethodGet, "/ui/nothing.js", "", "", nil); status != http.StatusNotFound {
			t.Errorf("GET /ui/nothing.js: %d, want 404", status)
		}
	})
	t.Run("sources", func(t *testing.T) {
		dir := filepath.Join("internal", "ui", "static")
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		// Nothing from another host, nothing parsed as HTML from a string,
		// no inline script (the policy would refuse it anyway).
		forbidden := regexp.MustCompile(`(?i)(src|href)\s*=\s*["']?(https?:)?//|url\(\s*["']?(https?:)?//|innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function|<script>|\son[a-z]+=`)
		for _, e := range entries {
			b, err := os.ReadFile(filepath.Join(dir, e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			if m := forbidden.Find(b); m != nil {
				t.Errorf("%s holds %q", e.Name(), m)
			}
		}
	})
}

// TestUIBrowser drives the viewer page in headless Chromium against a real
// server over a real database.
func TestUIBrowser(t *testing.T) {
	bctx := startBrowser(t)

	t.Run("lists streams", func(t *testing.T) {
		s := newUIServer(t, httpapi.Options{})
		s.postN(t, "orders", "order.created", 3)
		s.postN(t, "audit.login", "login", 1)
		p := openUI(t, bctx, s.url+"/ui/")
		p.wait("two streams are listed", `() => document.querySelectorAll("#stream-rows tr").length === 2`)
		rows := uiEval[[][]string](p, `[...document.querySelectorAll("#stream-rows tr")].map((tr) => [...tr.cells].map((c) => c.textContent))`)
		var list struct {
			Streams []store.StreamInfo `json:"streams"`
		}
		resp, err := s.client.Get(s.url + "/v1/streams")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if err := json.NewDecoder(resp.Body).Decode(&list); err != nil {
			t.Fatal(err)
		}
		for i, info := range list.Streams {
			want := []string{info.Name, fmt.Sprint(info.Count), fmt.Sprintf("%d B", info.Bytes), info.FirstID.String(), info.LastID.String(), "none"}
			if !slices.Equal(rows[i], want) {
				t.Errorf("row %d: %q, want %q", i, rows[i], want)
			}
		}
		// A stream's name opens its view.
		p.do(chromedp.Click(chromedp.CSS(`#stream-rows tr[data-stream="orders"] a`)))
		p.wait("the view of orders shows its events", `() => document.querySelectorAll("#events li.event").length === 3`)
	})

	t.Run("live", func(t *testing.T) {
		s := newUIServer(t, httpapi.Options{})
		before := s.postN(t, "orders", "order.created", 3)
		p := openUI(t, bctx, s.url+"/ui/#stream=orders")
		p.waitShown(newestFirst(before))
		p.wait("the view is live", `() => document.getElementById("live").textContent === "live"`)
		after := []string{
			s.post(t, "orders", `{"type":"order.paid","data":{"id":42,"total":"9.99"}}`, ""),
			s.post(t, "orders", `{"data":"untyped"}`, ""),
		}
		p.waitShown(newestFirst(before, after))
		rows := uiEval[[]string](p, `[...document.querySelectorAll("#events li.event")].slice(0, 2).map((li) => li.querySelector(".type").textContent + " " + li.querySelector(".data").textContent)`)
		if want := []string{`message "untyped"`, `order.paid {"id":42,"total":"9.99"}`}; !slices.Equal(rows, want) {
			t.Errorf("newest rows %q, want %q", rows, want)
		}
		// The view opened with ?last=50, then stayed on one connection.
		if subs := s.subscriptions(); len(subs) != 1 || subs[0].URL.Query().Get("last") != "50" {
			t.Errorf("SSE requests %v, want one, with last=50", subs)
		}
	})

	t.Run("published HTML is text", func(t *testing.T) {
		s := newUIServer(t, httpapi.Options{})
		const markup = `<img src=x onerror=window.pwned=1><script>window.pwned=2</script>`
		p := openUI(t, bctx, s.url+"/ui/#stream=x")
		p.wait("the view is live", `() => document.getElementById("live").textContent === "live"`)
		id := s.post(t, "x", `{"type":"<i>t</i>","data":"<img src=x onerror=window.pwned=1><script>window.pwned=2</script>"}`, "")
		p.waitShown([]string{id})
		text := uiEval[string](p, `document.querySelector("#events li.event .data").textContent`)
		if text != `"`+markup+`"` {
			t.Errorf("the row shows %q, want the markup as text", text)
		}
		visible := uiEval[bool](p, `document.querySelector("#events li.event").checkVisibility()`)
		elements := uiEval[int](p, `document.querySelectorAll("main img, main script, main i").length`)
		option := uiEval[string](p, `document.getElementById("type-filter").lastElementChild.textContent`)
		pwned := uiEval[string](p, `typeof window.pwned`)
		if !visible || elements != 0 || option != "<i>t</i>" || pwned != "undefined" {
			t.Errorf("row visible %v, %d elements made from data, filter option %q, window.pwned %s; want true, 0, the type as text, undefined", visible, elements, option, pwned)
		}
	})

	t.Run("older events and the type filter", func(t *testing.T) {
		s := newUIServer(t, httpapi.Options{})
		// 120 events: the view opens with the newest 50; "Load older" pages
		// in the rest from the history endpoint, markup and big numbers
		// shown as stored there too.
		var ids []string
		ids = append(ids, s.post(t, "many", `{"type":"odd","data":{"html":"<b>old</b>","big":9007199254740993,"f":1.50}}`, ""))
		for i := 1; i < 120; i++ {
			typ := []string{"even", "odd"}[i%2]
			ids = append(ids, s.post(t, "many", fmt.Sprintf(`{"type":%q,"data":{"n":%d}}`, typ, i), ""))
		}
		p := openUI(t, bctx, s.url+"/ui/#stream=many")
		p.waitShown(newestFirst(ids[70:]))
		p.do(chromedp.Click(chromedp.ID("older")))
		p.waitShown(newestFirst(ids))
		oldest := uiEval[string](p, `document.querySelector("#events li.event:last-child .data").textContent`)
		if want := `{"html":"<b>old</b>","big":9007199254740993,"f":1.50}`; oldest != want {
			t.Errorf("the oldest event shows %s, want %s", oldest, want)
		}
		p.wait("a second click finds no older events", `() => !document.getElementById("older").disabled`)
		p.do(chromedp.Click(chromedp.ID("older")))
		p.wait("a second click finds no older events", `() => document.getElementById("older-note").textContent === "no older events"`)

		p.do(chromedp.SetValue(chromedp.ID("type-filter"), "even"),
			chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
				_, err := chromedp.Evaluate[any](`document.getElementById("type-filter").dispatchEvent(new Event("change"))`)(ctx, t)
				return err
			}))
		visibleTypes := `[...document.querySelectorAll("#events li.event")].filter((li) => li.checkVisibility()).map((li) => li.dataset.type)`
		if got := uiEval[[]string](p, visibleTypes); len(got) != 59 || slices.ContainsFunc(got, func(s string) bool { return s != "even" }) {
			t.Errorf("with the filter on even, the view shows %d events of types %q; want the 59 even ones", len(got), slices.Compact(got))
		}
		// Live events go through the filter too.
		live := []string{s.post(t, "many", `{"type":"odd","data":1}`, ""), s.post(t, "many", `{"type":"even","data":2}`, "")}
		p.waitShown(newestFirst(ids, live))
		if got := uiEval[[]string](p, visibleTypes); len(got) != 60 {
			t.Errorf("after a live odd and even event, %d events are visible, want 60", len(got))
		}
	})

	t.Run("publish form", func(t *testing.T) {
		s := newUIServer(t, httpapi.Options{})
		p := openUI(t, bctx, s.url+"/ui/#stream=notes")
		p.wait("the view is live", `() => document.getElementById("live").textContent === "live"`)
		p.do(chromedp.SendKeys(chromedp.ID("pub-type"), "note"),
			chromedp.SendKeys(chromedp.ID("pub-data"), `{"a": [1, 2]}`),
			chromedp.Click(chromedp.CSS(`#publish-form button[type=submit]`)))
		p.wait("the event is shown", `() => document.querySelectorAll("#events li.event").length === 1`)
		p.do(chromedp.Click(chromedp.CSS(`#publish-form input[value=text]`)),
			chromedp.Click(chromedp.CSS(`#publish-form button[type=submit]`)))
		p.wait("the second event is shown", `() => document.querySelectorAll("#events li.event").length === 2`)
		rows := uiEval[[]string](p, `[...document.querySelectorAll("#events li.event .data")].map((d) => d.textContent)`)
		if want := []string{`"{\"a\": [1, 2]}"`, `{"a":[1,2]}`}; !slices.Equal(rows, want) {
			t.Errorf("rows %q, want %q", rows, want)
		}
		// The event may be shown before the answer to the form's request.
		p.wait("the form says where the event was stored", `(id) => document.getElementById("publish-result").textContent === "Stored as " + id + "."`, p.shown()[0])
	})

	t.Run("token", func(t *testing.T) {
		s := newUIServer(t, httpapi.Options{Auth: mustVerifier(t, testSecret)})
		tok := hmacToken(t, grant{Publish: []string{"*"}, Subscribe: []string{"*"}})
		before := s.post(t, "orders", `{"data":1}`, tok)
		p := openUI(t, bctx, s.url+"/ui/#stream=orders")
		p.wait("the page asks for a token", `() => !document.getElementById("token-form").hidden`)
		if n := uiEval[int](p, `document.querySelectorAll("#stream-rows tr, #events li").length`); n != 0 {
			t.Errorf("without a token the page shows %d rows", n)
		}
		p.do(chromedp.SetValue(chromedp.ID("token"), tok), chromedp.Click(chromedp.CSS(`#token-form button[type=submit]`)))
		p.wait("the stream is listed", `() => document.querySelectorAll("#stream-rows tr").length === 1`)
		p.waitShown([]string{before})
		p.wait("the view is live", `() => document.getElementById("live").textContent === "live"`)
		after := s.post(t, "orders", `{"data":2}`, tok)
		p.waitShown([]string{after, before})
		if got := uiEval[string](p, `sessionStorage.getItem("sselog.token")`); got != tok {
			t.Errorf("sessionStorage holds %q, want the token", got)
		}
		// Every stream request carried the token in its header, never in
		// the URL; the first, before there was one, carried none.
		subs := s.subscriptions()
		for i, r := range subs {
			if strings.Contains(r.URL.RawQuery, "token") || (i > 0) != (r.Header.Get("Authorization") == "Bearer "+tok) {
				t.Errorf("SSE request %d: %s, Authorization %q", i, r.URL, r.Header.Get("Authorization"))
			}
		}
		// A reload keeps the token (and the view) for the tab.
		p.do(chromedp.Reload())
		p.waitShown([]string{after, before})
		if uiEval[bool](p, `!document.getElementById("token-form").hidden`) {
			t.Error("after a reload the page asks for the token again")
		}
	})

	t.Run("restart", func(t *testing.T) {
		s := newUIServer(t, httpapi.Options{})
		first := s.postN(t, "r", "tick", 5)
		p := openUI(t, bctx, s.url+"/ui/#stream=r")
		p.waitShown(newestFirst(first))
		p.wait("the view is live", `() => document.getElementById("live").textContent === "live"`)

		s.stop(t)
		p.wait("the page notices", `() => document.getElementById("live").textContent.startsWith("reconnecting")`)
		s.start(t, nil)
		// Published before the page is back (it tries every 100 to 200 ms):
		// replayed from the log after the last id it received.
		during := s.postN(t, "r", "tick", 3)
		p.wait("the view is live again", `() => document.getElementById("live").textContent === "live"`)
		after := s.postN(t, "r", "tick", 2)
		p.waitShown(newestFirst(first, during, after))

		var resumed bool
		for _, r := range s.subscriptions() {
			resumed = resumed || r.Header.Get("Last-Event-ID") == first[4]
		}
		if !resumed {
			t.Errorf("no SSE request resumed with Last-Event-ID %s", first[4])
		}
	})

	t.Run("reset", func(t *testing.T) {
		s := newUIServer(t, httpapi.Options{})
		first := s.postN(t, "r", "tick", 3)
		p := openUI(t, bctx, s.url+"/ui/#stream=r")
		p.waitShown(newestFirst(first))
		s.stop(t)
		// While the server is down, 5 more events are stored and retention
		// keeps only the newest 2: the page cannot resume exactly.
		var kept []string
		s.start(t, func(l *store.Log) {
			for i := range 5 {
				ids, err := l.Append(context.Background(), "r", []store.Event{{Type: "tick", Data: []byte(fmt.Sprint(i))}})
				if err != nil {
					t.Fatal(err)
				}
				kept = append(kept, ids[0].String())
			}
			kept = kept[3:]
			trim(t, l, "r", store.Cut{MaxEvents: 2}, 100)
		})
		p.waitShown(newestFirst(first, kept))
		reset := uiEval[[]string](p, `[...document.querySelectorAll("#events li")].slice(2, 3).map((li) => li.className + ": " + li.textContent)`)
		if len(reset) != 1 || !strings.HasPrefix(reset[0], "reset: Reset (trimmed)") || !strings.Contains(reset[0], kept[0]) {
			t.Errorf("the row between the kept and the earlier events is %q, want a reset naming %s", reset, kept[0])
		}
		if !uiEval[bool](p, `document.querySelector("#events li.reset").checkVisibility()`) {
			t.Error("the reset is not visible")
		}
	})

	if path := os.Getenv(screenshotEnv); path != "" {
		t.Run("screenshot", func(t *testing.T) {
			s := newUIServer(t, httpapi.Options{})
			for _, b := range []string{
				`{"type":"order.created","data":{"id":41,"total":"12.50","items":2}}`,
				`{"type":"order.paid","data":{"id":41,"method":"card"}}`,
				`{"type":"order.created","data":{"id":42,"total":"9.99","items":1}}`,
				`{"type":"order.shipped","data":{"id":41,"carrier":"DHL","tracking":"JD014600003828"}}`,
			} {
				s.post(t, "orders", b, "")
			}
			s.postN(t, "audit.login", "login", 7)
			s.postN(t, "jobs.reindex", "progress", 12)
			p := openUI(t, bctx, s.url+"/ui/#stream=orders")
			p.wait("the view is live", `() => document.getElementById("live").textContent === "live" && document.querySelectorAll("#stream-rows tr").length === 3`)
			ids := []string{
				s.post(t, "orders", `{"type":"order.paid","data":{"id":42,"method":"invoice"}}`, ""),
				s.post(t, "orders", `{"data":"plain message"}`, ""),
			}
			p.wait("the live events are shown", `(id) => document.querySelector("#events li.event").dataset.id === id`, ids[1])
			png, err := chromedp.Run(p.ctx, chromedp.FullScreenshot(100))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, png, 0o644); err != nil {
				t.Fatal(err)
			}
			t.Logf("wrote %s (%d bytes)", path, len(png))
		})
	}
}
