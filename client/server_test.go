package client_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/sselog/sselog/client"
	"github.com/sselog/sselog/httpapi"
	"github.com/sselog/sselog/internal/testkit"
	"github.com/sselog/sselog/store"
	"github.com/sselog/sselog/stream"
)

// testServer is a real sselog API over a bbolt file in the test's temp
// dir, on a loopback port.
type testServer struct {
	URL string
	log *store.Log
}

// quickRetry is the retry hint the test servers give, so that
// reconnections take milliseconds.
const quickRetry = 20 * time.Millisecond

// newServer serves the API over a fresh log and tears it down as
// cmd/sselog does: Shutdown (which ends the SSE streams through the
// handler's Close), Drain, the hub, the listener, the log.
func newServer(t *testing.T) *testServer {
	t.Helper()
	l := testkit.Open(t)
	hub := stream.NewHub(l, stream.Options{})
	h := httpapi.NewHandler(l, hub, httpapi.Options{Retry: quickRetry})
	srv := testkit.Serve(t, h, testkit.ServeOptions{Config: func(c *http.Server) { c.RegisterOnShutdown(h.Close) }})
	t.Cleanup(hub.Close)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), testkit.Wait)
		defer cancel()
		if err := srv.Config.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := h.Drain(ctx); err != nil {
			t.Errorf("drain: %v", err)
		}
	})
	return &testServer{URL: srv.URL, log: l}
}

// newClient is a client of url with pauses short enough for tests.
func newClient(t *testing.T, url string, options ...client.Option) *client.Client {
	t.Helper()
	hc := testkit.Client(t)
	c, err := client.New(url, append([]client.Option{client.WithHTTPClient(hc), client.WithBackoff(time.Millisecond, 20*time.Millisecond)}, options...)...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// stored is every event of stream in the log.
func (s *testServer) stored(t *testing.T, name string) []store.Event {
	t.Helper()
	events, err := s.log.ReadAfter(name, store.ID{}, 0)
	if err != nil {
		t.Fatalf("read %s: %v", name, err)
	}
	return events
}

// publishN publishes n untyped events {"n": first..first+n-1} in one
// batch, straight to the log, and returns their ids.
func (s *testServer) publishN(t *testing.T, name string, first, n int) []string {
	t.Helper()
	events := make([]store.Event, n)
	for i := range events {
		events[i] = store.Event{Type: "tick", Data: []byte(fmt.Sprintf(`{"n":%d}`, first+i))}
	}
	ids, err := s.log.Append(context.Background(), name, events)
	if err != nil {
		t.Fatalf("append: %v", err)
	}
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = id.String()
	}
	return out
}

// sameEvents compares what a client read with what the log holds.
func sameEvents(got []client.Event, want []store.Event) error {
	for i := range min(len(got), len(want)) {
		w := want[i]
		typ := w.Type
		if typ == "" {
			typ = "message"
		}
		g := got[i]
		if g.ID != w.ID.String() || g.Type != typ || string(g.Data) != string(w.Data) || !g.Time.Equal(w.ID.Time()) {
			return fmt.Errorf("event %d: got %s %s %s %v, want %s %s %s %v", i, g.ID, g.Type, g.Data, g.Time, w.ID, typ, w.Data, w.ID.Time())
		}
	}
	if len(got) != len(want) {
		return fmt.Errorf("got %d events, want %d", len(got), len(want))
	}
	return nil
}

// collect ranges over seq in a goroutine, keeping what it yields, so that
// the test's goroutine can publish and wait meanwhile.
type collected struct {
	mu      sync.Mutex
	items   []client.Item
	err     error
	changed chan struct{}
	done    chan struct{}
}

func collect(seq func(func(client.Item, error) bool)) *collected {
	c := &collected{changed: make(chan struct{}, 1), done: make(chan struct{})}
	go func() {
		defer close(c.done)
		for item, err := range seq {
			c.mu.Lock()
			if err != nil {
				c.err = err
			} else {
				c.items = append(c.items, item)
			}
			c.mu.Unlock()
			select {
			case c.changed <- struct{}{}:
			default:
			}
		}
	}()
	return c
}

func (c *collected) snapshot() ([]client.Item, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]client.Item(nil), c.items...), c.err
}

// waitFor waits until n items have arrived and returns them all.
func (c *collected) waitFor(t *testing.T, n int) []client.Item {
	t.Helper()
	deadline := time.NewTimer(testkit.Wait)
	defer deadline.Stop()
	for {
		items, err := c.snapshot()
		if len(items) >= n {
			return items
		}
		select {
		case <-c.changed:
		case <-c.done:
			items, err = c.snapshot()
			if len(items) >= n {
				return items
			}
			t.Fatalf("iteration ended (%v) after %d items, want %d", err, len(items), n)
		case <-deadline.C:
			t.Fatalf("%d items after %v, want %d (err %v)", len(items), testkit.Wait, n, err)
		}
	}
}

// waitEnd waits for the iteration to end and returns its final error.
func (c *collected) waitEnd(t *testing.T, within time.Duration) error {
	t.Helper()
	select {
	case <-c.done:
		_, err := c.snapshot()
		return err
	case <-time.After(within):
		t.Fatalf("iteration still running %v later", within)
		return nil
	}
}

// events is the events among items, in order.
func events(items []client.Item) []client.Event {
	var out []client.Event
	for _, it := range items {
		if it.Event != nil {
			out = append(out, *it.Event)
		}
	}
	return out
}

// recorder is a handler in front of the real server that records every
// request and lets the test decide, attempt by attempt, what happens to
// it: answered by the test (answer returns true), or passed through.
type recorder struct {
	t       *testing.T
	backend *httputil.ReverseProxy

	mu       sync.Mutex
	requests []recorded
	answer   func(n int, w http.ResponseWriter, r *http.Request, body []byte) bool
}

