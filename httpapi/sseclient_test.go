package httpapi_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// sseClient is the test's own SSE reader: one GET, read block by block.
// Its errors are returned, not reported, so that it can run in any
// goroutine; the request's context bounds every read.
type sseClient struct {
	resp   *http.Response
	r      *bufio.Reader
	cancel context.CancelFunc
}

// sseBlock is what one blank-line-terminated block of the stream says.
type sseBlock struct {
	ID       string
	HasID    bool
	Type     string
	Data     string
	HasData  bool
	Retry    string
	Comments int
}

// sseEvent is an event as a client sees it; Type is "message" when the
// frame has no "event:" line.
type sseEvent struct {
	ID   string
	Type string
	Data string
}

// dialSSE opens an SSE stream. lastEventID, when not empty, is sent as the
// Last-Event-ID header, as a reconnecting EventSource does.
func dialSSE(ctx context.Context, client *http.Client, url, lastEventID string) (*sseClient, error) {
	ctx, cancel := context.WithCancel(ctx)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		cancel()
		return nil, err
	}
	req.Header.Set("Accept", "text/event-stream")
	if lastEventID != "" {
		req.Header.Set("Last-Event-ID", lastEventID)
	}
	resp, err := client.Do(req)
	if err != nil {
		cancel()
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		resp.Body.Close()
		cancel()
		return nil, fmt.Errorf("GET %s: status %d: %s", url, resp.StatusCode, body)
	}
	return &sseClient{resp: resp, r: bufio.NewReader(resp.Body), cancel: cancel}, nil
}

// Close drops the connection at once, whatever is in flight, as a client
// that goes away does.
func (c *sseClient) Close() {
	c.cancel()
	c.resp.Body.Close()
}

// readRaw reads exactly n bytes of the stream as they are on the wire.
func (c *sseClient) readRaw(n int) (string, error) {
	b := make([]byte, n)
	_, err := io.ReadFull(c.r, b)
	return string(b), err
}

// next reads one block. The server ends lines with LF only; a CR before
// it is tolerated. Fields follow the WHATWG rules.
func (c *sseClient) next() (sseBlock, error) {
	var b sseBlock
	var data []string
	for {
		line, err := c.r.ReadString('\n')
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
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

// nextEvent reads blocks until one carries an event, skipping heartbeats.
func (c *sseClient) nextEvent() (sseEvent, error) {
	for {
		b, err := c.next()
		if err != nil {
			return sseEvent{}, err
		}
		if !b.HasData {
			if b.HasID || b.Type != "" {
				return sseEvent{}, fmt.Errorf("block without data: %+v", b)
			}
			continue
		}
		if !b.HasID {
			return sseEvent{}, fmt.Errorf("event without id: %+v", b)
		}
		typ := b.Type
		if typ == "" {
			typ = "message"
		}
		return sseEvent{ID: b.ID, Type: typ, Data: b.Data}, nil
	}
}
