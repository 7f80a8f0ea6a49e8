package httpapi_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"path/filepath"
	"reflect"
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

// publishKeyed posts body with an Idempotency-Key and returns the status,
// whether the answer says it was replayed, and the ids of a 201.
func (s *testServer) publishKeyed(t *testing.T, stream, key, body string) (int, bool, []store.ID) {
	t.Helper()
	status, replayed, ids, b, err := s.tryPublishKeyed(stream, key, body)
	if err != nil {
		t.Fatal(err)
	}
	if status != http.StatusCreated {
		assertJSONError(t, "application/json", b)
	}
	return status, replayed, ids
}

func (s *testServer) tryPublishKeyed(stream, key, body string) (status int, replayed bool, ids []store.ID, answer []byte, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), testkit.Wait)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.URL+"/v1/streams/"+stream+"/events", strings.NewReader(body))
	if err != nil {
		return 0, false, nil, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", key)
	resp, err := s.client.Do(req)
	if err != nil {
		return 0, false, nil, nil, err
	}
	defer resp.Body.Close()
	if answer, err = io.ReadAll(resp.Body); err != nil {
		return 0, false, nil, nil, err
	}
	replayed = resp.Header.Get("Idempotent-Replayed") == "true"
	if resp.StatusCode == http.StatusCreated {
		var out struct {
			ID  *store.ID  `json:"id"`
			IDs []store.ID `json:"ids"`
		}
		if err := decodeStrict(answer, &out); err != nil {
			return 0, false, nil, nil, err
		}
		if out.ID != nil {
			ids = []store.ID{*out.ID}
		} else {
			ids = out.IDs
		}
	}
	return resp.StatusCode, replayed, ids, answer, nil
}

func TestIdempotentPublish(t *testing.T) {
	s := newServer(t, httpapi.Options{}, stream.Options{})
	status, replayed, first := s.publishKeyed(t, "s", "order-1", `[{"type":"a","data":{"x":1,"y":[1,2]}},{"data":2}]`)
	if status != http.StatusCreated || replayed || len(first) != 2 {
		t.Fatalf("first: %d replayed=%v ids=%v", status, replayed, first)
	}
	// Other whitespace, the same decoded events: the original answer.
	status, replayed, again := s.publishKeyed(t, "s", "order-1", "[ {\"type\": \"a\", \"data\": { \"x\" : 1, \"y\" : [1, 2] } },\n {\"data\": 2} ]")
	if status != http.StatusCreated || !replayed || !slices.Equal(again, first) {
		t.Fatalf("repeat: %d replayed=%v ids=%v, want 201 replayed %v", status, replayed, again, first)
	}
	snap := takeSnapshot(t, s)
	for _, body := range []string{
		`[{"type":"a","data":{"x":1,"y":[1,2]}},{"data":3}]`, // another value
		`[{"type":"b","data":{"x":1,"y":[1,2]}},{"data":2}]`, // another type
		`[{"type":"a","data":{"x":1,"y":[1,2]}}]`,            // fewer events
		`[{"data":2},{"type":"a","data":{"x":1,"y":[1,2]}}]`, // another order
		`{"type":"a","data":{"x":1,"y":[1,2]}}`,              // not a batch
	} {
		if status, _, _ := s.publishKeyed(t, "s", "order-1", body); status != http.StatusUnprocessableEntity {
			t.Errorf("same key, body %s: status %d, want 422", body, status)
		}
	}
	if got := takeSnapshot(t, s); !reflect.DeepEqual(got, snap) {
		t.Fatalf("a refused repeat changed the log: %+v, was %+v", got, snap)
	}
	// One event answers in the one-event shape, replayed too.
	_, _, one := s.publishKeyed(t, "s", "order-2", `{"data":"x"}`)
	status, ctype, b, err := s.do(http.MethodPost, "/v1/streams/s/events", "application/json", `{"data":"x"}`, http.Header{"Idempotency-Key": {"order-2"}})
	if err != nil || status != http.StatusCreated || ctype != "application/json" || string(b) != `{"id":"`+one[0].String()+"\"}\n" {
		t.Fatalf("one-event repeat: %d %q %q %v", status, ctype, b, err)
	}
	// The key is per stream; and no key at all publishes as before.
	if _, replayed, ids := s.publishKeyed(t, "other", "order-1", `{"data":1}`); replayed || len(ids) != 1 {
		t.Fatalf("same key in another stream: replayed=%v ids=%v", replayed, ids)
	}
	s.mustPublish(t, "s", `{"data":"x"}`)
	s.mustPublish(t, "s", `{"data":"x"}`)
	if n := len(s.readAll(t, "s")); n != 5 {
		t.Fatalf("stream holds %d events, want 5 (2 + 1 keyed, 2 without keys)", n)
	}
	var info struct {
		Idempotency struct {
			Window string `json:"window"`
		} `json:"idempotency"`
	}
	status, _, b, err = s.do(http.MethodGet, "/v1/streams/s", "", "", nil)
	if err != nil || status != http.StatusOK {
		t.Fatal(status, err)
	}
	if err := decodeLoose(b, &info); err != nil || info.Idempotency.Window != "24h0m0s" {
		t.Fatalf("GET /v1/streams/s: %s (%v)", b, err)
	}
}

