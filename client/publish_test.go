package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sselog/sselog/client"
)

// TestPublish: the ids come back in the batch's order, and the log holds
// the events as given: types, untyped events, data byte for byte (no HTML
// escaping of "<", ">" and "&").
func TestPublish(t *testing.T) {
	t.Parallel()
	srv := newServer(t)
	c := newClient(t, srv.URL)
	ids, err := c.Publish(t.Context(), "orders",
		client.Event{Type: "order.created", Data: json.RawMessage(`{"id":1,"note":"<b>&</b>"}`)},
		client.Event{Data: json.RawMessage(`"plain"`)},
		client.Event{Type: "nothing"}, // nil data is null
	)
	if err != nil {
		t.Fatal(err)
	}
	stored := srv.stored(t, "orders")
	if len(ids) != 3 || len(stored) != 3 {
		t.Fatalf("ids %v, stored %d events; want 3 of each", ids, len(stored))
	}
	want := []struct{ typ, data string }{{"order.created", `{"id":1,"note":"<b>&</b>"}`}, {"", `"plain"`}, {"nothing", `null`}}
	for i, e := range stored {
		if e.ID.String() != ids[i] || e.Type != want[i].typ || string(e.Data) != want[i].data {
			t.Errorf("event %d: stored %s %q %s; want %s %q %s", i, e.ID, e.Type, e.Data, ids[i], want[i].typ, want[i].data)
		}
	}
}

// TestPublishChecksBeforeSending: what the client can tell is wrong is
// ErrInvalid, and no request is made.
func TestPublishChecksBeforeSending(t *testing.T) {
	t.Parallel()
	srv := newServer(t)
	rec, url := newRecorder(t, srv.URL, nil)
	c := newClient(t, url)
	for _, tc := range []struct {
		name string
		call func() error
	}{
		{"no events", func() error { _, err := c.Publish(t.Context(), "s"); return err }},
		{"data not JSON", func() error {
			_, err := c.Publish(t.Context(), "s", client.Event{Data: json.RawMessage(`{"a":`)})
			return err
		}},
		{"empty key", func() error { _, err := c.PublishWithKey(t.Context(), "s", "", client.Event{}); return err }},
		{"key with a space", func() error { _, err := c.PublishWithKey(t.Context(), "s", "a b", client.Event{}); return err }},
		{"key too long", func() error {
			_, err := c.PublishWithKey(t.Context(), "s", strings.Repeat("k", 256), client.Event{})
			return err
		}},
	} {
		if err := tc.call(); !errors.Is(err, client.ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", tc.name, err)
		}
	}
	if n := len(rec.seen()); n != 0 {
		t.Errorf("%d requests were sent, want none", n)
	}
}

// TestPublishRetriesUnavailable: 503 with Retry-After, then 429 with
// Retry-After, then the server: one event stored, every attempt with the
// same key and body, and each pause at least what the server asked.
func TestPublishRetriesUnavailable(t *testing.T) {
	t.Parallel()
	srv := newServer(t)
	rec, url := newRecorder(t, srv.URL, func(n int, w http.ResponseWriter, r *http.Request, _ []byte) bool {
		switch n {
		case 0:
			status(http.StatusServiceUnavailable, "1")(w, r)
		case 1:
			status(http.StatusTooManyRequests, "1")(w, r)
		default:
			return false
		}
		return true
	})
	c := newClient(t, url)
	ids, err := c.Publish(t.Context(), "s", client.Event{Type: "t", Data: json.RawMessage(`1`)})
	if err != nil {
		t.Fatal(err)
	}
	seen := rec.seen()
	if len(seen) != 3 {
		t.Fatalf("%d attempts, want 3", len(seen))
	}
	key := seen[0].header.Get("Idempotency-Key")
	if len(key) < 26 {
		t.Errorf("Idempotency-Key %q: want at least 128 random bits", key)
	}
	for i, r := range seen {
		if r.header.Get("Idempotency-Key") != key || r.body != seen[0].body {
			t.Errorf("attempt %d: key %q body %s; want the first attempt's, %q %s", i, r.header.Get("Idempotency-Key"), r.body, key, seen[0].body)
		}
		if i > 0 {
			if gap := r.at.Sub(seen[i-1].at); gap < time.Second {
				t.Errorf("attempt %d came %v after the one answered Retry-After: 1", i, gap)
			}
		}
	}
	if stored := srv.stored(t, "s"); len(stored) != 1 || stored[0].ID.String() != ids[0] {
		t.Errorf("stored %v, want the one event %v", stored, ids)
	}
}

// TestPublishAnswerLost: the server stores the batch, and the connection
// is closed before its answer. The retry, with the same key, gets the
// first request's ids, and the log holds one copy. Without the server's
// idempotency keys this test sees two.
func TestPublishAnswerLost(t *testing.T) {
	t.Parallel()
	srv := newServer(t)
	rec, url := newRecorder(t, srv.URL, func(n int, w http.ResponseWriter, r *http.Request, body []byte) bool {
		if n < 2 {
			forwardThenDrop(t, srv.URL, w, r, body)
			return true
		}
		return false
	})
	c := newClient(t, url)
	ids, err := c.Publish(t.Context(), "s",
		client.Event{Type: "a", Data: json.RawMessage(`1`)},
		client.Event{Type: "b", Data: json.RawMessage(`2`)})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(rec.seen()); n != 3 {
		t.Errorf("%d attempts, want 3 (two answers lost)", n)
	}
	stored := srv.stored(t, "s")
	if len(stored) != 2 || stored[0].ID.String() != ids[0] || stored[1].ID.String() != ids[1] {
		t.Fatalf("the log holds %d events %v; want exactly the batch, with the ids returned %v", len(stored), stored, ids)
	}
}

