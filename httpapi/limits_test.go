package httpapi_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/sselog/sselog/httpapi"
	"github.com/sselog/sselog/internal/testkit"
	"github.com/sselog/sselog/store"
	"github.com/sselog/sselog/stream"
)

// clientFrom is an HTTP client whose connections come from the loopback
// address ip (Linux routes all of 127.0.0.0/8 to lo), so that a test can be
// several client addresses.
func clientFrom(t *testing.T, ip string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	tr := &http.Transport{DialContext: d.DialContext}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// admitted opens an SSE stream and reports whether the server took it: a
// stream over a limit is 200 with only a jittered retry hint, then the end.
func admitted(t *testing.T, s *testServer, client *http.Client) (*testkit.SSEReader, bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testkit.Wait)
	t.Cleanup(cancel)
	c, err := testkit.DialSSE(ctx, client, s.URL+"/v1/streams/s/events", "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	first, err := c.Next()
	if err != nil {
		t.Fatal(err)
	}
	if first.Retry == "3000" {
		return c, true
	}
	ms, _ := strconv.Atoi(first.Retry)
	if ms < 3000 || ms > 6000 || first.HasID || first.HasData {
		t.Fatalf("refused stream began %+v, want only a retry hint of 3000-6000 ms", first)
	}
	if b, err := c.Next(); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("refused stream went on: %+v, %v", b, err)
	}
	return nil, false
}

func TestMaxSubscribers(t *testing.T) {
	s := newServer(t, httpapi.Options{MaxSubscribers: 3, Heartbeat: time.Hour}, stream.Options{})
	var open []*testkit.SSEReader
	for range 3 {
		c, ok := admitted(t, s, s.client)
		if !ok {
			t.Fatal("a subscriber under the limit was refused")
		}
		open = append(open, c)
	}
	for range 4 {
		if _, ok := admitted(t, s, s.client); ok {
			t.Fatal("a fourth subscriber was admitted")
		}
	}
	// One leaves: its slot comes back once the server has noticed.
	open[0].Close()
	testkit.WaitFor(t, "the slot of a departed subscriber to come back", func() bool {
		_, ok := admitted(t, s, s.client)
		return ok
	})
	// The admitted ones are streaming.
	ids := s.mustPublish(t, "s", `{"data":1}`)
	for _, c := range open[1:] {
		got := readEvents(t, c, 1)
		if got[0].ID != ids[0].String() {
			t.Fatalf("admitted subscriber got %+v", got)
		}
	}
}

func TestMaxSubscribersPerIP(t *testing.T) {
	s := newServer(t, httpapi.Options{MaxSubscribersPerIP: 2, Heartbeat: time.Hour}, stream.Options{})
	one, two := clientFrom(t, "127.0.0.2"), clientFrom(t, "127.0.0.3")
	for range 2 {
		if _, ok := admitted(t, s, one); !ok {
			t.Fatal("refused under the per-address limit")
		}
	}
	if _, ok := admitted(t, s, one); ok {
		t.Fatal("a third stream from one address was admitted")
	}
	for range 2 {
		if _, ok := admitted(t, s, two); !ok {
			t.Fatal("another address was refused for the first one's streams")
		}
	}
}

// TestMaxStreamsHTTP: publishing to a new stream beyond the limit is 429
// and stores nothing; existing streams take events as before.
func TestMaxStreamsHTTP(t *testing.T) {
	l := testkit.OpenAt(t, filepath.Join(t.TempDir(), "events.db"), store.Options{MaxStreams: 2})
	s, _ := startServer(t, l, httpapi.Options{}, stream.Options{}, testkit.ServeOptions{})
	s.mustPublish(t, "a", `{"data":1}`)
	s.mustPublish(t, "b", `{"data":1}`)
	last := l.LastID()
	status, ct, body, err := s.do(http.MethodPost, "/v1/streams/c/events", "application/json", `{"data":1}`, nil)
	if err != nil {
		t.Fatal(err)
	}
	if status != http.StatusTooManyRequests {
		t.Fatalf("publish to a third stream: %d %s", status, body)
	}
	assertJSONError(t, ct, body)
	if l.LastID() != last {
		t.Fatal("the refused publish stored something")
	}
	s.mustPublish(t, "a", `{"data":2}`)
}
