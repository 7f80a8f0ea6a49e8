package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	sse "github.com/tmaxmax/go-sse"

	"github.com/sselog/sselog/internal/testkit"
	"github.com/sselog/sselog/store"
)

// gateTransport lets the test hold an SSE client's reconnection attempts
// back, so that events can be published to a restarted server before the
// client is allowed to reach it. It also records each attempt.
type gateTransport struct {
	base http.RoundTripper

	mu       sync.Mutex
	release  chan struct{} // non-nil while held
	inflight int           // attempts past the gate, not yet answered
	failures int           // attempts that got no response
	lastIDs  []string      // Last-Event-ID of each attempt past the gate
	changed  chan struct{}
}

func newGateTransport() *gateTransport {
	return &gateTransport{base: http.DefaultTransport.(*http.Transport).Clone(), changed: make(chan struct{}, 1)}
}

func (g *gateTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	g.mu.Lock()
	for g.release != nil {
		ch := g.release
		g.mu.Unlock()
		select {
		case <-ch:
		case <-req.Context().Done():
			return nil, req.Context().Err()
		}
		g.mu.Lock()
	}
	g.inflight++
	g.lastIDs = append(g.lastIDs, req.Header.Get("Last-Event-ID"))
	g.mu.Unlock()

	resp, err := g.base.RoundTrip(req)

	g.mu.Lock()
	g.inflight--
	if err != nil {
		g.failures++
	}
	g.mu.Unlock()
	select {
	case g.changed <- struct{}{}:
	default:
	}
	return resp, err
}

func (g *gateTransport) hold() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.release = make(chan struct{})
}

func (g *gateTransport) open() {
	g.mu.Lock()
	defer g.mu.Unlock()
	close(g.release)
	g.release = nil
}

// waitUntil waits for cond, evaluated under g.mu, to hold.
func (g *gateTransport) waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(eventTimeout)
	defer deadline.Stop()
	for {
		g.mu.Lock()
		ok := cond()
		g.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-g.changed:
		case <-deadline.C:
			t.Fatalf("client transport: still waiting for %s after %v", what, eventTimeout)
		}
	}
}

