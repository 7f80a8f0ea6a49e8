package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sselog/sselog/internal/testkit"
	"github.com/sselog/sselog/store"
)

// Deadlines generous enough for -race on a loaded two-core machine; a
// healthy run takes a small fraction of each.
const (
	startTimeout = 15 * time.Second
	stopTimeout  = 10 * time.Second // the guarantee: shutdown is bounded by shutdownTimeout
	eventTimeout = 10 * time.Second
)

// TestMain clears SSELOG_* variables so that the environment of whoever
// runs the tests cannot change what run does; tests that need them set
// their own with t.Setenv.
func TestMain(m *testing.M) {
	// A child process (TestHelperServe) runs with the environment its
	// test chose: the parent's was cleared before it started the child.
	if _, child := os.LookupEnv(childArgsEnv); child {
		os.Exit(m.Run())
	}
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "SSELOG_") {
			os.Unsetenv(k)
		}
	}
	os.Exit(m.Run())
}

// syncBuffer is a writer the server's goroutines and the test can share.
// changed is signalled after every write, so waiters block instead of
// polling.
type syncBuffer struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	changed chan struct{}
}

func newSyncBuffer() *syncBuffer { return &syncBuffer{changed: make(chan struct{}, 1)} }

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	n, err := b.buf.Write(p)
	b.mu.Unlock()
	select {
	case b.changed <- struct{}{}:
	default:
	}
	return n, err
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

var servingLine = regexp.MustCompile(`(?m)^sselog serving on (https?://\S+)\n`)

// waitServing waits for the "serving" line in out and returns its URL. It
// fails the test if exited is closed first (the program stopped before
// serving; why says how) or the deadline passes.
func waitServing(t testing.TB, out, logs *syncBuffer, exited <-chan struct{}, why func() error) string {
	t.Helper()
	deadline := time.NewTimer(startTimeout)
	defer deadline.Stop()
	for {
		if m := servingLine.FindStringSubmatch(out.String()); m != nil {
			return m[1]
		}
		select {
		case <-out.changed:
		case <-exited:
			t.Fatalf("exited before serving: %v\nstdout:\n%s\nstderr:\n%s", why(), out, logs)
		case <-deadline.C:
			t.Fatalf("not serving after %v\nstdout:\n%s\nstderr:\n%s", startTimeout, out, logs)
		}
	}
}

// server is one run of "sselog serve" inside the test process.
type server struct {
	URL     string
	cancel  context.CancelFunc
	done    chan struct{} // closed when run has returned
	err     error         // run's result, once done is closed
	stdout  *syncBuffer
	stderr  *syncBuffer
	stopped bool // stop was called: cleanup need not wait again
}

// startServer calls run("serve", args...) and returns once it is serving.
// Unless the test stops it, cleanup does, and shows its log on failure.
func startServer(t *testing.T, args ...string) *server {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s := &server{cancel: cancel, done: make(chan struct{}), stdout: newSyncBuffer(), stderr: newSyncBuffer()}
	go func() {
		s.err = run(ctx, append([]string{"serve"}, args...), s.stdout, s.stderr)
		close(s.done)
	}()
	t.Cleanup(func() {
		cancel()
		if !s.stopped {
			select {
			case <-s.done:
			case <-time.After(stopTimeout):
				t.Errorf("server did not stop in cleanup")
			}
		}
		if t.Failed() {
			t.Logf("server log:\n%s", s.stderr)
		}
	})
	s.URL = waitServing(t, s.stdout, s.stderr, s.done, func() error { return s.err })
	return s
}

// stop cancels run's context and requires run to return nil within
// stopTimeout.
func (s *server) stop(t *testing.T) {
	t.Helper()
	start := time.Now()
	s.stopped = true
	s.cancel()
	select {
	case <-s.done:
		if s.err != nil {
			t.Fatalf("run returned %v after cancel, want nil", s.err)
		}
		t.Logf("server stopped in %v", time.Since(start).Round(time.Millisecond))
	case <-time.After(stopTimeout):
		t.Fatalf("run did not return within %v of cancel\nlog:\n%s", stopTimeout, s.stderr)
	}
}

