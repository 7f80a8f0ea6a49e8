package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/sselog/sselog/httpapi"
	"github.com/sselog/sselog/internal/testkit"
	"github.com/sselog/sselog/retention"
	"github.com/sselog/sselog/store"
	"github.com/sselog/sselog/stream"
)

type testServer struct {
	*httptest.Server
	// log is the bbolt backend's log; nil on another backend. api is the
	// backend whatever it is: tests that run on every backend use it.
	log    *store.Log
	api    testLog
	hub    *stream.Hub
	client *http.Client
}

// testLog is what a test server needs of a backend.
type testLog interface {
	httpapi.Log
	stream.Log
	retention.Log
}

// startServer serves the API over l on a real listener, with the
// handler's Close registered to run on Shutdown as cmd/sselog does. When
// the test ends the hub is closed (ending every SSE handler), then the
// server.
func startServer(tb testing.TB, l testLog, opts httpapi.Options, hubOpts stream.Options, serve testkit.ServeOptions) (*testServer, *httpapi.Handler) {
	tb.Helper()
	hub := stream.NewHub(l, hubOpts)
	h := httpapi.NewHandler(l, hub, opts)
	config := serve.Config
	serve.Config = func(c *http.Server) {
		c.RegisterOnShutdown(h.Close)
		if config != nil {
			config(c)
		}
	}
	srv := testkit.Serve(tb, h, serve)
	tb.Cleanup(hub.Close)
	client := testkit.Client(tb)
	if serve.HTTP2 {
		client = srv.Client()
	}
	bl, _ := l.(*store.Log)
	return &testServer{Server: srv, log: bl, api: l, hub: hub, client: client}, h
}

// newServer serves the API over a fresh log, and tears it down as
// cmd/sselog does: Shutdown, which runs the handler's Close to end the SSE
// streams, then Drain, then the hub and the log.
func newServer(tb testing.TB, opts httpapi.Options, hubOpts stream.Options) *testServer {
	tb.Helper()
	return newServerOn(tb, testkit.Open(tb), opts, hubOpts)
}

// newServerOn is newServer over the log l of any backend.
func newServerOn(tb testing.TB, l testLog, opts httpapi.Options, hubOpts stream.Options) *testServer {
	tb.Helper()
	s, h := startServer(tb, l, opts, hubOpts, testkit.ServeOptions{})
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), testkit.Wait)
		defer cancel()
		s.client.CloseIdleConnections()
		if err := s.Config.Shutdown(ctx); err != nil {
			tb.Errorf("shutdown: %v", err)
		}
		if err := h.Drain(ctx); err != nil {
			tb.Errorf("drain: %v", err)
		}
	})
	return s
}

// do sends one request and returns the status, the Content-Type and the
// body. Its errors are returned so that publishers in goroutines can use it.
func (s *testServer) do(method, path, contentType, body string, header http.Header) (int, string, []byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), testkit.Wait)
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
func (s *testServer) dial(t *testing.T, path, lastEventID string) *testkit.SSEReader {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testkit.Wait)
	t.Cleanup(cancel)
	c, err := testkit.DialSSE(ctx, s.client, s.URL+path, lastEventID)
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
	var events []store.Event
	after := store.ID{}
	for {
		n := 0
		_, err := s.api.Scan(stream, after, 1000, func(e *store.Event) error {
			events = append(events, store.Event{ID: e.ID, Stream: e.Stream, Type: e.Type, Data: bytes.Clone(e.Data)})
			after, n = e.ID, n+1
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			return events
		}
	}
}

// readEvents reads n events from c.
func readEvents(t *testing.T, c *testkit.SSEReader, n int) []testkit.SSEEvent {
	t.Helper()
	var got []testkit.SSEEvent
	for range n {
		e, err := c.NextEvent()
		if err != nil {
			t.Fatalf("after %d of %d events: %v", len(got), n, err)
		}
		got = append(got, e)
	}
	return got
}
