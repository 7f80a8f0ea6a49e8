package httpapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sselog/sselog/httpapi"
	"github.com/sselog/sselog/store"
	"github.com/sselog/sselog/stream"
)

// waitFor bounds every wait in these tests; it is generous because the race
// detector on a small machine is slow, and a passing test never waits it out.
const waitFor = 20 * time.Second

type testServer struct {
	*httptest.Server
	log    *store.Log
	hub    *stream.Hub
	client *http.Client
}

func mustOpen(tb testing.TB, path string) *store.Log {
	tb.Helper()
	l, err := store.Open(path, store.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := l.Close(); err != nil {
			tb.Error(err)
		}
	})
	return l
}

// newServer serves the API over a fresh log on a real listener, and tears
// it down as cmd/sselog does: Shutdown, with the handler's Close
// registered to end the SSE streams, then Drain, then the hub and the log.
func newServer(tb testing.TB, opts httpapi.Options, hubOpts stream.Options) *testServer {
	tb.Helper()
	l := mustOpen(tb, filepath.Join(tb.TempDir(), "events.db"))
	hub := stream.NewHub(l, hubOpts)
	h := httpapi.NewHandler(l, hub, opts)
	srv := httptest.NewUnstartedServer(h)
	srv.Config.RegisterOnShutdown(h.Close)
	srv.Start()
	tr := &http.Transport{MaxIdleConnsPerHost: 64}
	client := &http.Client{
		Transport: tr,
		// Redirects are part of what is tested, so none is followed.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		defer cancel()
		tr.CloseIdleConnections()
		if err := srv.Config.Shutdown(ctx); err != nil {
			tb.Errorf("shutdown: %v", err)
		}
		if err := h.Drain(ctx); err != nil {
			tb.Errorf("drain: %v", err)
		}
		hub.Close()
		srv.Close()
	})
	return &testServer{Server: srv, log: l, hub: hub, client: client}
}

// do sends one request and returns the status, the Content-Type and the
// body. Its errors are returned so that publishers in goroutines can use it.
func (s *testServer) do(method, path, contentType, body string, header http.Header) (int, string, []byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, s.URL+path, strings.NewReader(body))
	if err != nil {
		return 0, "", nil, err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return 0, "", nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("Content-Type"), b, err
}

// publish posts body to stream and decodes a 201 answer into ids.
func (s *testServer) publish(stream, body string) ([]store.ID, error) {
	status, _, b, err := s.do(http.MethodPost, "/v1/streams/"+stream+"/events", "application/json", body, nil)
	if err != nil {
		return nil, err
	}
	if status != http.StatusCreated {
		return nil, fmt.Errorf("publish %s: status %d: %s", body, status, b)
	}
	var resp struct {
		ID  *store.ID  `json:"id"`
		IDs []store.ID `json:"ids"`
	}
	if err := decodeStrict(b, &resp); err != nil {
		return nil, fmt.Errorf("publish answer %s: %w", b, err)
	}
	if resp.ID != nil {
		return []store.ID{*resp.ID}, nil
	}
	return resp.IDs, nil
}

func (s *testServer) mustPublish(t *testing.T, stream, body string) []store.ID {
	t.Helper()
	ids, err := s.publish(stream, body)
	if err != nil {
		t.Fatal(err)
	}
	return ids
}

// getJSON GETs path, expects 200 and decodes the body into v.
func (s *testServer) getJSON(t *testing.T, path string, v any) {
	t.Helper()
	status, ct, b, err := s.do(http.MethodGet, path, "", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if status != http.StatusOK || ct != "application/json" {
		t.Fatalf("GET %s: status %d, Content-Type %q: %s", path, status, ct, b)
	}
	if err := decodeStrict(b, v); err != nil {
		t.Fatalf("GET %s: %v in %s", path, err, b)
	}
}

// dial opens an SSE stream on path with a deadline for the whole test.
func (s *testServer) dial(t *testing.T, path, lastEventID string) *sseClient {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	t.Cleanup(cancel)
	c, err := dialSSE(ctx, s.client, s.URL+path, lastEventID)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func decodeStrict(b []byte, v any) error {
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}

func (s *testServer) readAll(t *testing.T, stream string) []store.Event {
	t.Helper()
	events, err := s.log.ReadAfter(stream, store.ID{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	return events
}

// diffEvents compares what a client received with the log's events.
func diffEvents(got []sseEvent, want []store.Event) error {
	for i := 0; i < len(got) && i < len(want); i++ {
		w := sseEvent{ID: want[i].ID.String(), Type: want[i].Type, Data: string(want[i].Data)}
		if w.Type == "" {
			w.Type = "message"
		}
		if got[i] != w {
			return fmt.Errorf("event %d: got %+v, want %+v", i, got[i], w)
		}
	}
	if len(got) != len(want) {
		return fmt.Errorf("got %d events, want %d", len(got), len(want))
	}
	return nil
}

// readEvents reads n events from c.
func readEvents(t *testing.T, c *sseClient, n int) []sseEvent {
	t.Helper()
	var got []sseEvent
	for range n {
		e, err := c.nextEvent()
		if err != nil {
			t.Fatalf("after %d of %d events: %v", len(got), n, err)
		}
		got = append(got, e)
	}
	return got
}
