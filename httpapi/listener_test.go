package httpapi_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/sselog/sselog/httpapi"
	"github.com/sselog/sselog/internal/testkit"
	"github.com/sselog/sselog/stream"
)

// serveListener serves the API as cmd/sselog does: through httpapi's
// Listener, its ConnContext, and no general OPTIONS handler.
func serveListener(t *testing.T, opts httpapi.ListenerOptions) string {
	return serveListenerWith(t, opts, httpapi.Options{})
}

func serveListenerWith(t *testing.T, opts httpapi.ListenerOptions, hopts httpapi.Options) string {
	t.Helper()
	l := testkit.Open(t)
	hub := stream.NewHub(l, stream.Options{})
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := httpapi.NewListener(raw, opts, true)
	srv := &http.Server{
		Handler:                      httpapi.NewHandler(l, hub, hopts),
		ReadHeaderTimeout:            10 * time.Second,
		ConnContext:                  ln.ConnContext,
		DisableGeneralOptionsHandler: true,
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	t.Cleanup(hub.Close)
	return raw.Addr().String()
}

// TestAmbiguousLengthRefused: a request with both Content-Length and
// Transfer-Encoding is answered 400 and its connection closed (RFC 9112
// 6.1), so that whatever a proxy in front framed differently after it is
// never served. Before, net/http served it by its Transfer-Encoding and
// kept the connection open.
func TestAmbiguousLengthRefused(t *testing.T) {
	addr := serveListener(t, httpapi.ListenerOptions{})
	for _, tc := range []struct{ name, req string }{
		{"chunked and a length", "POST /v1/streams/s/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n" + "a\r\n{\"data\":1}\r\n0\r\n\r\n"},
		{"length first, then chunked", "POST /v1/streams/s/events HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\ncontent-length: 0\r\n\r\n" + "a\r\n{\"data\":1}\r\n0\r\n\r\n"},
		{"a length the framing reader cannot follow", "POST /v1/streams/s/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 0000000000000000010\r\n\r\n{\"data\":1}"},
		{"on a GET", "GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(testkit.Wait))
			// A second request behind it: it must never be answered.
			if _, err := io.WriteString(c, tc.req+"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusBadRequest || !resp.Close || !strings.Contains(string(body), "Transfer-Encoding") {
				t.Fatalf("answer %d (close %v) %s, want 400 and Connection: close", resp.StatusCode, resp.Close, body)
			}
			if rest, err := io.ReadAll(br); err != nil || len(rest) != 0 {
				t.Fatalf("after the 400: %q, %v; want the connection closed and nothing more", rest, err)
			}
		})
	}

	// The same requests, framed one way only, are served, on one
	// connection kept alive.
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(testkit.Wait))
	io.WriteString(c, "POST /v1/streams/s/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\na\r\n{\"data\":1}\r\n0\r\n\r\n"+
		"POST /v1/streams/s/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 10\r\n\r\n{\"data\":2}"+
		"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
	br := bufio.NewReader(c)
	for i, want := range []int{http.StatusCreated, http.StatusCreated, http.StatusOK} {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		io.Copy(io.Discard, resp.Body)
		if resp.StatusCode != want || resp.Close {
			t.Fatalf("request %d: %d (close %v), want %d on a kept connection", i, resp.StatusCode, resp.Close, want)
		}
	}
}

// TestMaxConnections: beyond the cap a connection is not served until
// another closes.
func TestMaxConnections(t *testing.T) {
	addr := serveListener(t, httpapi.ListenerOptions{MaxConns: 2})
	get := func(c net.Conn) error {
		if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			return err
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return err
		}
		resp.Body.Close()
		return nil
	}
	var conns []net.Conn
	for range 3 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns = append(conns, c)
	}
	for _, c := range conns[:2] {
		c.SetDeadline(time.Now().Add(testkit.Wait))
		if err := get(c); err != nil {
			t.Fatal(err)
		}
	}
	// Checking that something does not happen: the third is not answered
	// while two are open.
	third := conns[2]
	if _, err := io.WriteString(third, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	third.SetDeadline(time.Now().Add(300 * time.Millisecond))
	br := bufio.NewReader(third)
	if _, err := br.Peek(1); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("third connection with a cap of 2: %v, want no answer", err)
	}
	// Once one closes, it is served.
	conns[0].Close()
	third.SetDeadline(time.Now().Add(testkit.Wait))
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("the third connection after one closed: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("the third connection after one closed: %d", resp.StatusCode)
	}
}

