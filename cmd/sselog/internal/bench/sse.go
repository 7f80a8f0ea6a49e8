package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"strconv"
	"time"
)

// frame is one SSE block: the fields seen between two blank lines. Its
// slices are reused by the next call to parser.next.
type frame struct {
	id    []byte
	event []byte
	data  []byte // data lines joined by "\n"
	retry int64  // -1 when the block had no valid retry field
	hasID bool
	// hasData is set when the block had a data field (even an empty one).
	hasData bool
}

// parser reads SSE blocks from a stream without allocating per event: lines
// are read in place with ReadSlice and fields are copied into buffers that
// are reused from block to block.
//
// Lines end with LF or CRLF. A lone CR, which the specification also allows
// as a line end, is not one here: sselog never sends it.
type parser struct {
	r    *bufio.Reader
	long []byte // a line longer than r's buffer, gathered in pieces
	// comments counts comment lines (":"), such as heartbeats.
	comments int64
	// bytes counts the bytes read.
	bytes int64
}

func newParser(r io.Reader, size int) *parser {
	return &parser{r: bufio.NewReaderSize(r, size)}
}

// line returns the next line without its line end. The slice is valid until
// the next call.
func (p *parser) line() ([]byte, error) {
	b, err := p.r.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		p.long = append(p.long[:0], b...)
		for errors.Is(err, bufio.ErrBufferFull) {
			b, err = p.r.ReadSlice('\n')
			p.long = append(p.long, b...)
		}
		b = p.long
	}
	p.bytes += int64(len(b))
	if err != nil {
		if errors.Is(err, io.EOF) && len(b) > 0 {
			err = io.ErrUnexpectedEOF // a line cut off by the end of the stream
		}
		return nil, err
	}
	b = b[:len(b)-1]
	if n := len(b); n > 0 && b[n-1] == '\r' {
		b = b[:n-1]
	}
	return b, nil
}

// next fills f with the next block that has at least one field; comment-only
// blocks (heartbeats) are skipped. It returns io.EOF at a clean end of the
// stream.
func (p *parser) next(f *frame) error {
	f.id, f.event, f.data = f.id[:0], f.event[:0], f.data[:0]
	f.retry, f.hasID, f.hasData = -1, false, false
	fields := 0
	for {
		b, err := p.line()
		if err != nil {
			if errors.Is(err, io.EOF) && fields > 0 {
				err = io.ErrUnexpectedEOF // a block cut off before its blank line
			}
			return err
		}
		if len(b) == 0 {
			if fields > 0 {
				return nil
			}
			continue
		}
		if b[0] == ':' {
			p.comments++
			continue
		}
		fields++
		name, value := b, b[len(b):]
		if i := bytes.IndexByte(b, ':'); i >= 0 {
			name, value = b[:i], b[i+1:]
			if len(value) > 0 && value[0] == ' ' {
				value = value[1:]
			}
		}
		switch string(name) { // no allocation: the compiler compares in place
		case "data":
			if f.hasData {
				f.data = append(f.data, '\n')
			}
			f.data = append(f.data, value...)
			f.hasData = true
		case "id":
			if bytes.IndexByte(value, 0) < 0 { // the specification ignores ids with NUL
				f.id = append(f.id[:0], value...)
				f.hasID = true
			}
		case "event":
			f.event = append(f.event[:0], value...)
		case "retry":
			if n, ok := parseUint(value); ok {
				f.retry = n
			}
		}
	}
}

// parseUint parses a non-negative decimal int64 of ASCII digits, without
// allocating.
func parseUint(b []byte) (int64, bool) {
	if len(b) == 0 || len(b) > 19 {
		return 0, false
	}
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		d := int64(c - '0')
		if n > (math.MaxInt64-d)/10 {
			return 0, false
		}
		n = n*10 + d
	}
	return n, true
}

// jsonInt finds the integer member key (given with its quotes and colon, as
// `"n":`) in compact JSON and parses it by hand. It looks for the first
// occurrence only, which is enough for the flat objects the tool publishes.
func jsonInt(data, key []byte) (int64, bool) {
	i := bytes.Index(data, key)
	if i < 0 {
		return 0, false
	}
	rest := data[i+len(key):]
	end := 0
	for end < len(rest) && rest[end] >= '0' && rest[end] <= '9' {
		end++
	}
	return parseUint(rest[:end])
}

// sseConn is one subscriber connection, read by one goroutine.
type sseConn struct {
	conn net.Conn
	p    *parser
}

// dialSSE opens a subscription over a plain TCP connection rather than
// through an http.Transport, which would add two goroutines and two buffers
// per connection: that counts at ten thousand subscribers. resume is the
// Last-Event-ID to send, "" for none; path is the request target (the
// stream's subscribePath, or sselog's merged endpoint with its query);
// bufSize sizes each of the two read buffers. It returns once the server
// has shown that it registered the subscriber (see adapter.registered):
// every event stored from then on is delivered. ctx's deadline bounds all
// of it.
func dialSSE(ctx context.Context, t *target, path, resume string, bufSize int) (*sseConn, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", t.hostPort)
	if err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			conn.Close()
		}
	}()
	if dl, set := ctx.Deadline(); set {
		conn.SetDeadline(dl)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, t.base+path, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "text/event-stream")
	if resume != "" {
		req.Header.Set("Last-Event-ID", resume)
	}
	if err := req.Write(conn); err != nil {
		return nil, fmt.Errorf("subscribe: %w", err)
	}
	br := bufio.NewReaderSize(conn, bufSize)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		return nil, fmt.Errorf("subscribe: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, fmt.Errorf("subscribe: %s: %s", resp.Status, bytes.TrimSpace(body))
	}
	c := &sseConn{conn: conn, p: newParser(resp.Body, bufSize)}
	if err := t.a.registered(c.p); err != nil {
		return nil, fmt.Errorf("subscribe: %w", err)
	}
	conn.SetDeadline(time.Time{})
	ok = true
	return c, nil
}

func (c *sseConn) Close() error { return c.conn.Close() }

// seqKey and timeKey are the members of the data the tool publishes: the
// event's sequence number and its publisher's send time in Unix nanoseconds.
var (
	seqKey  = []byte(`"n":`)
	timeKey = []byte(`"t":`)
)

// itoa is strconv.Itoa for int64.
func itoa(n int64) string { return strconv.FormatInt(n, 10) }
