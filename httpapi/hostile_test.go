package httpapi_test

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sselog/sselog/httpapi"
	"github.com/sselog/sselog/internal/testkit"
	"github.com/sselog/sselog/store"
	"github.com/sselog/sselog/stream"
)

// hostileServer is newServer with what the hostile tests look at: the
// http.Server set up as cmd/sselog sets it up (a ReadHeaderTimeout, the
// default 1 MiB MaxHeaderBytes), the server's error log and the handler's
// log in one buffer, where a recovered panic would show, and each
// connection's last state.
type hostileServer struct {
	*testServer
	logs *logSink

	mu     sync.Mutex
	states map[net.Conn]http.ConnState
	opened int
}

// logSink is a log destination shared by the server's goroutines.
type logSink struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (b *logSink) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logSink) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func newHostileServer(t *testing.T, opts httpapi.Options, readHeaderTimeout time.Duration) *hostileServer {
	t.Helper()
	hs := &hostileServer{logs: &logSink{}, states: map[net.Conn]http.ConnState{}}
	opts.Logger = slog.New(slog.NewTextHandler(hs.logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	s, _ := startServer(t, testkit.Open(t), opts, stream.Options{}, testkit.ServeOptions{Config: func(c *http.Server) {
		c.ReadHeaderTimeout = readHeaderTimeout
		c.ErrorLog = log.New(hs.logs, "http: ", 0)
		c.ConnState = func(c net.Conn, s http.ConnState) {
			hs.mu.Lock()
			defer hs.mu.Unlock()
			if s == http.StateNew {
				hs.opened++
			}
			hs.states[c] = s
		}
	}})
	t.Cleanup(func() {
		// Whatever the test did, nothing may have panicked or failed
		// inside the server.
		if logs := hs.logs.String(); strings.Contains(logs, "panic") || strings.Contains(logs, "level=ERROR") {
			t.Errorf("server log:\n%s", logs)
		}
	})
	hs.testServer = s
	return hs
}

// open counts the connections the server holds that are neither closed nor
// taken over by a handler.
func (hs *hostileServer) open() (open, opened int) {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	for _, s := range hs.states {
		if s != http.StateClosed && s != http.StateHijacked {
			open++
		}
	}
	return open, hs.opened
}

// rawAnswer is what came back for a raw request: a response, or how the
// connection ended without one.
type rawAnswer struct {
	status  int // 0 when the connection ended without a response
	header  http.Header
	body    []byte
	closed  error // why no response could be read
	elapsed time.Duration
}

// rawExchange writes req on a new connection, in its own goroutine so
// that a server that answers before the request is whole is heard, and
// reads one response. trickle, when set, sends the bytes after the first
// head bytes one at a time, that far apart. For a 200 event stream, only the
// first block is read. The connection is closed on return.
func rawExchange(t *testing.T, addr string, req []byte, head int, trickle time.Duration, halfClose bool, method string) rawAnswer {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(testkit.Wait)); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	written := make(chan struct{})
	defer func() { close(stop); <-written }()
	start := time.Now()
	go func() {
		defer close(written)
		if trickle <= 0 {
			head = len(req)
		}
		if _, err := c.Write(req[:head]); err != nil {
			return
		}
		for i := head; i < len(req); i++ {
			select {
			case <-stop:
				return
			case <-time.After(trickle):
			}
			if _, err := c.Write(req[i : i+1]); err != nil {
				return
			}
		}
		if halfClose {
			_ = c.(*net.TCPConn).CloseWrite()
		}
	}()
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: method})
	for err == nil && resp.StatusCode < 200 {
		// An interim answer (100 Continue): the final one follows.
		resp, err = http.ReadResponse(br, &http.Request{Method: method})
	}
	a := rawAnswer{elapsed: time.Since(start)}
	if err != nil {
		a.closed = err
		return a
	}
	defer resp.Body.Close()
	a.status, a.header = resp.StatusCode, resp.Header
	if resp.StatusCode == http.StatusOK && strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		cl := testkit.NewSSEReader(resp, nil)
		b, err := cl.Next()
		if err != nil || b.Retry == "" {
			t.Fatalf("event stream starts with %+v, %v; want the retry hint", b, err)
		}
		return a
	}
	a.body, err = io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		t.Fatalf("status %d, reading the body: %v", resp.StatusCode, err)
	}
	return a
}