// TestUnreadBodyFreesConnection: a request whose body the handler does not
// read, and whose client sends none of it, does not hold its connection
// (and a --max-connections slot) for good: net/http reads what is left of
// a body after the answer, and that read ends at the read timeout.
func TestUnreadBodyFreesConnection(t *testing.T) {
	addr := serveListenerWith(t, httpapi.ListenerOptions{MaxConns: 2}, httpapi.Options{ReadTimeout: 300 * time.Millisecond})
	for range 2 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
	}
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(testkit.Wait))
	if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("a third connection while two hold unread bodies: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("a third connection: %d", resp.StatusCode)
	}
}

// TestShutdownEndsStreams: http.Server.Shutdown alone, with the handler's
// Close registered, ends every SSE stream with a last retry hint, over
// HTTP/1.1 (a taken-over connection Shutdown does not track) and over
// HTTP/2.
func TestShutdownEndsStreams(t *testing.T) {
	for _, h2 := range []bool{false, true} {
		t.Run(map[bool]string{false: "HTTP/1.1", true: "HTTP/2"}[h2], func(t *testing.T) {
			s, h := startServer(t, testkit.Open(t), httpapi.Options{Heartbeat: time.Hour}, stream.Options{}, testkit.ServeOptions{HTTP2: h2})
			srv, client := s.Server, s.client
			ctx, cancel := context.WithTimeout(context.Background(), testkit.Wait)
			defer cancel()
			var clients []*testkit.SSEReader
			for range 3 {
				c, err := testkit.DialSSE(ctx, client, srv.URL+"/v1/streams/s/events", "")
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				if b, err := c.Next(); err != nil || b.Retry == "" {
					t.Fatalf("first block %+v, %v; want the retry hint", b, err)
				}
				clients = append(clients, c)
			}
			done := make(chan error, 1)
			go func() { done <- srv.Config.Shutdown(ctx) }()
			for i, c := range clients {
				b, err := c.Next()
				if err != nil || b.Retry == "" {
					t.Fatalf("stream %d at shutdown: %+v, %v; want a last retry hint", i, b, err)
				}
				if _, err := c.Next(); !errors.Is(err, io.ErrUnexpectedEOF) {
					t.Fatalf("stream %d after its last hint: %v, want its end", i, err)
				}
			}
			if err := <-done; err != nil {
				t.Fatalf("shutdown: %v", err)
			}
			if err := h.Drain(ctx); err != nil {
				t.Fatalf("drain after shutdown: %v", err)
			}
		})
	}
}

// TestGoneBeforeFirstFlush: a subscriber that is gone before its stream's
// first bytes are flushed (an HTTP/2 client that resets at once) gives its
// subscription and its --max-subscribers slot back.
func TestGoneBeforeFirstFlush(t *testing.T) {
	l := testkit.Open(t)
	hub := stream.NewHub(l, stream.Options{})
	t.Cleanup(hub.Close)
	h := httpapi.NewHandler(l, hub, httpapi.Options{MaxSubscribers: 1})
	for i := range 2 {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		req := httptest.NewRequestWithContext(ctx, "GET", "/v1/streams/s/events", nil)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Header().Get("Connection") == "close" {
			t.Fatalf("request %d was refused as over the limit: the first one kept its slot", i)
		}
		if n := hub.Following(); n != 0 {
			t.Fatalf("after request %d the hub follows %d streams, want 0", i, n)
		}
	}
}
