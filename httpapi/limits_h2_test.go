package httpapi_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptrace"
	"testing"
	"time"

	"github.com/sselog/sselog/httpapi"
	"github.com/sselog/sselog/internal/testkit"
	"github.com/sselog/sselog/stream"
)

// TestOverLimitKeepsH2Connection: over HTTP/2 an over-limit subscriber is
// refused without retiring the connection, which carries the client's
// other streams ("Connection: close" would make the server send GOAWAY).
func TestOverLimitKeepsH2Connection(t *testing.T) {
	s, _ := startServer(t, testkit.Open(t), httpapi.Options{MaxSubscribers: 1, Heartbeat: time.Hour}, stream.Options{}, testkit.ServeOptions{HTTP2: true})
	srv, client := s.Server, s.client

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	get := func(path string) (*http.Response, bool) {
		reused := false
		trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { reused = i.Reused }}
		req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(ctx, trace), "GET", srv.URL+path, nil)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if resp.ProtoMajor != 2 {
			t.Fatalf("proto %s, want HTTP/2", resp.Proto)
		}
		return resp, reused
	}
	// The one admitted stream, kept open.
	first, _ := get("/v1/streams/s/events")
	defer first.Body.Close()
	buf := make([]byte, 64)
	if _, err := first.Body.Read(buf); err != nil {
		t.Fatal(err)
	}
	// An over-limit one: answered with a retry hint and "Connection: close".
	over, reused := get("/v1/streams/s/events")
	io.ReadAll(over.Body)
	over.Body.Close()
	if !reused {
		t.Fatal("the second stream did not share the first's connection")
	}
	// Checking that something does not happen: give a GOAWAY, were one
	// sent, time to arrive before the next request.
	time.Sleep(100 * time.Millisecond)
	resp, reused := get("/healthz")
	io.ReadAll(resp.Body)
	resp.Body.Close()
	if !reused {
		t.Errorf("after an over-limit SSE answer the HTTP/2 connection was shut down (GOAWAY): the next request had to dial a new one")
	}
}
