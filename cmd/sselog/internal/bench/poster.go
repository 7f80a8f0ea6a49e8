package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http/httputil"
	"strconv"
	"time"
)

// posterBuf sizes a poster's read buffer: an answer of a thousand ids is
// about 30 KB.
const posterBuf = 32 << 10

// poster is one publisher's keep-alive HTTP/1.1 connection, written and
// read by hand. An http.Client costs several goroutine hand-offs and a few
// dozen allocations per request; at tens of thousands of requests a second
// on a machine shared with the server that is CPU the server needs. A
// poster sends each request with one write and reads the answer in place.
// It is not safe for concurrent use.
type poster struct {
	t       *target
	timeout time.Duration // bounds each request
	conn    net.Conn
	br      *bufio.Reader
	path    string // the stream's events path that requests go to
	head    []byte // after the path: the rest of the request line, fixed headers
	out     []byte // the request being written, then the answer's body
	// key, when set, is sent as the next request's Idempotency-Key.
	key []byte
	// replayed is set by readAnswer when the answer says it repeats an
	// earlier one (Idempotent-Replayed: true).
	replayed bool
}

func newPoster(t *target, timeout time.Duration) *poster {
	p := &poster{t: t, timeout: timeout, path: t.publishPath}
	p.head = fmt.Appendf(nil, " HTTP/1.1\r\nHost: %s\r\nUser-Agent: sselog-bench\r\n%sContent-Length: ",
		t.hostHeader, t.a.publishHeader())
	return p
}

// to makes the following requests go to path (the adapter's publishPath
// of the stream they publish to); one connection serves every stream.
func (p *poster) to(path string) { p.path = path }

func (p *poster) close() {
	if p.conn != nil {
		p.conn.Close()
		p.conn = nil
	}
}

// publish posts body and reads the answer to its end; it returns the
// answer's body, valid until the next call. A connection that fails is
// closed and the next call dials a new one; the failed request is not
// retried (a publish is not idempotent). A cancelled ctx is noticed
// between requests; a request in flight is bounded by p.timeout.
func (p *poster) publish(ctx context.Context, body []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if p.conn == nil {
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", p.t.hostPort)
		if err != nil {
			return nil, fmt.Errorf("publish: %w", err)
		}
		p.conn = conn
		if p.br == nil {
			p.br = bufio.NewReaderSize(conn, posterBuf)
		} else {
			p.br.Reset(conn)
		}
	}
	if err := p.conn.SetDeadline(time.Now().Add(p.timeout)); err != nil {
		p.close()
		return nil, fmt.Errorf("publish: %w", err)
	}
	p.out = append(append(append(p.out[:0], "POST "...), p.path...), p.head...)
	p.out = strconv.AppendInt(p.out, int64(len(body)), 10)
	if p.key != nil {
		p.out = append(append(p.out, "\r\nIdempotency-Key: "...), p.key...)
	}
	p.out = append(p.out, "\r\n\r\n"...)
	p.out = append(p.out, body...)
	if _, err := p.conn.Write(p.out); err != nil {
		p.close()
		return nil, fmt.Errorf("publish: %w", err)
	}
	status, answer, keep, err := p.readAnswer()
	if err != nil {
		p.close()
		return nil, fmt.Errorf("publish: reading the answer: %w", err)
	}
	if !keep {
		p.close()
	}
	if !p.t.a.stored(status) {
		return answer, &publishError{status: status, body: string(bytes.TrimSpace(answer))}
	}
	if p.replayed {
		// Every key is new: a repeat would be measured as a publish.
		return answer, fmt.Errorf("publish: key %s was answered as a repeat", p.key)
	}
	return answer, nil
}

var errMalformed = errors.New("malformed HTTP answer")

// readAnswer reads one HTTP/1.1 answer: its status, its body (reusing
// p.out's space) and whether the connection stays open.
func (p *poster) readAnswer() (status int, body []byte, keep bool, err error) {
	line, err := p.br.ReadSlice('\n')
	if err != nil {
		return 0, nil, false, err
	}
	// HTTP/1.1 201 Created
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) || line[8] != ' ' {
		return 0, nil, false, fmt.Errorf("%w: status line %q", errMalformed, line)
	}
	code, ok := parseUint(line[9:12])
	if !ok {
		return 0, nil, false, fmt.Errorf("%w: status line %q", errMalformed, line)
	}
	keep = line[7] == '1'
	p.replayed = false
	length, chunked := int64(-1), false
	for {
		line, err = p.br.ReadSlice('\n')
		if err != nil {
			return 0, nil, false, err
		}
		line = bytes.TrimRight(line, "\r\n")
		if len(line) == 0 {
			break
		}
		name, value, found := bytes.Cut(line, []byte(":"))
		if !found {
			return 0, nil, false, fmt.Errorf("%w: header %q", errMalformed, line)
		}
		value = bytes.TrimSpace(value)
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			n, ok := parseUint(value)
			if !ok {
				return 0, nil, false, fmt.Errorf("%w: Content-Length %q", errMalformed, value)
			}
			length = n
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			chunked = bytes.EqualFold(value, []byte("chunked"))
		case bytes.EqualFold(name, []byte("Connection")):
			keep = keep && !bytes.EqualFold(value, []byte("close"))
		case bytes.EqualFold(name, []byte("Idempotent-Replayed")):
			p.replayed = bytes.Equal(value, []byte("true"))
		}
	}
	body = p.out[:0]
	switch {
	case chunked:
		buf := bytes.NewBuffer(body)
		_, err = buf.ReadFrom(httputil.NewChunkedReader(p.br))
		body = buf.Bytes()
		if err == nil { // the trailer section: empty, up to its blank line
			for {
				if line, err = p.br.ReadSlice('\n'); err != nil || len(bytes.TrimRight(line, "\r\n")) == 0 {
					break
				}
			}
		}
	case length >= 0:
		if int64(cap(body)) < length {
			body = make([]byte, length)
		}
		body = body[:length]
		_, err = io.ReadFull(p.br, body)
	default: // the body runs to the end of the connection
		body, err = io.ReadAll(p.br)
		keep = false
	}
	if err != nil {
		return 0, nil, false, err
	}
	p.out = body[:0]
	return int(code), body, keep, nil
}
