package client

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"time"
)

// The SSE parser follows the WHATWG HTML standard's "event stream
// interpretation" (section 9.2.6) to the letter, so that it reads what any
// conforming server sends, not only what sselog sends:
//
//   - a leading UTF-8 byte order mark is skipped;
//   - lines end with CRLF, LF or CR, and a CR at the end of what has
//     arrived ends its line at once (the LF that may follow is skipped
//     when it comes, not waited for);
//   - a line starting with ":" is a comment; a field's value is what
//     follows the first ":", less one leading space; a line without ":" is
//     a field with an empty value; unknown fields are ignored;
//   - "data" lines are joined with LF; "event" sets the type ("message"
//     when absent); "id" sets the last event id buffer unless its value
//     holds NUL; "retry" counts only when its value is all ASCII digits;
//   - a blank line sets the last event id from the buffer, whether or not
//     the block has data (the id persists from block to block), then
//     dispatches the block if it has data, and otherwise clears it; a
//     block the stream ends inside is discarded, and its id with it.
//
// Bytes are kept as they arrive: where a browser would decode invalid
// UTF-8 as U+FFFD, this parser leaves it to the checks that follow (an id
// must be a ULID, data must be JSON).
//
// What sselog sends is a subset: LF line ends, an id on every event,
// compact JSON on one data line.

// maxEventSize bounds one line and one event's data, so that a server
// that never ends a line cannot make the client hold unbounded memory. It
// is far above anything sselog stores (--max-body bounds a whole batch).
const maxEventSize = 64 << 20

// errEventTooLarge ends a stream whose line or event passes maxEventSize.
var errEventTooLarge = fmt.Errorf("%w: SSE line or event larger than %d bytes", ErrProtocol, maxEventSize)

// sseEvent is one dispatched event.
type sseEvent struct {
	id   string // the last event id when the event was dispatched
	typ  string // "message" when the block had no event field
	data []byte
}

// sseParser reads events from an SSE stream.
type sseParser struct {
	r       *bufio.Reader
	max     int
	started bool // the byte order mark has been looked for
	afterCR bool // the last line ended with CR: an LF next belongs to it
	line    []byte

	idBuf string // the last event id buffer: the latest id field
	typ   []byte
	data  []byte // each data line followed by LF

	// lastID is the last event id as of the last blank line: the id of
	// the last event dispatched, or of a later block without data (a
	// block that only sets the position, as sselog's live start sends).
	// It is what a reconnection sends as Last-Event-ID.
	lastID string

	// What the stream said besides events since the caller last looked:
	// the newest retry hint, and how many comments came.
	retry    time.Duration
	hasRetry bool
	comments int
}

func newSSEParser(r io.Reader) *sseParser {
	return &sseParser{r: bufio.NewReaderSize(r, 16<<10), max: maxEventSize}
}

// next returns the next dispatched event. At the end of the stream it
// returns the reader's error (io.EOF for a clean end), and the block the
// stream ended inside, if any, is lost, as the standard says.
func (p *sseParser) next() (sseEvent, error) {
	for {
		line, err := p.readLine()
		if err != nil {
			return sseEvent{}, err
		}
		if len(line) == 0 {
			p.lastID = p.idBuf
			if len(p.data) == 0 {
				p.typ = p.typ[:0]
				continue
			}
			ev := sseEvent{id: p.lastID, typ: "message", data: bytes.Clone(p.data[:len(p.data)-1])}
			if len(p.typ) > 0 {
				ev.typ = string(p.typ)
			}
			p.typ, p.data = p.typ[:0], p.data[:0]
			return ev, nil
		}
		if line[0] == ':' {
			p.comments++
			continue
		}
		field, value := line, []byte(nil)
		if i := bytes.IndexByte(line, ':'); i >= 0 {
			field, value = line[:i], line[i+1:]
			value = bytes.TrimPrefix(value, []byte(" "))
		}
		switch string(field) {
		case "event":
			p.typ = append(p.typ[:0], value...)
		case "data":
			if len(p.data)+len(value)+1 > p.max {
				return sseEvent{}, errEventTooLarge
			}
			p.data = append(append(p.data, value...), '\n')
		case "id":
			if bytes.IndexByte(value, 0) < 0 {
				p.idBuf = string(value)
			}
		case "retry":
			if ms, ok := digits(value); ok {
				p.retry, p.hasRetry = time.Duration(ms)*time.Millisecond, true
			}
		}
	}
}

// digits reads a value of ASCII digits only, capped at a day's worth of
// milliseconds.
func digits(v []byte) (int64, bool) {
	if len(v) == 0 {
		return 0, false
	}
	const ceiling = 24 * 60 * 60 * 1000
	var n int64
	for _, c := range v {
		if c < '0' || c > '9' {
			return 0, false
		}
		if n < ceiling {
			n = n*10 + int64(c-'0')
		}
	}
	return min(n, ceiling), true
}

// readLine returns the next line without its end. It never waits for more
// bytes than the line needs: a stream that pauses after a CR has ended
// that line.
func (p *sseParser) readLine() ([]byte, error) {
	if !p.started {
		p.started = true
		if b, err := p.r.Peek(1); err == nil && b[0] == 0xEF {
			if bom, err := p.r.Peek(3); err == nil && bytes.Equal(bom, []byte("\xEF\xBB\xBF")) {
				_, _ = p.r.Discard(3)
			}
		}
	}
	p.line = p.line[:0]
	for {
		// Peek what is buffered, or wait for one byte when nothing is.
		buf, err := p.r.Peek(max(p.r.Buffered(), 1))
		if len(buf) == 0 {
			if err == nil {
				err = io.ErrNoProgress
			}
			if errors.Is(err, io.EOF) && len(p.line) > 0 {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
		if p.afterCR {
			p.afterCR = false
			if buf[0] == '\n' {
				_, _ = p.r.Discard(1)
				continue
			}
		}
		i := bytes.IndexAny(buf, "\r\n")
		if i < 0 {
			i = len(buf)
		}
		if len(p.line)+i > p.max {
			return nil, errEventTooLarge
		}
		p.line = append(p.line, buf[:i]...)
		if i == len(buf) {
			_, _ = p.r.Discard(i)
			continue
		}
		p.afterCR = buf[i] == '\r'
		_, _ = p.r.Discard(i + 1)
		return p.line, nil
	}
}