// Shorthands for raw requests. Each asks for the connection to be closed
// after the answer.
func rawGet(target string, headers ...string) string {
	return "GET " + target + " HTTP/1.1\r\nHost: x\r\n" + joinHeaders(headers) + "Connection: close\r\n\r\n"
}

func rawPost(target, body string, headers ...string) string {
	return "POST " + target + " HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: " +
		strconv.Itoa(len(body)) + "\r\n" + joinHeaders(headers) + "Connection: close\r\n\r\n" + body
}

func joinHeaders(headers []string) string {
	var b strings.Builder
	for _, h := range headers {
		b.WriteString(h)
		b.WriteString("\r\n")
	}
	return b.String()
}

// TestHostileRequests sends requests no client should send, over raw TCP
// so that nothing in between cleans them up. Each is answered with a 4xx (or,
// where listed, by net/http itself before the handler runs), or the
// connection is closed; nothing panics or logs an error, nothing is
// appended, and the server goes on serving.
func TestHostileRequests(t *testing.T) {
	const (
		maxBody     = 64 << 10
		readTimeout = 500 * time.Millisecond
	)
	hs := newHostileServer(t, httpapi.Options{MaxBody: maxBody, ReadTimeout: readTimeout}, time.Second)
	first := hs.mustPublish(t, "s", `{"data":0}`)[0]
	const ev = "/v1/streams/s/events"
	const hist = "/v1/streams/s/history"
	valid := `{"data":1}`
	nested := func(open, close string, n int) string {
		return strings.Repeat(open, n) + "1" + strings.Repeat(close, n)
	}
	longID := strings.Repeat("0", 900<<10)
	chunked := func(body string) string {
		return fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", len(body), body)
	}
	const closed = 0 // the connection ends with no answer

	tests := []struct {
		name string
		req  string
		// want lists the acceptable statuses; closed means no answer.
		want []int
		// netHTTP marks answers net/http gives before the handler runs:
		// plain text instead of the handler's JSON error.
		netHTTP bool
		// trickle sends the bytes after the first head bytes one by one.
		trickle time.Duration
		head    int
		// halfClose shuts the client's sending side once the request is
		// written.
		halfClose bool
		method    string // for reading the answer; GET when empty
	}{
		// Sizes.
		{name: "header of 2 MB", req: rawGet(hist, "X-Big: "+strings.Repeat("a", 2<<20)), want: []int{431}, netHTTP: true},
		{name: "200,000 small headers", req: rawGet(hist, slices.Repeat([]string{"X-H: v"}, 200_000)...), want: []int{431}, netHTTP: true},
		{name: "request line of 2 MB", req: rawGet(hist + "?x=" + strings.Repeat("a", 2<<20)), want: []int{431}, netHTTP: true},
		{name: "stream name of 64 KB", req: rawPost("/v1/streams/"+strings.Repeat("a", 64<<10)+"/events", valid), want: []int{400}},
		{name: "stream name of 64 KB, subscribe", req: rawGet("/v1/streams/" + strings.Repeat("a", 64<<10) + "/events"), want: []int{400}},
		{name: "body of 8 MB", req: rawPost(ev, `{"data":"`+strings.Repeat("x", 8<<20)+`"}`), want: []int{413}},
		{name: "chunked body of 8 MB", req: "POST " + ev + " HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n" + chunked(`{"data":"`+strings.Repeat("x", 8<<20)+`"}`), want: []int{413}},
		{name: "Content-Length of 10 GB", req: "POST " + ev + " HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 10000000000\r\nConnection: close\r\n\r\n" + strings.Repeat(" ", 1<<20), want: []int{413}},
		// An honest Content-Length over the limit could be refused at
		// once; reading until the limit or the read timeout is also fine.
		{name: "Content-Length over the limit, body stalls", req: "POST " + ev + " HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 10000000\r\nConnection: close\r\n\r\n{", want: []int{413, 408}},
		{name: "Expect 100-continue, body over the limit", req: rawPost(ev, `{"data":"`+strings.Repeat("x", 2*maxBody)+`"}`, "Expect: 100-continue"), want: []int{413}},

		// Nesting and encoding.
		{name: "10,000 [ in data", req: rawPost(ev, `{"data":`+nested("[", "]", 10_000)+`}`), want: []int{400}},
		{name: "10,000 [ unclosed", req: rawPost(ev, `{"data":`+strings.Repeat("[", 10_000)), want: []int{400}},
		{name: "10,000 [ as the body", req: rawPost(ev, nested("[", "]", 10_000)), want: []int{400}},
		{name: "5,000 objects deep", req: rawPost(ev, `{"data":`+nested(`{"a":`, "}", 5_000)+`}`), want: []int{400}},
		{name: "batch of 10,000 [", req: rawPost(ev, `[{"data":1},{"data":`+nested("[", "]", 10_000)+`}]`), want: []int{400}},
		{name: "invalid UTF-8 in data", req: rawPost(ev, "{\"data\":\"\xc3\x28\"}"), want: []int{400}},
		{name: "overlong UTF-8 slash", req: rawPost(ev, "{\"data\":\"\xc0\xaf\"}"), want: []int{400}},
		{name: "UTF-16 surrogate in UTF-8", req: rawPost(ev, "{\"data\":\"\xed\xa0\x80\"}"), want: []int{400}},
		{name: "NUL bytes body", req: rawPost(ev, strings.Repeat("\x00", 4096)), want: []int{400}},
		{name: "invalid UTF-8 in Content-Type", req: "POST " + ev + " HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\xff\r\nContent-Length: 10\r\nConnection: close\r\n\r\n" + valid, want: []int{415}},

		// Stream names with control characters, percent-encoded.
		{name: "LF in stream", req: rawPost("/v1/streams/a%0Ab/events", valid), want: []int{400}},
		{name: "CR in stream", req: rawPost("/v1/streams/a%0Db/events", valid), want: []int{400}},
		{name: "CRLF header injection in stream", req: rawPost("/v1/streams/a%0D%0AX-Evil:%201/events", valid), want: []int{400}},
		{name: "tab in stream", req: rawPost("/v1/streams/a%09b/events", valid), want: []int{400}},
		{name: "DEL in stream", req: rawPost("/v1/streams/a%7Fb/events", valid), want: []int{400}},
		{name: "ESC in stream", req: rawPost("/v1/streams/a%1B%5B31m/events", valid), want: []int{400}},
		{name: "invalid UTF-8 in stream, encoded", req: rawPost("/v1/streams/%FF%FE/events", valid), want: []int{400}},
		{name: "invalid UTF-8 in stream, raw", req: rawPost("/v1/streams/\xff\xfe/events", valid), want: []int{400}},
		{name: "control character in stream, raw", req: rawPost("/v1/streams/a\x01b/events", valid), want: []int{400}, netHTTP: true},
		{name: "LF in stream, subscribe", req: rawGet("/v1/streams/a%0Ab/events"), want: []int{400}},
		{name: "LF in stream, history", req: rawGet("/v1/streams/a%0Ab/history"), want: []int{400}},
		{name: "LF in stream, retention", req: "PUT /v1/streams/a%0Ab/retention HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}", want: []int{400}},

		// Path tricks.
		{name: "dot-dot stream", req: rawPost("/v1/streams/../events", valid), want: []int{400, 404}},
		{name: "dot-dot climbing", req: rawPost("/v1/streams/../s/events", valid), want: []int{400, 404}},
		{name: "encoded dot-dot", req: rawPost("/v1/streams/%2e%2e/events", valid), want: []int{400, 404}},
		{name: "encoded dot-dot climbing", req: rawPost("/v1/streams/%2e%2e%2fs/events", valid), want: []int{400, 404}},
		{name: "dot stream", req: rawPost("/v1/streams/./events", valid), want: []int{400, 404}},
		{name: "encoded slash", req: rawPost("/v1/streams/a%2Fb/events", valid), want: []int{400, 404}},
		{name: "empty segment", req: rawPost("/v1/streams//events", valid), want: []int{400, 404}},
		{name: "double slash prefix", req: rawPost("//v1/streams/s/events", valid), want: []int{400, 404}},
		{name: "double slash inside", req: rawPost("/v1//streams/s/events", valid), want: []int{400, 404}},
		{name: "backslash", req: rawPost(`/v1/streams/a\b/events`, valid), want: []int{400, 404}},
		{name: "encoded backslash", req: rawPost("/v1/streams/a%5Cb/events", valid), want: []int{400, 404}},
		{name: "backslash dot-dot", req: rawPost(`/v1/streams/..\s/events`, valid), want: []int{400, 404}},
		{name: "encoded NUL", req: rawPost("/v1/streams/a%00/events", valid), want: []int{400}},
		{name: "raw NUL", req: rawPost("/v1/streams/a\x00/events", valid), want: []int{400}, netHTTP: true},
		{name: "bad percent encoding", req: rawPost("/v1/streams/a%zz/events", valid), want: []int{400}, netHTTP: true},
		{name: "trailing dot-dot", req: rawPost(ev+"/..", valid), want: []int{404}},
		{name: "trailing slash", req: rawPost(ev+"/", valid), want: []int{404}},
		{name: "no leading slash", req: rawPost("v1/streams/s/events", valid), want: []int{400}, netHTTP: true},
		{name: "asterisk target", req: "POST * HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 10\r\nConnection: close\r\n\r\n" + valid, want: []int{400, 404}, netHTTP: true},

		// The request line and the protocol.
		{name: "garbage request line", req: "GARBAGE\r\n\r\n", want: []int{400}, netHTTP: true},
		{name: "binary request line", req: "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", want: []int{400}, netHTTP: true},
		{name: "NUL request line", req: strings.Repeat("\x00", 64) + "\r\n\r\n", want: []int{400}, netHTTP: true},
		{name: "method only", req: "GET\r\n\r\n", want: []int{400}, netHTTP: true},
		{name: "no Host over HTTP/1.1", req: "GET " + hist + " HTTP/1.1\r\nConnection: close\r\n\r\n", want: []int{400}, netHTTP: true},
		{name: "two Hosts", req: "GET " + hist + " HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n", want: []int{400}, netHTTP: true},
		{name: "header without colon", req: "GET " + hist + " HTTP/1.1\r\nHost: x\r\nnot a header\r\n\r\n", want: []int{400}, netHTTP: true},
		{name: "space before colon", req: "GET " + hist + " HTTP/1.1\r\nHost: x\r\nLast-Event-ID : " + zeroID + "\r\n\r\n", want: []int{400}, netHTTP: true},
		// RFC 9110 15.6.6: the answer to a major version the server does not
		// speak is 505, and net/http gives it before any handler runs.
		{name: "HTTP/9.9", req: "GET " + hist + " HTTP/9.9\r\nHost: x\r\n\r\n", want: []int{505}, netHTTP: true},
		{name: "HTTP/1.0 GET", req: "GET " + hist + " HTTP/1.0\r\n\r\n", want: []int{200}},
		{name: "HTTP/1.0 subscribe", req: "GET " + ev + " HTTP/1.0\r\nLast-Event-ID: " + zeroID + "\r\n\r\n", want: []int{200}},
		{name: "HTTP/1.0 POST without length", req: "POST " + ev + " HTTP/1.0\r\nContent-Type: application/json\r\n\r\n" + valid, want: []int{400}, halfClose: true},
		{name: "HTTP/0.9", req: "GET " + hist + "\r\n", want: []int{400}, netHTTP: true},
		{name: "unknown method", req: "BREW " + ev + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", want: []int{405}},
		{name: "TRACE", req: "TRACE " + ev + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", want: []int{405}},
		{name: "OPTIONS", req: "OPTIONS " + ev + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", want: []int{405}},
		{name: "HEAD on events", req: "HEAD " + ev + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", want: []int{405}, method: http.MethodHead},
		{name: "CONNECT", req: "CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\n\r\n", want: []int{404, 405}},
		{name: "negative Content-Length", req: "POST " + ev + " HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: -1\r\n\r\n" + valid, want: []int{400}, netHTTP: true},
		{name: "two Content-Lengths", req: "POST " + ev + " HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 10\r\nContent-Length: 11\r\n\r\n" + valid + " ", want: []int{400}, netHTTP: true},
		{name: "Content-Length with chunked", req: "POST " + ev + " HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n" + chunked(`{"data":`), want: []int{400}, netHTTP: true},
		{name: "bad chunk size", req: "POST " + ev + " HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nffffffffffffffffff\r\n", want: []int{400}},
		// RFC 9112 6.1: a transfer coding the server does not know is
		// answered 501, by net/http before any handler runs.
		{name: "unknown transfer coding", req: "POST " + ev + " HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: gzip\r\n\r\n", want: []int{501}, netHTTP: true},
		{name: "body shorter than Content-Length", req: "POST " + ev + " HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n" + valid, want: []int{400}, halfClose: true},
		{name: "unknown Expect", req: rawPost(ev, valid, "Expect: the-unexpected"), want: []int{417}, netHTTP: true},

		// Slow clients.
		{name: "slowloris body", req: rawPost(ev, `{"data":"`+strings.Repeat("x", 200)+`"}`), head: len(rawPost(ev, "")), trickle: 20 * time.Millisecond, want: []int{408}},
		{name: "slowloris headers", req: rawGet(hist, slices.Repeat([]string{"X: y"}, 100)...), head: 10, trickle: 20 * time.Millisecond, want: []int{400, closed}, netHTTP: true},
		{name: "request never sent", req: "", want: []int{closed}},
		{name: "half a request line", req: "GET /v1/str", halfClose: true, want: []int{400, closed}, netHTTP: true},

		// Resume points.
		{name: "Last-Event-ID with CR", req: rawGet(ev, "Last-Event-ID: "+zeroID+"\rX"), want: []int{400}, netHTTP: true},
		{name: "Last-Event-ID with NUL", req: rawGet(ev, "Last-Event-ID: "+zeroID+"\x00"), want: []int{400}, netHTTP: true},
		{name: "Last-Event-ID with DEL", req: rawGet(ev, "Last-Event-ID: "+zeroID+"\x7f"), want: []int{400}, netHTTP: true},
		// A bare LF ends the header line: the rest is a header of its own.
		{name: "Last-Event-ID with LF", req: rawGet(ev, "Last-Event-ID: "+zeroID+"\nX-Injected: 1"), want: []int{200, 400}},
		{name: "Last-Event-ID folded", req: rawGet(ev, "Last-Event-ID: 01ARZ3NDEK\r\n TSV4RRFFQ69G5FAV"), want: []int{400}, netHTTP: true},
		{name: "Last-Event-ID of 900 KB", req: rawGet(ev, "Last-Event-ID: "+longID), want: []int{400}},
		{name: "Last-Event-ID of 900 KB in the query", req: rawGet(ev + "?last_event_id=" + longID), want: []int{400}},
		{name: "Last-Event-ID invalid UTF-8", req: rawGet(ev, "Last-Event-ID: \xff\xfe"+zeroID[2:]), want: []int{400}},
		{name: "Last-Event-ID overflowing", req: rawGet(ev, "Last-Event-ID: 8ZZZZZZZZZZZZZZZZZZZZZZZZZ"), want: []int{400}},
		{name: "Last-Event-ID with a fullwidth digit", req: rawGet(ev, "Last-Event-ID: "+zeroID[:25]+"０"), want: []int{400}},
		// Duplicates are ambiguous; the first one counts, or the request
		// is refused. Either way, never a 5xx.
		{name: "two Last-Event-IDs", req: rawGet(ev, "Last-Event-ID: "+zeroID, "Last-Event-ID: "+first.String()), want: []int{200, 400}},
		{name: "two Last-Event-IDs, second invalid", req: rawGet(ev, "Last-Event-ID: "+zeroID, "Last-Event-ID: nope"), want: []int{200, 400}},
		{name: "two Last-Event-IDs, first invalid", req: rawGet(ev, "Last-Event-ID: nope", "Last-Event-ID: "+zeroID), want: []int{200, 400}},
		{name: "two last_event_id", req: rawGet(ev + "?last_event_id=" + zeroID + "&last_event_id=nope"), want: []int{200, 400}},
		{name: "two last_event_id, first invalid", req: rawGet(ev + "?last_event_id=nope&last_event_id=" + zeroID), want: []int{200, 400}},
		{name: "two after", req: rawGet(hist + "?after=nope&after=" + zeroID), want: []int{200, 400}},
		{name: "two limit", req: rawGet(hist + "?limit=0&limit=5"), want: []int{200, 400}},
		{name: "limit overflowing", req: rawGet(hist + "?limit=99999999999999999999999"), want: []int{400}},
		{name: "limit as a float", req: rawGet(hist + "?limit=1e3"), want: []int{400}},
		{name: "limit with NUL", req: rawGet(hist + "?limit=1%00"), want: []int{400}},
		{name: "bad escape in the query", req: rawGet(hist + "?limit=%zz&after=" + zeroID), want: []int{200, 400}},
		{name: "semicolon in the query", req: rawGet(hist + "?limit=1;after=nope"), want: []int{200, 400}},
		{name: "query of 10,000 parameters", req: rawGet(hist + "?" + strings.Repeat("limit=1&", 10_000)), want: []int{200, 400}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			method := tc.method
			if method == "" {
				method = http.MethodGet
			}
			before := takeSnapshot(t, hs.testServer)
			a := rawExchange(t, hs.Listener.Addr().String(), []byte(tc.req), tc.head, tc.trickle, tc.halfClose, method)
			t.Logf("answer %d in %v (connection: %v): %.80q", a.status, a.elapsed.Round(time.Millisecond), a.closed, a.body)
			if !slices.Contains(tc.want, a.status) {
				t.Fatalf("answer %d (connection: %v): %.300s; want one of %v", a.status, a.closed, a.body, tc.want)
			}
			// A client still trickling its request when the server closes
			// the connection has its next bytes answered by the kernel
			// with a reset: the same close, seen by a client that kept
			// writing. Which one it sees depends on the timing alone.
			stillWriting := tc.trickle > 0 && errors.Is(a.closed, syscall.ECONNRESET)
			if a.status == closed && !isCleanClose(a.closed) && !stillWriting {
				t.Fatalf("connection ended with %v, want a clean close", a.closed)
			}
			if a.status >= 400 && !tc.netHTTP && method != http.MethodHead {
				assertJSONError(t, a.header.Get("Content-Type"), a.body)
			}
			if len(a.body) > 1024 {
				t.Errorf("answer of %d bytes: the request is echoed back", len(a.body))
			}
			if tc.trickle > 0 && a.status == http.StatusRequestTimeout {
				// The read timeout ended it, not the trickle running out.
				if a.elapsed < readTimeout*9/10 || a.elapsed > readTimeout+5*time.Second {
					t.Errorf("408 after %v, want about the read timeout %v", a.elapsed, readTimeout)
				}
			}
			if after := takeSnapshot(t, hs.testServer); !reflect.DeepEqual(before, after) {
				t.Fatalf("refused request changed the log: %+v -> %+v", before, after)
			}
			// And the server still serves.
			if status, _, b, err := hs.do(http.MethodGet, "/healthz", "", "", nil); err != nil || status != http.StatusOK {
				t.Fatalf("healthz after it: %d %s %v", status, b, err)
			}
		})
	}
	if got := hs.readAll(t, "s"); len(got) != 1 || got[0].ID != first {
		t.Fatalf("stream s holds %d events, want only the first", len(got))
	}
}

// isCleanClose reports whether a connection ended with a FIN rather than a
// reset.
func isCleanClose(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}

// TestHostileHTTP10Publish checks that an HTTP/1.0 client, which sends no
// Host and closes after each answer, can publish.
func TestHostileHTTP10Publish(t *testing.T) {
	hs := newHostileServer(t, httpapi.Options{}, time.Second)
	body := `{"data":"one-oh"}`
	req := "POST /v1/streams/old/events HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body
	a := rawExchange(t, hs.Listener.Addr().String(), []byte(req), 0, 0, false, http.MethodPost)
	if a.status != http.StatusCreated {
		t.Fatalf("status %d (%v): %s", a.status, a.closed, a.body)
	}
	if got := hs.readAll(t, "old"); len(got) != 1 || string(got[0].Data) != `"one-oh"` {
		t.Fatalf("stored %v", got)
	}
}

// TestHostileManyStreams publishes to 2,000 streams at once and lists them.
func TestHostileManyStreams(t *testing.T) {
	const (
		streams = 2000
		workers = 16
	)
	hs := newHostileServer(t, httpapi.Options{}, time.Second)
	names := make([]string, streams)
	for i := range names {
		switch i % 4 {
		case 0:
			names[i] = fmt.Sprintf("s-%04d", i)
		case 1:
			names[i] = fmt.Sprintf("S.%04d_x", i)
		case 2:
			names[i] = fmt.Sprintf("%04d", i)
		default:
			names[i] = fmt.Sprintf("%04d", i) + strings.Repeat("z", store.MaxStreamLen-4)
		}
	}
	start := time.Now()
	next := make(chan string)
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for name := range next {
				if _, err := hs.publish(name, `{"type":"t","data":"`+name[:4]+`"}`); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
feed:
	for _, name := range names {
		select {
		case next <- name:
		case err := <-errs:
			errs <- err
			break feed
		}
	}
	close(next)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	t.Logf("published to %d streams in %v", streams, time.Since(start).Round(time.Millisecond))

	var list struct {
		Streams []struct {
			Name  string `json:"name"`
			Count uint64 `json:"count"`
		} `json:"streams"`
	}
	status, _, b, err := hs.do(http.MethodGet, "/v1/streams", "", "", nil)
	if err != nil || status != http.StatusOK {
		t.Fatalf("list: %d %v", status, err)
	}
	if err := json.Unmarshal(b, &list); err != nil {
		t.Fatal(err)
	}
	want := slices.Clone(names)
	slices.Sort(want)
	got := make([]string, len(list.Streams))
	for i, s := range list.Streams {
		got[i] = s.Name
		if s.Count != 1 {
			t.Errorf("stream %s: count %d, want 1", s.Name, s.Count)
		}
	}
	if !slices.Equal(got, want) {
		t.Fatalf("listed %d streams, want the %d published, in name order", len(got), len(want))
	}
	// Each stream reads back on its own.
	for _, name := range []string{names[0], names[streams/2], names[streams-1]} {
		var page historyPage
		hs.getJSON(t, "/v1/streams/"+name+"/history", &page)
		if len(page.Events) != 1 {
			t.Fatalf("history of %s: %d events", name, len(page.Events))
		}
	}
}

// TestHostileManyConnections holds 500 connections open that send nothing,
// and 500 more that send half a request, then checks that an ordinary
// client is still served and that every connection is let go once its
// client leaves.
func TestHostileManyConnections(t *testing.T) {
	const idle = 500
	// As cmd/sselog: connections that send no whole head within 10 s are
	// closed, which is longer than this test takes.
	hs := newHostileServer(t, httpapi.Options{}, 10*time.Second)
	addr := hs.Listener.Addr().String()
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := range 2 * idle {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			if errors.Is(err, syscall.EMFILE) {
				t.Skipf("after %d connections: %v", i, err)
			}
			t.Fatal(err)
		}
		conns = append(conns, c)
		if i%2 == 1 {
			if _, err := c.Write([]byte("POST /v1/streams/s/events HTTP/1.1\r\nHost: x\r\nContent-")); err != nil {
				t.Fatal(err)
			}
		}
	}
	// The server has accepted them all.
	testkit.WaitFor(t, fmt.Sprintf("the server to accept %d connections", 2*idle), func() bool {
		_, opened := hs.open()
		return opened >= 2*idle
	})

	start := time.Now()
	ids := hs.mustPublish(t, "s", `{"data":"still here"}`)
	var page historyPage
	hs.getJSON(t, "/v1/streams/s/history", &page)
	if len(page.Events) != 1 || page.Events[0].ID != ids[0] {
		t.Fatalf("history %+v, want the one event %s", page.Events, ids[0])
	}
	t.Logf("with %d idle connections open, publish and history took %v", 2*idle, time.Since(start).Round(time.Microsecond))

	for _, c := range conns {
		c.Close()
	}
	conns = nil
	hs.client.Transport.(*http.Transport).CloseIdleConnections()
	testkit.WaitFor(t, "the server to close every connection after its client left", func() bool {
		open, _ := hs.open()
		return open == 0
	})
}