// TestPublishRefusedAtOnce: answers retrying cannot change come back
// after one attempt, as an *Error whose kind errors.Is tells.
func TestPublishRefusedAtOnce(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		status int
		kind   error
	}{
		{http.StatusBadRequest, client.ErrInvalid},
		{http.StatusUnauthorized, client.ErrUnauthorized},
		{http.StatusForbidden, client.ErrForbidden},
		{http.StatusNotFound, client.ErrNotFound},
		{http.StatusRequestEntityTooLarge, client.ErrTooLarge},
		{http.StatusUnprocessableEntity, client.ErrKeyReused},
		{http.StatusUnsupportedMediaType, nil},
		{http.StatusNotImplemented, nil},
	} {
		t.Run(http.StatusText(tc.status), func(t *testing.T) {
			t.Parallel()
			rec, url := newRecorder(t, "http://127.0.0.1:1", func(_ int, w http.ResponseWriter, r *http.Request, _ []byte) bool {
				status(tc.status, "")(w, r)
				return true
			})
			c := newClient(t, url)
			_, err := c.Publish(t.Context(), "s", client.Event{Data: json.RawMessage(`1`)})
			e, ok := errorsAs[*client.Error](err)
			if !ok || e.Status != tc.status || e.Message != "scripted "+strconv.Itoa(tc.status) {
				t.Fatalf("err = %v, want an *Error with status %d and the server's message", err, tc.status)
			}
			if tc.kind != nil && !errors.Is(err, tc.kind) {
				t.Errorf("err = %v, want errors.Is %v", err, tc.kind)
			}
			for _, other := range []error{client.ErrInvalid, client.ErrUnauthorized, client.ErrForbidden, client.ErrNotFound, client.ErrTooLarge, client.ErrKeyReused, client.ErrUnavailable} {
				if other != tc.kind && errors.Is(err, other) {
					t.Errorf("err = %v is also %v", err, other)
				}
			}
			if n := len(rec.seen()); n != 1 {
				t.Errorf("%d attempts, want 1", n)
			}
		})
	}
}

// TestPublishRealRefusal: the real server's 400, for the reserved type
// "reset", is ErrInvalid with the server's explanation, after one attempt.
func TestPublishRealRefusal(t *testing.T) {
	t.Parallel()
	srv := newServer(t)
	rec, url := newRecorder(t, srv.URL, nil)
	c := newClient(t, url)
	_, err := c.Publish(t.Context(), "s", client.Event{Type: "ok", Data: json.RawMessage(`1`)}, client.Event{Type: "reset", Data: json.RawMessage(`2`)})
	if !errors.Is(err, client.ErrInvalid) || !strings.Contains(err.Error(), "reset") {
		t.Fatalf("err = %v, want ErrInvalid naming the reserved type", err)
	}
	if n := len(rec.seen()); n != 1 {
		t.Errorf("%d attempts, want 1", n)
	}
	if stored := srv.stored(t, "s"); len(stored) != 0 {
		t.Errorf("a refused batch stored %d events", len(stored))
	}
}

// TestPublishUntilContextEnds: a server that is always unavailable keeps
// Publish retrying until ctx ends; the error is ctx's and the last
// attempt's, both.
func TestPublishUntilContextEnds(t *testing.T) {
	t.Parallel()
	rec, url := newRecorder(t, "http://127.0.0.1:1", func(_ int, w http.ResponseWriter, r *http.Request, _ []byte) bool {
		status(http.StatusServiceUnavailable, "")(w, r)
		return true
	})
	c := newClient(t, url)
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.Publish(ctx, "s", client.Event{Data: json.RawMessage(`1`)})
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, client.ErrUnavailable) {
		t.Fatalf("err = %v, want DeadlineExceeded and ErrUnavailable", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("Publish returned %v after its deadline of 300ms", took)
	}
	if n := len(rec.seen()); n < 3 {
		t.Errorf("%d attempts in 300ms with millisecond pauses, want several", n)
	}
}

// TestPublishConnectionRefused: a server that is not there yet is retried
// like one that answers 503, until it is.
func TestPublishConnectionRefused(t *testing.T) {
	t.Parallel()
	c := newClient(t, "http://127.0.0.1:1")
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	_, err := c.Publish(ctx, "s", client.Event{Data: json.RawMessage(`1`)})
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("err = %v, want the deadline, after connections refused", err)
	}
}

// TestPublishWithKey: the same key again stores nothing and answers the
// first ids; the same key with other events is ErrKeyReused.
func TestPublishWithKey(t *testing.T) {
	t.Parallel()
	srv := newServer(t)
	c := newClient(t, srv.URL)
	ev := client.Event{Type: "t", Data: json.RawMessage(`{"order":7}`)}
	first, err := c.PublishWithKey(t.Context(), "s", "order-7", ev)
	if err != nil {
		t.Fatal(err)
	}
	again, err := c.PublishWithKey(t.Context(), "s", "order-7", ev)
	if err != nil || again[0] != first[0] {
		t.Fatalf("repeat: %v, %v; want the first ids %v", again, err, first)
	}
	_, err = c.PublishWithKey(t.Context(), "s", "order-7", client.Event{Type: "t", Data: json.RawMessage(`{"order":8}`)})
	if !errors.Is(err, client.ErrKeyReused) {
		t.Errorf("same key, other events: %v, want ErrKeyReused", err)
	}
	if stored := srv.stored(t, "s"); len(stored) != 1 {
		t.Errorf("the log holds %d events, want 1", len(stored))
	}
}