// freeAddr returns a loopback address that was free a moment ago, so that
// a server can be restarted at the same URL.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// TestGoSSEClientAcrossRestart follows a stream with an independent SSE
// client, tmaxmax/go-sse, through a server restart: the client's own
// reconnection with Last-Event-ID must yield exactly the stream's events
// after its starting point.
func TestGoSSEClientAcrossRestart(t *testing.T) {
	t.Parallel()
	addr := freeAddr(t)
	db := filepath.Join(t.TempDir(), "x.db")
	// A short retry hint: go-sse waits what the server says before
	// reconnecting.
	args := []string{"--addr", addr, "--db", db, "--retry", "50ms"}
	srv := startServer(t, args...)
	url := srv.eventsURL("feed")

	var published []sseEvent
	pub := func(n int) {
		t.Helper()
		for range n {
			data := fmt.Sprintf(`{"n":%d}`, len(published)+1)
			published = append(published, sseEvent{ID: publishOne(t, url, "tick", data), Type: "tick", Data: data})
		}
	}
	pub(3)
	const start = 1 // the client resumes after published[start]

	gate := newGateTransport()
	client := &sse.Client{
		HTTPClient: &http.Client{Transport: gate},
		Backoff:    sse.Backoff{InitialInterval: 20 * time.Millisecond, Multiplier: 1.5, Jitter: 0.1, MaxInterval: 100 * time.Millisecond},
	}
	var (
		mu      sync.Mutex
		got     []sseEvent
		arrived = make(chan struct{}, 1)
	)
	received := func() []sseEvent {
		mu.Lock()
		defer mu.Unlock()
		return append([]sseEvent(nil), got...)
	}
	waitReceived := func(n int) {
		t.Helper()
		deadline := time.NewTimer(eventTimeout)
		defer deadline.Stop()
		for len(received()) < n {
			select {
			case <-arrived:
			case <-deadline.C:
				t.Fatalf("client has %d events after %v, want %d: %v", len(received()), eventTimeout, n, received())
			}
		}
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Last-Event-ID", published[start].ID)
	conn := client.NewConnection(req)
	hints := 0
	conn.SubscribeToAll(func(e sse.Event) {
		mu.Lock()
		if e.Type == "" && e.Data == "" {
			// go-sse dispatches the block holding only the "retry:" hint
			// that starts every stream as an empty event (a browser's
			// EventSource does not). Every event published here has data.
			hints++
		} else {
			got = append(got, sseEvent{ID: e.LastEventID, Type: e.Type, Data: e.Data})
		}
		mu.Unlock()
		select {
		case arrived <- struct{}{}:
		default:
		}
	})
	connected := make(chan error, 1)
	go func() { connected <- conn.Connect() }()
	// Connect returns only when it gives up; any return before the test
	// cancels it is a failure.
	checkConnecting := func() {
		t.Helper()
		select {
		case err := <-connected:
			t.Fatalf("go-sse gave up: %v", err)
		default:
		}
	}

	waitReceived(len(published) - start - 1) // replay
	pub(3)                                   // live
	waitReceived(len(published) - start - 1)

	srv.stop(t)
	lastBeforeRestart := published[len(published)-1].ID
	// A new connection: an idle one the server closed would fail with EOF
	// whether or not anything listens.
	fresh := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	if resp, err := fresh.Post(url, "application/json", strings.NewReader(`{"data":1}`)); !errors.Is(err, syscall.ECONNREFUSED) {
		if err == nil {
			resp.Body.Close()
		}
		t.Fatalf("publish while the server is down: %v %v, want connection refused", resp, err)
	}
	// The client keeps trying against the stopped server...
	failures := func() int { gate.mu.Lock(); defer gate.mu.Unlock(); return gate.failures }()
	gate.waitUntil(t, "two refused reconnections", func() bool { return gate.failures >= failures+2 })
	checkConnecting()
	// ...and is then held back until events have been published to the
	// restarted server, so that it must get them by replay.
	gate.hold()
	gate.waitUntil(t, "no attempt in flight", func() bool { return gate.inflight == 0 })
	gate.mu.Lock()
	attempts := len(gate.lastIDs)
	gate.mu.Unlock()

	srv = startServer(t, args...)
	pub(3)
	if published[len(published)-3].ID <= lastBeforeRestart {
		t.Errorf("id after restart %s is not greater than %s", published[len(published)-3].ID, lastBeforeRestart)
	}
	gate.open()
	waitReceived(len(published) - start - 1)
	gate.mu.Lock()
	resumedWith := gate.lastIDs[attempts]
	gate.mu.Unlock()
	if resumedWith != lastBeforeRestart {
		t.Errorf("client reconnected with Last-Event-ID %q, want %q", resumedWith, lastBeforeRestart)
	}
	pub(3) // live again
	waitReceived(len(published) - start - 1)
	checkConnecting()

	mu.Lock()
	// One per connection, and the jittered one the stopping server sent.
	if hints != 3 {
		t.Errorf("client saw %d retry hints, want one per connection and one at shutdown: 3", hints)
	}
	mu.Unlock()
	want := published[start+1:]
	if d := diffEvents(received(), want); d != "" {
		t.Errorf("client sequence: %s", d)
	}
	cancel()
	select {
	case err := <-connected:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Connect returned %v after cancel, want context.Canceled", err)
		}
	case <-time.After(eventTimeout):
		t.Fatal("Connect still running after cancel")
	}
	srv.stop(t)

	// What the client saw is exactly what the log holds after its start.
	stored := storedEvents(t, testkit.OpenAt(t, db, store.Options{}), "feed")
	if d := diffEvents(received(), stored[start+1:]); d != "" {
		t.Errorf("client sequence against the database: %s", d)
	}
}