func (s *server) eventsURL(stream string) string { return s.URL + "/v1/streams/" + stream + "/events" }

// httpClient is for requests that end; SSE requests use their own.
var httpClient = &http.Client{Timeout: 10 * time.Second}

// post publishes body to stream and returns the status and decoded answer.
func post(url, body string) (int, map[string]json.RawMessage, error) {
	resp, err := httpClient.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	var out map[string]json.RawMessage
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return resp.StatusCode, nil, fmt.Errorf("decode answer: %w", err)
	}
	return resp.StatusCode, out, nil
}

// publishOne publishes one event and returns its id.
func publishOne(t *testing.T, url, typ, data string) string {
	t.Helper()
	body := fmt.Sprintf(`{"type":%q,"data":%s}`, typ, data)
	status, out, err := post(url, body)
	if err != nil || status != http.StatusCreated {
		t.Fatalf("publish %s: status %d, %v, %v", body, status, out, err)
	}
	var id string
	if err := json.Unmarshal(out["id"], &id); err != nil {
		t.Fatalf("publish answer %v: %v", out, err)
	}
	return id
}

// publishBatch publishes untyped events with the given JSON data in one
// request and returns their ids.
func publishBatch(t *testing.T, url string, data ...string) []string {
	t.Helper()
	parts := make([]string, len(data))
	for i, d := range data {
		parts[i] = `{"data":` + d + `}`
	}
	body := "[" + strings.Join(parts, ",") + "]"
	status, out, err := post(url, body)
	if err != nil || status != http.StatusCreated {
		t.Fatalf("publish %s: status %d, %v, %v", body, status, out, err)
	}
	var ids []string
	if err := json.Unmarshal(out["ids"], &ids); err != nil || len(ids) != len(data) {
		t.Fatalf("publish answer %v: %v", out, err)
	}
	return ids
}

// sseEvent is one dispatched SSE event with its type as the server wrote
// it: empty for the default "message", as the store keeps it.
type sseEvent struct{ ID, Type, Data string }

// sseStream reads one SSE response in its own goroutine, keeping every
// event, so the server is never held back by a test that is busy elsewhere.
type sseStream struct {
	mu      sync.Mutex
	events  []sseEvent
	beats   []int // for each heartbeat, how many events had come before it
	retry   string
	err     error // why the stream ended: io.EOF (testkit.ErrEnded) for a clean end
	changed chan struct{}
	done    chan struct{}
	close   context.CancelFunc // drops the connection
}

// subscribe opens an SSE stream. lastID is sent as Last-Event-ID unless
// empty. The request ends with the test.
func subscribe(t *testing.T, url, lastID string) *sseStream {
	t.Helper()
	s, _ := subscribeWith(t, http.DefaultClient, url, lastID)
	return s
}

// subscribeWith is subscribe through a given client; it returns the
// response too, for what its head says.
func subscribeWith(t *testing.T, client *http.Client, url, lastID string) (*sseStream, *http.Response) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	// No client timeout: the stream is meant to stay open.
	r, err := testkit.DialSSE(ctx, client, url, lastID)
	if err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	s := &sseStream{changed: make(chan struct{}, 1), done: make(chan struct{}), close: cancel}
	go s.read(r)
	return s, r.Response()
}

// read keeps what each block of the stream says until the stream ends.
func (s *sseStream) read(r *testkit.SSEReader) {
	defer r.Close()
	for {
		b, err := r.Next()
		if err == nil && b.HasData && !b.HasID {
			err = fmt.Errorf("event without id: %+v", b)
		}
		s.mu.Lock()
		if err != nil {
			s.err = err
			s.mu.Unlock()
			close(s.done)
			return
		}
		for range b.Comments {
			// A comment: the heartbeat.
			s.beats = append(s.beats, len(s.events))
		}
		if b.Retry != "" {
			s.retry = b.Retry
		}
		if b.HasData {
			s.events = append(s.events, sseEvent{ID: b.ID, Type: b.Type, Data: b.Data})
		}
		s.mu.Unlock()
		s.signal()
	}
}