func TestIdempotencyKeyInvalid(t *testing.T) {
	s := newServer(t, httpapi.Options{}, stream.Options{})
	s.mustPublish(t, "s", `{"data":0}`)
	snap := takeSnapshot(t, s)
	for name, header := range map[string]http.Header{
		"empty":      {"Idempotency-Key": {""}},
		"too long":   {"Idempotency-Key": {strings.Repeat("k", 256)}},
		"space":      {"Idempotency-Key": {"a b"}},
		"non-ascii":  {"Idempotency-Key": {"clé"}},
		"two values": {"Idempotency-Key": {"a", "b"}},
		"tab inside": {"Idempotency-Key": {"a\tb"}},
	} {
		status, ctype, b, err := s.do(http.MethodPost, "/v1/streams/s/events", "application/json", `{"data":1}`, header)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if status != http.StatusBadRequest || !strings.Contains(string(b), "Idempotency-Key") {
			t.Errorf("%s: status %d %s, want 400 naming the header", name, status, b)
		}
		assertJSONError(t, ctype, b)
	}
	if got := takeSnapshot(t, s); !reflect.DeepEqual(got, snap) {
		t.Fatalf("a refused key changed the log: %+v, was %+v", got, snap)
	}
	// The widest key allowed: 255 characters, every visible one.
	var k []byte
	for i := range 255 {
		k = append(k, byte('!'+i%94))
	}
	if status, replayed, _ := s.publishKeyed(t, "s", string(k), `{"data":1}`); status != http.StatusCreated || replayed {
		t.Fatalf("255-character key: %d replayed=%v", status, replayed)
	}
	if status, replayed, _ := s.publishKeyed(t, "s", string(k), `{"data":1}`); status != http.StatusCreated || !replayed {
		t.Fatalf("255-character key repeated: %d replayed=%v", status, replayed)
	}
}

// TestIdempotentConcurrent sends one request many times at once, as a
// client whose retries overlap its first try does: one copy is stored and
// every answer names it.
func TestIdempotentConcurrent(t *testing.T) {
	s := newServer(t, httpapi.Options{}, stream.Options{})
	const n = 64
	type result struct {
		status   int
		replayed bool
		ids      []store.ID
		err      error
	}
	results := make([]result, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			r := &results[i]
			r.status, r.replayed, r.ids, _, r.err = s.tryPublishKeyed("s", "same", `[{"data":1},{"data":2},{"data":3}]`)
		})
	}
	close(start)
	wg.Wait()
	stored := 0
	for i, r := range results {
		if r.err != nil || r.status != http.StatusCreated || !slices.Equal(r.ids, results[0].ids) {
			t.Fatalf("request %d: %d %v %v (request 0 got %v)", i, r.status, r.ids, r.err, results[0].ids)
		}
		if !r.replayed {
			stored++
		}
	}
	if stored != 1 {
		t.Fatalf("%d answers without Idempotent-Replayed, want 1", stored)
	}
	if got := s.readAll(t, "s"); len(got) != 3 || !slices.Equal(eventIDs(got), results[0].ids) {
		t.Fatalf("stream holds %d events, want the 3 of one request", len(got))
	}
}

func eventIDs(evs []store.Event) []store.ID {
	ids := make([]store.ID, len(evs))
	for i := range evs {
		ids[i] = evs[i].ID
	}
	return ids
}

func TestIdempotencyAcrossRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log.db")
	l := testkit.OpenAt(t, path, store.Options{})
	s, _ := startServer(t, l, httpapi.Options{}, stream.Options{}, testkit.ServeOptions{})
	_, _, first := s.publishKeyed(t, "s", "k", `{"data":1}`)
	s.Close()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l = testkit.OpenAt(t, path, store.Options{})
	s, _ = startServer(t, l, httpapi.Options{}, stream.Options{}, testkit.ServeOptions{})
	status, replayed, again := s.publishKeyed(t, "s", "k", `{"data":1}`)
	if status != http.StatusCreated || !replayed || !slices.Equal(again, first) {
		t.Fatalf("after restart: %d replayed=%v %v, want %v", status, replayed, again, first)
	}
	if status, _, _ := s.publishKeyed(t, "s", "k", `{"data":2}`); status != http.StatusUnprocessableEntity {
		t.Fatalf("another body after restart: %d, want 422", status)
	}
}

// TestIdempotencyWindowHTTP steps the log's clock past the window: the
// key then publishes anew.
func TestIdempotencyWindowHTTP(t *testing.T) {
	clock := &stepClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	l := testkit.OpenAt(t, filepath.Join(t.TempDir(), "log.db"), store.Options{Now: clock.Now, IdempotencyWindow: 10 * time.Minute})
	s, _ := startServer(t, l, httpapi.Options{}, stream.Options{}, testkit.ServeOptions{})
	_, _, first := s.publishKeyed(t, "s", "k", `{"data":1}`)
	clock.Add(10*time.Minute - time.Millisecond)
	if _, replayed, ids := s.publishKeyed(t, "s", "k", `{"data":1}`); !replayed || !slices.Equal(ids, first) {
		t.Fatalf("inside the window: replayed=%v %v", replayed, ids)
	}
	clock.Add(time.Millisecond)
	_, replayed, ids := s.publishKeyed(t, "s", "k", `{"data":1}`)
	if replayed || slices.Equal(ids, first) {
		t.Fatalf("past the window: replayed=%v %v (first %v)", replayed, ids, first)
	}
	var info struct {
		Idempotency struct {
			Window string `json:"window"`
		} `json:"idempotency"`
	}
	_, _, b, _ := s.do(http.MethodGet, "/v1/streams/s", "", "", nil)
	if err := decodeLoose(b, &info); err != nil || info.Idempotency.Window != "10m0s" {
		t.Fatalf("GET /v1/streams/s: %s", b)
	}
}

type stepClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *stepClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *stepClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// decodeLoose decodes the fields v names and ignores the rest.
func decodeLoose(b []byte, v any) error { return json.Unmarshal(b, v) }