// recorded is one request as the server in front saw it.
type recorded struct {
	at     time.Time
	header http.Header
	query  url.Values
	body   string
}

func newRecorder(t *testing.T, backend string, answer func(n int, w http.ResponseWriter, r *http.Request, body []byte) bool) (*recorder, string) {
	t.Helper()
	u, err := url.Parse(backend)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.FlushInterval = -1 // SSE goes through at once
	rp.ErrorLog = nil
	rec := &recorder{t: t, backend: rp, answer: answer}
	srv := testkit.Serve(t, rec, testkit.ServeOptions{})
	return rec, srv.URL
}

func (rec *recorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return
	}
	rec.mu.Lock()
	n := len(rec.requests)
	rec.requests = append(rec.requests, recorded{at: time.Now(), header: r.Header.Clone(), query: r.URL.Query(), body: string(body)})
	answer := rec.answer
	rec.mu.Unlock()
	if answer != nil && answer(n, w, r, body) {
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	rec.backend.ServeHTTP(w, r)
}

func (rec *recorder) seen() []recorded {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return append([]recorded(nil), rec.requests...)
}

// forwardThenDrop passes the request to the backend, waits for the
// backend's whole answer (so that whatever it stored is stored), and then
// closes the client's connection without a byte of that answer.
func forwardThenDrop(t *testing.T, backend string, w http.ResponseWriter, r *http.Request, body []byte) {
	req, err := http.NewRequestWithContext(r.Context(), r.Method, backend+r.URL.RequestURI(), bytes.NewReader(body))
	if err != nil {
		t.Errorf("forward: %v", err)
		return
	}
	req.Header = r.Header.Clone()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Errorf("forward: %v", err)
		return
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Errorf("forwarded publish: status %d, want 201", resp.StatusCode)
	}
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		t.Errorf("hijack: %v", err)
		return
	}
	conn.Close()
}

// cutProxy is a TCP proxy that cuts each connection after a number of
// bytes from the server, wherever they fall: inside a line, inside an
// event, between events.
type cutProxy struct {
	ln      net.Listener
	backend string
	budget  func(conn int) int // bytes the n-th connection may carry back

	mu    sync.Mutex
	conns int
	wg    sync.WaitGroup
}

func newCutProxy(t *testing.T, backend string, budget func(conn int) int) *cutProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(backend)
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln, backend: u.Host, budget: budget}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(func() {
		ln.Close()
		p.wg.Wait()
	})
	return p
}

func (p *cutProxy) URL() string { return "http://" + p.ln.Addr().String() }

func (p *cutProxy) connections() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.conns
}

func (p *cutProxy) accept() {
	defer p.wg.Done()
	for {
		down, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		n := p.conns
		p.conns++
		p.mu.Unlock()
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.serve(down, p.budget(n))
		}()
	}
}

func (p *cutProxy) serve(down net.Conn, budget int) {
	defer down.Close()
	up, err := net.Dial("tcp", p.backend)
	if err != nil {
		return
	}
	defer up.Close()
	go func() {
		_, _ = io.Copy(up, down)
		up.Close()
	}()
	_, _ = io.Copy(down, io.LimitReader(up, int64(budget)))
}

// sseScript is a fake SSE server: the n-th request gets the n-th entry,
// written as it is, then the connection ends (or, for the last entry,
// stays open until the client goes).
type sseScript struct {
	mu       sync.Mutex
	requests []recorded
	arrived  chan struct{}
	steps    []func(w http.ResponseWriter, r *http.Request)
}

func newSSEScript(t *testing.T, steps ...func(w http.ResponseWriter, r *http.Request)) (*sseScript, string) {
	t.Helper()
	s := &sseScript{steps: steps, arrived: make(chan struct{}, 100)}
	srv := testkit.Serve(t, s, testkit.ServeOptions{})
	return s, srv.URL
}

func (s *sseScript) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	n := len(s.requests)
	s.requests = append(s.requests, recorded{at: time.Now(), header: r.Header.Clone(), query: r.URL.Query()})
	s.mu.Unlock()
	select {
	case s.arrived <- struct{}{}:
	default:
	}
	if n >= len(s.steps) {
		n = len(s.steps) - 1
	}
	s.steps[n](w, r)
}

func (s *sseScript) seen() []recorded {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]recorded(nil), s.requests...)
}

// sendSSE answers with an SSE body, flushed, then ends the response.
func sendSSE(body string) func(w http.ResponseWriter, r *http.Request) {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, body)
		http.NewResponseController(w).Flush()
	}
}

// holdSSE answers with an SSE body and keeps the stream open until the
// client leaves.
func holdSSE(body string) func(w http.ResponseWriter, r *http.Request) {
	return func(w http.ResponseWriter, r *http.Request) {
		sendSSE(body)(w, r)
		<-r.Context().Done()
	}
}

// status answers with an error status, a JSON explanation and the given
// Retry-After ("" for none).
func status(code int, retryAfter string) func(w http.ResponseWriter, r *http.Request) {
	return func(w http.ResponseWriter, r *http.Request) {
		if retryAfter != "" {
			w.Header().Set("Retry-After", retryAfter)
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(map[string]string{"error": fmt.Sprintf("scripted %d", code)})
	}
}

// frame is an SSE frame as sselog writes it.
func frame(id, typ, data string) string {
	s := "id: " + id + "\n"
	if typ != "" {
		s += "event: " + typ + "\n"
	}
	return s + "data: " + data + "\n\n"
}

// errorsAs is errors.As for a test's expectations.
func errorsAs[T error](err error) (T, bool) {
	var target T
	ok := errors.As(err, &target)
	return target, ok
}