func (s *sseStream) signal() {
	select {
	case s.changed <- struct{}{}:
	default:
	}
}

// quiet waits for the first heartbeat that follows at least n events, and
// returns the events that had come by then: the server sends a heartbeat
// only when it has nothing else to send, so these are all there is.
func (s *sseStream) quiet(t *testing.T, n int) []sseEvent {
	t.Helper()
	deadline := time.NewTimer(eventTimeout)
	defer deadline.Stop()
	for {
		s.mu.Lock()
		for _, b := range s.beats {
			if b >= n {
				got := append([]sseEvent(nil), s.events[:b]...)
				s.mu.Unlock()
				return got
			}
		}
		s.mu.Unlock()
		select {
		case <-s.changed:
		case <-s.done:
			t.Fatalf("stream ended (%v) waiting for %d events and a heartbeat", s.err, n)
		case <-deadline.C:
			s.mu.Lock()
			defer s.mu.Unlock()
			t.Fatalf("no heartbeat after %d events within %v (%d events, beats after %v)", n, eventTimeout, len(s.events), s.beats)
		}
	}
}

func (s *sseStream) snapshot() []sseEvent {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]sseEvent(nil), s.events...)
}

// waitFor waits until at least n events have arrived and returns them all.
func (s *sseStream) waitFor(t *testing.T, n int) []sseEvent {
	t.Helper()
	deadline := time.NewTimer(eventTimeout)
	defer deadline.Stop()
	for {
		if got := s.snapshot(); len(got) >= n {
			return got
		}
		select {
		case <-s.changed:
		case <-s.done:
			if got := s.snapshot(); len(got) >= n {
				return got
			}
			t.Fatalf("stream ended (%v) after %d events, want %d", s.err, len(s.snapshot()), n)
		case <-deadline.C:
			t.Fatalf("%d events after %v, want %d: %v", len(s.snapshot()), eventTimeout, n, s.snapshot())
		}
	}
}

// waitEnd waits for the stream to end and returns its events and why it
// ended.
func (s *sseStream) waitEnd(t *testing.T) ([]sseEvent, error) {
	t.Helper()
	select {
	case <-s.done:
		return s.snapshot(), s.err
	case <-time.After(eventTimeout):
		t.Fatalf("stream still open %v after the server stopped", eventTimeout)
		return nil, nil
	}
}

// expectRefusedServe runs serve with args and checks that it fails with an
// error containing wantErr before it touches the database.
func expectRefusedServe(t *testing.T, args []string, wantErr string) {
	t.Helper()
	db := filepath.Join(t.TempDir(), "never", "x.db")
	_, _, err := runQuick(t, append([]string{"serve", "--addr", "127.0.0.1:0", "--db", db}, args...)...)
	if err == nil || !strings.Contains(err.Error(), wantErr) {
		t.Fatalf("err = %v, want one containing %q", err, wantErr)
	}
	if _, err := os.Stat(filepath.Dir(db)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a refused configuration created %s: %v", filepath.Dir(db), err)
	}
}

// storedEvents reads a whole stream as the SSE events a subscriber sees.
func storedEvents(tb testing.TB, l *store.Log, stream string) []sseEvent {
	tb.Helper()
	events, err := l.ReadAfter(stream, store.ID{}, 0)
	if err != nil {
		tb.Fatalf("read %s: %v", stream, err)
	}
	out := make([]sseEvent, len(events))
	for i, e := range events {
		out[i] = sseEvent{ID: e.ID.String(), Type: e.Type, Data: string(e.Data)}
	}
	return out
}

// diffEvents describes the first difference between two event sequences,
// or returns "" when they are equal.
func diffEvents(got, want []sseEvent) string {
	for i := range min(len(got), len(want)) {
		if got[i] != want[i] {
			return fmt.Sprintf("event %d: got %+v, want %+v", i, got[i], want[i])
		}
	}
	if len(got) != len(want) {
		return fmt.Sprintf("got %d events, want %d", len(got), len(want))
	}
	return ""
}
