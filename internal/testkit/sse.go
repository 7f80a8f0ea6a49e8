package testkit

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/sselog/sselog/store"
)

// SSEReader is the tests' SSE client: one GET, read block by block with
// the WHATWG field rules, stricter than a browser where a test needs it to
// be (an unknown field, an event without an id and a stream cut inside a
// line are errors, not skipped). Its errors are returned, not reported, so
// it can run in any goroutine; the request's context bounds every read.
type SSEReader struct {
	resp   *http.Response
	r      *bufio.Reader
	cancel context.CancelFunc
}

// ErrEnded is what reads return when a stream ends at a line boundary. It
// is io.EOF, for a test that expects the server to end the stream cleanly,
// and io.ErrUnexpectedEOF, because an SSE stream is meant to stay open; a
// stream cut inside a line is io.ErrUnexpectedEOF only.
var ErrEnded = fmt.Errorf("sse stream ended (%w, %w)", io.EOF, io.ErrUnexpectedEOF)

// SSEBlock is what one blank-line-terminated block of a stream says.
type SSEBlock struct {
	ID       string
	HasID    bool
	Type     string
	Data     string
	HasData  bool
	Retry    string
	Comments int
}

// SSEEvent is an event as a client sees it; Type is "message" when the
// frame has no "event:" line.
type SSEEvent struct {
	ID   string
	Type string
	Data string
}

// DialSSE opens an SSE stream with a GET to url. lastEventID, when not
// empty, is sent as the Last-Event-ID header, as a reconnecting EventSource
// does. An answer other than 200 with Content-Type text/event-stream is an
// error that carries the start of the body.
func DialSSE(ctx context.Context, client *http.Client, url, lastEventID string) (*SSEReader, error) {
	return DialSSEWith(ctx, client, url, http.Header{"Last-Event-ID": {lastEventID}})
}

// DialSSEWith is DialSSE with request headers of the caller's choosing;
// an empty header value is not sent.
func DialSSEWith(ctx context.Context, client *http.Client, url string, header http.Header) (*SSEReader, error) {
	ctx, cancel := context.WithCancel(ctx)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		cancel()
		return nil, err
	}
	req.Header.Set("Accept", "text/event-stream")
	for k, vs := range header {
		for _, v := range vs {
			if v != "" {
				req.Header.Add(k, v)
			}
		}
	}
	resp, err := client.Do(req)
	if err != nil {
		cancel()
		return nil, err
	}
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		resp.Body.Close()
		cancel()
		return nil, fmt.Errorf("GET %s: status %d, Content-Type %q: %s", url, resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	return NewSSEReader(resp, cancel), nil
}

// NewSSEReader reads the stream in resp, a response the test obtained
// itself. cancel, when not nil, is called by Close with the body's Close.
func NewSSEReader(resp *http.Response, cancel context.CancelFunc) *SSEReader {
	if cancel == nil {
		cancel = func() {}
	}
	return &SSEReader{resp: resp, r: bufio.NewReader(resp.Body), cancel: cancel}
}

// Response is the response the stream is read from.
func (c *SSEReader) Response() *http.Response { return c.resp }

// Close drops the connection at once, whatever is in flight, as a client
// that goes away does.
func (c *SSEReader) Close() {
	c.cancel()
	c.resp.Body.Close()
}

// ReadRaw reads exactly n bytes of the stream as they are on the wire.
func (c *SSEReader) ReadRaw(n int) (string, error) {
	b := make([]byte, n)
	_, err := io.ReadFull(c.r, b)
	return string(b), err
}

// ReadLine reads one line as it is on the wire, its LF included.
func (c *SSEReader) ReadLine() (string, error) { return c.r.ReadString('\n') }

// Next reads one block. The server ends lines with LF only; a CR before it
// is tolerated. Fields follow the WHATWG rules; an unknown one is an error.
// The end of the stream between blocks is ErrEnded; inside a line or a
// block (an event cut short) it is io.ErrUnexpectedEOF alone.
func (c *SSEReader) Next() (SSEBlock, error) {
	var b SSEBlock
	var data []string
	for {
		line, err := c.r.ReadString('\n')
		if err != nil {
			if errors.Is(err, io.EOF) {
				switch {
				case line != "":
					err = fmt.Errorf("stream ended inside a line %q: %w", line, io.ErrUnexpectedEOF)
				case b.HasData || b.HasID || b.Type != "" || b.Retry != "" || b.Comments > 0 || len(data) > 0:
					// A block begun and not ended is a cut event, not
					// a clean end.
					err = fmt.Errorf("stream ended inside a block: %w", io.ErrUnexpectedEOF)
				default:
					err = ErrEnded
				}
			}
			return b, err
		}
		line = strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r")
		if line == "" {
			if b.HasData || b.HasID || b.Type != "" || b.Retry != "" || b.Comments > 0 {
				b.Data = strings.Join(data, "\n")
				return b, nil
			}
			continue
		}
		if line[0] == ':' {
			b.Comments++
			continue
		}
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "id":
			b.ID, b.HasID = value, true
		case "event":
			b.Type = value
		case "data":
			data = append(data, value)
			b.HasData = true
		case "retry":
			b.Retry = value
		default:
			return b, fmt.Errorf("unknown field in line %q", line)
		}
	}
}

// NextEvent reads blocks until one carries an event, skipping heartbeats
// and retry hints. A type without data, an id without data outside a
// retry hint, and data without an id, are errors: this server sends
// none of them. (A live start's first block carries the retry hint and
// the id the stream starts after.)
func (c *SSEReader) NextEvent() (SSEEvent, error) {
	for {
		b, err := c.Next()
		if err != nil {
			return SSEEvent{}, err
		}
		if !b.HasData {
			if b.Type != "" || b.HasID && b.Retry == "" {
				return SSEEvent{}, fmt.Errorf("block without data: %+v", b)
			}
			continue
		}
		return b.Event()
	}
}

// Event is the event a block with data dispatches; a block without an id
// is an error.
func (b SSEBlock) Event() (SSEEvent, error) {
	if !b.HasID {
		return SSEEvent{}, fmt.Errorf("event without id: %+v", b)
	}
	typ := b.Type
	if typ == "" {
		typ = "message"
	}
	return SSEEvent{ID: b.ID, Type: typ, Data: b.Data}, nil
}

// DiffEvents compares the events a client received with the stored events
// it should have seen, and describes the first difference. A stored event
// is seen as a client sees it: its id as text, "message" where it has no
// type, and its data with CR and CRLF line breaks as LF, since SSE splits
// data lines on all three.
func DiffEvents(got []SSEEvent, want []store.Event) error {
	for i := 0; i < len(got) && i < len(want); i++ {
		w := SSEEvent{ID: want[i].ID.String(), Type: want[i].Type, Data: normalizeNewlines(string(want[i].Data))}
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

func normalizeNewlines(s string) string {
	s = strings.ReplaceAll(s, "\r\n", "\n")
	return strings.ReplaceAll(s, "\r", "\n")
}
